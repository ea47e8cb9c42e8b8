"""Wall time of `fit` and `predict` on keras-astro's pipelines, tf.data autotuning off
(as the package builds them) against on.

    python benchmarks/iterator_wait.py --repeats 3

With autotuning on, deleting a `tf.data` iterator waits for the autotuner's next
wake-up, and its sleeps double from 10 ms: a pass over the data then ends at the next of
0.01, 0.03, ..., 10.2, 20.5, 41 s after it started, often almost doubling a pass's time.
`fit` deletes one iterator per epoch and one per validation pass, `predict` one per call.
The wait is a race, so the two settings alternate `--repeats` times in one process
(after an untimed warm-up) and each reports its mean, fastest and slowest run. Prints
one Markdown table.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from benchmarks.harness import cpu_name  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, default=1024, help="training images")
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=4)
    args = parser.parse_args(argv)

    import keras
    import numpy as np
    import tensorflow as tf

    from keras_astro import AstroTransformer, data
    from keras_astro.training import compile_for_training

    rng = np.random.default_rng(0)
    shape = (args.image_size, args.image_size, 3)
    x = rng.uniform(0, 255, (args.num_images, *shape)).astype("float32")
    y = np.arange(args.num_images) % 10
    datasets = data.from_arrays(x, y, x, y, batch_size=64, validation_fraction=0.2)
    model = AstroTransformer.small(num_classes=10, input_shape=shape)
    steps = -(-datasets.num_train // datasets.batch_size)
    compile_for_training(model, epochs=args.epochs * (2 * args.repeats + 1), steps_per_epoch=steps)

    def autotuned(dataset, enabled):
        options = tf.data.Options()
        options.autotune.enabled = enabled
        return dataset.with_options(options)

    def run(enabled):
        train, validation, test = (
            autotuned(split, enabled)
            for split in (datasets.train, datasets.validation, datasets.test)
        )
        started = time.perf_counter()
        model.fit(train, validation_data=validation, epochs=args.epochs, verbose=0)
        fitted = time.perf_counter()
        model.predict(test.map(lambda images, _: images), verbose=0)
        return fitted - started, time.perf_counter() - fitted

    def summary(seconds):
        return f"{np.mean(seconds):.1f} ({min(seconds):.1f}-{max(seconds):.1f})"

    run(False)
    times = {True: [], False: []}
    for _ in range(args.repeats):
        for enabled in (True, False):
            times[enabled].append(run(enabled))
    print(f"{cpu_name()}, {os.cpu_count()} cores, {keras.backend.backend()}: small, "
          f"{datasets.num_train} train / {datasets.num_validation} validation images "
          f"{args.image_size}x{args.image_size}, batch {datasets.batch_size}, {args.epochs} epochs; predict "
          f"{datasets.num_test} images; {args.repeats} runs each: mean (fastest-slowest) in s\n")
    print("| call | autotuning on | autotuning off (keras-astro) | on / off, mean |")
    print("|---|---|---|---|")
    for column, call in enumerate((f"fit, {args.epochs} epochs with validation", "predict")):
        on = [run_times[column] for run_times in times[True]]
        off = [run_times[column] for run_times in times[False]]
        print(f"| {call} | {summary(on)} | {summary(off)} | {np.mean(on) / np.mean(off):.2f} |")


if __name__ == "__main__":
    main()
