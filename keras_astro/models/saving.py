"""Loading `.keras` files: the classes they name, registered, and a checked `load_model`.

Importing this module imports neither Keras nor TensorFlow (the package's `__init__`
uses it before the CLI chooses the backend).
"""

import json
import os
import zipfile


def register_saved_classes():
    """Registers (by importing them) every class that a `.keras` file of this package names."""
    from keras_astro import layers  # noqa: F401
    from keras_astro.models import astro_transformer, folding  # noqa: F401


def load_model(path):
    """Loads an AstroTransformer from a `.keras` file saved by keras-astro, without its optimizer.

    Raises a `ValueError` naming the path for anything else: no such file, no zip
    archive, a damaged or unsafe configuration (Keras' safe mode refuses Python
    lambdas), another kind of model.
    """
    import keras

    from keras_astro.models import AstroTransformer

    register_saved_classes()
    path = os.fspath(path)
    if not path.endswith(".keras") or not os.path.isfile(path):
        raise ValueError(f"Expected the path of an existing .keras file. Received: {path!r}")
    if not zipfile.is_zipfile(path):  # Keras would say "File not found"
        raise ValueError(
            f"{path!r} is not a valid .keras file: expected a zip archive as Keras saves "
            "it (this one is truncated or of another format)."
        )
    try:
        model = keras.saving.load_model(path, compile=False)
    except (ValueError, TypeError, LookupError, zipfile.BadZipFile) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        if isinstance(error, json.JSONDecodeError):
            reason = f"its configuration is not valid JSON: {reason}"
        elif "safe_mode" in reason:
            reason = "it holds a Python lambda, which Keras' safe mode does not load"
        raise ValueError(
            f"Cannot load {path!r}: expected a .keras file saved by keras-astro ({reason})."
        ) from None
    if not isinstance(model, AstroTransformer):
        raise ValueError(
            f"{path!r} holds a {type(model).__name__}; expected an AstroTransformer saved "
            "by keras-astro (`keras-astro train`, or AstroTransformer.save)."
        )
    return model
