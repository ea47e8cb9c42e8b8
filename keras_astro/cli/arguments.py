"""Argument types and options the subcommands share, and the choice of Keras backend.

Nothing here imports Keras: the backend is chosen from the parsed arguments first.
"""

import argparse
import importlib.util
import os
import sys

BACKENDS = ("tensorflow", "jax", "torch")


def bounded(kind, minimum, strict=False):
    """An argparse `type` for numbers >= minimum (> minimum when `strict`)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'} {relation} {minimum}, "
                f"got {text!r}"
            )
        return value

    return parse


positive_int = bounded(int, 1)
positive_float = bounded(float, 0, strict=True)


def add_backend_argument(parser):
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend; sets KERAS_BACKEND before Keras is imported "
        "(default: $KERAS_BACKEND, else Keras' default, tensorflow)",
    )


def add_source_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="'digits' (scikit-learn's 8x8 digits, offline) or a tensorflow-datasets "
        "image classification name, e.g. cifar10, cifar100, eurosat",
    )
    source.add_argument(
        "--data-dir",
        metavar="DIR",
        help="image folder: DIR/train/<class>/* and DIR/test/<class>/* (or val/); without "
        "either, --validation-fraction of train is held out. jpg, png, bmp, gif",
    )
    parser.add_argument(
        "--tfds-data-dir",
        metavar="DIR",
        help="where tensorflow-datasets keeps datasets (default: its own, $TFDS_DATA_DIR "
        "or ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=positive_float,
        default=0.1,
        help="fraction of train held out for evaluation when the data has no test or "
        "validation split (default: %(default)s)",
    )


def source(args):
    """`load_datasets`' source argument (a folder as an absolute path) and a short name."""
    if args.data_dir is not None:
        path = os.path.abspath(args.data_dir)
        if not os.path.isdir(path):
            raise ValueError(f"--data-dir {args.data_dir!r} is not a directory.")
        return path, os.path.basename(path.rstrip(os.sep))
    return args.dataset, args.dataset


def check_backend(backend):
    """Refuses a KERAS_BACKEND keras-astro does not support or that is not installed."""
    if backend not in BACKENDS:
        raise ValueError(
            f"KERAS_BACKEND={backend!r} is not a backend keras-astro supports; "
            f"expected one of {', '.join(BACKENDS)}."
        )
    if importlib.util.find_spec(backend) is None:
        raise ValueError(
            f"The {backend} backend is not installed: `pip install keras-astro[{backend}]`."
        )


def select_backend(backend):
    """Sets KERAS_BACKEND (when given) before Keras is imported; Keras reads it once.

    When Keras is already imported in this process (keras-astro called from Python)
    with another backend, it is too late: that is refused.
    """
    requested = backend or os.environ.get("KERAS_BACKEND")
    if requested is not None:
        check_backend(requested)
    loaded = sys.modules.get("keras")
    if backend and loaded is not None and loaded.backend.backend() != backend:
        raise ValueError(
            f"--backend {backend} was given, but Keras is already imported in this process "
            f"with the {loaded.backend.backend()} backend; run keras-astro in a new process."
        )
    if backend:
        os.environ["KERAS_BACKEND"] = backend
