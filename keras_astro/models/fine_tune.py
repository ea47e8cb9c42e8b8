"""Starting a model from a trained one: its backbone kept, a new head for new classes.

The backbone is every layer but the classifier `predictions`. No weight depends on
the image size (the attention's position term is a 3x3 convolution), so the new
model may take another size; the bands and the kind of input (pixels or flux) must
be those the source learned.
"""

HEAD = "predictions"
# Layers that scale raw inputs; the new model's follow its own settings (and data).
INPUT_LAYERS = ("image_normalization", "flux_normalization", "rescaling")


def initialize_from(source, class_names=None, num_classes=None, **overrides):
    """A new AstroTransformer holding the weights of `source`, ready to fine-tune.

    Args:
        source: an AstroTransformer, the path of a `.keras` file, or a preset (folder,
            shipped name, `hf://` or `kaggle://` handle).
        class_names: the new data's class names (their count gives `num_classes`).
        num_classes: the new data's class count, when it has no names.
        **overrides: constructor arguments of the new model, taken from the new data
            and options rather than from `source`: `input_shape` (the size may
            differ, the bands may not), `preprocessing` (must equal the source's),
            `center_crop`, `normalization`, `clip_sigma`, `dropout`, `remat`, `name`.

    The head is kept when the class names and count equal the source's, otherwise it
    is a new, randomly initialised `predictions` layer. The model uses the global
    dtype policy, has every layer trainable, no temperature (a calibrated source's
    was fitted to its data) and one view (`test_time_augmentation=None`) unless
    `overrides` say otherwise.
    """
    from keras_astro.models.astro_transformer import AstroTransformer
    from keras_astro.models.preset_files import load_source

    model = source if isinstance(source, AstroTransformer) else load_source(source)
    label = source if isinstance(source, str) else model.name
    config = model.get_config()
    if class_names is not None:
        class_names = list(class_names)
        num_classes = len(class_names) if num_classes is None else num_classes
    num_classes = config["num_classes"] if num_classes is None else num_classes
    check_compatible(model, label, overrides)
    new = AstroTransformer.from_config(
        {
            **config,
            "num_classes": num_classes,
            "class_names": class_names,
            "dtype": None,
            "trainable": True,
            # A source's temperature was fitted to its own data; the new run fits its own
            # and chooses its own views (validating 8 views per image costs 8 times).
            "temperature": None,
            "test_time_augmentation": None,
            **overrides,
        }
    )
    keep_head = num_classes == model.num_classes and class_names == model.class_names
    _copy_weights(model, new, label, skip=() if keep_head else (HEAD,))
    return new


def check_compatible(model, label, overrides):
    """Raises a `ValueError` naming `label` (the source) when the new model's input, as
    `overrides` sets it, is not what `model` learned: other bands, pixels for flux."""
    preprocessing = overrides.get("preprocessing", model.preprocessing)
    if preprocessing != model.preprocessing:
        raise ValueError(
            f"{label} was trained on {model.preprocessing} but the new data is "
            f"{preprocessing}: its features do not transfer. Expected "
            f"preprocessing={model.preprocessing!r} (--preprocessing), or train from scratch."
        )
    if "data_format" in overrides and overrides["data_format"] != model.data_format:
        raise ValueError(
            f"{label} is {model.data_format}; it cannot be fine-tuned as {overrides['data_format']}."
        )
    if "input_shape" in overrides:
        axis = -1 if model.data_format == "channels_last" else 0
        bands, new_bands = model.image_shape[axis], tuple(overrides["input_shape"])[axis]
        if bands != new_bands:
            raise ValueError(
                f"{label} takes {bands} band(s) but the new data has {new_bands}: the first "
                "convolution's weights are made for its bands. Expected data with "
                f"{bands} band(s), or train from scratch."
            )


def _copy_weights(source, model, label, skip):
    """Copies every weighted layer of `model` but those in `skip` from `source`, by name."""
    for layer in model.layers:
        if not layer.weights or layer.name in skip:
            continue
        try:
            counterpart = source.get_layer(layer.name)
        except ValueError:
            if layer.name in INPUT_LAYERS:
                continue  # a new normalization, adapted to the new data
            raise ValueError(
                f"{label} has no layer {layer.name!r}: expected the same architecture."
            ) from None
        weights = counterpart.get_weights()
        shapes = [tuple(w.shape) for w in layer.weights]
        if [w.shape for w in weights] != shapes:
            raise ValueError(
                f"{label}'s layer {layer.name!r} has weights of shapes "
                f"{[w.shape for w in weights]}, the new model's {shapes}: expected the same "
                "architecture."
            )
        layer.set_weights(weights)
