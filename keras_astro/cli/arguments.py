"""Argument types and options the subcommands share, and the choice of Keras backend.

Nothing here imports Keras: the backend is chosen from the parsed arguments first.
"""

import argparse
import dataclasses
import importlib.util
import math
import os
import sys

from keras_astro.data.options import IMAGE_SIZE, POSITIVE_COUNT, SourceOptions, options_from

BACKENDS = ("tensorflow", "jax", "torch")


def bounded(kind, minimum, strict=False, maximum=None, why="", strict_maximum=False):
    """An argparse `type` for finite numbers >= minimum (> minimum when `strict`).

    `float` parses "inf" and "nan", which would train a NaN model: they are refused.
    `maximum` (inclusive, exclusive with `strict_maximum`) is optional; `why` explains it
    in the message.
    """

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if (
            value is None
            or not math.isfinite(value)
            or value < minimum
            or (strict and value == minimum)
            or (maximum is not None and value > maximum)
            or (strict_maximum and value == maximum)
        ):
            relation = ">" if strict else ">="
            expected = f"{'an integer' if kind is int else 'a finite number'} {relation} {minimum}"
            if maximum is not None:
                below = "<" if strict_maximum else "<="
                expected += f" and {below} {maximum}{f' ({why})' if why else ''}"
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value

    return parse


positive_int = bounded(**POSITIVE_COUNT)
image_size = bounded(**IMAGE_SIZE)


def add_options(parser, options, without=()):
    """An option for each field of the dataclass `options` declared with
    `data.options.option`, so that a field added there is an option here:
    `--field-name`, the field's default. The fields of the dataclasses `without` (those
    that `options` inherits and that have their own call) are left out.
    `data.options.options_from(options, args)` reads them back."""
    groups = {}
    skipped = {field.name for other in without for field in dataclasses.fields(other)}
    for field in dataclasses.fields(options):
        if field.name in skipped or "help" not in field.metadata:
            continue
        settings = dict(field.metadata)
        flag = settings.pop("flag", "--" + field.name.replace("_", "-"))
        if "bounds" in settings:
            bounds = dict(settings.pop("bounds"))
            settings["type"] = bounded(bounds.pop("kind", float), **bounds)
        if isinstance(field.default, bool):
            settings["action"] = argparse.BooleanOptionalAction
        title = settings.pop("group", None)
        if title is not None and title not in groups:
            groups[title] = parser.add_argument_group(title)
        target = parser if title is None else groups[title]
        target.add_argument(flag, dest=field.name, default=field.default, **settings)


def add_backend_argument(parser):
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend; sets KERAS_BACKEND before Keras is imported "
        "(default: $KERAS_BACKEND, else Keras' default, tensorflow)",
    )


def add_source_arguments(parser, required=True):
    source = parser.add_mutually_exclusive_group(required=required)
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="'digits' (scikit-learn's 8x8 digits, offline), 'galaxy10_decals' or "
        "'galaxy10_sdss' (Galaxy10 HDF5, downloaded to --tfds-data-dir when missing), or a "
        "tensorflow-datasets image classification name, e.g. cifar10, eurosat",
    )
    source.add_argument(
        "--data-dir",
        metavar="DIR",
        help="folder of photos (jpg, png, bmp, gif) or FITS cutouts (.fits, .fit, .fits.gz, "
        ".fz): DIR/train/<class>/* and DIR/test/<class>/* (or val/; with both, val/ "
        "chooses the epoch); without either, --validation-fraction of train is held out",
    )
    source.add_argument(
        "--data-file",
        metavar="FILE.h5",
        help="HDF5 file of images [n, h, w(, bands)] and class ids (Galaxy10 layout: keys "
        "'images' and 'ans'); --validation-fraction is held out",
    )
    source.add_argument(
        "--catalog",
        metavar="TABLE.csv",
        help="catalogue table: a column of file paths (relative to the table's folder) and "
        "a column of labels, optionally a split column (train/test/val)",
    )
    add_options(parser, SourceOptions)


def source(args):
    """`load_datasets`' source argument (a path made absolute) and a short name for it."""
    for option, path, exists in (
        ("--data-dir", args.data_dir, os.path.isdir),
        ("--data-file", args.data_file, os.path.isfile),
        ("--catalog", args.catalog, os.path.isfile),
    ):
        if path is not None:
            if not exists(path):
                kind = "a directory" if option == "--data-dir" else "a file"
                raise ValueError(f"{option} {path!r} is not {kind}.")
            path = os.path.abspath(path)
            name = os.path.basename(path.rstrip(os.sep))
            return path, name if option == "--data-dir" else os.path.splitext(name)[0]
    return args.dataset, args.dataset


def data_options(args):
    """The `load_datasets` keyword arguments that the source options give."""
    return options_from(SourceOptions, args).load_keywords()


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
