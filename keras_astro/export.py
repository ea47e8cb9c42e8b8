"""Export for TensorFlow Serving: a SavedModel of standard TF ops, whichever backend made the model.

Keras' own `model.export` writes XlaCallModule ops under JAX (refused by a stock TF Serving)
and needs torch_xla under PyTorch. Here the model always runs under the TensorFlow backend
while its graph is traced: in this process when that is the current backend, otherwise in a
subprocess that reloads the `.keras` file (backend-portable, so the weights are exact).

Keras is imported inside the functions: the CLI chooses KERAS_BACKEND before keras loads.
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

from keras_astro.models.saving import load_model
from keras_astro.utils import (
    check_classifier,
    class_names,
    is_int_at_least,
    require,
    returns_logits,
)

LABELS_FILE = "labels.txt"
ONNX_FILE = "model.onnx"
DEFAULT_SIGNATURE = "serving_default"
ENCODED_SIGNATURE = "predict_encoded"
DECODABLE_CHANNELS = (1, 3, 4)
# Einsum (12) and the axes inputs of Unsqueeze and ReduceSum (13) in `_resize_as_onnx`.
ONNX_OPSET = 17
# The most an ONNX export's probabilities may differ from the TensorFlow graph's.
ONNX_TOLERANCE = 1e-3
# The file that marks a version directory as each format's.
FORMAT_FILES = {"saved_model": "saved_model.pb", "onnx": ONNX_FILE}
# The exporter's scratch folders are named `.tmp-<version>-<random><SCRATCH_SUFFIX>`;
# clean-up removes those only, never another `.tmp-*` folder of the user's.
SCRATCH_PREFIX = ".tmp-"
SCRATCH_SUFFIX = ".keras-astro-export"
# A scratch folder untouched this long is what a killed export left; none takes as long.
STALE_SCRATCH_SECONDS = 3600


def export_for_serving(
    model_or_path, export_dir, version=None, format="saved_model", fold_batch_norm=False
):
    """Writes `export_dir/<version>/` (saved_model.pb, variables/, assets/labels.txt).

    Signatures (method tensorflow/serving/predict), both returning `probabilities`
    float32 [batch, num_classes] and `classes` int64 [batch]:
    - `serving_default`: `images`, uint8 [batch, H, W, C], raw pixels 0..255.
    - `predict_encoded`: `images`, string [batch], JPEG or PNG bytes (REST: {"b64": ...}),
      decoded and resized to H x W in the graph.
    Line i of `assets/labels.txt` names class i (the model's `class_names`, else "0".."N-1").
    Flux models have `serving_default` only, of float32 [batch, any, any, bands], raw flux
    with NaN blanks; a cutout with a band of no finite pixel (within its central crop)
    fails the call with InvalidArgument, as a wrong shape does, instead of being answered
    as a blank cutout.

    Only AstroTransformer classifiers that take raw pixels are accepted: a model built with
    `include_preprocessing=False` expects inputs normalised the way it was trained, which
    the export cannot know, and one with `include_top=False` has no probabilities to serve.

    Args:
        model_or_path: an `AstroTransformer`, or the path of a `.keras` file holding one.
        export_dir: the model's base directory for TF Serving (created if missing).
        version: positive int; `None` means one more than the highest existing version.
            An existing version is never overwritten.
        format: `"saved_model"` for TF Serving, or `"onnx"`: `<version>/model.onnx` (the
            `serving_default` signature only; ONNX has no image decoder) and
            `<version>/labels.txt`, the layout of Triton's model repository. Needs tf2onnx
            and onnxruntime: a file that onnxruntime cannot run, or runs to other
            probabilities than the TensorFlow graph, is refused with a `ValueError`.
            ONNX has no assertion op, so the file answers a flux cutout without a finite
            pixel as a blank cutout (onnxruntime checks the input's rank and fixed sides).
        fold_batch_norm: serve `keras_astro.fold_batch_norm(model)`, the same function
            with every batch norm folded into its convolution (one pass less each).

    Returns:
        The path of the new version directory. It appears in one rename once complete,
        so TF Serving never sees a half-written version.
    """
    return export_model(model_or_path, export_dir, version, format, fold_batch_norm)[0]


def export_model(
    model_or_path, export_dir, version=None, format="saved_model", fold_batch_norm=False
):
    """`export_for_serving`, also returning the loaded model (the CLI prints its shapes)."""
    import keras

    if format not in WRITERS:
        raise ValueError(f"`format` must be one of {sorted(WRITERS)}. Received: {format!r}")
    require("The export", "onnx", "tensorflow")
    if format == "onnx":  # onnxruntime checks that the file runs
        require("The ONNX export", "onnx", "tf2onnx", "onnxruntime")
    if not isinstance(export_dir, (str, os.PathLike)) or not os.fspath(export_dir).strip():
        raise ValueError(
            f"Expected the path of the model's export directory. Received: {export_dir!r}"
        )
    model = _load_model(model_or_path)
    _check_servable(model)
    export_dir = os.path.abspath(os.fspath(export_dir))
    if os.path.exists(export_dir) and not os.path.isdir(export_dir):
        raise ValueError(f"The export directory {export_dir} exists and is not a directory.")
    os.makedirs(export_dir, exist_ok=True)
    _check_one_format(export_dir, format)
    _remove_stale_scratch(export_dir)
    version = _choose_version(export_dir, version)
    target = os.path.join(export_dir, str(version))
    # A hidden, non-numeric sibling: TF Serving only loads numeric directory names.
    with tempfile.TemporaryDirectory(
        prefix=f"{SCRATCH_PREFIX}{version}-", suffix=SCRATCH_SUFFIX, dir=export_dir
    ) as scratch:
        staging = os.path.join(scratch, "export")
        if keras.backend.backend() == "tensorflow":
            WRITERS[format](model, staging, fold_batch_norm)
        else:
            keras_path = model_or_path
            if isinstance(model_or_path, keras.Model):
                keras_path = os.path.join(scratch, "model.keras")
                model.save(keras_path)
            _write_in_tensorflow_subprocess(keras_path, staging, format, fold_batch_norm)
        if _existing_versions(export_dir).get(version):
            raise ValueError(
                f"Version {version} appeared in {export_dir} while exporting; not overwriting it."
            )
        os.rename(staging, target)
    return target, model


def _load_model(model_or_path):
    import keras

    if isinstance(model_or_path, keras.Model):
        return model_or_path
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise ValueError(
            "Expected an AstroTransformer or the path of a .keras file. "
            f"Received an object of type {type(model_or_path).__name__}."
        )
    return load_model(model_or_path)


def _check_servable(model):
    from keras_astro.models import AstroTransformer

    if not isinstance(model, AstroTransformer):
        raise ValueError(
            f"export_for_serving exports AstroTransformer models. Received a {type(model).__name__}."
        )
    check_classifier(model, "serving")
    height, width, channels = image_size(model)
    if height is None or width is None:
        raise ValueError(
            f"Serving needs a fixed image size, but this model accepts any size "
            f"(image_shape={model.image_shape}). Rebuild it with input_shape=(H, W, C) from "
            "its config and copy the weights with set_weights (they do not depend on the size)."
        )
    if model.preprocessing == "pixels" and channels not in DECODABLE_CHANNELS:
        raise ValueError(
            f"Serving decodes images to 1, 3 or 4 channels; this model takes {channels}."
        )


def serving_input(model):
    """(dtype name, shape of `images` in serving_default, whether predict_encoded exists).

    8-bit models take uint8 pixels of the model's size, or of any size when they were
    trained on centre crops; flux models take float32 cutouts of any size (NaN allowed).
    Either is cropped and resized in the graph as the training data was.
    """
    height, width, channels = image_size(model)
    if model.preprocessing == "flux":
        return "float32", [None, None, None, channels], False
    if model.center_crop is not None:
        return "uint8", [None, None, None, channels], True
    return "uint8", [None, height, width, channels], True


def shape_text(shape):
    """A signature's shape as messages name it: [batch, any, any, 5] for [None, None, None, 5]."""
    sizes = ("batch" if i == 0 else str(size or "any") for i, size in enumerate(shape))
    return f"[{', '.join(sizes)}]"


def image_size(model):
    """(height, width, channels) whatever the model's data format."""
    shape = model.image_shape
    if model.data_format == "channels_first":
        return shape[1], shape[2], shape[0]
    return tuple(shape)


def _existing_versions(export_dir):
    """{version number: directory name} of the numeric directories TF Serving would load."""
    return {
        int(name): name
        for name in os.listdir(export_dir)
        if name.isdigit() and os.path.isdir(os.path.join(export_dir, name))
    }


def _check_one_format(export_dir, format):
    """Refuses to add a `format` version beside versions of another format.

    A server loads the highest version of a model folder: an ONNX version 2 beside a
    SavedModel version 1 would be what TF Serving picks, and fails to load.
    """
    for name in sorted(_existing_versions(export_dir).values(), key=int):
        for other, marker in FORMAT_FILES.items():
            if other != format and os.path.exists(os.path.join(export_dir, name, marker)):
                raise ValueError(
                    f"{export_dir} holds {other} versions ({name}/{marker}); a server loads "
                    f"the highest version of a folder, so versions of one model share one "
                    f"format. Expected a folder without {other} versions for the {format} "
                    "export: choose another export directory."
                )


def _remove_stale_scratch(export_dir):
    """Deletes the scratch folders of exports killed over an hour ago (and no other folder).

    A running export's folder changes within that time; TF Serving ignores them
    anyway, so this only keeps the model folder tidy.
    """
    now = time.time()
    for name in os.listdir(export_dir):
        path = os.path.join(export_dir, name)
        if (
            not (name.startswith(SCRATCH_PREFIX) and name.endswith(SCRATCH_SUFFIX))
            or os.path.islink(path)
            or not os.path.isdir(path)
        ):
            continue
        try:  # another export may finish (and delete its folder) meanwhile
            newest = max(
                os.lstat(os.path.join(folder, entry)).st_mtime
                for folder, folders, files in os.walk(path)
                for entry in (".", *folders, *files)
            )
        except OSError:
            continue
        if now - newest > STALE_SCRATCH_SECONDS:
            shutil.rmtree(path, ignore_errors=True)


def _choose_version(export_dir, version):
    existing = _existing_versions(export_dir)
    if version is None:
        return max(existing, default=0) + 1
    if not is_int_at_least(version, 1):
        raise ValueError(f"`version` must be a positive int or None. Received: {version!r}")
    if version in existing:
        raise ValueError(
            f"Version {version} already exists in {export_dir} ({existing[version]}/); served "
            "versions are never overwritten. Leave the version out to write version "
            f"{max(existing) + 1}."
        )
    return version


def _write_in_tensorflow_subprocess(keras_path, staging, format, fold_batch_norm):
    """Runs `_write_keras_file` in a fresh Python under the TensorFlow backend."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = dict(os.environ, KERAS_BACKEND="tensorflow")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (package_root, env.get("PYTHONPATH"))))
    # A refusal (a ValueError) comes back as its one line, with exit code 2.
    code = (
        "import sys\nfrom keras_astro.export import _write_keras_file\ntry:\n"
        "    _write_keras_file(*sys.argv[1:])\nexcept ValueError as error:\n"
        "    print(error, file=sys.stderr)\n    sys.exit(2)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, os.fspath(keras_path), staging, format, str(fold_batch_norm)],
        env=env,
        capture_output=True,
        text=True,
    )
    if result.returncode == 2:
        raise ValueError(result.stderr.strip().splitlines()[-1])
    if result.returncode:
        raise RuntimeError(
            f"Exporting under the TensorFlow backend failed (exit code {result.returncode}):\n"
            f"{result.stderr[-4000:]}"
        )


def _write_keras_file(keras_path, staging, format, fold_batch_norm):
    """Subprocess entry point: loads the `.keras` file under TensorFlow and writes the export.

    The model's config holds its data format, so it reloads with its own layout.
    """
    WRITERS[format](load_model(keras_path), staging, fold_batch_norm == "True")


def _serving_functions(model, fold_batch_norm=False):
    """The signatures as tf.functions around `model` (TensorFlow backend)."""
    import tensorflow as tf

    from keras_astro.data.converter import ImageConverter
    from keras_astro.models.folding import fold_batch_norm as fold

    network = fold(model) if fold_batch_norm else model
    converter = ImageConverter.from_model(model)
    height, width, channels = image_size(model)
    logits = returns_logits(model)
    dtype, shape, encoded = serving_input(model)

    def classify(pixels):
        """float32 [batch, h, w, C], raw -> the signatures' outputs."""
        pixels = converter(pixels)
        if model.preprocessing == "flux":
            pixels = _assert_flux_in_every_band(pixels, model.center_crop)
        if model.data_format == "channels_first":
            pixels = tf.transpose(pixels, (0, 3, 1, 2))
        probabilities = tf.cast(network(pixels, training=False), tf.float32)
        if logits:
            probabilities = tf.nn.softmax(probabilities)
        return {"probabilities": probabilities, "classes": tf.argmax(probabilities, axis=-1)}

    pixel_spec = tf.TensorSpec(shape, dtype, name="images")
    encoded_spec = tf.TensorSpec([None], tf.string, name="images")

    @tf.function(input_signature=[pixel_spec], autograph=False)
    def serve_pixels(images):
        images = _assert_shape(images, pixel_spec, DEFAULT_SIGNATURE)
        return classify(tf.cast(images, tf.float32))

    if not encoded:
        return {DEFAULT_SIGNATURE: serve_pixels}

    @tf.function(input_signature=[encoded_spec], autograph=False)
    def serve_encoded(images):
        images = _assert_shape(images, encoded_spec, ENCODED_SIGNATURE)
        images = _assert_jpeg_or_png(images)
        pixels = tf.map_fn(
            lambda image: converter.decode_encoded(image, channels),
            images,
            fn_output_signature=tf.TensorSpec([height, width, channels], tf.float32),
        )
        return classify(pixels)

    return {DEFAULT_SIGNATURE: serve_pixels, ENCODED_SIGNATURE: serve_encoded}


def _write_labels(model, path):
    """Line i names class i: the model's `class_names`, else "0".."N-1"."""
    with open(path, "w", encoding="utf-8") as file:
        file.write("".join(f"{label}\n" for label in class_names(model)))


def _write_saved_model(model, path, fold_batch_norm=False):
    """Saves both signatures to `path`, with the class names as assets/labels.txt."""
    import tensorflow as tf

    signatures = {
        name: function.get_concrete_function()
        for name, function in _serving_functions(model, fold_batch_norm).items()
    }
    module = tf.Module()
    # The tf.Variables the traced functions capture (not Keras' wrappers): tracking these
    # is what makes the TF1 session loader, used by TF Serving, create and restore them.
    module.model_variables = list(
        {id(v): v for function in signatures.values() for v in function.variables}.values()
    )
    with tempfile.TemporaryDirectory() as scratch:
        labels_path = os.path.join(scratch, LABELS_FILE)
        _write_labels(model, labels_path)
        module.labels = tf.saved_model.Asset(labels_path)
        tf.saved_model.save(module, path, signatures=signatures)


def _write_onnx(model, path, fold_batch_norm=False):
    """Converts the `serving_default` signature to `path/model.onnx`, beside labels.txt.

    The file is checked with onnxruntime before the version is published: a converter
    leaves an op it cannot convert in the graph as it is, and onnxruntime then refuses
    to load the file.
    """
    import tf2onnx

    serve_pixels = _serving_functions(model, fold_batch_norm)[DEFAULT_SIGNATURE]
    os.makedirs(path)
    onnx_path = os.path.join(path, ONNX_FILE)
    tf2onnx.convert.from_function(
        serve_pixels,
        input_signature=serve_pixels.input_signature,
        opset=ONNX_OPSET,
        custom_op_handlers={
            "ScaleAndTranslate": (_resize_as_onnx, []),
            "SelectV2": (_where_as_onnx, []),
        },
        output_path=onnx_path,
    )
    _check_onnx(onnx_path, serve_pixels, model)
    _write_labels(model, os.path.join(path, LABELS_FILE))


def _check_onnx(path, serve_pixels, model):
    """Refuses an ONNX file that onnxruntime cannot run or that disagrees with `serve_pixels`.

    One batch of two inputs, of another size than the model's where the signature
    takes any size (so the graph crops and resizes); flux has a NaN in the middle.
    """
    import numpy as np
    import onnxruntime

    dtype, shape, _ = serving_input(model)
    crop = model.center_crop or 1
    sides = zip(shape[1:3], image_size(model))
    sizes = [2] + [size or round(side / crop) + 3 for size, side in sides]
    rng = np.random.default_rng(0)
    if dtype == "uint8":
        batch = rng.integers(0, 256, (*sizes, shape[3]), dtype=np.uint8)
    else:
        batch = rng.normal(0, 1, (*sizes, shape[3])).astype(np.float32)
        batch[0, sizes[1] // 2, sizes[2] // 2] = np.nan
    expected = serve_pixels(batch)["probabilities"].numpy()
    try:
        session = onnxruntime.InferenceSession(path, providers=["CPUExecutionProvider"])
        (probabilities,) = session.run(["probabilities"], {"images": batch})
    except Exception as error:  # onnxruntime's own error types
        raise ValueError(
            f"The {ONNX_FILE} that tf2onnx wrote does not run in onnxruntime "
            f"({str(error).splitlines()[0]}), so no version was written. Expected a model "
            "whose ops onnxruntime has; export the saved_model format instead."
        ) from None
    difference = float(np.max(np.abs(probabilities - expected)))
    if not difference <= ONNX_TOLERANCE:
        raise ValueError(
            f"The {ONNX_FILE} that tf2onnx wrote gives probabilities up to {difference:.2g} "
            f"away from the model's (expected at most {ONNX_TOLERANCE}), so no version was "
            "written. Export the saved_model format instead."
        )


def _where_as_onnx(ctx, node, name, args):
    """tf2onnx handler of `SelectV2` (`tf.where`): ONNX `Where`.

    tf2onnx's own writes a choice between `x` and zeros as `x * condition`, which keeps
    the NaN that the flux pipeline replaces with zeros (NaN * 0 is NaN).
    """
    node.type = "Where"


def _resize_as_onnx(ctx, node, name, args):
    """tf2onnx handler of `ScaleAndTranslate`, the antialiased resize of `tf.image.resize`.

    onnxruntime has no such op, and its antialiased `Resize` weighs pixels otherwise.
    Here each axis is resized by a [new size, old size] matrix of TensorFlow's own
    weights (its triangle kernel, widened by the downscaling factor, normalised per
    output pixel), so the ONNX graph resizes as the SavedModel does, up to rounding.
    """
    import numpy as np
    from onnx import TensorProto
    from tf2onnx import utils

    images, size, scale, translation = node.input
    shapes, dtypes = node.output_shapes, node.output_dtypes
    antialias = node.get_attr_value("antialias")
    ctx.remove_node(node.name)

    def const(value, dtype=np.float32):
        return ctx.make_const(utils.make_name(f"{name}_const"), np.array(value, dtype)).output[0]

    def op(op_type, *inputs, **attr):
        return ctx.make_node(op_type, list(inputs), attr=attr).output[0]

    def item(vector, index):
        return op("Cast", op("Gather", vector, const(index, np.int64)), to=TensorProto.FLOAT)

    old_sizes = op("Shape", images)
    resized = images
    for axis, equation in ((1, "oh,nhwc->nowc"), (2, "ow,nhwc->nhoc")):
        axis_scale = item(scale, axis - 1)
        # Output pixel i samples the input at (i + 0.5 - translation) / scale.
        new_pixels = op("Range", const(0.0), item(size, axis - 1), const(1.0))
        samples = op(
            "Div",
            op("Sub", op("Add", new_pixels, const(0.5)), item(translation, axis - 1)),
            axis_scale,
        )
        centres = op("Add", op("Range", const(0.0), item(old_sizes, axis), const(1.0)), const(0.5))
        distances = op(
            "Abs",
            op(
                "Sub",
                op("Unsqueeze", centres, const([0], np.int64)),
                op("Unsqueeze", samples, const([1], np.int64)),
            ),
        )
        if antialias:
            widening = op("Max", op("Div", const(1.0), axis_scale), const(1.0))
            distances = op("Div", distances, widening)
        weights = op("Relu", op("Sub", const(1.0), distances))
        weights = op("Div", weights, op("ReduceSum", weights, const([1], np.int64), keepdims=1))
        if axis == 1:
            resized = op("Einsum", weights, resized, equation=equation)
        else:  # the last one takes the op's place
            ctx.make_node(
                "Einsum", [weights, resized], attr={"equation": equation}, name=node.name,
                outputs=node.output, shapes=shapes, dtypes=dtypes,
            )


WRITERS = {"saved_model": _write_saved_model, "onnx": _write_onnx}


def _assert_shape(tensor, spec, signature):
    """Checks the fed shape in the graph, since TF Serving does not check it against the signature.

    Shape is a raw op so that tracing, which knows the signature's shape, does not fold it
    into a constant. The rank is read off the shape padded with zeros (an axis past the
    signature's last is not 0), not from Rank or Size: the served graph folds those to the
    signature's rank, and a tensor of another rank then fails later with a confusing
    message. An empty batch is refused too: TF's Conv2D returns its input's shape for
    one, which would also fail later.
    """
    import tensorflow as tf

    shape = tf.raw_ops.Shape(input=tensor)
    rank = spec.shape.rank
    sizes = tf.pad(shape, [[0, rank + 1]])
    matches = [tf.equal(sizes[rank], 0), tf.greater(sizes[0], 0)]
    matches += [tf.equal(sizes[axis], size) for axis, size in enumerate(spec.shape) if size]
    valid = tf.reduce_all(matches)
    expected = shape_text(spec.shape.as_list())
    check = tf.debugging.Assert(
        valid,
        [
            f"{signature}: `images` must be {spec.dtype.name} of shape {expected} with "
            "batch >= 1; got shape",
            shape,
        ],
        summarize=16,
    )
    with tf.control_dependencies([check]):
        return tf.identity(tensor)


def _assert_jpeg_or_png(images):
    """Names the batch positions that are not JPEG or PNG bytes, before decoding."""
    import tensorflow as tf

    from keras_astro.data.converter import JPEG_SIGNATURE, PNG_SIGNATURE

    is_image = tf.logical_or(
        tf.equal(tf.strings.substr(images, 0, len(JPEG_SIGNATURE)), JPEG_SIGNATURE),
        tf.equal(tf.strings.substr(images, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE),
    )
    check = tf.debugging.Assert(
        tf.reduce_all(is_image),
        [
            f"{ENCODED_SIGNATURE}: `images` must be JPEG or PNG bytes (REST: {{\"b64\": ...}}); "
            "these batch positions are not:",
            tf.where(tf.logical_not(is_image))[:, 0],
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)


def _assert_flux_in_every_band(images, center_crop):
    """Names the batch positions with a band of no finite pixel, after the crop and resize.

    The model answers such a band as a blank one (zeros), and a cutout of no data as
    a blank cutout: a confident answer to nothing.
    """
    import tensorflow as tf

    has_flux = tf.reduce_all(tf.reduce_any(tf.math.is_finite(images), axis=(1, 2)), axis=-1)
    where = "" if center_crop is None else f" (in its central {center_crop:.0%})"
    check = tf.debugging.Assert(
        tf.reduce_all(has_flux),
        [
            f"{DEFAULT_SIGNATURE}: `images` must have a finite pixel in every band of each "
            f"cutout{where}; these batch positions have a band of NaN or infinite pixels only:",
            tf.where(tf.logical_not(has_flux))[:, 0],
        ],
    )
    with tf.control_dependencies([check]):
        return tf.identity(images)
