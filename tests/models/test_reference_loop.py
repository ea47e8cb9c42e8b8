"""`reference.train_reference`: the plain PyTorch loop the recipe is measured against."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")


def test_reference_loop_trains_and_predicts_class_ids():
    from keras_astro import reference

    rng = np.random.default_rng(0)
    x = rng.normal(size=(12, 8, 8, 3)).astype("float32")
    y = np.arange(12) % 3
    model = reference.train_reference(x, y, num_classes=3, epochs=2, batch_size=4, seed=0)
    assert not model.training
    predictions = reference.predict_reference(model, x)
    assert predictions.shape == (12,) and set(predictions) <= {0, 1, 2}
    again = reference.train_reference(x, y, num_classes=3, epochs=2, batch_size=4, seed=0)
    np.testing.assert_array_equal(predictions, reference.predict_reference(again, x))
