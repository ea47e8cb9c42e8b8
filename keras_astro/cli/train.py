"""`keras-astro train`: one experiment (`keras_astro.training.run_experiment`) from options."""

import argparse
import dataclasses

from keras_astro.cli.arguments import (
    add_backend_argument,
    add_options,
    add_source_arguments,
    bounded,
    fraction,
    image_size,
    positive_float,
    positive_int,
    rate,
    source,
)
from keras_astro.data.options import AUGMENT_POLICIES, MAX_IMAGE_SIZE, MIN_IMAGE_SIZE
from keras_astro.models.presets import CONFIGS, NORMALIZATIONS
from keras_astro.training.experiment import ExperimentConfig
from keras_astro.training.recipe import Recipe
from keras_astro.utils import PREPROCESSING

HELP = "train a model on a dataset or an image folder"
DESCRIPTION = (
    "Train AstroTransformer with AdamW, a warmup over the first part of the run's steps then "
    "cosine decay, and label smoothing (optionally an EMA of the weights). Writes "
    "model.keras (the epoch of lowest validation loss), history.csv, metrics.json, "
    "training_curves.png, confusion_matrix.png, attention_maps.png and TensorBoard logs "
    "(logs/) to --output. A killed run resumes from its last finished epoch when the same "
    "command runs again. --find-lr runs a learning-rate range test instead of training."
)
DEFAULTS = ExperimentConfig(source="")


def add_arguments(parser, source_required=True):
    parser.add_argument(
        "--model", choices=tuple(CONFIGS), default=DEFAULTS.model,
        help="configuration (default: %(default)s)",
    )
    add_source_arguments(parser, required=source_required)
    _add_length_arguments(parser)
    add_options(parser, Recipe)
    _add_regularization_arguments(parser)
    _add_input_arguments(parser)
    _add_execution_arguments(parser)
    _add_fine_tuning_arguments(parser)
    _add_output_arguments(parser)
    add_backend_argument(parser)


def _add_length_arguments(parser):
    parser.add_argument(
        "--epochs", type=positive_int, default=DEFAULTS.epochs, help="default: %(default)s"
    )
    parser.add_argument(
        "--batch-size",
        type=positive_int,
        default=DEFAULTS.batch_size,
        help="global batch size: with --distribute, split across all devices of all "
        "processes, so N devices take batch-size/N images each per step (default: the "
        "largest of 64, 32, 16 and 8 that gives an epoch at least 16 steps: 64 from 1024 "
        "training images up, 16 for a few hundred)",
    )
    parser.add_argument(
        "--image-size",
        type=image_size,
        default=DEFAULTS.image_size,
        help=f"side of the square images the model takes, {MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} "
        "(the attention's memory grows with (H*W)^2); images are resized to it "
        "(default: %(default)s)",
    )


def _add_regularization_arguments(parser):
    parser.add_argument(
        "--dropout", type=rate, default=DEFAULTS.dropout,
        help="dropout rate before the classifier, 0 to <1 (default: %(default)s)",
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_POLICIES,
        default=DEFAULTS.augment,
        help="training augmentation: basic = random 1/8 shift + horizontal flip; dihedral = "
        "the shift + the 8 symmetries of the square (galaxies); rotate = the shift + any "
        "angle + flip; randaugment (photos only), mixup, cutmix add to basic "
        "(default: %(default)s)",
    )


def _add_input_arguments(parser):
    """What the inputs are and how the model scales them: the model keeps these settings."""
    parser.add_argument(
        "--center-crop",
        type=fraction,
        metavar="FRACTION",
        help="keep the central FRACTION of each side before resizing to --image-size (the "
        "galaxy sits small in a survey cutout); predict, evaluate and export apply it too",
    )
    parser.add_argument(
        "--preprocessing",
        choices=PREPROCESSING,
        help="what the inputs are: pixels (0..255) or flux (physical units, NaN allowed; "
        "see --normalization). Default: flux for FITS and float HDF5 data, pixels otherwise",
    )
    parser.add_argument(
        "--normalization",
        choices=NORMALIZATIONS,
        help="how the model scales raw inputs: image = each cutout and band by its own "
        "background and noise (median, MAD), arcsinh, standardized, as radio and "
        "morphology work does; dataset = one scale for all images, which keeps colours "
        "(pixels to [-1, 1]; flux: arcsinh and per-band statistics of the training data). "
        "Default: image for flux, dataset for pixels",
    )
    parser.add_argument(
        "--clip-sigma",
        type=positive_float,
        metavar="K",
        help="with --normalization image: set pixels below K noise levels above each "
        "image's background to the background (the radio convention, e.g. 3; default: off)",
    )


def _add_execution_arguments(parser):
    parser.add_argument(
        "--class-weight",
        choices=("balanced",),
        help="weigh each class by the inverse of its share of the training data",
    )
    parser.add_argument(
        "--mixed-precision",
        nargs="?",
        const="bfloat16",
        choices=("bfloat16", "float16"),
        help="train with the mixed_bfloat16 (default when given) or mixed_float16 policy",
    )
    parser.add_argument(
        "--remat",
        action="store_true",
        help="rematerialize activations in the backward pass (less memory, more compute)",
    )
    parser.add_argument(
        "--distribute",
        action="store_true",
        help="data-parallel training on all local devices (JAX, TensorFlow), and across "
        "processes when launched by torchrun (torch), with KERAS_DISTRIBUTION_* "
        "variables (JAX) or with TF_CONFIG (TensorFlow); process 0 writes the run folder",
    )
    parser.add_argument(
        "--seed", type=bounded(int, 0, maximum=2**32 - 1, why="NumPy's seed range"),
        default=DEFAULTS.seed, help="seeds weights, shuffling, augmentation"
    )


def _add_fine_tuning_arguments(parser):
    """Starting from a trained model; --backbone-lr-factor is with the recipe's options."""
    parser.add_argument(
        "--init-from",
        metavar="MODEL_OR_PRESET",
        help="start from a trained model's weights: a .keras file, a preset folder, a "
        "shipped preset (frdeep_first_small) or an hf:// or kaggle:// handle. Every layer "
        "but the classifier is kept; the classifier too when the classes are the same. "
        "Same --model, bands and kind of input (flux or pixels); crop and normalization "
        "come from this run's data and options",
    )
    parser.add_argument(
        "--freeze-epochs",
        type=bounded(int, 0),
        metavar="N",
        default=DEFAULTS.freeze_epochs,
        help="with --init-from: train only the classifier for the first N epochs, the rest "
        "of the model frozen (default: %(default)s)",
    )


def _add_output_arguments(parser):
    """Where the run goes and what it does there: options that are not config fields."""
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="run folder (default: runs/<model>-<dataset>); the same command resumes an "
        "interrupted run there, another configuration is refused",
    )
    parser.add_argument(
        "--find-lr",
        nargs="?",
        const="",
        metavar="PNG",
        help="instead of training, run a learning-rate range test (the learning rate grows "
        "exponentially from 1e-7 to 10 over 100 batches), plot the loss against it to PNG "
        "(default: <run folder>/lr_finder.png) and print a suggested --learning-rate",
    )


def recipe_parser(description, **defaults):
    """A parser with every `train` option and a recipe's own defaults, for example scripts.

    A default source (`dataset=...`) makes the source options optional.
    """
    sources = ("dataset", "data_dir", "data_file", "catalog")
    parser = argparse.ArgumentParser(description=description)
    add_arguments(parser, source_required=not any(key in defaults for key in sources))
    parser.set_defaults(**defaults)
    return parser


# Options that are not `ExperimentConfig` fields: where the run goes and how it is
# shown, and the four spellings of its source (one `source` field).
RUN_OPTIONS = frozenset(
    {"command", "backend", "output", "verbose", "find_lr", "dataset", "data_dir", "data_file", "catalog"}
)


def experiment_config(args):
    """The `ExperimentConfig` that the parsed options describe.

    Raises a `TypeError` for an option that is neither a config field nor a run option,
    so that a new option cannot be parsed and then silently left out of the run.
    """
    fields = {field.name for field in dataclasses.fields(ExperimentConfig)}
    unknown = sorted(set(vars(args)) - fields - RUN_OPTIONS)
    if unknown:
        raise TypeError(
            f"`keras-astro train` options {unknown} are neither ExperimentConfig fields nor "
            "RUN_OPTIONS: add each to one of them."
        )
    options = {key: value for key, value in vars(args).items() if key in fields}
    return ExperimentConfig(**{**options, "source": source(args)[0]})


def run(args):
    from keras_astro.training.experiment import find_experiment_learning_rate, run_experiment

    config = experiment_config(args)
    if args.find_lr is not None:
        return find_experiment_learning_rate(config, args.find_lr or None, args.output)
    return run_experiment(config, args.output)
