"""Images/s of the exported SavedModel (what TF Serving runs) against `model.predict`.

    python benchmarks/serving.py [--model small] [--image-size 32] [--batch-size 32]

The deployment path must not be slower than the Python one. Under the TensorFlow backend
(where `keras-astro export` traces the model), the script exports one model twice, as
the command does: plainly and with `--fold-batch-norm`. It loads each with
`tf.saved_model.load` (the graph TF Serving runs, without its RPC layer) and times its
`serving_default` signature on uint8 batches, against `model.predict` on the same images.
Each path is warmed up once, then timed `--repeats` times, interleaved with the others;
the median is reported. Prints a Markdown table.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from benchmarks.harness import cpu_name  # noqa: E402
from keras_astro.cli.arguments import positive_int  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="small", choices=("small", "base", "large"))
    parser.add_argument("--image-size", type=positive_int, default=32)
    parser.add_argument("--batch-size", type=positive_int, default=32)
    parser.add_argument("--images", type=positive_int, default=512, help="images per timing")
    parser.add_argument("--repeats", type=positive_int, default=5)
    args = parser.parse_args(argv)
    if os.environ.setdefault("KERAS_BACKEND", "tensorflow") != "tensorflow":
        parser.error("the SavedModel is traced under the TensorFlow backend: run with KERAS_BACKEND=tensorflow")

    import numpy as np
    import tensorflow as tf

    from keras_astro import AstroTransformer
    from keras_astro.export import export_for_serving

    size = args.image_size
    model = AstroTransformer.from_name(args.model, input_shape=(size, size, 3), num_classes=10)
    images = np.random.default_rng(0).integers(0, 256, (args.images, size, size, 3), dtype=np.uint8)
    batches = [images[i : i + args.batch_size] for i in range(0, len(images), args.batch_size)]

    def predict():
        model.predict(images.astype("float32"), batch_size=args.batch_size, verbose=0)

    def serving(fold_batch_norm, export_dir):
        signature = tf.saved_model.load(
            export_for_serving(model, export_dir, fold_batch_norm=fold_batch_norm)
        ).signatures["serving_default"]

        def serve():
            for batch in batches:
                signature(images=tf.constant(batch))

        return serve

    with tempfile.TemporaryDirectory() as scratch:
        paths = {
            "model.predict (Keras, float32 input)": predict,
            "SavedModel serving_default (uint8)": serving(False, os.path.join(scratch, "plain")),
            "SavedModel, batch norms folded": serving(True, os.path.join(scratch, "folded")),
        }
        seconds = {name: [] for name in paths}
        for name, run in paths.items():
            run()  # tracing, first-call allocations
        for _ in range(args.repeats):
            for name, run in paths.items():
                started = time.perf_counter()
                run()
                seconds[name].append(time.perf_counter() - started)

    baseline = args.images / statistics.median(seconds[next(iter(paths))])
    print(
        f"{args.model}, {size}x{size}, batch {args.batch_size}, {args.images} images, median of "
        f"{args.repeats}; {cpu_name()}, {os.cpu_count()} CPUs, TensorFlow {tf.__version__}\n"
    )
    print("| path | images/s | x predict |\n|---|---|---|")
    for name, times in seconds.items():
        rate = args.images / statistics.median(times)
        print(f"| {name} | {rate:.1f} | {rate / baseline:.2f}x |")


if __name__ == "__main__":
    main()
