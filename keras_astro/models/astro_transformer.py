"""AstroTransformer: a functional Keras model that keeps full resolution to the end."""

import keras

from keras_astro.layers.arguments import channel_axis, standardize_data_format
from keras_astro.layers.backend_kernels import (
    BN_EPSILON,
    BN_MOMENTUM,
    FastConv2D,
    FusedBatchNormalization,
)
from keras_astro.layers.preprocessing import FluxNormalization, ImageNormalization, check_clip_sigma
from keras_astro.layers.relative_attention import RelativeAttention
from keras_astro.layers.stage_block import StageBlock
from keras_astro.layers.symmetry import DihedralViews, ViewAverage, check_test_time_augmentation
from keras_astro.models.calibration import TemperatureScaling, check_temperature
from keras_astro.models.checkpoints import load_torch_checkpoint
from keras_astro.models.presets import CONFIGS, NORMALIZATIONS, STEM_FILTERS, stage_channels
from keras_astro.utils import check_center_crop, check_preprocessing, is_int_at_least


def _validate_arguments(
    expansion, stage_depths, num_classes, input_shape, include_top, pooling, class_names, data_format,
    preprocessing, center_crop, normalization, clip_sigma,
):
    if not is_int_at_least(expansion, 1):
        raise ValueError(f"`expansion` must be a positive int. Received: {expansion!r}")
    if len(stage_depths) != 3 or not all(is_int_at_least(d, 1) for d in stage_depths):
        raise ValueError(
            "`stage_depths` must be three positive ints (S1, S2, S3). "
            f"Received: {stage_depths!r}"
        )
    if include_top and not is_int_at_least(num_classes, 1):
        raise ValueError(
            f"`num_classes` must be a positive int when include_top=True. Received: {num_classes!r}"
        )
    check_preprocessing(preprocessing)
    if normalization not in NORMALIZATIONS:
        raise ValueError(
            f"`normalization` must be None or one of {NORMALIZATIONS}. Received: {normalization!r}"
        )
    check_clip_sigma(clip_sigma)
    if clip_sigma is not None and normalization != "image":
        raise ValueError(
            "`clip_sigma` clips each image at its own noise level, so it needs "
            f"normalization='image'. Received: normalization={normalization!r}"
        )
    check_center_crop(center_crop)
    if pooling not in (None, "avg", "max"):
        raise ValueError(f"`pooling` must be None, 'avg' or 'max'. Received: {pooling!r}")
    if len(input_shape) != 3:
        raise ValueError(
            "`input_shape` must be (height, width, channels) for channels_last or "
            f"(channels, height, width) for channels_first. Received: {input_shape!r}"
        )
    channels = input_shape[-1] if data_format == "channels_last" else input_shape[0]
    if channels is None:
        raise ValueError(
            f"The channel dimension of `input_shape` must be known ({data_format}). "
            f"Received: {input_shape!r}"
        )
    if class_names is not None:
        if not all(isinstance(name, str) for name in class_names):
            raise ValueError(f"`class_names` must be a list of str. Received: {class_names!r}")
        if include_top and len(class_names) != num_classes:
            raise ValueError(
                f"`class_names` has {len(class_names)} names but num_classes={num_classes}."
            )


def _input_normalization(x, preprocessing, normalization, clip_sigma, data_format, dtype):
    """Raw pixels or flux -> the network's input scale (see `preprocessing`)."""
    if normalization == "image":
        return ImageNormalization(clip_sigma, data_format, name="image_normalization")(x)
    if preprocessing == "pixels":
        return keras.layers.Rescaling(1 / 127.5, offset=-1.0, name="rescaling", dtype=dtype)(x)
    return FluxNormalization(data_format=data_format, name="flux_normalization")(x)


def _stem(x, conv_args, bn_args, dtype):
    for i in (1, 2):
        x = FastConv2D(STEM_FILTERS, 3, padding="same", name=f"stem_conv{i}", **conv_args)(x)
        x = FusedBatchNormalization(name=f"stem_bn{i}", **bn_args)(x)
        x = keras.layers.ReLU(name=f"stem_relu{i}", dtype=dtype)(x)
    return x


def _stages(x, expansion, stage_depths, conv_args, data_format, remat, dtype):
    """S1 and S2 add a 1x1 projection of their input; S3 has none."""
    for stage, (filters, depth) in enumerate(zip(stage_channels(expansion), stage_depths), 1):
        stage_input = x
        for block in range(1, depth + 1):
            x = StageBlock(
                filters,
                data_format=data_format,
                remat=remat,
                name=f"stage{stage}_block{block}",
                dtype=dtype,
            )(x)
        if stage < 3:
            adjusted = FastConv2D(filters, 1, name=f"stage{stage}_adjust", **conv_args)(stage_input)
            x = keras.layers.Add(name=f"stage{stage}_add", dtype=dtype)([x, adjusted])
    return x


def _head(
    x, include_top, pooling, num_classes, classifier_activation, temperature, dropout, data_format,
    dtype,
):
    if include_top:
        x = keras.layers.GlobalAveragePooling2D(
            data_format=data_format, name="avg_pool", dtype=dtype
        )(x)
        if dropout:
            x = keras.layers.Dropout(dropout, name="top_dropout", dtype=dtype)(x)
        # The head stays float32 under mixed precision so probabilities are float32.
        if temperature is None:
            return keras.layers.Dense(
                num_classes, activation=classifier_activation, name="predictions", dtype="float32"
            )(x)
        x = keras.layers.Dense(num_classes, name="predictions", dtype="float32")(x)
        return TemperatureScaling(
            temperature, classifier_activation, name="temperature_scaling", dtype="float32"
        )(x)
    if pooling == "avg":
        return keras.layers.GlobalAveragePooling2D(
            data_format=data_format, name="avg_pool", dtype=dtype
        )(x)
    if pooling == "max":
        return keras.layers.GlobalMaxPooling2D(
            data_format=data_format, name="max_pool", dtype=dtype
        )(x)
    return x


@keras.saving.register_keras_serializable(package="keras_astro")
class AstroTransformer(keras.Model):
    """Full-resolution convolutional stages followed by relative attention over all pixels.

    stem (two Conv3x3-BN-ReLU, 3 -> 32) -> S1 (+ 1x1 projection of the stem) ->
    S2 (+ 1x1 projection of S1) -> S3 -> RelativeAttention -> pooling -> Dense.

    Args:
        expansion: int, channel multiplier e; stages have 32e, 32e^2, 32e^3 channels.
        stage_depths: three ints, StageBlocks per stage.
        num_classes: int, number of classes (ignored when `include_top=False`).
        input_shape: image shape without batch; `None` for height/width accepts any size.
        include_top: bool; `False` makes a feature extractor.
        pooling: `None`, `"avg"` or `"max"`; the pooling used when `include_top=False`.
        classifier_activation: activation of the head; `None` returns logits.
        include_preprocessing: bool; `True` means inputs are raw (see `preprocessing`)
            and are preprocessed inside the model; `False`: inputs are network-ready.
        preprocessing: what raw inputs are: `"pixels"` (8-bit photos, 0..255) or
            `"flux"` (survey cutouts in physical units, NaN blanks allowed).
        normalization: how raw inputs are scaled (`keras_astro.layers.preprocessing`):
            `"image"`, each image and band by its own background and noise (median,
            MAD), arcsinh stretched and standardized; `"dataset"`, one scale for all
            images, which keeps colours: pixels to [-1, 1], flux standardized with
            statistics adapted to training data by `adapt_preprocessing`. `None`
            picks `"image"` for flux and `"dataset"` for pixels.
        clip_sigma: `None`, or k > 0: with `normalization="image"`, pixels below k
            noise levels above each image's background are set to the background
            (the radio convention, e.g. 3).
        center_crop: `None` or the central fraction of each side of a full cutout that
            the model's input was cut from (before resizing to `input_shape`); kept in
            the config so that `predict`, `evaluate` and the exported signatures can
            take full cutouts (`keras_astro.data.ImageConverter.from_model`).
        num_heads: int, attention heads.
        attention_scale: float or `None` (1/sqrt(head_dim)); 1.0 matches the reference.
        dropout: float, dropout rate before the classifier.
        class_names: optional list of str, kept in the config for tools that print names.
        data_format: `"channels_last"`, `"channels_first"` or `None` (Keras' global
            image data format at construction); kept in the config so a saved model
            reloads with its own layout.
        remat: bool; `True` trades compute for training memory (gradient
            checkpointing with `keras.remat`): every StageBlock and the attention keep
            only their input and recompute the rest in the backward pass, the attention
            one image at a time (on torch, a quarter of the batch at a time; on JAX,
            the whole attention layer one image at a time). Same
            numbers, about a third more compute per step.
        temperature: `None`, or T > 0: the head divides its logits by T before its
            activation (temperature scaling, `keras_astro.models.calibration`), so
            that probabilities match accuracy; `keras-astro train` fits T on the
            validation split. `None` is the head without it.
        test_time_augmentation: `None`, or `"dihedral"`: in inference mode the model
            runs the 8 rotations and reflections of each (square) image and averages
            its outputs (probabilities, or pooled features without the top), so its
            answer does not depend on orientation (`keras_astro.layers.symmetry`).
            Training is unchanged; inference costs 8 times the compute and memory.
            `keras-astro train` turns it on after `--augment dihedral` or `rotate`
            (`--test-time-augmentation`).
        name: str, model name.
        dtype: optional dtype policy for every layer; defaults to the global policy.
    """

    def __init__(
        self,
        expansion=2,
        stage_depths=(2, 2, 2),
        num_classes=10,
        input_shape=(32, 32, 3),
        include_top=True,
        pooling="avg",
        classifier_activation="softmax",
        include_preprocessing=True,
        preprocessing="pixels",
        center_crop=None,
        normalization=None,
        clip_sigma=None,
        num_heads=1,
        attention_scale=None,
        dropout=0.0,
        class_names=None,
        data_format=None,
        remat=False,
        temperature=None,
        test_time_augmentation=None,
        name=None,
        dtype=None,
        **kwargs,
    ):
        # Keras' functional Model drops keyword arguments it does not know, silently.
        unknown = sorted(set(kwargs) - {"trainable"})
        if unknown:
            raise TypeError(
                f"AstroTransformer got unexpected keyword arguments {unknown}; expected its "
                "own (input_shape=(height, width, bands) sets the image size) or Keras' "
                "`trainable`."
            )
        data_format = standardize_data_format(data_format)
        stage_depths = tuple(stage_depths)
        input_shape = tuple(input_shape)
        class_names = None if class_names is None else list(class_names)
        if normalization is None:
            normalization = "image" if preprocessing == "flux" else "dataset"
        _validate_arguments(
            expansion, stage_depths, num_classes, input_shape, include_top, pooling, class_names,
            data_format, preprocessing, center_crop, normalization, clip_sigma,
        )
        check_temperature(temperature)
        check_test_time_augmentation(test_time_augmentation, input_shape, data_format)
        if test_time_augmentation and not include_top and pooling is None:
            raise ValueError(
                "test_time_augmentation averages the outputs of the rotated views, so it "
                "needs include_top=True or a pooling; feature maps turn with the image."
            )
        conv_args = dict(use_bias=False, data_format=data_format, dtype=dtype)
        bn_args = dict(axis=channel_axis(data_format), momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=dtype)

        # === Functional graph ===
        inputs = keras.Input(shape=input_shape, name="images")
        x = inputs
        if include_preprocessing:
            x = _input_normalization(x, preprocessing, normalization, clip_sigma, data_format, dtype)
        if test_time_augmentation:
            x = DihedralViews(data_format, name="dihedral_views", dtype=dtype)(x)
        x = _stem(x, conv_args, bn_args, dtype)
        x = _stages(x, expansion, stage_depths, conv_args, data_format, remat, dtype)
        x = RelativeAttention(
            num_heads=num_heads,
            attention_scale=attention_scale,
            data_format=data_format,
            remat=remat,
            name="relative_attention",
            dtype=dtype,
        )(x)
        outputs = _head(
            x, include_top, pooling, num_classes, classifier_activation, temperature, dropout,
            data_format, dtype,
        )
        if test_time_augmentation:
            outputs = ViewAverage(name="view_average", dtype=outputs.dtype)(outputs)
        super().__init__(inputs=inputs, outputs=outputs, name=name, dtype=dtype, **kwargs)

        # === Config ===
        self.expansion = expansion
        self.stage_depths = stage_depths
        self.num_classes = num_classes
        self.include_top = include_top
        self.pooling = pooling
        self.classifier_activation = classifier_activation
        self.include_preprocessing = include_preprocessing
        self.preprocessing = preprocessing
        self.center_crop = center_crop
        self.normalization = normalization
        self.clip_sigma = clip_sigma
        self.num_heads = num_heads
        self.attention_scale = attention_scale
        self.dropout = dropout
        self.class_names = class_names
        self.data_format = data_format
        self.remat = remat
        self.temperature = temperature
        self.test_time_augmentation = test_time_augmentation

    def adapt_preprocessing(self, data):
        """Adapts the flux normalization to training data (images, or batches of them).

        Does nothing for pixels and per-image normalization, which have nothing to learn.
        """
        if self.include_preprocessing and self.preprocessing == "flux" and self.normalization == "dataset":
            self.get_layer("flux_normalization").adapt(data)

    @property
    def image_shape(self):
        """The input shape without batch, e.g. (32, 32, 3)."""
        return tuple(self.inputs[0].shape[1:])

    def _check_images(self, inputs):
        # Keras' own check squeezes trailing size-1 axes before reporting (a 28x28x1
        # batch reads as (B, 28, 28)), and JAX's stateless predict path skips it.
        images = inputs[0] if isinstance(inputs, (list, tuple)) else inputs
        received = tuple(images.shape)
        expected = self.image_shape
        if len(received) != len(expected) + 1 or any(
            want is not None and got is not None and want != got
            for want, got in zip(expected, received[1:])
        ):
            raise ValueError(
                f"{self.name} expects a batch of images of shape (batch, "
                f"{', '.join(str(d) for d in expected)}) ({self.data_format}); "
                f"received shape {received}."
            )

    def _check_data(self, x):
        # Keras' JAX trainer takes the weights out of the model before its first
        # compiled step; a shape error raised inside that step would lose them.
        spec = getattr(x, "element_spec", x)
        if isinstance(spec, (list, tuple)) and spec:
            spec = spec[0]
        if getattr(spec, "shape", None) is not None:
            self._check_images(spec)

    def fit(self, x=None, *args, **kwargs):
        self._check_data(x)
        return super().fit(x, *args, **kwargs)

    def evaluate(self, x=None, *args, **kwargs):
        self._check_data(x)
        return super().evaluate(x, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self._check_data(x)
        return super().predict(x, *args, **kwargs)

    def _assert_input_compatibility(self, *args):
        self._check_images(args[0])
        return super()._assert_input_compatibility(*args)

    def call(self, inputs, training=None, mask=None):
        self._check_images(inputs)
        return super().call(inputs, training=training, mask=mask)

    def get_config(self):
        return {
            "expansion": self.expansion,
            "stage_depths": list(self.stage_depths),
            "num_classes": self.num_classes,
            "input_shape": list(self.image_shape),
            "include_top": self.include_top,
            "pooling": self.pooling,
            "classifier_activation": self.classifier_activation,
            "include_preprocessing": self.include_preprocessing,
            "preprocessing": self.preprocessing,
            "center_crop": self.center_crop,
            "normalization": self.normalization,
            "clip_sigma": self.clip_sigma,
            "num_heads": self.num_heads,
            "attention_scale": self.attention_scale,
            "dropout": self.dropout,
            "class_names": self.class_names,
            "data_format": self.data_format,
            "remat": self.remat,
            "temperature": self.temperature,
            "test_time_augmentation": self.test_time_augmentation,
            "name": self.name,
            "dtype": keras.dtype_policies.serialize(self.dtype_policy),
            "trainable": self.trainable,
        }

    @classmethod
    def from_config(cls, config):
        # Files saved before per-image normalization existed scaled with data-set statistics.
        config = {"normalization": "dataset", **config}
        if config.get("dtype") is not None and isinstance(config["dtype"], dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(**config)

    @classmethod
    def from_name(cls, config_name, **kwargs):
        """Builds one of the named configurations: "small", "base" or "large"."""
        if config_name not in CONFIGS:
            raise ValueError(
                f"Unknown configuration {config_name!r}. Expected one of {sorted(CONFIGS)}."
            )
        expansion, stage_depths = CONFIGS[config_name]
        kwargs.setdefault("name", f"astro_transformer_{config_name}")
        return cls(expansion=expansion, stage_depths=stage_depths, **kwargs)

    @classmethod
    def small(cls, **kwargs):
        """e=2, depths (1, 1, 1): 312,330 parameters with 10 classes."""
        return cls.from_name("small", **kwargs)

    @classmethod
    def base(cls, **kwargs):
        """e=2, depths (2, 2, 2): 404,170 parameters with 10 classes."""
        return cls.from_name("base", **kwargs)

    @classmethod
    def large(cls, **kwargs):
        """e=3, depths (2, 3, 3): 4,565,770 parameters with 10 classes."""
        return cls.from_name("large", **kwargs)

    @classmethod
    def from_torch_checkpoint(cls, checkpoint, **kwargs):
        """Builds a model holding the weights of a reference PyTorch checkpoint.

        Args:
            checkpoint: path to a `torch.save` file (a state_dict, or a dict with one
                under "state_dict" or "model_state_dict"), or a state_dict mapping of
                names to torch tensors or numpy arrays.
            **kwargs: passed to the constructor; by default the model takes raw
                normalised inputs (`include_preprocessing=False`) and uses the
                reference's unscaled logits (`attention_scale=1.0`).
        """
        return load_torch_checkpoint(cls, checkpoint, **kwargs)

    def save_to_preset(self, preset_dir, metadata=None, card=None):
        """Writes the model as a preset folder (config.json, model.weights.h5,
        metadata.json, README.md; `keras_astro.models.preset_files`)."""
        from keras_astro.models.preset_files import save_to_preset

        return save_to_preset(self, preset_dir, metadata=metadata, card=card)

    @classmethod
    def from_preset(cls, preset, num_classes=None, class_names=None, **kwargs):
        """Loads a preset: a folder, a shipped name ("frdeep_first_small"), `hf://` or
        `kaggle://` handle, or a `.keras` file.

        With `num_classes`, `class_names` or constructor arguments (`input_shape`,
        `center_crop`, ...), returns a model to fine-tune instead: the preset's backbone
        and, unless the classes are the same, a new head
        (`keras_astro.models.fine_tune.initialize_from`).
        """
        from keras_astro.models.fine_tune import initialize_from
        from keras_astro.models.preset_files import load_source

        model = load_source(preset)
        if num_classes is None and class_names is None and not kwargs:
            return model
        return initialize_from(model, class_names=class_names, num_classes=num_classes, **kwargs)
