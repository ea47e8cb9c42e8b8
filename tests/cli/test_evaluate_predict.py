"""`keras-astro evaluate` and `keras-astro predict` on the model that `train` wrote."""

import json

import pytest
from PIL import Image

from tests.test_case import COLORS, PNG, run_cli, run_cli_error, write_class_folders


def test_evaluate_reproduces_the_test_metrics(trained, image_folder, tmp_path):
    output, _ = trained
    stdout = run_cli("evaluate", output / "model.keras", "--data-dir", image_folder,
                     "--output", tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert report["loss"] == pytest.approx(metrics["test_loss"], rel=1e-4)
    assert report["per_class_accuracy"] == pytest.approx(metrics["per_class_accuracy"])
    assert sum(map(sum, report["confusion_matrix"])) == 6
    assert (tmp_path / "confusion_matrix.png").read_bytes()[:8] == PNG
    assert all(name in stdout for name in COLORS) and "accuracy" in stdout
    # The saved model is the calibrated one that `train` scored.
    assert report["temperature"] == pytest.approx(metrics["temperature"])
    for key in ("ece", "nll", "brier"):
        assert report[key] == pytest.approx(metrics[f"test_{key}"], rel=1e-4, abs=1e-6)
    coverage = report["accuracy_coverage"]
    assert [row["coverage"] for row in coverage] == pytest.approx([1 - i / 10 for i in range(10)])
    assert coverage[0]["accuracy"] == pytest.approx(report["accuracy"])
    assert report["precision_target"] == 0.9
    assert list(report["precision_thresholds"]) == list(COLORS)
    assert "ECE" in stdout and "threshold for precision 0.9" in stdout
    for picture in ("reliability.png", "coverage.png"):
        assert (tmp_path / picture).read_bytes()[:8] == PNG


def test_evaluate_refuses_a_precision_outside_0_to_1(trained, image_folder, capsys):
    output, _ = trained
    message = run_cli_error(capsys, "evaluate", output / "model.keras", "--data-dir", image_folder,
                            "--precision", "1.5")
    assert "--precision" in message


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
                     tmp_path / "small.jpg", "--top-k", "2")
    lines = stdout.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == [str(tmp_path / n) for n in ("big.png", "small.jpg")]
    for line in lines:
        top = [entry.rsplit(" ", 1) for entry in line.split(": ", 1)[1].split(", ")]
        assert len(top) == 2 and all(name in COLORS for name, _ in top)
        probabilities = [float(p.rstrip("%")) for _, p in top]
        assert probabilities == sorted(probabilities, reverse=True)

    (tmp_path / "broken.png").write_bytes(PNG + b"not really")
    message = run_cli_error(capsys, "predict", output / "model.keras", tmp_path / "broken.png")
    assert "Cannot read or decode image file" in message and "broken.png" in message
    message = run_cli_error(capsys, "predict", output / "model.keras", tmp_path / "missing.png")
    assert "No image file" in message
