"""Image folders: layouts, labels from folder names, and every folder error."""

import os
import pathlib

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_astro import data
from tests.test_case import (
    FITS_CLASSES,
    assert_batches,
    assert_colors_match_labels,
    centre_values,
    collect,
    write_class_folders,
)


def test_image_folder_with_test_folder(tmp_path):
    write_class_folders(tmp_path / "train", per_class=4)
    write_class_folders(tmp_path / "test", per_class=2)
    datasets = data.load_datasets(str(tmp_path), image_size=8, batch_size=5)
    assert datasets.class_names == ["cat", "dog", "fish"]
    assert (datasets.num_train, datasets.num_test, datasets.test_split) == (9, 6, "test")
    # The validation split is held out of train, one image per class at the least.
    assert (datasets.num_validation, datasets.validation_split) == (
        3, "held-out (10% of train, stratified)"
    )
    assert_batches(datasets, 8)
    images, labels = collect(datasets.train)
    assert len(images) == 9 and images.min() >= 0 and images.max() <= 255
    assert_colors_match_labels(images, labels)
    images, labels = collect(datasets.validation)
    assert_colors_match_labels(images, labels)
    np.testing.assert_array_equal(labels.argmax(axis=1), [0, 1, 2])
    images, labels = collect(datasets.test)
    assert_colors_match_labels(images, labels)
    np.testing.assert_array_equal(labels.argmax(axis=1), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("layout", ["val", "test_and_val", "held_out", "flat"])
def test_image_folder_layouts(tmp_path, layout):
    if layout == "flat":
        write_class_folders(tmp_path, per_class=4)
    else:
        write_class_folders(tmp_path / "train", per_class=4)
    if layout in ("val", "test_and_val"):
        write_class_folders(tmp_path / "val", per_class=1)
    if layout == "test_and_val":
        write_class_folders(tmp_path / "test", per_class=1)
    datasets = data.load_datasets(
        pathlib.Path(tmp_path), image_size=8, batch_size=4, validation_fraction=0.25
    )
    splits = (datasets.num_train, datasets.num_validation, datasets.num_test)
    if layout == "val":
        assert splits == (9, 3, 3) and datasets.test_split == "val"
    elif layout == "test_and_val":  # val/ chooses the epoch, test/ scores: train stays whole
        assert splits == (12, 3, 3)
        assert (datasets.test_split, datasets.validation_split) == ("test", "val")
    else:
        assert splits == (6, 3, 3)
        assert datasets.test_split == "held-out (25% of train, stratified)"
    images, labels = collect(datasets.test)
    assert_colors_match_labels(images, labels)
    # Stratified: one held-out image per class.
    np.testing.assert_array_equal(np.sort(labels.argmax(axis=1)), [0, 1, 2])


def _train_and_test(root):
    write_class_folders(root / "train", per_class=2)
    write_class_folders(root / "test", per_class=1)


def _no_class_folders(root):
    os.makedirs(root / "train")
    return "has no class sub-folders"


def _empty_class(root):
    _train_and_test(root)
    os.makedirs(root / "train" / "zebra")
    return "zebra.* has no images"


def _test_classes_differ(root):
    write_class_folders(root / "train", per_class=2)
    write_class_folders(root / "test", per_class=1, classes=("cat", "dog"))
    return r"test.* differ .*missing \['fish'\]"


def _not_an_image(root):
    _train_and_test(root)
    (root / "train" / "dog" / "broken.jpg").write_bytes(b"<html>not a photo</html>")
    return "broken.jpg"


def _unsupported_extension(root):
    _train_and_test(root)
    (root / "train" / "cat" / "notes.txt").write_text("hello")
    return "notes.txt"


def _stray_images(root):
    _train_and_test(root)
    Image.new("RGB", (8, 8)).save(root / "train" / "loose.png")
    return "outside class sub-folders.*loose.png"


def _test_without_train(root):
    write_class_folders(root / "test", per_class=1)
    return "no 'train' folder"


def _too_few_to_hold_out(root):
    write_class_folders(root / "train", per_class=1)
    return r"train': cannot hold out a stratified 0.1 of its 3 images: each class needs at least 2"


@pytest.mark.parametrize(
    "make_folder",
    [
        _no_class_folders,
        _empty_class,
        _test_classes_differ,
        _not_an_image,
        _unsupported_extension,
        _stray_images,
        _test_without_train,
        _too_few_to_hold_out,
    ],
)
def test_image_folder_errors(tmp_path, make_folder):
    match = make_folder(tmp_path)
    with pytest.raises(ValueError, match=match):
        data.load_datasets(tmp_path, image_size=8)


def test_missing_folder_error(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        data.load_datasets(tmp_path / "nowhere")


def test_damaged_image_stops_iteration_naming_the_file(tmp_path):
    write_class_folders(tmp_path / "train", per_class=3)
    write_class_folders(tmp_path / "test", per_class=1)
    damaged = tmp_path / "test" / "dog" / "0.png"
    damaged.write_bytes(damaged.read_bytes()[:40])  # PNG header kept, data cut
    datasets = data.load_datasets(tmp_path, image_size=8)
    assert len(collect(datasets.train)[0]) == 6
    with pytest.raises(tf.errors.InvalidArgumentError, match="Cannot read or decode.*dog.0.png"):
        collect(datasets.test)


@pytest.mark.parametrize("bands", [1, 2])
def test_fits_folder_gives_flux_with_its_bands(fits_folder, fits_cube_folder, bands):
    folder = fits_folder if bands == 1 else fits_cube_folder
    datasets = data.load_datasets(folder, image_size=8, batch_size=4)
    assert (datasets.preprocessing, datasets.image_shape) == ("flux", (8, 8, bands))
    assert datasets.center_crop is None
    assert datasets.class_names == list(FITS_CLASSES)
    assert (datasets.num_train, datasets.num_test, datasets.test_split) == (6, 4, "test")
    for dataset, count in ((datasets.train, 6), (datasets.validation, 2), (datasets.test, 4)):
        images, labels = collect(dataset)
        assert images.shape == (count, 8, 8, bands) and images.dtype == np.float32
        assert np.isfinite(images).all()  # the NaN blanks are gone after the resize
        # Each image is its own file's: the centre holds 10 x (class + 1) x (band + 1).
        expected = 10.0 * (labels.argmax(axis=1)[:, None] + 1) * np.arange(1, bands + 1)
        np.testing.assert_allclose(centre_values(images), expected, rtol=1e-5)
    np.testing.assert_array_equal(labels.argmax(axis=1), [0, 0, 1, 1])


def test_center_crop_keeps_the_centre_of_each_cutout(fits_folder):
    datasets = data.load_datasets(fits_folder, image_size=8, batch_size=4, center_crop=0.5)
    assert datasets.center_crop == 0.5 and datasets.image_shape == (8, 8, 1)
    images, labels = collect(datasets.test)
    # The central 8x8 of the 16x16 cutouts and nothing of the border (-1) around it.
    expected = 10.0 * (labels.argmax(axis=1) + 1)
    np.testing.assert_array_equal(images[..., 0], np.broadcast_to(expected[:, None, None], (4, 8, 8)))
    # Without the crop, the border is resized in.
    whole, _ = collect(data.load_datasets(fits_folder, image_size=8, batch_size=4).test)
    assert (whole[:, 0, 0, 0] < 0).all()


def test_photos_read_as_flux_are_float(image_folder):
    # 8-bit files given `preprocessing="flux"` (a survey's PNG cutouts): the same float path.
    datasets = data.load_datasets(str(image_folder), image_size=8, batch_size=4, preprocessing="flux")
    images, _ = next(iter(datasets.train))
    assert datasets.preprocessing == "flux" and images.dtype == tf.float32
    assert float(tf.reduce_max(images)) > 1  # raw values, not rescaled


def test_a_folder_with_a_16_bit_png_keeps_its_bits(tmp_path):
    # A faint 16-bit cutout (samples 0..300) among 8-bit photos: pixels kept as float32.
    for split, count in (("train", 4), ("test", 1)):
        for name, level in (("faint", 1), ("bright", 200)):
            folder = tmp_path / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8), (level, level, level)).save(folder / f"{i}.png")
    deep = np.full((8, 8, 3), 300, np.uint16)
    (tmp_path / "test" / "faint" / "0.png").write_bytes(tf.io.encode_png(deep).numpy())
    datasets = data.load_datasets(str(tmp_path), image_size=8, batch_size=2)
    assert datasets.preprocessing == "pixels"
    images, labels = collect(datasets.test)
    assert images.dtype == np.float32
    faint = images[labels.argmax(-1) == datasets.class_names.index("faint")]
    np.testing.assert_allclose(faint, 300 / 257, rtol=1e-6)  # not 1, its high byte
    images, _ = collect(datasets.train)
    assert {float(v) for v in np.unique(images)} == {1.0, 200.0}


def test_the_fingerprint_does_not_depend_on_how_the_folder_is_spelt(image_folder, tmp_path, monkeypatch):
    import shutil

    def fingerprint(source):
        return data.load_datasets(source, image_size=8, batch_size=4).fingerprint

    folder = tmp_path / "images"
    shutil.copytree(image_folder, folder)
    absolute = fingerprint(str(folder))
    monkeypatch.chdir(tmp_path)
    assert fingerprint("images") == absolute
    assert fingerprint(os.path.join("..", tmp_path.name, "images")) == absolute
    os.remove(next((folder / "train" / "cat").iterdir()))  # one file fewer: another fingerprint
    assert fingerprint("images") != absolute
