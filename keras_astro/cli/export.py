"""`keras-astro export`: a TF Serving (or ONNX) version of a `.keras` model, and how to
serve and query it."""

import os

from keras_astro.export import (
    DEFAULT_SIGNATURE,
    ENCODED_SIGNATURE,
    LABELS_FILE,
    ONNX_FILE,
    WRITERS,
    export_model,
    image_size,
    serving_input,
    shape_text,
)

HELP = "write a TensorFlow Serving SavedModel version of a .keras model"
DESCRIPTION = (
    "Export a .keras model (saved under any backend) for TensorFlow Serving: the graph "
    "holds standard TensorFlow ops only."
)


def add_arguments(parser):
    parser.add_argument("model", help="the .keras file to export (saved under any backend)")
    parser.add_argument(
        "export_dir",
        help="the model's base directory for TF Serving (or Triton); versions go in numbered "
        "subdirectories",
    )
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="positive version number to write (default: one more than the highest existing "
        "one); an existing version is never overwritten",
    )
    parser.add_argument(
        "--format",
        choices=sorted(WRITERS),
        default="saved_model",
        help="saved_model (TF Serving, default) or onnx (model.onnx, needs tf2onnx)",
    )
    parser.add_argument(
        "--fold-batch-norm",
        action="store_true",
        help="fold every batch norm into its convolution in the exported graph (same "
        "outputs up to float32 rounding, one pass less per batch norm)",
    )


def run(args):
    path, model = export_model(
        args.model, args.export_dir, args.version, args.format, args.fold_batch_norm
    )
    height, width, channels = image_size(model)
    dtype, shape, encoded = serving_input(model)
    what = "raw flux, NaN allowed" if model.preprocessing == "flux" else "raw pixels 0..255"
    pixels = f"images {dtype} {shape_text(shape)} ({what})"
    outputs = f"probabilities float32 [batch, {model.num_classes}], classes int64 [batch]"
    if args.format == "onnx":
        onnx_path = os.path.join(path, ONNX_FILE)
        print(
            f"""Exported {onnx_path}
  input {pixels}
  outputs {outputs}
  class names, one per line by class id: {os.path.join(path, LABELS_FILE)}
Run it:
  python -c 'import numpy as np, onnxruntime as ort; s = ort.InferenceSession("{onnx_path}"); print(s.run(None, {{"images": np.zeros((1, {height}, {width}, {channels}), np.{dtype})}}))'"""
        )
        return
    base_dir = os.path.dirname(path)
    name = os.path.basename(base_dir)
    url = f"http://localhost:8501/v1/models/{name}:predict"
    zero = "0.0" if dtype == "float32" else "0"
    lines = [
        f"Exported {path}",
        "Signatures (method tensorflow/serving/predict):",
        f"  {DEFAULT_SIGNATURE}: {pixels}",
    ]
    if encoded:
        lines.append(
            f"  {ENCODED_SIGNATURE}: images string [batch] (JPEG/PNG bytes; JSON "
            f'{{"b64": ...}}), resized to {height}x{width}'
        )
    lines += [
        f"  outputs: {outputs}",
        f"  class names, one per line by class id: {os.path.join(path, 'assets', LABELS_FILE)}",
        "Serve it:",
        f"  docker run -p 8501:8501 -p 8500:8500 --mount type=bind,source={base_dir},"
        f"target=/models/{name} -e MODEL_NAME={name} -t tensorflow/serving",
    ]
    if encoded:
        lines += [
            "Query it with an image file (replace IMAGE.jpg):",
            f"""  curl -X POST {url} -d '{{"signature_name": "{ENCODED_SIGNATURE}", "instances": """
            f"""[{{"b64": "'"$(base64 < IMAGE.jpg | tr -d '\\n')"'"}}]}}'""",
        ]
    lines += [
        f"Query it with {'pixels' if dtype == 'uint8' else 'flux'} (here one blank image):",
        f"""  python -c 'import json; print(json.dumps({{"instances": [[[[{zero}] * {channels}] * """
        f"""{width}] * {height}]}}))' | curl -X POST {url} -d @-""",
    ]
    print("\n".join(lines))
