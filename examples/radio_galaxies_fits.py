"""Classify radio galaxies from FITS cutouts: train, evaluate with TTA, export for serving.

    python examples/radio_galaxies_fits.py ../shared/data/mirabest-fits-sample

The folder holds DIR/train/<class>/*.fits and DIR/test/<class>/*.fits (FIRST survey
cutouts from MiraBest: float32 Jy/beam with NaN blanks, FRI vs FRII). The model reads
raw flux: inside it, NaNs become 0 and each band gets an arcsinh stretch and a
standardization adapted to the training data. Training draws the 8 symmetries of the
square per image (a radio galaxy has no preferred orientation) and keeps the central
half of each cutout, where the source is; evaluation reports accuracy and balanced
accuracy with and without test-time augmentation (the mean over the 8 symmetries).
The best model is exported for TF Serving: its signature takes float32 cutouts of any
size, NaN included, and crops and resizes them as training did.
"""

import argparse
import os

from keras_astro.training import ExperimentConfig, run_experiment


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="FITS folder: DIR/train/<class>/*.fits, DIR/test/...")
    parser.add_argument("--model", default="small", choices=("small", "base", "large"))
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--center-crop", type=float, default=0.5)
    parser.add_argument("--output", default=os.path.join("runs", "radio-galaxies"))
    args = parser.parse_args(argv)

    from keras_astro import export_for_serving

    config = ExperimentConfig(
        source=args.data_dir,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        center_crop=args.center_crop,
        augment="dihedral",
        class_weight="balanced",
    )
    metrics = run_experiment(config, args.output)
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
    main()
