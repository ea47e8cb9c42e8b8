"""Helpers the whole package shares: argument checks, atomic file writes, lazy exports.

Importing this module imports neither Keras nor TensorFlow (the CLI uses it before it
chooses the backend).
"""

import importlib
import importlib.util
import json
import numbers
import os

# What raw inputs are, and how the model scales them (keras_astro.layers.preprocessing):
# 8-bit pixels (0..255) or flux.
PREPROCESSING = ("pixels", "flux")


def is_int_at_least(value, minimum):
    """Whether `value` is an int (numpy ints too, never a bool) and >= `minimum`."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= minimum


def check_int(name, value, minimum=1, owner=""):
    """Raises a `ValueError` naming `name` unless `value` is an int >= `minimum`."""
    if not is_int_at_least(value, minimum):
        kind = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{owner}`{name}` must be {kind}. Received: {name}={value!r}")
    return value


def check_choice(name, value, choices):
    if value not in choices:
        raise ValueError(f"`{name}` must be one of {tuple(choices)}. Received: {value!r}")
    return value


def check_preprocessing(preprocessing):
    """The kind of raw input: the model, the converter and the pipelines share this check."""
    return check_choice("preprocessing", preprocessing, PREPROCESSING)


def check_center_crop(center_crop):
    """`None`, or the central fraction in (0, 1] of each side kept before resizing."""
    if center_crop is not None and not (
        isinstance(center_crop, numbers.Real)
        and not isinstance(center_crop, bool)
        and 0 < center_crop <= 1
    ):
        raise ValueError(
            "`center_crop` must be None or a fraction in (0, 1] of each side. "
            f"Received: {center_crop!r}"
        )
    return center_crop


def write_atomically(path, write, binary=False):
    """Calls `write(file)` on a temporary sibling of `path`, then renames it over `path`.

    A reader (or a resumed run) sees the old file or the new one, never half of one.
    """
    partial = f"{path}.partial"
    with open(partial, "wb" if binary else "w", **({} if binary else {"newline": ""})) as f:
        write(f)
    os.replace(partial, path)


def write_json(path, data):
    """Writes `data` as indented JSON, atomically."""

    def write(f):
        json.dump(data, f, indent=2)
        f.write("\n")

    write_atomically(path, write)


def class_names(model):
    """The model's class names, or "0".."N-1" when it was built without them."""
    return list(model.class_names or [str(i) for i in range(model.num_classes)])


def returns_logits(model):
    """Whether the model's head has no activation, so a softmax makes its outputs probabilities."""
    return getattr(model, "classifier_activation", "softmax") in (None, "linear")


def check_classifier(model, purpose):
    """Refuses a model whose outputs are not class scores of raw inputs; `purpose` says who needs them.

    `include_top=False` models return features; `include_preprocessing=False` models
    expect inputs normalised as in their training, which no caller here can know.
    """
    if not getattr(model, "include_top", True):
        raise ValueError(
            f"This model was built with include_top=False: it returns features, not class "
            f"probabilities, so {purpose} has nothing to give. Expected a classifier "
            "(include_top=True)."
        )
    if not getattr(model, "include_preprocessing", True):
        raise ValueError(
            "This model was built with include_preprocessing=False, so it expects inputs "
            f"normalised the way it was trained; {purpose} takes raw pixels 0..255 (or flux) "
            "and cannot know that normalisation. Expected a model built with "
            "include_preprocessing=True, or your normalisation inside the model."
        )


def require(feature, extra, *modules):
    """Raises an `ImportError` naming the pip extra to install when a module is missing.

    The core install is keras and numpy; an entry point that needs more checks here, so
    a user reads the pip command instead of a ModuleNotFoundError from deep inside.
    """
    missing = [module for module in modules if not _installed(module)]
    if missing:
        needs = ", ".join(missing)
        raise ImportError(f'{feature} needs {needs}: pip install "keras-astro[{extra}]"')


def _installed(module):
    try:
        return importlib.util.find_spec(module) is not None
    except ImportError:  # a finder that refuses the name
        return False


def lazy_exports(package, exports):
    """A module `__getattr__` (PEP 562) that imports `exports[name]` on first use.

    `exports` maps each public name to the module that defines it, so a package's
    `__init__` can list its names without importing Keras or TensorFlow.
    """

    def __getattr__(name):
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module = importlib.import_module(exports[name])
        value = module if module.__name__.endswith(f".{name}") else getattr(module, name)
        setattr(importlib.import_module(package), name, value)
        return value

    return __getattr__
