import keras
import numpy as np
import pytest

from keras_astro.export import export_for_serving
from keras_astro.models import AstroTransformer
from keras_astro.models.folding import FoldedStageBlock, fold_batch_norm
from tests.test_case import random_images, skip_unless_channels_first_runs, tiny_model


def randomize_batch_norm_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(size=shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=shape).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=shape).astype("float32"))
            layer.beta.assign(rng.normal(size=shape).astype("float32") * 0.1)


def has_batch_norm(model):
    return any(isinstance(layer, keras.layers.BatchNormalization) for layer in model._flatten_layers())


@pytest.fixture(scope="module")
def trained_looking_model():
    """A tiny classifier whose batch norms have statistics worth folding."""
    keras.utils.set_random_seed(0)
    model = tiny_model()
    randomize_batch_norm_statistics(model)
    return model


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_folded_model_equals_the_model_in_inference_mode(data_format):
    if data_format == "channels_first":
        skip_unless_channels_first_runs()
    input_shape = (8, 8, 3) if data_format == "channels_last" else (3, 8, 8)
    model = AstroTransformer(
        expansion=1,
        stage_depths=(1, 2, 1),
        input_shape=input_shape,
        data_format=data_format,
        classifier_activation=None,
    )
    randomize_batch_norm_statistics(model)
    folded = fold_batch_norm(model)
    x = np.random.default_rng(1).uniform(0, 255, (2, *input_shape)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(x, training=False))
    np.testing.assert_allclose(folded.predict(x, verbose=0), expected, rtol=1e-4, atol=1e-4)
    assert not has_batch_norm(folded)
    assert sum(isinstance(layer, FoldedStageBlock) for layer in folded.layers) == 4
    # The original model is untouched and still trains with batch norm.
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)


def test_folded_model_saves_and_reloads_as_a_keras_file(trained_looking_model, tmp_path):
    folded = fold_batch_norm(trained_looking_model)
    folded.save(tmp_path / "folded.keras")
    reloaded = keras.saving.load_model(tmp_path / "folded.keras")
    assert sum(isinstance(layer, FoldedStageBlock) for layer in reloaded.layers) == 3
    assert not has_batch_norm(reloaded)
    x = random_images(shape=(8, 8, 3))
    np.testing.assert_allclose(
        reloaded.predict(x, verbose=0), folded.predict(x, verbose=0), rtol=1e-6, atol=1e-6
    )


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exports in this process under TensorFlow only; other backends export in a "
    "TensorFlow subprocess, which tests/test_export.py covers",
)
def test_export_with_folded_batch_norm_serves_the_unfolded_outputs(trained_looking_model, tmp_path):
    import tensorflow as tf

    path = export_for_serving(trained_looking_model, tmp_path, fold_batch_norm=True)
    served = tf.saved_model.load(path)
    images = np.random.default_rng(2).integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    outputs = served.signatures["serving_default"](images=tf.constant(images))
    expected = trained_looking_model.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    # The graph holds the folded weights: no batch norm variables.
    folded_weights = fold_batch_norm(trained_looking_model).weights
    assert len(served.model_variables) == len(folded_weights) < len(trained_looking_model.weights)
