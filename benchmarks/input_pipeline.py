"""Images/s of the input pipeline against images/s of training, on a real folder.

    python benchmarks/input_pipeline.py ../shared/data/mirabest-fits-sample --center-crop 0.5
    python benchmarks/input_pipeline.py ../shared/data/galaxy-rings --center-crop 0.5

The pipeline is timed without its cache (every epoch decodes again, as the first epoch
of a large dataset does) over --passes passes of the training split, augmentation
included; training is timed as Keras `fit` steps of the small model on the same batches
(cached), after one untimed epoch. Decoding must not be the bottleneck: the pipeline's
images/s should exceed training's. Prints one Markdown table row.
"""

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from benchmarks.harness import cpu_name  # noqa: E402


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="a folder, HDF5 file or catalogue, as load_datasets takes")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--center-crop", type=float)
    parser.add_argument("--augment", default="dihedral")
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    args = parser.parse_args(argv)

    import keras

    from keras_astro import AstroTransformer
    from keras_astro.data import load_datasets
    from keras_astro.training import compile_for_training

    options = dict(
        image_size=args.image_size, batch_size=args.batch_size, augment=args.augment,
        center_crop=args.center_crop,
    )
    uncached = load_datasets(args.source, cache=False, **options)
    started = time.perf_counter()
    for _ in range(args.passes):
        for _ in uncached.train:
            pass
    pipeline = args.passes * uncached.num_train / (time.perf_counter() - started)

    data = load_datasets(args.source, **options)
    model = AstroTransformer.small(
        input_shape=data.image_shape, num_classes=data.num_classes, preprocessing=data.preprocessing
    )
    compile_for_training(model, epochs=args.epochs + 1, steps_per_epoch=-(-data.num_train // args.batch_size))
    model.fit(data.train, epochs=1, verbose=0)  # compilation and the cache's first pass
    started = time.perf_counter()
    model.fit(data.train, epochs=args.epochs, verbose=0)
    training = args.epochs * data.num_train / (time.perf_counter() - started)
    print(
        f"| {os.path.basename(os.path.normpath(args.source))} ({data.preprocessing}, "
        f"{data.num_train} train images) | {args.image_size}x{args.image_size}, "
        f"crop {args.center_crop}, batch {args.batch_size}, {args.augment} | {pipeline:.0f} | "
        f"{training:.0f} | {keras.backend.backend()} | {cpu_name()}, {os.cpu_count()} cores |"
    )


if __name__ == "__main__":
    main()
