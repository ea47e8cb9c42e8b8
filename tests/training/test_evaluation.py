import numpy as np
import pytest

from keras_astro import training
from tests.test_case import CLASSES, tiny_model


def test_evaluate_counts_every_image(tiny_datasets):
    model = tiny_model()
    results = training.evaluate(model, tiny_datasets.test)
    probabilities = model.predict(tiny_datasets.test, verbose=0)
    labels = np.arange(16, 24) % len(CLASSES)
    assert results["num_images"] == 8
    assert results["accuracy"] == pytest.approx(np.mean(probabilities.argmax(-1) == labels))
    expected_loss = -np.mean(np.log(probabilities[np.arange(8), labels]))
    assert results["loss"] == pytest.approx(expected_loss, rel=1e-4)
    matrix = results["confusion_matrix"]
    assert matrix.sum() == 8 and list(matrix.sum(axis=1)) == [2, 3, 3]
    assert "top5_accuracy" not in results
