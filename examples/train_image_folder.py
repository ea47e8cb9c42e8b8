"""Train AstroTransformer on a folder of your own images and look at the results.

    python examples/train_image_folder.py --data-dir ../shared/data/cifar10-subset --epochs 20

The folder holds DIR/train/<class>/*.jpg (png, bmp, gif) and DIR/test/<class>/* (or
val/); without either, 10% of train is held out for testing. Another 10% of train
chooses the epoch (val/ does when test/ is there too). Writes model.keras, history.csv, metrics.json, training_curves.png, confusion_matrix.png and attention_maps.png to
--output; every `keras-astro train` option works here too (`--help`).
"""

import os

from keras_astro.cli.command import hide_native_logs
from keras_astro.cli.train import experiment_config, recipe_parser
from keras_astro.training import run_experiment


def main(argv=None):
    parser = recipe_parser(
        __doc__.splitlines()[0], epochs=20, output=os.path.join("runs", "image-folder")
    )
    args = parser.parse_args(argv)
    metrics = run_experiment(experiment_config(args), args.output)
    for name, accuracy in metrics["per_class_accuracy"].items():
        print(f"  {name}: {'n/a' if accuracy is None else f'{accuracy:.2%}'}")
    print(f"pictures in {args.output}")
    return metrics


if __name__ == "__main__":
    hide_native_logs()
    main()
