"""Presets: a trained model as a folder to share, in keras-hub's layout.

    config.json       the model's serialized config (`keras.saving.serialize_keras_object`)
    model.weights.h5  its weights
    metadata.json     versions, class names, input settings, training data and scores
    README.md         the model card

A preset is named by its folder, by the name of one shipped in the package
(`shipped_presets()`), or by a hub handle: `hf://OWNER/NAME` (Hugging Face Hub, through
`huggingface_hub`) or `kaggle://OWNER/MODEL/keras/VARIANT` (Kaggle Models, through
`kagglehub`), downloaded to a folder first. Importing this module imports no Keras.
"""

import json
import os
import shutil

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"
CARD_FILE = "README.md"
PRESET_FILES = (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE)
SHIPPED_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "presets")
# handle prefix -> the package that downloads it
HUBS = {"hf://": "huggingface_hub", "kaggle://": "kagglehub"}


def shipped_presets():
    """Names of the presets installed with the package, e.g. ["frdeep_first_small"]."""
    if not os.path.isdir(SHIPPED_DIR):
        return []
    return sorted(
        name for name in os.listdir(SHIPPED_DIR) if os.path.isdir(os.path.join(SHIPPED_DIR, name))
    )


def check_handle(handle):
    """Raises a `ValueError` unless `handle` names a `.keras` file or a preset; downloads nothing.

    Returns the handle, a local path made absolute.
    """
    if not isinstance(handle, str) or not handle:
        raise ValueError(f"Expected a .keras file, a preset folder or name. Received: {handle!r}")
    if _hub(handle):
        if not handle.partition("://")[2].strip("/"):
            raise ValueError(f"{handle!r} names no repository after {_hub(handle)!r}.")
        return handle
    if handle.endswith(".keras") and os.path.isfile(handle):
        return os.path.abspath(handle)
    if os.path.isdir(handle):
        _check_folder(handle)
        return os.path.abspath(handle)
    if handle in shipped_presets():
        return handle
    raise ValueError(
        f"{handle!r} is neither a .keras file, a preset folder, a shipped preset "
        f"({', '.join(shipped_presets()) or 'none installed'}) nor an hf:// or kaggle:// "
        "handle."
    )


def _hub(handle):
    return next((prefix for prefix in HUBS if handle.startswith(prefix)), None)


def _check_folder(folder):
    missing = [name for name in PRESET_FILES if not os.path.isfile(os.path.join(folder, name))]
    if missing:
        raise ValueError(
            f"{folder!r} is not a keras-astro preset: it lacks {', '.join(missing)}. Expected "
            f"{', '.join(PRESET_FILES)} (and {CARD_FILE}), as `save_to_preset` writes them."
        )


def preset_folder(handle):
    """The local folder of a preset: its own, a shipped one, or a hub download."""
    prefix = _hub(handle) if isinstance(handle, str) else None
    if prefix:
        folder = download(handle)
    elif isinstance(handle, str) and handle in shipped_presets() and not os.path.exists(handle):
        folder = os.path.join(SHIPPED_DIR, handle)
    else:
        folder = check_handle(handle)
    _check_folder(folder)
    return folder


def download(handle):
    """Downloads an `hf://` or `kaggle://` preset with its hub's own client; returns the folder."""
    prefix = _hub(handle)
    module = HUBS[prefix]
    try:
        hub = __import__(module)
    except ImportError:
        raise ValueError(
            f"Loading {handle!r} needs the {module} package: pip install {module}"
        ) from None
    name = handle[len(prefix):].strip("/")
    if module == "huggingface_hub":
        return hub.snapshot_download(repo_id=name)
    return hub.model_download(name)


def read_metadata(handle):
    """The preset's metadata.json as a dict."""
    path = os.path.join(preset_folder(handle), METADATA_FILE)
    return _read_json(path)


def _read_json(path):
    try:
        with open(path) as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise ValueError(f"{path} is damaged: not valid JSON ({error}).") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} is damaged: expected a JSON object.")
    return data


def load_preset(handle):
    """The AstroTransformer of a preset (folder, shipped name or hub handle), uncompiled.

    Raises a `ValueError` naming the folder for a missing or damaged file.
    """
    import keras

    from keras_astro.models.astro_transformer import AstroTransformer
    from keras_astro.models.saving import register_saved_classes

    register_saved_classes()
    folder = preset_folder(handle)
    config = _read_json(os.path.join(folder, CONFIG_FILE))
    try:
        model = keras.saving.deserialize_keras_object(config)
    except (ValueError, TypeError, KeyError, LookupError) as error:
        raise ValueError(
            f"{os.path.join(folder, CONFIG_FILE)} is damaged: expected an AstroTransformer's "
            f"serialized config ({str(error).splitlines()[0] if str(error) else type(error).__name__})."
        ) from None
    if not isinstance(model, AstroTransformer):
        raise ValueError(
            f"{folder!r} holds a {type(model).__name__}; expected an AstroTransformer preset."
        )
    weights = os.path.join(folder, WEIGHTS_FILE)
    try:
        model.load_weights(weights)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(
            f"{weights} is damaged or does not fit {CONFIG_FILE} "
            f"({str(error).splitlines()[0] if str(error) else type(error).__name__})."
        ) from None
    return model


def load_source(handle):
    """The model a run starts from: a `.keras` file or a preset."""
    from keras_astro.models.saving import load_model

    if isinstance(handle, str) and handle.endswith(".keras") and not _hub(handle):
        return load_model(handle)
    return load_preset(handle)


def model_metadata(model):
    """What a preset's metadata.json says about its model (`save_to_preset` adds the rest)."""
    import keras

    from keras_astro import __version__

    return {
        "keras_astro_version": __version__,
        "keras_version": keras.__version__,
        "class_names": None if model.class_names is None else list(model.class_names),
        "num_classes": model.num_classes,
        "image_shape": list(model.image_shape),
        "data_format": model.data_format,
        "preprocessing": model.preprocessing,
        "normalization": model.normalization,
        "clip_sigma": model.clip_sigma,
        "center_crop": model.center_crop,
        "num_parameters": model.count_params(),
    }


def save_to_preset(model, folder, metadata=None, card=None):
    """Writes `model` to `folder` as a preset; `metadata` (dict) adds to `model_metadata`.

    `card` is the README.md text (default: a short card made from the metadata). The
    folder is written beside its final name and renamed into place, so a kill leaves
    the old preset or the new one; an existing preset there is replaced.
    """
    import keras

    metadata = {**model_metadata(model), **(metadata or {})}
    folder = os.path.abspath(os.fspath(folder))
    partial = f"{folder}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    os.makedirs(partial)
    with open(os.path.join(partial, CONFIG_FILE), "w") as f:
        json.dump(keras.saving.serialize_keras_object(model), f, indent=2)
    model.save_weights(os.path.join(partial, WEIGHTS_FILE))
    with open(os.path.join(partial, METADATA_FILE), "w") as f:
        json.dump(metadata, f, indent=2)
    with open(os.path.join(partial, CARD_FILE), "w") as f:
        f.write(card if card is not None else default_card(os.path.basename(folder), metadata))
    if os.path.isdir(folder):
        _check_folder(folder)  # replace a preset, never another folder
        shutil.rmtree(folder)
    os.replace(partial, folder)
    return folder


def default_card(name, metadata):
    """A minimal model card: what the model takes and returns, and how to load it."""
    return (
        f"# {name}\n\nA keras-astro AstroTransformer preset: {metadata['num_classes']} classes "
        f"({', '.join(metadata['class_names'] or [])}), input {metadata['image_shape']} "
        f"{metadata['preprocessing']} with {metadata['normalization']} normalization"
        + ("" if metadata["center_crop"] is None else f", centre crop {metadata['center_crop']}")
        + ".\n\n```python\nfrom keras_astro import AstroTransformer\n"
        f'model = AstroTransformer.from_preset("{name}")\n```\n'
    )
