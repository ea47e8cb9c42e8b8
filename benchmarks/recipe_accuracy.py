"""Accuracy of the training recipe against the plain PyTorch loop, on real data (issue 12).

For each data set, budget (epochs), seed and setting, trains AstroTransformer `small`
either with keras-astro's recipe (the `train` command's defaults, with the setting's
overrides) or with `keras_astro.models.reference.train_reference` (AdamW 2e-3 one-cycle,
horizontal flips, label smoothing 0.1), on the same images: the data set's train/
folder minus a stratified validation split (carved by keras-astro's own hold-out, the
same for every seed). keras-astro picks its best epoch on that validation split, the
reference keeps its last epoch; both are then scored on the validation split (what the
sweep tunes on) and on the data set's test/ folder (what is reported).

Each result is appended to a JSON-lines file, so an interrupted sweep resumes; the
table is printed from that file. keras-astro runs also record every epoch's accuracy on
both halves of the validation split and on test, from which a second table replays the
rules for which epoch `fit` keeps (`rule_table`).

    python benchmarks/recipe_accuracy.py --data cifar10-subset --epochs 4 --seeds 0 \\
        --settings reference default lr=2e-3 --results benchmarks/results/recipe_accuracy.jsonl
    python benchmarks/recipe_accuracy.py --results benchmarks/results/recipe_accuracy.jsonl --table

A setting is `reference`, `default`, or comma-separated `ExperimentConfig` overrides
(`learning_rate=2e-3,augment=none`; `attention_scale=1.0` is the model's). `lr` is short
for `learning_rate`, `wf` for `warmup_fraction`, `ema` for `use_ema`.
"""

import argparse
import json
import math
import os
import statistics
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DATA_ROOT = os.path.join(os.path.dirname(REPO), "shared", "data")
# Per data set: the validation share of train and the central crop both loops get (the
# ring galaxies sit small in their 424x424 cutouts).
DATA = {
    "cifar10-subset": dict(validation_fraction=0.1, center_crop=None),
    "galaxy-rings": dict(validation_fraction=0.2, center_crop=0.5),
    "mirabest-fits-sample": dict(validation_fraction=0.2, center_crop=None),
}
SHORT = {"lr": "learning_rate", "wf": "warmup_fraction", "ema": "use_ema", "wd": "weight_decay",
         "ls": "label_smoothing"}


def parse_setting(text):
    if text in ("reference", "default"):
        return {}
    overrides = {}
    for item in text.split(","):
        key, value = item.split("=")
        key = SHORT.get(key, key)
        if value in ("True", "False", "true", "false"):
            value = value.lower() == "true"
        elif value == "None":
            value = None
        else:
            try:
                value = float(value)
            except ValueError:
                pass
        overrides[key] = value
    return overrides


def train_view(root, tmp):
    """A folder of symlinks to `root`'s train classes only: keras-astro then holds out
    a stratified validation split of it."""
    view = os.path.join(tmp, os.path.basename(root))
    if not os.path.isdir(view):
        os.makedirs(os.path.join(view, "train"))
        for name in sorted(os.listdir(os.path.join(root, "train"))):
            os.symlink(os.path.join(root, "train", name), os.path.join(view, "train", name))
    return view


def load_arrays(data, args, tmp):
    """(x_train, y_train), (x_val, y_val), (x_test, y_test), preprocessing, class names: the
    images resized (and cropped) as keras-astro's pipeline does, raw; cached in the process."""
    from keras_astro.data import load_datasets

    key = (data, args.image_size)
    if key not in _ARRAYS:
        root = os.path.join(args.data_root, data)
        options = dict(
            image_size=args.image_size, batch_size=256, augment="none", seed=0,
            center_crop=DATA[data]["center_crop"],
        )
        view = load_datasets(
            train_view(root, tmp), validation_fraction=DATA[data]["validation_fraction"],
            **options,
        )
        test = load_datasets(root, **options)
        assert test.class_names == view.class_names

        def arrays(dataset):
            images, labels = zip(*dataset.as_numpy_iterator())
            return np.concatenate(images), np.concatenate(labels).argmax(-1)

        train = arrays(view.train)
        order = np.argsort(train[1], kind="stable")  # a fixed order, whatever the shuffle
        _ARRAYS[key] = (
            (train[0][order], train[1][order]), arrays(view.test), arrays(test.test),
            view.preprocessing, view.class_names,
        )
    return _ARRAYS[key]


_ARRAYS = {}


def run_keras(data, epochs, seed, overrides, args, tmp):
    """keras-astro's recipe as `run_experiment` runs it: the same model, compile and
    resumable fit (best epoch on the validation split), on the cached arrays."""
    import keras

    from keras_astro.data import from_arrays
    from keras_astro.models import AstroTransformer
    from keras_astro.models.saving import load_model
    from keras_astro.training.evaluation import evaluate
    from keras_astro.training.experiment import ExperimentConfig
    from keras_astro.training.recipe import compile_for_training
    from keras_astro.training.resumable import fit

    (x_train, y_train), (x_val, y_val), (x_test, y_test), preprocessing, names = load_arrays(
        data, args, tmp
    )
    overrides = dict(overrides)
    attention_scale = overrides.pop("attention_scale", None)
    config = ExperimentConfig(
        source=data, epochs=epochs, batch_size=args.batch_size, image_size=args.image_size,
        seed=seed, **overrides,
    )
    config.check()
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    pipeline = dict(
        class_names=names, batch_size=config.batch_size, seed=seed, preprocessing=preprocessing
    )
    datasets = from_arrays(x_train, y_train, x_val, y_val, augment=config.augment, **pipeline)
    test = from_arrays(x_train, y_train, x_test, y_test, **pipeline).test
    model = AstroTransformer.from_name(
        config.model, input_shape=datasets.image_shape, num_classes=datasets.num_classes,
        class_names=datasets.class_names, preprocessing=datasets.preprocessing,
        dropout=config.dropout,
        **({} if attention_scale is None else {"attention_scale": attention_scale}),
    )
    model.adapt_preprocessing(datasets.train)
    compile_for_training(
        model, epochs=epochs, steps_per_epoch=math.ceil(datasets.num_train / config.batch_size),
        **config.recipe.compile_keywords(),
    )
    output_dir = tempfile.mkdtemp(dir=tmp)
    per_epoch = epoch_scores(datasets.test, test)
    fit(model, datasets, epochs=epochs, output_dir=output_dir, verbose=0, callbacks=[per_epoch])
    best = load_model(os.path.join(output_dir, "model.keras"))
    # The last epoch's scores as well (the model as fit leaves it): on a small or
    # shifted validation split the best epoch by validation accuracy can be a worse one.
    return dict(
        val=evaluate(best, datasets.test)["accuracy"], test=evaluate(best, test)["accuracy"],
        val_last=per_epoch.scores["val_epochs"][-1],
        test_last=per_epoch.scores["test_epochs"][-1],
        **per_epoch.scores,
    )


def epoch_scores(val_ds, test_ds):
    """A callback that records each epoch's accuracy and cross-entropy (without label
    smoothing) on the validation split and its two halves (stratified), and its test
    accuracy, in its `scores`: enough to replay any rule for which epoch to keep
    (`rule_table`)."""
    import keras

    from keras_astro.training.evaluation import predict_probabilities

    def labels(dataset):
        return np.concatenate([y for _, y in dataset.as_numpy_iterator()]).argmax(-1)

    val_labels, test_labels = labels(val_ds), labels(test_ds)
    in_b = np.zeros(len(val_labels), bool)
    for label in np.unique(val_labels):
        in_b[np.flatnonzero(val_labels == label)[1::2]] = True

    class EpochScores(keras.callbacks.Callback):
        scores = {
            f"{key}_epochs": []
            for key in ("val", "val_a", "val_b", "loss", "loss_a", "loss_b", "test")
        }

        def on_epoch_end(self, epoch, logs=None):
            val = predict_probabilities(self.model, val_ds)
            right = val.argmax(-1) == val_labels
            loss = -np.log(np.maximum(val[np.arange(len(val)), val_labels], 1e-12))
            for part, where in (("", slice(None)), ("_a", ~in_b), ("_b", in_b)):
                self.scores[f"val{part}_epochs"].append(float(right[where].mean()))
                self.scores[f"loss{part}_epochs"].append(float(loss[where].mean()))
            test = predict_probabilities(self.model, test_ds).argmax(-1)
            self.scores["test_epochs"].append(float(np.mean(test == test_labels)))

    return EpochScores()


def run_reference(data, epochs, seed, args, tmp):
    import keras
    import torch

    from keras_astro import reference
    from keras_astro.data import from_arrays
    from keras_astro.models import AstroTransformer

    torch.set_flush_denormal(True)  # the unscaled attention underflows (BENCHMARKS.md)
    (x_train, y_train), (x_val, y_val), (x_test, y_test), preprocessing, names = load_arrays(
        data, args, tmp
    )
    # The same normalisation as keras-astro's model: [-1, 1] pixels, or its flux
    # stretch and standardisation adapted to the training images.
    train = from_arrays(
        x_train, y_train, x_val, y_val, preprocessing=preprocessing, class_names=names
    ).train
    model = AstroTransformer.small(
        input_shape=x_train.shape[1:], num_classes=len(names), preprocessing=preprocessing
    )
    model.adapt_preprocessing(train)
    layer = model.get_layer("rescaling" if preprocessing == "pixels" else "flux_normalization")

    def normalise(images):
        x = keras.ops.convert_to_numpy(layer(images)).astype("float32")
        return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x

    net = reference.train_reference(
        normalise(x_train), y_train, num_classes=len(names), epochs=epochs,
        batch_size=args.batch_size, seed=seed,
    )
    val = float(np.mean(reference.predict_reference(net, normalise(x_val)) == y_val))
    return dict(
        val=val, test=float(np.mean(reference.predict_reference(net, normalise(x_test)) == y_test))
    )


def read_results(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def table(rows):
    groups = {}
    for row in rows:
        key = (row["data"], row["image_size"], row.get("batch_size", 64), row["epochs"],
               row["setting"])
        groups.setdefault(key, []).append(row)

    def stat(values):
        mean = statistics.mean(values)
        spread = (max(values) - min(values)) / 2
        return f"{mean:.1%}" + (f" ± {spread:.1%}" if len(values) > 1 else "")

    lines = [
        "| data | size | batch | epochs | setting | seeds | val accuracy | test accuracy | "
        "test - reference (paired by seed) | test, last epoch | s/run |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups, key=lambda k: (*k[:4], k[4] != "reference", k[4])):
        runs = groups[key]
        ref = groups.get((*key[:4], "reference"))
        diff = ""
        if ref and key[4] != "reference":
            # Paired by seed where both ran.
            seeds = {r["seed"]: r["test"] for r in ref}
            pairs = [r["test"] - seeds[r["seed"]] for r in runs if r["seed"] in seeds]
            if pairs:
                diff = f"{statistics.mean(pairs) * 100:+.1f} pt"
        # keras-astro keeps its best epoch by validation accuracy; rows measured since
        # record the last epoch's test accuracy too (the reference keeps its last).
        last = [r["test_last"] for r in runs if "test_last" in r]
        last = (stat(last) + ("" if len(last) == len(runs) else f" ({len(last)} seeds)")
                if last else "")
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {len(runs)} | "
            f"{stat([r['val'] for r in runs])} | {stat([r['test'] for r in runs])} | {diff} | "
            f"{last} | {statistics.mean(r['seconds'] for r in runs):.0f} |"
        )
    return "\n".join(lines)


# Rules for which epoch `fit` keeps, replayed on a run's per-epoch validation scores.
EPOCH_RULES = {
    "best accuracy, first of ties": lambda acc, loss: int(np.argmax(acc)),
    "best accuracy, last of ties": lambda acc, loss: len(acc) - 1 - int(np.argmax(acc[::-1])),
    "lowest loss": lambda acc, loss: int(np.argmin(loss)),
    "last epoch": lambda acc, loss: len(acc) - 1,
}


def rule_table(rows):
    """Per data set, budget and setting, each rule's accuracy: on validation, choosing on
    one half of the split and scoring on the other (both ways, so the rule is judged on
    images it did not choose with), and on test, choosing on the whole split."""
    groups = {}
    for row in rows:
        if "val_a_epochs" in row:
            key = (row["data"], row["image_size"], row["batch_size"], row["epochs"],
                   row["setting"])
            groups.setdefault(key, []).append(row)
    lines = [
        "| data | size | batch | epochs | setting | seeds | rule | val (cross-half) | test | "
        "epoch kept |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for key in sorted(groups):
        runs = groups[key]
        for name, rule in EPOCH_RULES.items():
            crossed, tested, kept = [], [], []
            for r in runs:
                acc = {p: np.array(r[f"val{p}_epochs"]) for p in ("", "_a", "_b")}
                loss = {p: np.array(r[f"loss{p}_epochs"]) for p in ("", "_a", "_b")}
                crossed.append((acc["_b"][rule(acc["_a"], loss["_a"])]
                                + acc["_a"][rule(acc["_b"], loss["_b"])]) / 2)
                epoch = rule(acc[""], loss[""])
                tested.append(r["test_epochs"][epoch])
                kept.append(str(epoch + 1))
            lines.append(
                f"| {key[0]} | {key[1]} | {key[2]} | {key[3]} | {key[4]} | {len(runs)} | {name} | "
                f"{statistics.mean(crossed):.1%} | {statistics.mean(tested):.1%} | "
                f"{' '.join(kept)} |"
            )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", nargs="+", choices=tuple(DATA), default=list(DATA))
    parser.add_argument("--epochs", nargs="+", type=int, default=[4, 20])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--settings", nargs="+", default=["reference", "default"])
    parser.add_argument("--image-size", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--data-root", default=DATA_ROOT)
    parser.add_argument("--results", default=os.path.join(REPO, "benchmarks", "results",
                                                          "recipe_accuracy.jsonl"))
    parser.add_argument("--table", action="store_true", help="print the tables and exit")
    args = parser.parse_args(argv)
    if not args.table:
        done = {
            (r["data"], r["image_size"], r.get("batch_size", 64), r["epochs"], r["seed"],
             r["setting"])
            for r in read_results(args.results)
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.results)), exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            for data in args.data:
                for epochs in args.epochs:
                    for setting in args.settings:
                        for seed in args.seeds:
                            key = (data, args.image_size, args.batch_size, epochs, seed, setting)
                            if key in done:
                                continue
                            started = time.perf_counter()
                            if setting == "reference":
                                scores = run_reference(data, epochs, seed, args, tmp)
                            else:
                                scores = run_keras(
                                    data, epochs, seed, parse_setting(setting), args, tmp
                                )
                            row = dict(
                                data=data, image_size=args.image_size,
                                batch_size=args.batch_size, epochs=epochs, seed=seed,
                                setting=setting, **scores,
                                seconds=time.perf_counter() - started,
                                backend=os.environ.get("KERAS_BACKEND", "tensorflow"),
                            )
                            print(json.dumps(row), flush=True)
                            with open(args.results, "a") as f:
                                f.write(json.dumps(row) + "\n")
    rows = read_results(args.results)
    print(table(rows))
    if any("val_a_epochs" in row for row in rows):
        print("\nWhich epoch to keep (runs that recorded every epoch):\n")
        print(rule_table(rows))


if __name__ == "__main__":
    sys.exit(main())
