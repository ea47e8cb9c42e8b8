"""Classify radio galaxies from FITS cutouts: train, evaluate with TTA, export for serving.

    python examples/radio_galaxies_fits.py --data-dir DIR

DIR holds DIR/train/<class>/*.fits and DIR/test/<class>/*.fits: FIRST survey cutouts from
MiraBest or FR-DEEP (float32 Jy/beam, NaN blanks allowed, FRI vs FRII; docs/data.md says
where to get them). The model reads raw flux: inside it, each cutout is scaled by its own
background and noise (median and MAD of its finite pixels, so blanks are skipped),
arcsinh stretched and standardized. Training draws the 8 symmetries of the
square per image (a radio galaxy has no preferred orientation) and keeps the central
half of each cutout, where the source is; evaluation reports accuracy and balanced
accuracy with and without test-time augmentation (the mean over the 8 symmetries).
The best model is exported for TF Serving: its signature takes float32 cutouts of any
size, NaN included, and crops and resizes them as training did. Every `keras-astro
train` option works here too (`--help`).
"""

import os

from keras_astro.cli.command import hide_native_logs
from keras_astro.cli.train import experiment_config, recipe_parser
from keras_astro.training import run_experiment

RECIPE = dict(
    epochs=30, batch_size=16, center_crop=0.5, augment="dihedral", class_weight="balanced",
    output=os.path.join("runs", "radio-galaxies"),
)


def main(argv=None):
    args = recipe_parser(__doc__.splitlines()[0], **RECIPE).parse_args(argv)
    from keras_astro import export_for_serving

    metrics = run_experiment(experiment_config(args), args.output)
    for name, scores in metrics["per_class"].items():
        print(f"  {name}: recall {scores['recall']:.2%}")
    export = export_for_serving(
        os.path.join(args.output, "model.keras"), os.path.join(args.output, "serving")
    )
    print(
        f"test accuracy {metrics['test_accuracy']:.2%} (TTA {metrics['test_accuracy_tta']:.2%}), "
        f"balanced {metrics['test_balanced_accuracy']:.2%} "
        f"(TTA {metrics['test_balanced_accuracy_tta']:.2%}); exported {export}"
    )
    return metrics


if __name__ == "__main__":
    hide_native_logs()
    main()
