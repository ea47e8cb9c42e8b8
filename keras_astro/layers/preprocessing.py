"""The preprocessing inside AstroTransformer: what turns raw inputs into network inputs.

Two kinds of raw input (the model's `preprocessing` argument) and two ways to scale them
(its `normalization` argument):

- `"pixels"`: 8-bit photos and composites, 0..255.
- `"flux"`: survey cutouts in physical units (Jy/beam, nanomaggies): negative values, NaN
  blanks, a dynamic range of 10^4 and more.

- `normalization="image"`: `ImageNormalization`, each image and band scaled by its own
  background and noise (median and MAD), optionally clipped below k sigma, arcsinh
  stretched and standardized. Sources whose peak fluxes differ by orders of magnitude,
  on fields of different noise, all reach the network at the same scale: what radio and
  optical morphology work does to each cutout. Nothing is learned from the data.
- `normalization="dataset"`: one scale for the whole data set, so the ratios between
  bands (colours) survive: pixels are scaled to [-1, 1] (`keras.layers.Rescaling`),
  flux goes through `FluxNormalization`, a per-band arcsinh stretch and standardization
  with statistics adapted to the training data and stored in the model.
"""

import keras
import numpy as np
from keras import ops

from keras_astro.layers.arguments import channel_axis, standardize_data_format

# Lupton, Gunn & Szalay (1999): the arcsinh softening that keeps the noise of a
# background pixel as it is is b = sqrt(2.5 log10(e)) sigma = 1.042 sigma.
LUPTON_SOFTENING = 1.042
# Median absolute deviation -> standard deviation of a normal distribution.
MAD_TO_SIGMA = 1.4826


@keras.saving.register_keras_serializable(package="keras_astro")
class ImageNormalization(keras.layers.Layer):
    """Scales each image and band by its own background and noise; NaN-safe, nothing to adapt.

    Per image and band, over its finite pixels: background m = median, noise
    s = 1.4826 x the median absolute deviation (the standard deviation when more than
    half the pixels are equal, as in blanked or clipped cutouts). Then
    y = asinh(((x - m) / s) / 1.042), linear within the noise and logarithmic for bright
    sources (Lupton et al. 1999); with `clip_sigma=k`, pixels below k sigma are set to
    the background first, the radio convention that keeps only significant emission.
    Non-finite pixels (NaN blanks) count as background. Finally each image and band is
    standardized to mean 0 and standard deviation 1. An image with no finite pixel, or a
    constant one, becomes zeros.

    Computes in float32 whatever the dtype policy: flux needs float32's range.

    Args:
        clip_sigma: `None`, or a number > 0: pixels below `clip_sigma` noise levels
            above the background are set to the background.
        data_format: `"channels_last"`, `"channels_first"` or `None`.
    """

    def __init__(self, clip_sigma=None, data_format=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        check_clip_sigma(clip_sigma)
        self.clip_sigma = clip_sigma
        self.data_format = standardize_data_format(data_format)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.data_format == "channels_last":
            x = ops.transpose(x, (0, 3, 1, 2))
        shape = ops.shape(x)
        x = ops.reshape(x, (shape[0], shape[1], -1))  # [batch, bands, pixels]
        finite = ops.isfinite(x)
        count = ops.sum(ops.cast(finite, "float32"), axis=-1, keepdims=True)
        background = _median(x, finite, count)
        centred = ops.where(finite, x - background, ops.zeros_like(x))
        noise = MAD_TO_SIGMA * _median(ops.abs(centred), finite, count)
        std = ops.sqrt(ops.sum(ops.square(centred), axis=-1, keepdims=True) / ops.maximum(count, 1.0))
        noise = ops.where(noise > 0, noise, std)
        y = centred / ops.where(noise > 0, noise, ops.ones_like(noise))
        if self.clip_sigma is not None:
            y = ops.where(y >= self.clip_sigma, y, ops.zeros_like(y))
        y = ops.arcsinh(y / LUPTON_SOFTENING)
        mean = ops.mean(y, axis=-1, keepdims=True)
        spread = ops.sqrt(ops.mean(ops.square(y - mean), axis=-1, keepdims=True))
        y = (y - mean) / ops.where(spread > 0, spread, ops.ones_like(spread))
        y = ops.reshape(y, shape)
        if self.data_format == "channels_last":
            y = ops.transpose(y, (0, 2, 3, 1))
        return y

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config.update(clip_sigma=self.clip_sigma, data_format=self.data_format)
        return config


def check_clip_sigma(clip_sigma):
    """Raises a `ValueError` unless `clip_sigma` is None or a finite number > 0."""
    if clip_sigma is None:
        return
    if isinstance(clip_sigma, bool) or not isinstance(clip_sigma, (int, float)) or not (
        np.isfinite(clip_sigma) and clip_sigma > 0
    ):
        raise ValueError(
            f"`clip_sigma` must be None or a finite number > 0. Received: {clip_sigma!r}"
        )


def _median(x, finite, count):
    """The median over the last axis of the entries where `finite`; `count` of them."""
    values = ops.sort(ops.where(finite, x, ops.full_like(x, np.inf)), axis=-1)
    low = ops.cast(ops.maximum(ops.floor((count - 1) / 2), 0.0), "int32")
    high = ops.cast(ops.maximum(ops.floor(count / 2), 0.0), "int32")
    middle = 0.5 * (ops.take_along_axis(values, low, axis=-1) + ops.take_along_axis(values, high, axis=-1))
    return ops.where(count > 0, middle, ops.zeros_like(middle))


@keras.saving.register_keras_serializable(package="keras_astro")
class FluxNormalization(keras.layers.Layer):
    """NaN-safe per-band arcsinh stretch of raw flux, then per-band standardization.

    y_b = (asinh(x_b / s_b) - m_b) / d_b, where non-finite x (NaN blanks, inf) count as 0
    (the background level of a background-subtracted cutout), s_b is Lupton et al.'s
    softening, 1.042 times the band's robust noise (1.4826 x the median absolute
    deviation of its pixels), and m_b, d_b are the mean and standard deviation of the
    stretched band. The stretch is linear within the noise and logarithmic for bright
    sources, as asinh magnitudes and the Legacy Surveys' `sdss_rgb` composites are, so
    faint structure and bright cores both reach the network; standardizing afterwards
    puts every band, whatever its units, on the same scale.

    s, m and d are non-trainable weights set by `adapt(training data)` and saved with
    the model; until then the layer is asinh alone (s = 1, m = 0, d = 1). It computes
    in float32 whatever the dtype policy, since flux needs float32's range.

    Args:
        data_format: `"channels_last"`, `"channels_first"` or `None`.
    """

    def __init__(self, data_format=None, **kwargs):
        kwargs["dtype"] = "float32"
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)

    def build(self, input_shape):
        bands = input_shape[channel_axis(self.data_format)]
        if bands is None:
            raise ValueError(
                f"FluxNormalization needs a known number of bands. Received: input_shape={input_shape}"
            )
        weight = dict(shape=(bands,), trainable=False)
        self.softening = self.add_weight(name="softening", initializer="ones", **weight)
        self.mean = self.add_weight(name="mean", initializer="zeros", **weight)
        self.std = self.add_weight(name="std", initializer="ones", **weight)

    def _per_band(self, weight):
        return weight if self.data_format == "channels_last" else ops.reshape(weight, (-1, 1, 1))

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        x = ops.where(ops.isfinite(x), x, ops.zeros_like(x))
        x = ops.arcsinh(x / self._per_band(self.softening))
        return (x - self._per_band(self.mean)) / self._per_band(self.std)

    def adapt(self, data, max_pixels=1_000_000, seed=0):
        """Sets s, m, d from training data: numpy images, or batches of (images, ...).

        Reads the first batches only (up to 4 x `max_pixels` pixels, shuffled training
        data is a fair sample) and keeps `max_pixels` of them at random. Raises a
        `ValueError` when a band has no finite pixel.
        """
        pixels = _sample_pixels(data, self.data_format, max_pixels, seed)
        if not self.built:
            self.build((None, pixels.shape[1]))  # the bands, at the channel axis of either format
        finite = np.isfinite(pixels)
        empty = [band for band in range(pixels.shape[1]) if not finite[:, band].any()]
        if empty:
            raise ValueError(f"FluxNormalization.adapt: band(s) {empty} have no finite pixel.")
        softening, mean, std = [], [], []
        for band in range(pixels.shape[1]):
            values = pixels[finite[:, band], band].astype("float64")
            noise = MAD_TO_SIGMA * np.median(np.abs(values - np.median(values)))
            if not noise > 0:
                noise = values.std() or 1.0
            softening.append(LUPTON_SOFTENING * noise)
            band_pixels = np.where(finite[:, band], pixels[:, band], 0.0)
            stretched = np.arcsinh(band_pixels / softening[-1])
            mean.append(stretched.mean())
            std.append(stretched.std() or 1.0)
        for weight, values in ((self.softening, softening), (self.mean, mean), (self.std, std)):
            weight.assign(np.asarray(values, "float32"))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.pop("dtype", None)
        config["data_format"] = self.data_format
        return config


def _sample_pixels(data, data_format, max_pixels, seed):
    """[n, bands] float32 pixels drawn from numpy images or batches of images."""
    rng = np.random.default_rng(seed)
    batches = [data] if isinstance(data, np.ndarray) else data
    samples = []
    seen = 0
    for batch in batches:
        images = batch[0] if isinstance(batch, (tuple, list)) else batch
        images = np.asarray(images)
        if images.ndim != 4:
            raise ValueError(
                f"FluxNormalization.adapt expects batches of images [batch, H, W, bands] "
                f"(or [batch, bands, H, W] channels_first). Received shape {images.shape}."
            )
        if data_format == "channels_first":
            images = np.moveaxis(images, 1, -1)
        pixels = images.reshape(-1, images.shape[-1])
        samples.append(pixels[rng.permutation(len(pixels))[: max_pixels]])
        seen += len(pixels)
        if seen >= 4 * max_pixels:
            break
    if not samples:
        raise ValueError("FluxNormalization.adapt received no images.")
    pixels = np.concatenate(samples)
    return pixels[rng.permutation(len(pixels))[:max_pixels]].astype("float32")
