"""`keras-astro train`: one experiment (`keras_astro.training.run_experiment`) from options."""

import argparse
import dataclasses

from keras_astro.cli.arguments import (
    add_backend_argument,
    add_options,
    add_source_arguments,
    source,
)
from keras_astro.data.options import SourceOptions
from keras_astro.training.experiment import ExperimentConfig
from keras_astro.training.recipe import Recipe

HELP = "train a model on a dataset or an image folder"
DESCRIPTION = (
    "Train AstroTransformer with AdamW, a warmup over the first part of the run's steps then "
    "cosine decay, and label smoothing (optionally an EMA of the weights). Writes "
    "model.keras (the epoch of lowest validation loss), history.csv, metrics.json, "
    "training_curves.png, confusion_matrix.png, attention_maps.png and TensorBoard logs "
    "(logs/) to --output. A killed run resumes from its last finished epoch when the same "
    "command runs again. --find-lr runs a learning-rate range test instead of training."
)


def add_arguments(parser, source_required=True):
    """Every `ExperimentConfig` field as an option (declared with the field), its source
    as one of four, and the run options that are not config fields."""
    add_source_arguments(parser, required=source_required)
    add_options(parser, ExperimentConfig, without=(Recipe, SourceOptions))
    add_options(parser, Recipe)
    _add_output_arguments(parser)
    add_backend_argument(parser)


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
