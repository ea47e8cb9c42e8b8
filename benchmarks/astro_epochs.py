"""`keras-astro train`'s run, scored on validation and test after every epoch.

Builds the data, model and recipe exactly as `keras-astro train` does (the same
`ExperimentConfig`, seed and validation split) and trains them with `model.fit`, but
scores `test/` after each epoch too, so one run shows which epoch the validation split
keeps and what every other epoch would have scored. For choosing defaults on validation
and seeing the test-set noise around them; `test/` never chooses anything here.

    python benchmarks/astro_epochs.py ../shared/data/frdeep-first --batch-size 16 --seed 0
    python benchmarks/astro_epochs.py ../shared/data/galaxy-rings --epochs 10

Each epoch is appended as one JSON line to --results; the last line printed is the kept
epoch (lowest validation loss, as `train` keeps it) and the last epoch.
"""

import argparse
import json
import math
import time


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="an image or FITS folder with train/ and test/")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=None, help="default: train's")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--center-crop", type=float, default=0.5)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--augment", default="dihedral")
    parser.add_argument("--results", default="astro_epochs.jsonl")
    args = parser.parse_args(argv)

    import keras

    from keras_astro.training.experiment import ExperimentConfig, _build_model, _seeded_datasets
    from keras_astro.training.recipe import compile_for_training

    config = ExperimentConfig(
        args.source, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
        center_crop=args.center_crop, image_size=args.image_size, augment=args.augment,
    )  # the same construction as `keras-astro train`'s
    datasets = _seeded_datasets(config)
    model = _build_model(config, datasets)
    compile_for_training(
        model,
        epochs=config.epochs,
        steps_per_epoch=math.ceil(datasets.num_train / datasets.batch_size),
        **config.recipe.compile_keywords(),
    )
    rows = []
    started = time.perf_counter()

    class ScoreTest(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            test = self.model.evaluate(datasets.test, verbose=0, return_dict=True)
            rows.append({
                "source": args.source, "seed": args.seed, "epochs": args.epochs,
                "batch_size": datasets.batch_size, "backend": keras.backend.backend(),
                "epoch": epoch + 1, "loss": logs["loss"], "val_loss": logs["val_loss"],
                "val_accuracy": logs["val_accuracy"], "test_accuracy": test["accuracy"],
                "seconds": time.perf_counter() - started,
            })
            print(json.dumps(rows[-1]), flush=True)
            with open(args.results, "a") as file:
                file.write(json.dumps(rows[-1]) + "\n")

    model.fit(
        datasets.train, validation_data=datasets.validation, epochs=config.epochs,
        callbacks=[ScoreTest()], verbose=0,
    )
    kept = min(rows, key=lambda row: row["val_loss"])
    print(
        f"kept epoch {kept['epoch']} (validation loss {kept['val_loss']:.3f}): test accuracy "
        f"{kept['test_accuracy']:.1%}; last epoch: {rows[-1]['test_accuracy']:.1%} "
        f"({datasets.num_test} test images, batch {datasets.batch_size}, seed {args.seed})"
    )


if __name__ == "__main__":
    main()
