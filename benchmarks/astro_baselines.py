"""The baselines keras-astro must beat on astronomy data, on the very pixels it trains on.

For a data set folder (DIR/train/<class>, DIR/test/<class>), loads train and test with
keras-astro's own loader (same centre crop and resize), then trains:

- a LeNet (two 5x5 convolutions with max pooling, dense 120 and 84: about 60k
  parameters at 32x32x1) whose first layer is keras-astro's `ImageNormalization` (each
  image by its own median and noise, arcsinh, standardized: the astronomers' per-image
  normalisation), fed by keras-astro's pipeline with the same augmentation, Adam 1e-3,
  batch 64, its last epoch kept; scored on each test image as given and on the average
  of its 8 rotations and reflections (as `keras-astro train` saves a model trained with
  dihedral augmentation);
- a random forest (scikit-learn, 500 trees) on the flattened images normalised the same
  way with pixels below 3 sigma clipped to the background (the radio convention).

and prints, per model and seed, test accuracy and balanced accuracy; with `--runs`, the
`keras-astro train` run folders given are added to the table: their `metrics.json`
(the epoch `train` kept) and their last epoch (history.csv's `val_accuracy`, the
evaluation split: test/ when the folder has one).

    python benchmarks/astro_baselines.py ../shared/data/frdeep-first --epochs 10 30 \\
        --seeds 0 1 2 --center-crop 0.5 --runs /tmp/runs/fr30_s*
"""

import argparse
import csv
import glob
import json
import os
import statistics

import numpy as np

AUGMENT = "dihedral"
BATCH_SIZE = 64
TREES = 500
CLIP_SIGMA = 3.0


def load_arrays(data_dir, image_size, center_crop):
    """(x_train, y_train, x_test, y_test, class_names, preprocessing): raw images as
    keras-astro reads them."""
    from keras_astro.data import load_datasets

    datasets = load_datasets(
        data_dir, image_size=image_size, batch_size=100_000, center_crop=center_crop, cache=False
    )

    def arrays(dataset):
        images, labels = zip(*dataset.as_numpy_iterator())
        return np.concatenate(images), np.concatenate(labels).argmax(-1)

    return (
        *arrays(datasets.train), *arrays(datasets.test), datasets.class_names,
        datasets.preprocessing,
    )


def lenet(input_shape, num_classes):
    import keras

    from keras_astro.layers.preprocessing import ImageNormalization

    return keras.Sequential(
        [
            keras.Input(input_shape),
            ImageNormalization(),
            keras.layers.Conv2D(6, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Conv2D(16, 5, activation="relu"),
            keras.layers.MaxPooling2D(),
            keras.layers.Flatten(),
            keras.layers.Dense(120, activation="relu"),
            keras.layers.Dense(84, activation="relu"),
            keras.layers.Dense(num_classes, activation="softmax"),
        ],
        name="lenet",
    )


def scores(predicted, labels):
    recalls = [np.mean(predicted[labels == c] == c) for c in np.unique(labels)]
    return float(np.mean(predicted == labels)), float(np.mean(recalls))


def train_lenet(arrays, epochs, seed):
    import keras

    from keras_astro.data import from_arrays
    from keras_astro.layers.symmetry import dihedral_views

    x_train, y_train, x_test, y_test, class_names, preprocessing = arrays
    keras.utils.set_random_seed(seed)
    # "flux" keeps the values as they are (pixels would be checked to be 0..255 only).
    datasets = from_arrays(
        x_train, y_train, x_test, y_test, class_names=class_names, batch_size=BATCH_SIZE,
        augment=AUGMENT, seed=seed, preprocessing="flux",
    )
    model = lenet(x_train.shape[1:], len(class_names))
    model.compile(keras.optimizers.Adam(1e-3), "categorical_crossentropy", metrics=["accuracy"])
    for epoch in range(epochs):
        datasets.start_epoch(epoch)
        model.fit(datasets.train, epochs=1, verbose=0)
    views = keras.ops.convert_to_numpy(dihedral_views(x_test))
    probabilities = model.predict(views, batch_size=256, verbose=0).reshape(8, len(x_test), -1)
    one_view, averaged = (p.argmax(-1) for p in (probabilities[0], probabilities.mean(0)))
    return scores(one_view, y_test), scores(averaged, y_test), model.count_params()


def train_forest(arrays, seed):
    import keras
    from sklearn.ensemble import RandomForestClassifier

    from keras_astro.layers.preprocessing import ImageNormalization

    x_train, y_train, x_test, y_test, _, _ = arrays
    normalize = ImageNormalization(clip_sigma=CLIP_SIGMA)

    def features(x):
        return keras.ops.convert_to_numpy(normalize(x)).reshape(len(x), -1)

    forest = RandomForestClassifier(n_estimators=TREES, random_state=seed, n_jobs=-1)
    forest.fit(features(x_train), y_train)
    return scores(forest.predict(features(x_test)), y_test)


def keras_astro_rows(run_dirs):
    """Rows for finished `keras-astro train` run folders, grouped by their epochs."""
    rows = []
    for run_dir in run_dirs:
        with open(os.path.join(run_dir, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(run_dir, "history.csv")) as f:
            last = list(csv.DictReader(f))[-1]
        with open(os.path.join(run_dir, "config.json")) as f:
            seed = json.load(f)["seed"]
        # Runs with a validation split chose their epoch on it; older ones chose it on
        # test, whose last-epoch accuracy history.csv then holds as val_accuracy.
        chosen_on_validation = metrics.get("num_validation", 0) > 0
        kept = "lowest validation loss" if chosen_on_validation else f"kept epoch {metrics['best_epoch']}"
        views = metrics.get("test_time_augmentation")
        rows.append(
            _run_row(
                metrics, seed, f"{kept}, the 8 views averaged" if views else kept,
                metrics["test_accuracy"], metrics["test_balanced_accuracy"],
            )
        )
        if "test_accuracy_one_view" in metrics:
            rows.append(
                _run_row(
                    metrics, seed, f"{kept}, one view", metrics["test_accuracy_one_view"],
                    metrics["test_balanced_accuracy_one_view"],
                )
            )
        elif "test_accuracy_tta" in metrics:
            rows.append(
                _run_row(
                    metrics, seed, f"{kept}, 8-view TTA", metrics["test_accuracy_tta"],
                    metrics["test_balanced_accuracy_tta"],
                )
            )
        if not chosen_on_validation:
            rows.append(_run_row(metrics, seed, "last epoch", float(last["val_accuracy"])))
    return rows


def _run_row(metrics, seed, label, accuracy, balanced=None):
    return dict(
        model=f"keras-astro {metrics['model']} ({label})", epochs=metrics["epochs"], seed=seed,
        accuracy=accuracy, balanced=balanced,
    )


def table(rows):
    groups = {}
    for row in rows:
        groups.setdefault((row["model"], row["epochs"]), []).append(row)
    lines = [
        "| model | epochs | seeds | test accuracy, mean (each seed) | balanced accuracy, mean |",
        "| --- | --- | --- | --- | --- |",
    ]
    for (model, epochs), group in sorted(groups.items(), key=lambda item: (str(item[0][1]), item[0][0])):
        accuracies = [row["accuracy"] for row in group]
        balanced = [row["balanced"] for row in group if row["balanced"] is not None]
        each = ", ".join(f"{a:.1%}" for a in accuracies)
        lines.append(
            f"| {model} | {epochs} | {','.join(str(row['seed']) for row in group)} | "
            f"{statistics.mean(accuracies):.1%} ({each}) | "
            f"{f'{statistics.mean(balanced):.1%}' if balanced else '-'} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("data_dir")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--center-crop", type=float, default=None)
    parser.add_argument("--epochs", type=int, nargs="+", default=[10, 30])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--runs", nargs="*", default=[], help="keras-astro train run folders")
    args = parser.parse_args(argv)

    import tensorflow as tf

    # Without it a seed's LeNet row changed between invocations (multithreaded kernels).
    tf.config.experimental.enable_op_determinism()
    arrays = load_arrays(args.data_dir, args.image_size, args.center_crop)
    print(
        f"{args.data_dir}: {len(arrays[0])} train / {len(arrays[2])} test images of "
        f"{arrays[0].shape[1:]} ({arrays[5]}), classes {arrays[4]}", flush=True
    )
    rows = []
    for seed in args.seeds:
        for epochs in args.epochs:
            one_view, averaged, parameters = train_lenet(arrays, epochs, seed)
            for label, (accuracy, balanced) in (("", one_view), (", the 8 views averaged", averaged)):
                rows.append(dict(model=f"LeNet ({parameters:,} parameters{label})", epochs=epochs,
                                 seed=seed, accuracy=accuracy, balanced=balanced))
                print(json.dumps(rows[-1]), flush=True)
        accuracy, balanced = train_forest(arrays, seed)
        rows.append(dict(model=f"random forest ({TREES} trees)", epochs="-", seed=seed,
                         accuracy=accuracy, balanced=balanced))
        print(json.dumps(rows[-1]), flush=True)
    run_dirs = sorted({path for pattern in args.runs for path in glob.glob(pattern)})
    rows += keras_astro_rows(run_dirs)
    print(table(rows))


if __name__ == "__main__":
    main()
