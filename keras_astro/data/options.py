"""The data options' choices and bounds, light to import (the CLI's help texts use them).

It also declares the options that are config fields (`option`): `SourceOptions` here,
`training.recipe.Recipe`; `keras-astro train` makes its options of their fields.
"""

import argparse
import dataclasses

from keras_astro.utils import is_int_at_least

AUGMENT_POLICIES = ("none", "basic", "dihedral", "rotate", "randaugment", "mixup", "cutmix")
AUGMENT_LIBRARIES = ("keras", "keras_cv")
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 512
IMAGE_SIZE_LIMIT = "the attention's memory grows with (H*W)^2"

# Ranges of numeric options, as `cli.arguments.bounded` takes them (`kind` int or float,
# float when left out).
NON_NEGATIVE = dict(minimum=0)
POSITIVE = dict(minimum=0, strict=True)
RATE = dict(minimum=0, maximum=1, strict_maximum=True)  # 1 would never change or learn
FRACTION = dict(minimum=0, strict=True, maximum=1)
COUNT = dict(kind=int, minimum=0)
POSITIVE_COUNT = dict(kind=int, minimum=1)
IMAGE_SIZE = dict(kind=int, minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE, why=IMAGE_SIZE_LIMIT)

HDF5_OPTIONS = "HDF5 files (--data-file)"
CATALOG_OPTIONS = "catalogue tables (--catalog)"


def check_image_size(image_size):
    if not is_int_at_least(image_size, MIN_IMAGE_SIZE) or image_size > MAX_IMAGE_SIZE:
        raise ValueError(
            f"`image_size` must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] "
            f"({IMAGE_SIZE_LIMIT}). Received: {image_size!r}"
        )


def option(default, help, **cli):
    """A config field that is also a command-line option, declared once with its help.

    `help` is argparse's (`%(default)s` shows the default). `cli` may hold `bounds` (a
    number's range, e.g. `POSITIVE`), argparse's `type`, `metavar`, `choices`, `nargs`
    and `const`, `flag` (default `--field-name`) and `group` (the title of the option's
    group in `--help`). A bool field is a `--flag/--no-flag` pair.
    """
    return dataclasses.field(default=default, metadata={"help": help, **cli})


def options_from(options, values):
    """The dataclass `options` (`SourceOptions`, `Recipe`) of the same-named attributes of
    `values`: parsed arguments, or a config made of several such groups."""
    fields = dataclasses.fields(options)
    return options(**{field.name: getattr(values, field.name) for field in fields})


def class_name_list(text):
    """An argparse `type` for comma-separated class names."""
    names = tuple(name.strip() for name in text.split(","))
    if not all(names):
        raise argparse.ArgumentTypeError(
            f"expected NAME,NAME,... without empty names, got {text!r}"
        )
    return names


@dataclasses.dataclass(frozen=True, kw_only=True)
class SourceOptions:
    """How to read a data source, whatever the model does with its images.

    `load_datasets` documents them; `train` and `evaluate` share them as options and
    `ExperimentConfig` as fields. The image size, crop and preprocessing are not here:
    they belong to the model, which `evaluate` reads them from.
    """

    tfds_data_dir: str | None = option(
        None,
        "where tensorflow-datasets and the Galaxy10 files are kept (default: "
        "tensorflow-datasets' own, ~/.keras/datasets for Galaxy10)",
        metavar="DIR",
    )
    validation_fraction: float = option(
        0.1,
        "fraction of train held out (fixed, stratified) to choose the best epoch on, "
        "unless the data has a validation split besides its test split; also the test "
        "fraction held out when the data has no test split (default: %(default)s)",
        bounds=POSITIVE,
    )
    images_key: str = option("images", "default: %(default)s", group=HDF5_OPTIONS)
    labels_key: str = option("ans", "default: %(default)s", group=HDF5_OPTIONS)
    class_names: tuple | None = option(
        None,
        "class names in class-id order (default: 0, 1, ...)",
        type=class_name_list,
        metavar="NAME,NAME,...",
        group=HDF5_OPTIONS,
    )
    path_column: str = option("file_loc", "default: %(default)s", group=CATALOG_OPTIONS)
    label_column: str = option("label", "default: %(default)s", group=CATALOG_OPTIONS)
    split_column: str | None = option(
        None,
        "column of train/test/val per row (default: a column named 'split' if the "
        "table has one; '' ignores it and holds out --validation-fraction)",
        group=CATALOG_OPTIONS,
    )

    def load_keywords(self):
        """`load_datasets`' keyword arguments, whose `data_dir` is `tfds_data_dir` here:
        the command line's `--data-dir` names an image folder."""
        keywords = dataclasses.asdict(self)
        return {"data_dir": keywords.pop("tfds_data_dir"), **keywords}
