"""The model's input scaling: `FluxNormalization` (data-set statistics) and `ImageNormalization`."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_astro.layers.preprocessing import (
    LUPTON_SOFTENING,
    MAD_TO_SIGMA,
    FluxNormalization,
    ImageNormalization,
)

# Three bands on very different scales (nanomaggies, Jy/beam, counts), with blanks.
SCALES = np.array([1e-3, 1.0, 1e3], "float32")


def flux(batch=6, size=8, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.standard_t(3, size=(batch, size, size, 3)) * SCALES + SCALES).astype("float32")
    x[0, 0, 0] = np.nan
    x[1, 2, 3, 1] = np.inf
    x[2, 4, 4, 2] = -np.inf
    return x


def adapted(x, data_format="channels_last"):
    layer = FluxNormalization(data_format=data_format)
    layer.adapt(x)
    return layer


def _numpy(x):
    return ops.convert_to_numpy(x)


def test_adapt_standardizes_each_band():
    x = flux()
    layer = adapted(x)
    softening, mean, std = (_numpy(w) for w in (layer.softening, layer.mean, layer.std))
    finite = np.where(np.isfinite(x), x, np.nan).reshape(-1, 3)
    mad = np.nanmedian(np.abs(finite - np.nanmedian(finite, axis=0)), axis=0)
    np.testing.assert_allclose(softening, LUPTON_SOFTENING * MAD_TO_SIGMA * mad, rtol=1e-5)
    assert not np.allclose(mean, 0) and not np.allclose(std, 1)
    y = _numpy(layer(x))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y.mean(axis=(0, 1, 2)), 0.0, atol=1e-4)
    np.testing.assert_allclose(y.std(axis=(0, 1, 2)), 1.0, rtol=1e-3)
    # Blanks count as 0 flux; the scale of a band does not matter.
    blanks = x.copy()
    blanks[~np.isfinite(blanks)] = 0.0
    np.testing.assert_allclose(_numpy(layer(blanks)), y, rtol=1e-6)
    np.testing.assert_allclose(_numpy(adapted(x * 1e4)(x * 1e4)), y, rtol=1e-4, atol=1e-5)


def test_unadapted_layer_is_a_plain_arcsinh_and_adapt_takes_batches():
    x = flux()
    np.testing.assert_allclose(
        _numpy(FluxNormalization()(x)), np.arcsinh(np.where(np.isfinite(x), x, 0)), rtol=1e-5
    )
    batches = FluxNormalization()
    batches.adapt([(x[:3], np.zeros(3)), (x[3:], np.zeros(3))])  # a dataset of (images, labels)
    np.testing.assert_allclose(_numpy(batches(x)), _numpy(adapted(x)(x)), rtol=1e-5, atol=1e-6)


def test_adapt_refuses_a_band_without_a_finite_pixel():
    x = flux()
    x[..., 1] = np.nan
    with pytest.raises(ValueError, match=r"band\(s\) \[1\] have no finite pixel"):
        FluxNormalization().adapt(x)


def test_channels_first_equals_channels_last_transposed():
    x = flux()
    last = adapted(x)
    first = adapted(np.transpose(x, (0, 3, 1, 2)), "channels_first")
    for a, b in zip(last.get_weights(), first.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    got = _numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), _numpy(last(x)), rtol=1e-5, atol=1e-6)


def test_config_and_keras_file_keep_the_adapted_statistics(tmp_path):
    x = flux()
    layer = adapted(x)
    config = layer.get_config()
    assert config["data_format"] == "channels_last" and "dtype" not in config
    assert FluxNormalization.from_config(config).get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert isinstance(revived, FluxNormalization) and revived.get_config() == config

    inputs = keras.Input((None, None, 3))
    model = keras.Model(inputs, layer(inputs))
    model.save(tmp_path / "flux.keras")
    loaded = keras.saving.load_model(tmp_path / "flux.keras")
    reloaded = loaded.layers[-1]
    assert isinstance(reloaded, FluxNormalization) and not reloaded.trainable_weights
    for a, b in zip(reloaded.get_weights(), layer.get_weights()):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(_numpy(loaded(x)), _numpy(layer(x)), rtol=1e-6)


def test_computes_in_float32_under_mixed_precision(mixed_float16):
    x = flux() * 1e3  # counts of 1e6: beyond float16's range
    layer = FluxNormalization()
    assert layer.compute_dtype == "float32"
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    assert all(w.dtype == "float32" for w in layer.weights)
    np.testing.assert_allclose(_numpy(y), np.arcsinh(np.where(np.isfinite(x), x, 0)), rtol=1e-5)


# === ImageNormalization: each image and band by its own background and noise ===


def image_normalization_numpy(x, clip_sigma=None):
    """The per-image formula, one image and band at a time, in float64."""
    out = np.zeros(x.shape)
    for i in range(x.shape[0]):
        for band in range(x.shape[-1]):
            values = x[i, ..., band].astype("float64")
            finite = np.isfinite(values)
            if not finite.any():
                continue
            centred = np.where(finite, values - np.median(values[finite]), 0.0)
            noise = MAD_TO_SIGMA * np.median(np.abs(centred[finite]))
            if not noise > 0:
                noise = np.sqrt(np.mean(centred[finite] ** 2))
            y = centred / (noise if noise > 0 else 1.0)
            if clip_sigma is not None:
                y = np.where(y >= clip_sigma, y, 0.0)
            y = np.arcsinh(y / LUPTON_SOFTENING)
            out[i, ..., band] = (y - y.mean()) / (y.std() or 1.0)
    return out


def radio_cutouts():
    """Noise fields of different levels, bright sources, NaN blanks, an empty and a flat band."""
    x = flux(batch=5, size=9)
    x[3, ..., 0] = np.nan  # a band with no finite pixel
    x[4, ..., 1] = 2.5  # a constant band
    x[4, :5, :, 2] = 7.0  # more than half equal: MAD 0, the standard deviation instead
    return x


@pytest.mark.parametrize("clip_sigma", [None, 3.0])
def test_image_normalization_matches_numpy(clip_sigma):
    x = radio_cutouts()
    y = _numpy(ImageNormalization(clip_sigma=clip_sigma)(x))
    assert y.dtype == np.float32 and np.isfinite(y).all()
    np.testing.assert_allclose(y, image_normalization_numpy(x, clip_sigma), atol=2e-5)
    np.testing.assert_array_equal(y[3, ..., 0], 0.0)
    np.testing.assert_array_equal(y[4, ..., 1], 0.0)


def test_image_normalization_ignores_each_images_scale_and_offset():
    # A faint source on a quiet field and a bright one on a noisy field look alike.
    x = radio_cutouts()[:3]
    x = np.where(np.isfinite(x), x, 0.0).astype("float32")
    scale = np.array([1e-3, 1.0, 50.0], "float32")[:, None, None, None]
    scaled = scale * (x + 4.0 * SCALES)
    layer = ImageNormalization()
    np.testing.assert_allclose(_numpy(layer(scaled)), _numpy(layer(x)), atol=2e-4)


def test_image_normalization_channels_first_and_config(tmp_path):
    x = radio_cutouts()
    last = ImageNormalization(clip_sigma=2.0)
    first = ImageNormalization(clip_sigma=2.0, data_format="channels_first")
    got = _numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), _numpy(last(x)), atol=1e-6)
    config = last.get_config()
    assert config["clip_sigma"] == 2.0 and "dtype" not in config
    assert ImageNormalization.from_config(config).get_config() == config
    assert not last.weights
    with pytest.raises(ValueError, match="`clip_sigma` must be None or a finite number > 0"):
        ImageNormalization(clip_sigma=0)


def test_image_normalization_computes_in_float32_under_mixed_precision(mixed_float16):
    x = radio_cutouts() * 1e3
    layer = ImageNormalization()
    assert layer.compute_dtype == "float32"
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float32"
    np.testing.assert_allclose(_numpy(y), image_normalization_numpy(x), atol=2e-5)
