"""Settings that would train a NaN model are refused; a NaN loss stops training with an error."""

import math
import os

import numpy as np
import pytest

from keras_astro import training
from keras_astro.training.experiment import ExperimentConfig, run_experiment
from tests.test_case import CLASSES, IMAGE_SIZE, tiny_model

NOT_FINITE = (math.inf, -math.inf, math.nan)


@pytest.mark.parametrize("value", NOT_FINITE)
@pytest.mark.parametrize(
    "name",
    ["learning_rate", "weight_decay", "warmup_epochs", "warmup_fraction", "clipnorm", "ema_momentum"],
)
def test_compile_for_training_refuses_numbers_that_are_not_finite(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be a finite number"):
        training.compile_for_training(tiny_model(), epochs=1, steps_per_epoch=1, **{name: value})


def test_run_experiment_refuses_before_writing_to_the_run_folder(tmp_path):
    output = tmp_path / "run"
    config = ExperimentConfig(source="digits", learning_rate=math.inf)
    with pytest.raises(ValueError, match="`learning_rate` must be a finite number"):
        run_experiment(config, str(output))
    assert not output.exists()


def test_a_nan_loss_stops_fit_with_an_error_and_publishes_no_model(tmp_path):
    import tensorflow as tf

    # `from_arrays` refuses NaN pixels; a raw pipeline lets them reach the loss.
    x = np.full((8, IMAGE_SIZE, IMAGE_SIZE, 3), np.nan, "float32")
    y = np.eye(len(CLASSES), dtype="float32")[np.arange(8) % len(CLASSES)]
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(4)
    model = tiny_model()
    training.compile_for_training(model, epochs=2, steps_per_epoch=2)
    with pytest.raises(ValueError, match=r"training loss became nan at epoch 1, batch 1"):
        training.fit(model, dataset, dataset, epochs=2, output_dir=str(tmp_path), verbose=0)
    assert not os.path.exists(tmp_path / training.CHECKPOINT_FILE)
    assert not training.run_folder.training_finished(str(tmp_path))
