import numpy as np
import pytest

import keras

from keras_astro.folding import FoldedStageBlock, fold_batch_norm
from keras_astro.model import AstroTransformer


def randomize_batch_norm_statistics(model, seed=0):
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers():
        if isinstance(layer, keras.layers.BatchNormalization):
            shape = layer.moving_mean.shape
            layer.moving_mean.assign(rng.normal(size=shape).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, size=shape).astype("float32"))
            layer.gamma.assign(rng.uniform(0.5, 1.5, size=shape).astype("float32"))
            layer.beta.assign(rng.normal(size=shape).astype("float32") * 0.1)


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_folded_model_equals_the_model_in_inference_mode(data_format):
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
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization) for layer in folded._flatten_layers()
    )
    assert sum(isinstance(layer, FoldedStageBlock) for layer in folded.layers) == 4
    # The original model is untouched and still trains with batch norm.
    assert any(isinstance(layer, keras.layers.BatchNormalization) for layer in model.layers)
