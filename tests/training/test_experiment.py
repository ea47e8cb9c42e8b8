"""`run_experiment`, the Python API of `keras-astro train`: one run folder per configuration.

tests/cli/test_train.py checks what the command prints and its usage errors; this
checks what the function returns and writes.
"""

import dataclasses
import json

import keras
import pytest

from keras_astro import training
from keras_astro.training import ExperimentConfig, resumable, run_experiment
from keras_astro.utils import load_model
from tests.test_case import COLORS, PNG, folder_contents


@pytest.fixture(scope="module")
def experiment(image_folder, tmp_path_factory):
    """A finished run: small, 8x8, 1 epoch, batches of 6 (12 train and 6 test images)."""
    config = ExperimentConfig(
        source=str(image_folder), model="small", epochs=1, batch_size=6, image_size=8
    )
    output = tmp_path_factory.mktemp("experiment") / "run"
    return config, output, run_experiment(config, str(output), verbose=0)


def test_writes_the_returned_metrics_the_config_the_model_and_pictures(experiment, image_folder):
    config, output, metrics = experiment
    assert json.loads((output / training.METRICS_FILE).read_text()) == metrics
    saved_config = json.loads((output / training.CONFIG_FILE).read_text())
    assert saved_config == config.to_json(keras.backend.backend())
    assert (metrics["num_train"], metrics["num_test"], metrics["epochs_this_run"]) == (12, 6, 1)
    assert metrics["dataset"] == image_folder.name and metrics["test_split"] == "test"
    assert load_model(output / training.CHECKPOINT_FILE).class_names == list(COLORS)
    for picture in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        assert (output / picture).read_bytes()[:8] == PNG


def test_the_same_config_returns_the_metrics_without_training(experiment, monkeypatch):
    config, output, metrics = experiment
    before = folder_contents(output)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(resumable, "fit", no_training)
    assert run_experiment(config, str(output), verbose=0) == metrics
    assert folder_contents(output) == before


def test_another_config_is_refused_with_the_differences(experiment):
    config, output, _ = experiment
    before = folder_contents(output)
    other = dataclasses.replace(config, learning_rate=2e-3)
    with pytest.raises(ValueError, match=r"a finished run of another configuration "
                       r"\(learning_rate 0\.001 there, 0\.002 now\)"):  # fmt: skip
        run_experiment(other, str(output), verbose=0)
    assert folder_contents(output) == before
