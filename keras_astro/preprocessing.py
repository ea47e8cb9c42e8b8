"""The preprocessing inside AstroTransformer: what turns raw inputs into network inputs.

Two kinds of raw input, chosen by the model's `preprocessing` argument:

- `"pixels"`: 8-bit photos and composites, 0..255, scaled to [-1, 1] (`keras.layers.Rescaling`).
- `"flux"`: survey cutouts in physical units (Jy/beam, nanomaggies): negative values, NaN
  blanks, a dynamic range of 10^4 and more. `FluxNormalization` makes them finite, applies
  a per-band arcsinh stretch and standardizes each band with statistics adapted to the
  training data and stored in the model, so a saved model takes raw cutouts.
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
