"""`find_learning_rate`: the learning-rate range test on tiny data."""

import math

import numpy as np
import pytest
from keras import ops

from keras_astro import training
from tests.test_case import PNG, tiny_model


def test_range_test_records_losses_suggests_a_rate_and_restores_the_weights(tiny_datasets, tmp_path):
    model = tiny_model()
    before = [ops.convert_to_numpy(w).copy() for w in model.weights]
    path = tmp_path / "lr.png"
    result = training.find_learning_rate(
        model, tiny_datasets.train, min_lr=1e-5, max_lr=1.0, num_steps=12, plot_path=str(path)
    )
    n = len(result["losses"])
    assert 3 <= n <= 12
    assert len(result["learning_rates"]) == len(result["smoothed_losses"]) == n
    rates = result["learning_rates"]
    assert rates[0] == pytest.approx(1e-5) and all(b > a for a, b in zip(rates, rates[1:]))
    assert all(math.isfinite(loss) for loss in result["losses"])
    assert rates[0] <= result["suggestion"] <= 1.0  # within the tested range
    assert result["suggestion"] <= max(result["min_loss_lr"] / 10, rates[0]) + 1e-12
    assert path.read_bytes()[:8] == PNG
    for saved, now in zip(before, model.weights):
        np.testing.assert_array_equal(saved, ops.convert_to_numpy(now))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(min_lr=0.0), "min_lr"),
        (dict(max_lr=float("inf")), "max_lr"),
        (dict(min_lr=1.0, max_lr=0.1), "below"),
        (dict(num_steps=2), "num_steps"),
        (dict(smoothing=0.0), "smoothing"),
        (dict(divergence=1.0), "divergence"),
    ],
)
def test_range_test_refuses_bad_arguments(tiny_datasets, kwargs, message):
    with pytest.raises(ValueError, match=message):
        training.find_learning_rate(tiny_model(), tiny_datasets.train, **kwargs)
