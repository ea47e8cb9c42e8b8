"""The example scripts, each run in a reduced form: tiny data, 8x8 images, one epoch."""

import feature_extraction
import pytest
import train_cifar10
import train_image_folder
from test_cli import PNG, image_folder  # noqa: F401  (image_folder: a fixture)
from test_data import COLORS, DataTestColors

from keras_astro import AstroTransformer



@pytest.mark.slow
def test_train_cifar10_runs_its_recipe_on_a_tfds_dataset(tmp_path):
    # A locally built tensorflow-datasets dataset stands in for CIFAR-10 (no download).
    results = train_cifar10.main([
        "--dataset", DataTestColors.name, "--tfds-data-dir", str(tmp_path / "tfds"),
        "--model", "small", "--epochs", "1", "--image-size", "8", "--batch-size", "3",
        "--output", str(tmp_path / "run"),
    ])  # fmt: skip
    assert results["num_images"] == 3
    assert (tmp_path / "run" / "model.keras").exists()


def test_train_image_folder_trains_and_draws(image_folder, tmp_path):
    results = train_image_folder.main([
        str(image_folder), "--epochs", "1", "--image-size", "8", "--batch-size", "6",
        "--output", str(tmp_path),
    ])  # fmt: skip
    assert results["num_images"] == 6
    for name in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG


@pytest.mark.slow
def test_feature_extraction_trains_a_new_head_then_fine_tunes(image_folder, tmp_path):
    trained = AstroTransformer.small(input_shape=(8, 8, 3), num_classes=5)
    trained.save(tmp_path / "trained.keras")
    results = feature_extraction.main([
        str(tmp_path / "trained.keras"), "--data-dir", str(image_folder),
        "--head-epochs", "1", "--fine-tune-epochs", "1", "--batch-size", "6",
        "--output", str(tmp_path / "run"),
    ])  # fmt: skip
    assert results["confusion_matrix"].shape == (len(COLORS), len(COLORS))
    for stage in ("head", "fine_tune"):
        assert (tmp_path / "run" / stage / "model.keras").exists()
