"""Train AstroTransformer on a folder of your own images and look at the results.

    python examples/train_image_folder.py ../shared/data/cifar10-subset --epochs 20

The folder holds DIR/train/<class>/*.jpg (png, bmp, gif) and DIR/test/<class>/* (or
val/); without either, 10% of train is held out. Writes model.keras, history.csv,
metrics.json, training_curves.png, confusion_matrix.png and attention_maps.png to
--output; `keras-astro train --data-dir DIR` runs the same experiment.
"""

import argparse
import os

from keras_astro.training import ExperimentConfig, run_experiment


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="image folder: DIR/train/<class>/*, DIR/test/<class>/*")
    parser.add_argument("--model", default="small", choices=("small", "base", "large"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--output", default=os.path.join("runs", "image-folder"))
    args = parser.parse_args(argv)

    config = ExperimentConfig(
        source=args.data_dir,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
    )
    metrics = run_experiment(config, args.output)
    for name, accuracy in metrics["per_class_accuracy"].items():
        print(f"  {name}: {accuracy:.2%}")
    print(f"pictures in {args.output}")
    return metrics


if __name__ == "__main__":
    main()
