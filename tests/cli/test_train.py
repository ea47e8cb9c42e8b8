"""`keras-astro train`: what a run writes and prints; the same command resumes or reads it."""

import json
import os

import keras

from tests.test_case import COLORS, PNG, TINY_TRAIN, folder_contents, run_cli, run_cli_error


def test_train_writes_model_history_metrics_and_pictures(trained):
    output, stdout = trained
    for name in ("model.keras", "history.csv", "metrics.json", "config.json"):
        assert (output / name).is_file()
    for name in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        assert (output / name).read_bytes()[:8] == PNG
    assert os.listdir(output / "logs") and not (output / "backup").exists()
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["backend"] == keras.backend.backend()
    assert metrics["devices"] == 1 and metrics["epochs"] == 1 and metrics["num_test"] == 6
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    assert metrics["keras_version"] == keras.__version__ and metrics["images_per_second"] > 0
    assert list(metrics["per_class_accuracy"]) == list(COLORS)
    assert "step - accuracy" in stdout  # Keras' progress bar
    assert stdout.strip().splitlines()[-1].startswith("small on images")
    model = keras.saving.load_model(output / "model.keras")
    assert model.class_names == list(COLORS)


def test_same_command_again_does_not_retrain(trained, image_folder):
    output, _ = trained
    before = folder_contents(output)
    stdout = run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    assert "Already finished" in stdout
    assert folder_contents(output) == before


def test_another_configuration_is_refused_and_nothing_changes(trained, image_folder, capsys):
    output, _ = trained
    before = folder_contents(output)
    arguments = [arg if arg != "1" else "2" for arg in TINY_TRAIN]  # --epochs 2
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, *arguments, "--output", output
    )
    assert "another configuration" in message and "epochs 1 there, 2 now" in message
    assert folder_contents(output) == before


def test_a_folder_without_a_run_is_refused(image_folder, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, "--output", tmp_path
    )
    assert "holds no keras-astro run" in message
    assert os.listdir(tmp_path) == ["notes.txt"]
