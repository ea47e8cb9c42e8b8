"""`keras-astro train`'s run, scored on validation and test after every epoch.

Builds the data, model and recipe exactly as `keras-astro train` does (the same
`ExperimentConfig`, seed and validation split) and trains them with `model.fit`, but
scores `test/` after each epoch too, so one run shows which epoch the validation split
keeps and what every other epoch would have scored. For choosing defaults on validation
and seeing the test-set noise around them; `test/` never chooses anything here.

    python benchmarks/astro_epochs.py ../shared/data/frdeep-first --batch-size 16 --seed 0
    python benchmarks/astro_epochs.py ../shared/data/galaxy-rings --epochs 10

To choose between rules without `test/`, `--check-fraction 0.2` holds a stratified
fifth of `train/` out (a different one per seed) and scores it in test's place; `test/`
is then not read. At the end, each rule for which weights to keep is scored on one view
and on the average of the 8 dihedral views (what a model trained with `--augment
dihedral` returns): the epoch of lowest validation loss on one view (`train`'s rule), on
the 8 views averaged, and the last epoch; with `--ema`, also the same rules for the
weights' moving average (`--ema` of `train`; it does not change the raw weights' run).

    for s in 0 1 2; do python benchmarks/astro_epochs.py ../shared/data/frdeep-first \\
        --check-fraction 0.2 --ema --seed $s --results rules.jsonl; done

Each epoch is appended as one JSON line to --results, then one line of the rules'
scores; the last line printed is the kept epoch (lowest validation loss, as `train`
keeps it) and the last epoch.
"""

import argparse
import json
import math
import os
import tempfile
import time

import numpy as np


def check_split_folder(source, fraction, seed, tmp):
    """A folder of links: `source`'s train/ minus a stratified `fraction` as train/, that
    fraction as test/. `source`'s own test/ is left out."""
    rng = np.random.default_rng(seed)
    view = os.path.join(tmp, os.path.basename(os.path.normpath(source)))
    train = os.path.join(source, "train")
    for name in sorted(os.listdir(train)):
        files = sorted(os.listdir(os.path.join(train, name)))
        held = set(rng.permutation(len(files))[: max(1, round(fraction * len(files)))].tolist())
        for i, file in enumerate(files):
            folder = os.path.join(view, "test" if i in held else "train", name)
            os.makedirs(folder, exist_ok=True)
            os.symlink(os.path.abspath(os.path.join(train, name, file)), os.path.join(folder, file))
    return view


def loss_key(kind, views):
    """The row's key for the validation loss of `kind`'s weights on one view or 8."""
    return f"{'' if kind == 'raw' else kind + '_'}val_loss_{views}"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an image or FITS folder with train/ and test/")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=None, help="default: train's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--center-crop", type=float, default=0.5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--augment", default="dihedral")
    parser.add_argument("--dropout", type=float, default=0.0, help="train's --dropout")
    parser.add_argument("--clip-sigma", type=float, default=None, help="train's --clip-sigma")
    parser.add_argument("--learning-rate", type=float, default=None, help="default: train's")
    parser.add_argument("--check-fraction", type=float, default=None, metavar="F",
                        help="score a stratified F of train/ held out, instead of test/")
    parser.add_argument("--ema", action="store_true",
                        help="also score the weights' exponential moving average")
    parser.add_argument("--results", default="astro_epochs.jsonl")
    args = parser.parse_args(argv)

    import keras

    from keras_astro.training.evaluation import predict_views
    from keras_astro.training.experiment import ExperimentConfig, _build_model, _seeded_datasets
    from keras_astro.training.recipe import compile_for_training, peak_learning_rate

    tmp = tempfile.TemporaryDirectory()
    source = args.source
    if args.check_fraction is not None:
        source = check_split_folder(source, args.check_fraction, args.seed, tmp.name)
    config = ExperimentConfig(
        source, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        center_crop=args.center_crop, image_size=args.image_size, augment=args.augment,
        dropout=args.dropout, clip_sigma=args.clip_sigma, use_ema=args.ema,
        learning_rate=args.learning_rate,
    )  # the same construction as `keras-astro train`'s
    datasets = _seeded_datasets(config)
    # What a row and the summary say the run was trained with, beside train's defaults.
    settings = {
        "dropout": config.dropout, "clip_sigma": config.clip_sigma,
        "learning_rate": peak_learning_rate(config.learning_rate, datasets.batch_size),
    }
    model = _build_model(config, datasets)
    compile_for_training(
        model,
        epochs=config.epochs,
        steps_per_epoch=math.ceil(datasets.num_train / datasets.batch_size),
        batch_size=datasets.batch_size,
        **config.recipe.compile_keywords(),
    )

    def one_hot(dataset):
        return np.concatenate([y for _, y in dataset.as_numpy_iterator()])

    val_one_hot, test_labels = one_hot(datasets.validation), one_hot(datasets.test).argmax(-1)
    # The compiled loss, label smoothing included, on the probabilities of one view or 8.
    val_loss = keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing)
    kinds = ("raw", "ema") if args.ema else ("raw",)
    rows, weights = [], {kind: [] for kind in kinds}
    scored = "check" if args.check_fraction is not None else "test"
    started = time.perf_counter()

    class Record(keras.callbacks.Callback):
        """Keeps each epoch's weights and their validation loss on one view and on the 8
        views averaged: the weights that are in the model when it runs (the EMA ones
        after `SwapEMAWeights`)."""

        def __init__(self, kind):
            super().__init__()
            self.kind = kind

        def on_epoch_end(self, epoch, logs=None):
            weights[self.kind].append(self.model.get_weights())
            views = predict_views(self.model, datasets.validation, tta=True)
            losses = {
                loss_key(self.kind, name): float(val_loss(val_one_hot, probabilities))
                for name, probabilities in (("one_view", views[0]), ("8_views", views.mean(0)))
            }
            if self.kind == "raw":
                test = self.model.evaluate(datasets.test, verbose=0, return_dict=True)
                rows.append({
                    "source": args.source, "scored": scored, "seed": args.seed,
                    "epochs": args.epochs, "batch_size": datasets.batch_size,
                    **settings,
                    "backend": keras.backend.backend(), "epoch": epoch + 1,
                    "loss": logs["loss"], "val_loss": logs["val_loss"],
                    "val_accuracy": logs["val_accuracy"], "test_accuracy": test["accuracy"],
                    "seconds": time.perf_counter() - started,
                })
            rows[-1].update(losses)

    class Write(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            print(json.dumps(rows[-1]), flush=True)
            with open(args.results, "a") as file:
                file.write(json.dumps(rows[-1]) + "\n")

    callbacks = [Record("raw")]
    if args.ema:
        # fit's validation (the logs' val_loss) then scores the EMA weights, as `train --ema` does.
        callbacks = [callbacks[0], keras.callbacks.SwapEMAWeights(swap_on_epoch=True), Record("ema")]
    model.fit(
        datasets.train, validation_data=datasets.validation, epochs=config.epochs,
        callbacks=[*callbacks, Write()], verbose=0, shuffle=False,  # the pipeline shuffles
    )

    def rule_scores(kind, epoch):
        model.set_weights(weights[kind][epoch])
        views = predict_views(model, datasets.test, tta=True)
        right = [views[0].argmax(-1) == test_labels, views.mean(axis=0).argmax(-1) == test_labels]
        return {"epoch": epoch + 1, "one_view": float(right[0].mean()),
                "views_8": float(right[1].mean())}

    last = len(rows) - 1
    rules = {}
    for kind in kinds:
        one = min(range(len(rows)), key=lambda i: rows[i][loss_key(kind, "one_view")])
        eight = min(range(len(rows)), key=lambda i: rows[i][loss_key(kind, "8_views")])
        for rule, epoch in (("lowest_val_loss", one), ("lowest_val_loss_8_views", eight), ("last", last)):
            rules[f"{kind}_{rule}"] = rule_scores(kind, epoch)
    summary = {"source": args.source, "scored": scored, "seed": args.seed, **settings, "rules": rules}
    print(json.dumps(summary))
    with open(args.results, "a") as file:
        file.write(json.dumps(summary) + "\n")
    kept = min(rows, key=lambda row: row["val_loss"])
    print(
        f"kept epoch {kept['epoch']} (validation loss {kept['val_loss']:.3f}): {scored} accuracy "
        f"{kept['test_accuracy']:.1%}; last epoch: {rows[-1]['test_accuracy']:.1%} "
        f"({datasets.num_test} {scored} images, batch {datasets.batch_size}, seed {args.seed})"
    )


if __name__ == "__main__":
    main()
