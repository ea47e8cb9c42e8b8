"""Tests for the `keras-astro` command line: train, evaluate, predict, demo, bad input."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest
from PIL import Image
from test_data import COLORS, write_class_folders

from keras_astro import cli, data
from keras_astro.model import CONFIGS

PNG = b"\x89PNG\r\n\x1a\n"
# 12 training and 6 test images in batches of 6: one batch shape, so JAX compiles each
# step once.
TINY_TRAIN = ("--model", "small", "--image-size", "8", "--epochs", "1", "--batch-size", "6")


def run_cli(*argv):
    """Runs `keras-astro ARGV` in this process and returns what it printed."""
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        cli.main([str(arg) for arg in argv])
    return stdout.getvalue()


def run_cli_error(capsys, *argv):
    """Runs a command that must fail as a usage error; returns its message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err


def folder_contents(folder):
    return {
        os.path.relpath(os.path.join(root, name), folder): open(os.path.join(root, name), "rb").read()
        for root, _, names in os.walk(folder)
        for name in names
    }


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("images")
    write_class_folders(root / "train", 4)
    write_class_folders(root / "test", 2)
    return root


@pytest.fixture(scope="module")
def trained(image_folder, tmp_path_factory):
    output = tmp_path_factory.mktemp("runs") / "run"
    stdout = run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    return output, stdout


def test_choices_mirror_the_library():
    assert cli.MODEL_NAMES == tuple(CONFIGS)
    assert cli.AUGMENT_POLICIES == data.AUGMENT_POLICIES
    assert cli.MIN_IMAGE_SIZE == data.MIN_IMAGE_SIZE


def test_help_explains_every_subcommand(capsys):
    commands = ("train", "evaluate", "predict", "demo", "export", "benchmark")
    helps = {}
    for argv in ([], *([command] for command in commands)):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--help"])
        assert exit_info.value.code == 0
        helps[" ".join(argv)] = capsys.readouterr().out
    assert all(command in helps[""] for command in commands)
    for option in ("--dataset", "--data-dir", "--epochs", "--batch-size", "--image-size",
                   "--learning-rate", "--augment", "--mixed-precision", "--remat",
                   "--distribute", "--backend", "--seed", "--output"):  # fmt: skip
        assert option in helps["train"]
    assert "--top-k" in helps["predict"] and "--output" in helps["demo"]


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


def test_bad_arguments_are_usage_errors(image_folder, tmp_path, capsys, monkeypatch):
    train = ("train", "--data-dir", image_folder, "--output", tmp_path / "out")
    assert "expected an integer >= 8" in run_cli_error(capsys, *train, "--image-size", "4")
    assert "invalid choice: 'nope'" in run_cli_error(capsys, *train, "--backend", "nope")
    other = next(backend for backend in cli.BACKENDS if backend != keras.backend.backend())
    assert "already imported" in run_cli_error(capsys, *train, "--backend", other)
    assert "Unknown dataset 'no_such_dataset'" in run_cli_error(
        capsys, "train", "--dataset", "no_such_dataset", "--output", tmp_path / "out"
    )
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("KERAS_BACKEND", "nope")
    assert "KERAS_BACKEND='nope'" in run_cli_error(capsys, "predict", "model.keras", "image.png")


def test_evaluate_reproduces_the_test_metrics(trained, image_folder, tmp_path):
    output, _ = trained
    stdout = run_cli("evaluate", output / "model.keras", "--data-dir", image_folder,
                     "--output", tmp_path)  # fmt: skip
    report = json.loads((tmp_path / "evaluation.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    assert report["per_class_accuracy"] == pytest.approx(metrics["per_class_accuracy"])
    assert sum(map(sum, report["confusion_matrix"])) == 6
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == PNG
    assert all(name in stdout for name in COLORS) and "accuracy" in stdout


def test_evaluate_refuses_data_with_other_classes(trained, tmp_path, capsys):
    output, _ = trained
    for split in ("train", "test"):
        write_class_folders(tmp_path / split, 2, classes=("cat", "dog"))
    message = run_cli_error(capsys, "evaluate", output / "model.keras", "--data-dir", tmp_path)
    assert "was trained on classes" in message


def test_predict_prints_top_classes_for_images_of_any_size(trained, tmp_path, capsys):
    output, _ = trained
    Image.new("RGB", (40, 30), COLORS["cat"]).save(tmp_path / "big.png")
    Image.new("RGB", (5, 7), COLORS["fish"]).save(tmp_path / "small.jpg")
    stdout = run_cli("predict", output / "model.keras", tmp_path / "big.png",
                     tmp_path / "small.jpg", "--top-k", "2")  # fmt: skip
    lines = stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(tmp_path / n) for n in ("big.png", "small.jpg")]
    for line in lines:
        top = [entry.rsplit(" ", 1) for entry in line.split(": ", 1)[1].split(", ")]
        assert len(top) == 2 and all(name in COLORS for name, _ in top)
        probabilities = [float(p.rstrip("%")) for _, p in top]
        assert probabilities == sorted(probabilities, reverse=True)

    (tmp_path / "broken.png").write_bytes(PNG + b"not really")
    message = run_cli_error(capsys, "predict", output / "model.keras", tmp_path / "broken.png")
    assert "Cannot decode" in message and "broken.png" in message
    message = run_cli_error(capsys, "predict", output / "model.keras", tmp_path / "missing.png")
    assert "No image file" in message


@pytest.mark.slow
def test_demo_killed_midway_resumes_after_its_last_finished_epoch(tmp_path):
    """The demo (reduced: 8x8 digits, 2 epochs) killed with SIGKILL, then run again."""
    backend = keras.backend.backend()
    demo = ["demo", "--output", str(tmp_path), "--epochs", "2", "--image-size", "8"]
    # --backend must win over KERAS_BACKEND, which Keras reads when it is imported.
    other = next(name for name in cli.BACKENDS if name != backend)
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_astro.cli", *demo, "--backend", backend],
        env={**os.environ, "KERAS_BACKEND": other},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first_epoch_backed_up = tmp_path / "backup" / "epoch-00001"
    while not first_epoch_backed_up.exists():
        if process.poll() is not None:
            pytest.fail(f"the demo stopped before its first epoch: {process.stderr.read().decode()}")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (tmp_path / "metrics.json").exists()
    keras.saving.load_model(tmp_path / "model.keras")  # whole, whenever the kill came

    stdout = run_cli(*demo)
    assert "Resuming" in stdout and "Epoch 1/2" not in stdout and "Epoch 2/2" in stdout
    assert "Reloaded" in stdout and "test image 7:" in stdout and "Demo done" in stdout
    with open(tmp_path / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().split()] == ["epoch", "0", "1"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["num_train"], metrics["num_test"]) == ("digits", 1437, 360)
    assert metrics["backend"] == backend and metrics["epochs_this_run"] == 1
