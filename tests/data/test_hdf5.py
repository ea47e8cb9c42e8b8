"""HDF5 files of images and labels: Galaxy10 (found or downloaded), any other file, errors."""

import dataclasses
import hashlib

import numpy as np
import pytest

from keras_astro import data
from keras_astro.data import hdf5
from tests.test_case import collect, galaxy10_rows, write_hdf5


def _rows_and_labels(dataset):
    """(row ids, label ids) of a pipeline of `galaxy10_rows` images at their own size."""
    images, labels = collect(dataset)
    return images[:, 0, 0, 0].astype(int), labels.argmax(axis=1)


def test_galaxy10_file_in_data_dir_is_used_without_download(galaxy10_dir, monkeypatch):
    def no_download(*args, **kwargs):
        raise AssertionError("downloaded a file that data_dir holds")

    monkeypatch.setattr("keras.utils.get_file", no_download)
    datasets = data.load_datasets(
        "galaxy10_decals", data_dir=galaxy10_dir, image_size=16, batch_size=8
    )
    assert datasets.class_names == list(hdf5.GALAXY10["galaxy10_decals"].class_names)
    assert datasets.class_names[:2] == ["Disturbed", "Merging"] and datasets.num_classes == 10
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (32, 4, 4)
    assert datasets.preprocessing == "pixels"
    assert datasets.test_split == "held-out (10% of the file, stratified)"
    assert datasets.validation_split == "held-out (10% of train, stratified)"
    assert datasets.image_shape == (16, 16, 3)
    rows, labels = _rows_and_labels(datasets.test)
    np.testing.assert_array_equal(labels, rows % 4)
    assert sorted(labels) == [0, 1, 2, 3]  # stratified
    train_rows, _ = _rows_and_labels(datasets.train)
    validation_rows, _ = _rows_and_labels(datasets.validation)
    assert sorted(np.concatenate([train_rows, validation_rows, rows])) == list(range(40))

    # The held-out rows do not depend on the seed.
    other = data.load_datasets(
        "galaxy10_decals", data_dir=galaxy10_dir, image_size=16, batch_size=8, seed=5
    )
    np.testing.assert_array_equal(_rows_and_labels(other.test)[0], rows)


@pytest.fixture
def galaxy10_source(tmp_path, monkeypatch):
    """A tiny Galaxy10 file served from a file:// URL in place of Zenodo; returns
    (its bytes, a function setting the SHA-256 the spec expects)."""
    source = tmp_path / "zenodo" / "Galaxy10_DECals.h5"
    source.parent.mkdir()
    images, labels = galaxy10_rows()
    write_hdf5(source, {"images": images, "ans": labels})
    content = source.read_bytes()

    def expect(sha256):
        spec = dataclasses.replace(hdf5.GALAXY10["galaxy10_decals"], url=source.as_uri(), sha256=sha256)
        monkeypatch.setitem(hdf5.GALAXY10, "galaxy10_decals", spec)

    return content, expect


def test_galaxy10_download_is_checked_and_kept(galaxy10_source, tmp_path):
    content, expect = galaxy10_source
    expect(hashlib.sha256(content).hexdigest())
    path = hdf5.galaxy10_file("galaxy10_decals", tmp_path / "datasets")  # made when missing
    assert path == str(tmp_path / "datasets" / "Galaxy10_DECals.h5")
    with open(path, "rb") as file:
        assert file.read() == content
    datasets = data.load_datasets("galaxy10_decals", data_dir=tmp_path / "datasets", image_size=16)
    assert datasets.num_train + datasets.num_validation + datasets.num_test == 40


def test_galaxy10_download_with_another_checksum_is_refused_and_not_kept(galaxy10_source, tmp_path):
    _, expect = galaxy10_source
    expect("0" * 64)
    for _ in range(2):  # nor used as it is the next time
        with pytest.raises(ValueError, match="sha256 file hash does not match"):
            hdf5.galaxy10_file("galaxy10_decals", tmp_path)
    assert not (tmp_path / "Galaxy10_DECals.h5").exists()


def test_galaxy10_download_failure_says_where_to_place_the_file(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise Exception("URL fetch failure on https://zenodo.org/: None -- [Errno -2] Name or service not known")

    monkeypatch.setattr("keras.utils.get_file", offline)
    spec = hdf5.GALAXY10["galaxy10_decals"]
    with pytest.raises(ValueError) as raised:
        data.load_datasets("galaxy10_decals", data_dir=tmp_path)
    message = str(raised.value)
    assert "\n" not in message and raised.value.__cause__ is None
    assert message.startswith("Could not download Galaxy10_DECals.h5 (URL fetch failure")
    for part in (f"place it in {tmp_path} as Galaxy10_DECals.h5", spec.sha256, "about 2.5 GB", spec.url):
        assert part in message


def test_any_hdf5_file_with_its_keys_and_class_names(tmp_path):
    images, labels = galaxy10_rows(count=20, classes=2)
    write_hdf5(tmp_path / "cutouts.h5", {"x": images, "y": labels.astype("int64")})
    datasets = data.load_datasets(
        tmp_path / "cutouts.h5", images_key="x", labels_key="y", class_names=["smooth", "disk"],
        image_size=8, batch_size=4, validation_fraction=0.2,
    )
    assert datasets.class_names == ["smooth", "disk"]
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (12, 4, 4)
    assert datasets.preprocessing == "pixels"
    resized, one_hot = collect(datasets.test)
    assert resized.shape == (4, 8, 8, 3)
    np.testing.assert_array_equal(resized[:, 0, 0, 1], 60 * one_hot.argmax(axis=1))


def test_float_images_are_flux_and_grayscale_is_one_band(tmp_path):
    rng = np.random.default_rng(0)
    flux = rng.normal(size=(10, 16, 16)).astype("float32")  # [n, h, w]
    flux[0, 2, 3] = np.nan
    labels = np.arange(10) % 2
    write_hdf5(tmp_path / "flux.hdf5", {"images": flux, "ans": labels})
    datasets = data.load_datasets(tmp_path / "flux.hdf5", image_size=8, validation_fraction=0.2)
    assert (datasets.preprocessing, datasets.image_shape) == ("flux", (8, 8, 1))
    assert datasets.class_names == ["0", "1"]
    images, _ = collect(datasets.train)
    assert images.shape == (6, 8, 8, 1) and np.isfinite(images).all()

    write_hdf5(tmp_path / "pixels.h5", {"images": (flux > 0).astype(np.uint8) * 255, "ans": labels})
    datasets = data.load_datasets(tmp_path / "pixels.h5", image_size=8, validation_fraction=0.2)
    # Grayscale photos: RGB.
    assert (datasets.preprocessing, datasets.image_shape) == ("pixels", (8, 8, 3))


def test_reading_in_chunks_gives_every_row_once(tmp_path, monkeypatch):
    monkeypatch.setattr(hdf5, "CHUNK_ROWS", 3)
    images, labels = galaxy10_rows(count=30, classes=3)
    write_hdf5(tmp_path / "rows.h5", {"images": images, "ans": labels})
    datasets = data.load_datasets(tmp_path / "rows.h5", image_size=16, batch_size=4, seed=2)
    train_rows, train_labels = _rows_and_labels(datasets.train)
    test_rows, test_labels = _rows_and_labels(datasets.test)
    validation_rows, validation_labels = _rows_and_labels(datasets.validation)
    assert sorted(np.concatenate([train_rows, validation_rows, test_rows])) == list(range(30))
    np.testing.assert_array_equal(train_labels, train_rows % 3)
    np.testing.assert_array_equal(test_labels, test_rows % 3)
    np.testing.assert_array_equal(validation_labels, validation_rows % 3)
    assert not np.array_equal(train_rows, np.sort(train_rows))  # shuffled across chunks


def _missing_key(path):
    write_hdf5(path, {"images": np.zeros((4, 8, 8), np.uint8), "labels": np.arange(4) % 2})
    return r"no dataset 'ans'; it has \['images', 'labels'\]"


def _length_mismatch(path):
    write_hdf5(path, {"images": np.zeros((4, 8, 8), np.uint8), "ans": np.arange(5) % 2})
    return "'ans' has shape \\(5,\\) but 'images' holds 4 images"


def _labels_outside_the_class_names(path):
    write_hdf5(path, {"images": np.zeros((6, 8, 8), np.uint8), "ans": [0, 1, 0, 2, 1, 3]})
    return r"'ans' holds class ids outside \[0, 2\) for 2 class names, first at row 3 \(2\); 2 rows in all"


def _zero_length_bands(path):  # read on, it crashed the process (exit 139)
    write_hdf5(path, {"images": np.zeros((20, 16, 16, 0), np.uint8), "ans": np.arange(20) % 2})
    return r"'images' has shape \(20, 16, 16, 0\); expected .* every axis at least 1 long"


def _zero_length_side(path):
    write_hdf5(path, {"images": np.zeros((20, 0, 16, 3), np.uint8), "ans": np.arange(20) % 2})
    return r"'images' has shape \(20, 0, 16, 3\); expected .*at least one image"


def _no_images(path):
    write_hdf5(path, {"images": np.zeros((0, 16, 16, 3), np.uint8), "ans": np.zeros(0, int)})
    return r"'images' has shape \(0, 16, 16, 3\)"


def _images_group(path):
    import h5py

    with h5py.File(path, "w") as file:
        file.create_group("images").create_dataset("g", data=np.zeros((4, 8, 8), np.uint8))
        file["ans"] = np.arange(4) % 2
    return r"'images' is a group \(of \['g'\]\), not a dataset; name the datasets with --images-key"


def _labels_beyond_int32(path):
    labels = np.arange(6) % 2
    labels[4] = 2**32 + 1  # wrapped into class 1
    write_hdf5(path, {"images": np.zeros((6, 8, 8), np.uint8), "ans": labels})
    return r"'ans' holds 4294967297 at row 4; expected class ids 0, 1, ..."


def _too_few_to_hold_out(path):
    write_hdf5(path, {"images": np.zeros((3, 8, 8), np.uint8), "ans": [0, 1, 1]})
    return r"cannot hold out a stratified 0.1 of its 3 images: each class needs at least 2 images, class 'a' has 1"


@pytest.mark.parametrize(
    "write",
    [_too_few_to_hold_out, _missing_key, _length_mismatch, _labels_outside_the_class_names, _zero_length_bands,
     _zero_length_side, _no_images, _images_group, _labels_beyond_int32],
)
def test_hdf5_errors_name_the_file_and_key(tmp_path, write):
    path = tmp_path / "bad.h5"
    match = write(path)
    with pytest.raises(ValueError, match=f"bad.h5: {match}"):
        data.load_datasets(path, class_names=["a", "b"], image_size=8)


def test_class_ids_with_gaps_need_class_names(tmp_path):
    write_hdf5(tmp_path / "gaps.h5", {"images": np.zeros((8, 8, 8), np.uint8), "ans": np.arange(8) % 2 * 5})
    with pytest.raises(ValueError, match=(
        r"gaps.h5: 'ans' holds the class ids 0, 5; expected 0..K-1 with every class present, "
        r"or --class-names naming all 6 classes\.$"
    )):
        data.load_datasets(tmp_path / "gaps.h5", image_size=8)
    names = ["a", "b", "c", "d", "e", "f"]
    datasets = data.load_datasets(tmp_path / "gaps.h5", class_names=names, image_size=8, validation_fraction=0.25)
    assert datasets.class_names == names


@pytest.mark.parametrize("blank_bands", [[0], [1], [0, 1]])
def test_flux_with_a_band_of_blanks_everywhere_is_refused(tmp_path, monkeypatch, blank_bands):
    monkeypatch.setattr(hdf5, "CHUNK_ROWS", 3)  # the check reads every chunk before it refuses
    flux = np.random.default_rng(0).normal(size=(10, 8, 8, 2)).astype("float32")
    flux[..., blank_bands] = np.nan
    write_hdf5(tmp_path / "flux.h5", {"images": flux, "ans": np.arange(10) % 2})
    with pytest.raises(ValueError, match=(
        rf"flux.h5 \('images'\): band\(s\) \{blank_bands} of 2 have no finite pixel in the training data"
    )):
        data.load_datasets(tmp_path / "flux.h5", image_size=8, validation_fraction=0.2)
