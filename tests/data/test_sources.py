"""The named sources (scikit-learn's digits, tensorflow-datasets) and `load_datasets`' dispatch."""

import numpy as np
import pytest

from keras_astro import data
from tests.test_case import COLORS, assert_batches, assert_colors_match_labels, collect


def test_digits_fixed_stratified_split():
    datasets = data.load_datasets("digits", image_size=8, batch_size=512)
    assert datasets.class_names == [str(i) for i in range(10)]
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (1293, 144, 360)
    assert datasets.test_split == "test"
    images, labels = collect(datasets.test)
    assert images.shape == (360, 8, 8, 3) and images.min() == 0 and images.max() == 255
    assert np.bincount(labels.argmax(axis=1)).min() >= 35
    other_seed = data.load_datasets("digits", image_size=16, batch_size=512, seed=1)
    np.testing.assert_array_equal(collect(other_seed.test)[1], labels)
    # The validation split does not depend on the seed either.
    np.testing.assert_array_equal(collect(other_seed.validation)[1], collect(datasets.validation)[1])


def test_tfds_dataset_built_locally(tmp_path, tfds_colors):
    datasets = data.load_datasets(tfds_colors, data_dir=tmp_path, image_size=8, batch_size=4)
    assert datasets.class_names == list(COLORS)
    # The end of train chooses the epoch: the dataset has no validation split besides test.
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (8, 1, 3)
    assert (datasets.test_split, datasets.validation_split) == ("test", "held-out (train[8:9])")
    assert_batches(datasets, 8)
    for dataset in (datasets.train, datasets.validation, datasets.test):
        assert_colors_match_labels(*collect(dataset))


def test_tfds_registered_builder_with_its_own_code_path(tmp_path):
    """The path `--dataset cifar10` takes: tfds resolves the builder's code folder (its
    checksums) through `importlib_resources`, which the conftest builders skip."""
    import tensorflow_datasets as tfds

    class DataTestCodePath(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(4, 4, 3)),
                    "label": tfds.features.ClassLabel(names=["dim", "bright"]),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(8), "test": self._generate_examples(4)}

        def _generate_examples(self, count):
            for i in range(count):
                yield i, {"image": np.full((4, 4, 3), 40 + 160 * (i % 2), np.uint8), "label": i % 2}

    datasets = data.load_datasets(DataTestCodePath.name, data_dir=tmp_path, image_size=8)
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (7, 1, 4)


def test_tfds_download_failure_says_where_prepared_files_go(tmp_path):
    import tensorflow_datasets as tfds

    class DataTestOffline(tfds.core.GeneratorBasedBuilder):
        VERSION = tfds.core.Version("1.0.0")
        code_path = None

        def _info(self):
            features = tfds.features.FeaturesDict(
                {"image": tfds.features.Image(shape=(4, 4, 3)), "label": tfds.features.ClassLabel(num_classes=2)}
            )
            return tfds.core.DatasetInfo(builder=self, features=features, supervised_keys=("image", "label"))

        def _split_generators(self, dl_manager):
            raise ConnectionError("Failed to resolve 'www.cs.toronto.edu'")

        def _generate_examples(self):  # abstract; the failed download never gets here
            raise AssertionError

    with pytest.raises(ValueError) as raised:
        data.load_datasets(DataTestOffline.name, data_dir=tmp_path)
    assert str(raised.value) == (
        "tensorflow-datasets could not download or prepare 'data_test_offline' (Failed to resolve "
        "'www.cs.toronto.edu'); without the network, prepare it where there is one (`tfds build "
        f"data_test_offline --data_dir DIR`) and copy it so that {tmp_path}/data_test_offline/1.0.0 "
        "holds it (DIR is --tfds-data-dir)."
    )


def test_tfds_without_test_split_holds_out_train(tmp_path, tfds_gray_train_only):
    datasets = data.load_datasets(
        tfds_gray_train_only, data_dir=tmp_path, image_size=8, validation_fraction=0.2
    )
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (6, 2, 2)
    assert datasets.test_split == "held-out (the last 20% of train, train[8:10])"
    assert datasets.validation_split == "held-out (train[6:8])"
    images, labels = collect(datasets.test)
    assert images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(images[:, 0, 0, 0] > 100, labels.argmax(axis=1) == 1)


def test_unknown_dataset_lists_what_is_accepted():
    with pytest.raises(ValueError, match="'no_such_dataset'.*digits.*galaxy10_decals.*cifar10.*image folder"):
        data.load_datasets("no_such_dataset")
    assert data.available_sources()[0] == "digits"


def test_a_file_that_is_no_hdf5_file_or_catalogue_is_refused(tmp_path):
    (tmp_path / "images.npz").write_bytes(b"")
    with pytest.raises(ValueError, match=r"images.npz' is a file, but not an HDF5 file .* or a catalogue"):
        data.load_datasets(tmp_path / "images.npz")


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(image_size=7), "image_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(augment="autoaugment"), "augment"),
        (dict(library="torchvision"), "library"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(seed=-1), "seed"),
        (dict(center_crop=0), "center_crop"),
        (dict(center_crop=1.5), "center_crop"),
        (dict(preprocessing="counts"), "preprocessing"),
    ],
)
def test_load_datasets_argument_errors(arguments, match):
    with pytest.raises(ValueError, match=match):
        data.load_datasets("digits", **arguments)
