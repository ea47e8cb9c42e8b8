"""`FluxNormalization`: NaN-safe arcsinh stretch and per-band standardization adapted to data."""

import keras
import numpy as np
import pytest
from keras import ops

from keras_astro.preprocessing import LUPTON_SOFTENING, MAD_TO_SIGMA, FluxNormalization

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
