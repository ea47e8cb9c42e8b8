"""Why a small astronomy set does or does not learn: one run, every epoch on three splits.

Trains AstroTransformer `small` with the `train` recipe on a shared data folder's train/
minus a stratified 20% validation split (fixed, whatever the seed), and prints after each
epoch: the training loss and accuracy, validation accuracy in inference mode (batch norm's
moving statistics) and with batch statistics (`training=True`, the first 128 validation
images), and test accuracy. A gap between the two validation columns is batch norm's
moving statistics lagging the weights; a training loss that stays at chance is the recipe.

    python benchmarks/astro_diagnosis.py --data frdeep-first --epochs 10 --bn-momentum 0.9
    python benchmarks/astro_diagnosis.py --data galaxy-rings --normalization image

Each run is appended as one JSON line to --results.
"""

import argparse
import json
import os
import time

import numpy as np

DATA_ROOT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..", "shared", "data")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default="frdeep-first", help="a folder of ../shared/data")
    parser.add_argument("--center-crop", type=float, default=0.5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--learning-rate", type=float, default=None)
    parser.add_argument("--normalization", choices=("image", "dataset"), default=None)
    parser.add_argument("--bn-momentum", type=float, default=None, help="default: the model's")
    parser.add_argument("--augment", default="dihedral")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--results", default="astro_diagnosis.jsonl")
    args = parser.parse_args(argv)

    import keras
    from sklearn.model_selection import train_test_split

    import keras_astro.layers.stage_block as stage_block
    import keras_astro.models.astro_transformer as astro_transformer
    from keras_astro.data import from_arrays, load_datasets
    from keras_astro.training import recipe

    if args.bn_momentum is not None:  # read when the layers are built
        stage_block.BN_MOMENTUM = astro_transformer.BN_MOMENTUM = args.bn_momentum
    data = load_datasets(
        os.path.join(DATA_ROOT, args.data), image_size=args.image_size, batch_size=100_000,
        center_crop=args.center_crop, cache=False,
    )
    (x_train, y_train), (x_test, y_test) = (
        (images, labels.argmax(-1)) for images, labels in (
            next(data.train.as_numpy_iterator()), next(data.test.as_numpy_iterator()))
    )
    x_fit, x_val, y_fit, y_val = train_test_split(
        x_train, y_train, test_size=0.2, stratify=y_train, random_state=0
    )
    keras.utils.set_random_seed(args.seed)
    datasets = from_arrays(
        x_fit, y_fit, x_val, y_val, class_names=data.class_names, batch_size=args.batch_size,
        augment=args.augment, seed=args.seed, preprocessing=data.preprocessing,
    )
    model = astro_transformer.AstroTransformer.small(
        input_shape=x_fit.shape[1:], num_classes=data.num_classes, preprocessing=data.preprocessing,
        normalization=args.normalization,
    )
    model.adapt_preprocessing(datasets.train)
    recipe.compile_for_training(
        model, epochs=args.epochs, steps_per_epoch=int(np.ceil(len(x_fit) / args.batch_size)),
        batch_size=args.batch_size, learning_rate=args.learning_rate,
    )

    def accuracy(x, y):
        return float(np.mean(model.predict(x, batch_size=128, verbose=0).argmax(-1) == y))

    rows = []
    started = time.time()

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            batch_statistics = keras.ops.convert_to_numpy(model(x_val[:128], training=True))
            rows.append(dict(
                epoch=epoch + 1, loss=logs["loss"], accuracy=logs["accuracy"],
                val=accuracy(x_val, y_val),
                val_batch_statistics=float(np.mean(batch_statistics.argmax(-1) == y_val[:128])),
                test=accuracy(x_test, y_test), seconds=time.time() - started,
            ))
            print(json.dumps(rows[-1]), flush=True)

    model.fit(datasets.train, epochs=args.epochs, verbose=0, callbacks=[Record()])
    with open(args.results, "a") as f:
        f.write(json.dumps({**vars(args), "backend": keras.backend.backend(), "rows": rows}) + "\n")


if __name__ == "__main__":
    main()
