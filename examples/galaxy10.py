"""Galaxy morphology on Galaxy10 DECaLS (or SDSS): the HDF5 path, with the download.

    python examples/galaxy10.py --tfds-data-dir ~/.keras/datasets
    python examples/galaxy10.py --dataset galaxy10_sdss --image-size 32 --center-crop 1

Galaxy10 DECaLS (Leung & Bovy; DESI Legacy Imaging Surveys images, Galaxy Zoo labels) is
one HDF5 file of about 2.5 GB of 17,736 RGB cutouts 256x256 in 10 classes; it is looked up in
--tfds-data-dir and downloaded there with its SHA-256 checked when missing, then read in
chunks (never whole). A fixed stratified 10% is held out for testing, and 10% of the rest
to choose the epoch, whatever the seed. The galaxy sits in the middle: the central half of each side is kept and resized
to --image-size. The classes are imbalanced (the rarest has 334 images, the commonest
2,645), so the loss weighs classes equally and the metrics report balanced accuracy
and per-class precision, recall and F1, with and without test-time augmentation over
the 8 symmetries of the square. Every `keras-astro train` option works here too (`--help`).
"""

import os

from keras_astro.cli.command import hide_native_logs
from keras_astro.cli.train import experiment_config, recipe_parser
from keras_astro.training import run_experiment

RECIPE = dict(
    dataset="galaxy10_decals", model="base", epochs=30, batch_size=64, image_size=64,
    center_crop=0.5, augment="dihedral", class_weight="balanced",
    output=os.path.join("runs", "galaxy10"),
)


def main(argv=None):
    args = recipe_parser(__doc__.splitlines()[0], **RECIPE).parse_args(argv)
    metrics = run_experiment(experiment_config(args), args.output)
    for name, scores in metrics["per_class"].items():
        f1 = "n/a" if scores["f1"] is None else f"{scores['f1']:.2f}"
        print(f"  {name}: F1 {f1}")
    return metrics


if __name__ == "__main__":
    hide_native_logs()
    main()
