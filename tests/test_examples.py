"""The example scripts (examples/, imported by path), each in a reduced form: tiny data,
8x8 images, one epoch."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

from keras_astro import AstroTransformer
from tests.test_case import COLORS, FITS_CLASSES, PNG

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


def test_quickstart_builds_predicts_saves_and_reloads(load_script, tmp_path, capsys):
    quickstart = load_script("examples/quickstart.py")
    assert quickstart.main(["--output", str(tmp_path), "--image-size", "8"])
    assert (tmp_path / "model.keras").exists()
    assert "predictions identical = True" in capsys.readouterr().out


def test_quickstart_run_as_a_script_hides_native_log_lines(tmp_path):
    # As the CLI does: TensorFlow's C++ logs (oneDNN, cuda drivers, cuInit) go to /dev/null.
    env = {key: value for key, value in os.environ.items() if key != "TF_CPP_MIN_LOG_LEVEL"}
    result = subprocess.run(
        [sys.executable, "examples/quickstart.py", "--image-size", "8", "--output", str(tmp_path)],
        cwd=REPOSITORY, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "predictions identical = True" in result.stdout
    assert not re.search(r"absl::InitializeLog|^[IWEF]\d{4} ", result.stderr, re.M), result.stderr


@pytest.mark.slow
def test_train_cifar10_runs_its_recipe_on_a_tfds_dataset(load_script, tfds_colors, tmp_path):
    # A locally built tensorflow-datasets dataset stands in for CIFAR-10 (no download).
    metrics = load_script("examples/train_cifar10.py").main([
        "--dataset", tfds_colors, "--tfds-data-dir", str(tmp_path / "tfds"),
        "--model", "small", "--epochs", "1", "--image-size", "8", "--batch-size", "3",
        "--output", str(tmp_path / "run"),
    ])
    assert metrics["num_test"] == 3
    assert (tmp_path / "run" / "model.keras").exists()


def test_train_image_folder_trains_and_draws(load_script, image_folder, tmp_path):
    metrics = load_script("examples/train_image_folder.py").main([
        "--data-dir", str(image_folder), "--epochs", "1", "--image-size", "8", "--batch-size", "6",
        "--output", str(tmp_path),
    ])
    assert metrics["num_test"] == 6
    for name in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.slow
def test_feature_extraction_trains_a_new_head_then_fine_tunes(load_script, image_folder, tmp_path):
    trained = AstroTransformer.small(input_shape=(8, 8, 3), num_classes=5)
    trained.save(tmp_path / "trained.keras")
    results = load_script("examples/feature_extraction.py").main([
        str(tmp_path / "trained.keras"), "--data-dir", str(image_folder),
        "--head-epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "6",
        "--output", str(tmp_path / "run"),
    ])
    assert results["confusion_matrix"].shape == (len(COLORS), len(COLORS))
    for stage in ("head", "fine_tune"):
        assert (tmp_path / "run" / stage / "model.keras").exists()


def test_radio_galaxies_fits_trains_scores_with_tta_and_exports(load_script, fits_folder, tmp_path):
    metrics = load_script("examples/radio_galaxies_fits.py").main([
        "--data-dir", str(fits_folder), "--epochs", "1", "--image-size", "8", "--batch-size", "4",
        "--output", str(tmp_path),
    ])
    assert (metrics["preprocessing"], metrics["center_crop"], metrics["num_test"]) == ("flux", 0.5, 4)
    assert 0 <= metrics["test_balanced_accuracy_tta"] <= 1
    assert (tmp_path / "serving" / "1" / "saved_model.pb").is_file()
    assert (tmp_path / "serving" / "1" / "assets" / "labels.txt").read_text().split() == list(FITS_CLASSES)


def test_galaxy10_reads_the_file_in_its_data_root(load_script, galaxy10_dir, tmp_path):
    metrics = load_script("examples/galaxy10.py").main([
        "--tfds-data-dir", str(galaxy10_dir), "--epochs", "1", "--image-size", "8",
        "--center-crop", "1", "--model", "small", "--batch-size", "4", "--output", str(tmp_path),
    ])
    assert (metrics["dataset"], metrics["num_train"], metrics["num_test"]) == ("galaxy10_decals", 32, 4)
    assert list(metrics["per_class"])[:2] == ["Disturbed", "Merging"] and len(metrics["per_class"]) == 10
    assert (metrics["preprocessing"], metrics["center_crop"]) == ("pixels", 1.0)
