"""Fixtures shared by the suite. Plain helpers and constants are in tests/test_case.py."""

import functools
import importlib.util
import pathlib
import sys

import numpy as np
import pytest

from tests.test_case import (
    CLASSES,
    COLORS,
    IMAGE_SIZE,
    galaxy10_rows,
    write_class_folders,
    write_fits_folder,
    write_hdf5,
)

REPOSITORY = pathlib.Path(__file__).resolve().parent.parent


@functools.cache
def _load_script(relative_path):
    path = REPOSITORY / relative_path
    name = f"_script_{path.parent.name}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def load_script():
    """`load_script("examples/quickstart.py")`: a script of the repository, imported by path.

    The scripts (examples/, benchmarks/) are not a package; each loads once a session.
    """
    return _load_script


@pytest.fixture
def mixed_float16():
    """Keras' global dtype policy is mixed_float16 during the test."""
    import keras

    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(policy)


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory):
    """An image folder of the three COLORS classes: 4 train and 2 test images each."""
    root = tmp_path_factory.mktemp("images")
    write_class_folders(root / "train", 4)
    write_class_folders(root / "test", 2)
    return root


@pytest.fixture(scope="session")
def tiny_datasets():
    """`from_arrays` pipelines of random 8x8 images: 16 train and 8 test, 3 classes, batch 8."""
    from keras_astro import data

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    y = np.arange(24) % len(CLASSES)
    return data.from_arrays(x[:16], y[:16], x[16:], y[16:], class_names=CLASSES, batch_size=8)


@pytest.fixture(scope="session")
def fits_folder(tmp_path_factory):
    """A FITS folder of the FITS_CLASSES: 4 train and 2 test one-band 16x16 cutouts each
    (2-D images and degenerate cubes, .fits/.fits.gz/.fit/.fts, NaN blanks in some)."""
    root = tmp_path_factory.mktemp("fits")
    write_fits_folder(root)
    return root


@pytest.fixture(scope="session")
def fits_cube_folder(tmp_path_factory):
    """The same as `fits_folder` with (2, 16, 16) cubes: two bands."""
    root = tmp_path_factory.mktemp("fits_cubes")
    write_fits_folder(root, bands=2)
    return root


@pytest.fixture(scope="session")
def galaxy10_dir(tmp_path_factory):
    """A data_dir holding a tiny Galaxy10_DECals.h5 in the Galaxy10 layout: `images`
    uint8 [40, 16, 16, 3] and `ans` (`galaxy10_rows`: 4 of the 10 classes)."""
    root = tmp_path_factory.mktemp("galaxy10")
    images, labels = galaxy10_rows()
    write_hdf5(root / "Galaxy10_DECals.h5", {"images": images, "ans": labels.astype(np.uint8)})
    return root


@functools.cache
def _tfds_builders():
    """Defines (and so registers with tensorflow-datasets) the two tiny builders, once."""
    import tensorflow_datasets as tfds

    class DataTestColors(tfds.core.GeneratorBasedBuilder):
        """Train and test splits of solid-colour RGB images of varying size."""

        VERSION = tfds.core.Version("1.0.0")
        code_path = None  # no folder of checksums or metadata beside the class

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=list(COLORS)),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples(9), "test": self._generate_examples(3)}

        def _generate_examples(self, count):
            for i in range(count):
                label = i % len(COLORS)
                color = list(COLORS.values())[label]
                yield i, {"image": np.full((9 + i, 12, 3), color, np.uint8), "label": label}

    class DataTestGrayTrainOnly(tfds.core.GeneratorBasedBuilder):
        """Only a train split, of grayscale images."""

        VERSION = tfds.core.Version("1.0.0")
        code_path = None  # no folder of checksums or metadata beside the class

        def _info(self):
            features = tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(16, 16, 1)),
                    "label": tfds.features.ClassLabel(names=["dark", "light"]),
                }
            )
            return tfds.core.DatasetInfo(
                builder=self, features=features, supervised_keys=("image", "label")
            )

        def _split_generators(self, dl_manager):
            return {"train": self._generate_examples()}

        def _generate_examples(self):
            for i in range(10):
                yield i, {"image": np.full((16, 16, 1), 40 + 160 * (i % 2), np.uint8), "label": i % 2}

    return DataTestColors, DataTestGrayTrainOnly


@pytest.fixture(scope="session")
def tfds_colors():
    """The name of a tiny tensorflow-datasets dataset: the COLORS classes, 9 train and
    3 test RGB images of varying size. Build it into a `data_dir` of the test's own."""
    return _tfds_builders()[0].name


@pytest.fixture(scope="session")
def tfds_gray_train_only():
    """The name of a tiny tensorflow-datasets dataset with only a train split: 10
    grayscale 16x16 images, "dark" and "light"."""
    return _tfds_builders()[1].name
