"""Test-time augmentation inside the model (`layers.symmetry`, `test_time_augmentation`)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astro.layers.symmetry import DihedralViews, ViewAverage, dihedral_views
from keras_astro.models.calibration import rebuild, with_temperature
from keras_astro.models.saving import load_model
from keras_astro.survey.predict import feature_model
from keras_astro.training.calibration import (
    calibrate_model,
    constrained,
    fit_temperature,
    view_logits,
    view_nll,
)
from keras_astro.training.evaluation import predict_probabilities, predict_views
from tests.test_case import backend_runs_channels_first, random_images, tiny_model


def numpy_views(images):
    """The 8 views in NumPy: k quarter turns (counter-clockwise), transposed first for k >= 4."""
    return np.concatenate(
        [np.rot90(np.swapaxes(images, 1, 2) if k >= 4 else images, k % 4, axes=(1, 2))
         for k in range(8)]
    )


def dataset(images):
    return tf.data.Dataset.from_tensor_slices((images,)).batch(3)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_views_are_the_eight_symmetries_of_the_square(data_format):
    images = np.arange(2 * 4 * 4 * 3, dtype="float32").reshape(2, 4, 4, 3)
    expected = numpy_views(images)
    if data_format == "channels_first":
        images, expected = (np.moveaxis(a, -1, 1) for a in (images, expected))
    views = keras.ops.convert_to_numpy(dihedral_views(images, data_format))
    np.testing.assert_array_equal(views, expected)
    assert len({v.tobytes() for v in np.split(views, 16)}) == 16  # no view repeated


def test_layers_pass_training_batches_through_and_average_in_inference():
    for layer in (DihedralViews(data_format="channels_first"), ViewAverage()):
        revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
        assert revived.get_config() == layer.get_config() and not revived.weights
    assert DihedralViews().compute_output_shape((2, 4, 4, 3)) == (16, 4, 4, 3)
    assert ViewAverage().compute_output_shape((16, 3)) == (2, 3)
    images = random_images(2, (4, 4, 3))
    assert keras.ops.convert_to_numpy(DihedralViews()(images, training=True)).shape == (2, 4, 4, 3)
    assert keras.ops.convert_to_numpy(DihedralViews()(images)).shape == (16, 4, 4, 3)
    outputs = np.random.default_rng(0).normal(size=(16, 3)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(ViewAverage()(outputs)), outputs.reshape(8, 2, 3).mean(0), rtol=1e-6
    )
    assert ViewAverage()(outputs, training=True).shape == (16, 3)


def test_the_model_averages_its_views_probabilities_and_saves_the_choice(tmp_path):
    model = with_temperature(tiny_model(test_time_augmentation="dihedral"), 1.7)
    one_view = rebuild(model, test_time_augmentation=None)
    images = random_images(5, (8, 8, 3))
    expected = predict_views(one_view, dataset(images), tta=True).mean(0)
    np.testing.assert_allclose(model.predict(images, verbose=0), expected, atol=1e-6)
    # Its own views with `tta`, so their mean is its output.
    np.testing.assert_allclose(predict_probabilities(model, dataset(images), tta=True), expected, atol=1e-6)
    # Each image's answer is the same whichever way it is turned.
    turned = numpy_views(images)[10:15]  # view 2: half a turn
    np.testing.assert_allclose(model.predict(turned, verbose=0), expected, atol=1e-5)
    model.save(tmp_path / "tta.keras")
    loaded = load_model(tmp_path / "tta.keras")
    assert loaded.get_config()["test_time_augmentation"] == "dihedral"
    np.testing.assert_allclose(loaded.predict(images, verbose=0), expected, atol=1e-6)
    # Training runs the network once per image.
    out = model(images, training=True)
    assert tuple(out.shape) == (5, 3)


def test_embeddings_of_a_model_with_views_do_not_depend_on_orientation():
    model = tiny_model(test_time_augmentation="dihedral")
    images = random_images(3, (8, 8, 3))
    features = feature_model(model)
    turned = numpy_views(images)[3:6]  # a quarter turn
    np.testing.assert_allclose(
        features.predict(images, verbose=0), features.predict(turned, verbose=0), atol=1e-5
    )


@pytest.mark.skipif(not backend_runs_channels_first(), reason="channels_first convolutions do not run here")
def test_channels_first_model_averages_the_same_views():
    model = tiny_model(data_format="channels_first", input_shape=(3, 8, 8), test_time_augmentation="dihedral")
    images = np.moveaxis(random_images(2, (8, 8, 3)), -1, 1)
    turned = np.moveaxis(numpy_views(np.moveaxis(images, 1, -1))[2:4], -1, 1)
    np.testing.assert_allclose(model.predict(images, verbose=0), model.predict(turned, verbose=0), atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"test_time_augmentation": "rotate"}, "test_time_augmentation"),
        ({"test_time_augmentation": "dihedral", "input_shape": (8, 6, 3)}, "square"),
        ({"test_time_augmentation": "dihedral", "input_shape": (None, None, 3)}, "square"),
        ({"test_time_augmentation": "dihedral", "include_top": False, "pooling": None}, "pooling"),
    ],
)
def test_bad_test_time_augmentation_is_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)


def test_temperature_is_fitted_to_the_average_of_the_views():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 200)
    logits = 6 * np.eye(3)[labels] + rng.normal(size=(8, 200, 3)) * 4  # over-confident views
    temperature = fit_temperature(logits, labels)
    # The NumPy statement of the averaged NLL, at the fitted T and beside it.
    def nll(t):
        z = logits / t
        p = np.exp(z - z.max(-1, keepdims=True))
        p = (p / p.sum(-1, keepdims=True)).mean(0)
        return -np.log(p[np.arange(200), labels]).mean()

    assert view_nll(logits, labels, temperature) == pytest.approx(nll(temperature), rel=1e-9)
    assert 0.05 < temperature < 20 and nll(temperature) <= min(nll(temperature * 1.05), nll(temperature / 1.05))
    # One view: the plain temperature of those logits.
    assert fit_temperature(logits[:1], labels) == pytest.approx(fit_temperature(logits[0], labels), rel=1e-6)

    model = tiny_model(test_time_augmentation="dihedral")
    images = random_images(6, (8, 8, 3))
    labels = np.arange(6) % 3
    validation = tf.data.Dataset.from_tensor_slices((images, np.eye(3)[labels])).batch(3)
    logits = view_logits(model, validation)  # the 8 views' logits, in the model's view order
    assert logits.shape == (8, 6, 3)
    probabilities = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    np.testing.assert_allclose(probabilities.mean(0), model.predict(images, verbose=0), atol=1e-5)
    fitted = fit_temperature(logits, labels)
    calibrated = calibrate_model(model, validation)
    assert calibrated.test_time_augmentation == "dihedral"
    assert calibrated.temperature == (fitted if constrained(logits, labels, fitted) else None)
