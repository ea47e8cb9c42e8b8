"""Temperature scaling in AstroTransformer's head (`models.calibration`)."""

import numpy as np
import pytest

from keras_astro.models.calibration import TemperatureScaling, logits_model, with_temperature
from keras_astro.models.saving import load_model
from keras_astro.training.calibration import softmax
from keras_astro.utils import check_classifier, returns_logits
from tests.test_case import random_images, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def images():
    return random_images(4, (8, 8, 3))


def test_without_temperature_the_head_is_unchanged(model):
    assert model.temperature is None and model.get_config()["temperature"] is None
    assert model.layers[-1].name == "predictions"
    assert not any(isinstance(layer, TemperatureScaling) for layer in model.layers)


def test_the_temperature_divides_the_logits_and_survives_saving(model, images, tmp_path):
    logits = logits_model(model).predict(images, verbose=0)
    np.testing.assert_allclose(model.predict(images, verbose=0), softmax(logits), atol=1e-6)
    calibrated = with_temperature(model, 2.5)
    assert [w.path for w in calibrated.weights] == [w.path for w in model.weights]
    expected = softmax(logits, 2.5)
    np.testing.assert_allclose(calibrated.predict(images, verbose=0), expected, atol=1e-6)
    assert not returns_logits(calibrated)
    check_classifier(calibrated, "calibration")

    calibrated.save(tmp_path / "calibrated.keras")
    loaded = load_model(tmp_path / "calibrated.keras")
    assert loaded.temperature == 2.5 and loaded.get_config() == calibrated.get_config()
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    # Back to the uncalibrated model, and a logits head returns the scaled logits.
    uncalibrated = with_temperature(loaded, None)
    np.testing.assert_allclose(
        uncalibrated.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6
    )
    scaled = with_temperature(logits_model(model), 2.5)
    assert returns_logits(scaled)
    np.testing.assert_allclose(scaled.predict(images, verbose=0), logits / 2.5, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("temperature", [0, -1.0, float("nan"), float("inf"), "2", True])
def test_a_bad_temperature_is_refused(temperature):
    with pytest.raises(ValueError, match="`temperature` must be None or a finite number > 0"):
        tiny_model(temperature=temperature)
