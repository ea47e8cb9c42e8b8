"""Tests for keras_astro.data: every source, the pipelines' contract, augmentation, bad input."""

import os
import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
from PIL import Image

from keras_astro import data

# Each class is a solid colour whose strongest channel is its class id, so a test can
# check that every image arrives with its own label.
COLORS = {"cat": (220, 20, 20), "dog": (20, 220, 20), "fish": (20, 20, 220)}
FORMATS = ("png", "jpg", "bmp", "gif")


def write_class_folders(directory, per_class, classes=tuple(COLORS)):
    for name in classes:
        os.makedirs(directory / name)
        for i in range(per_class):
            image = Image.new("RGB", (10 + i, 12), COLORS[name])
            image.save(directory / name / f"{i}.{FORMATS[i % len(FORMATS)]}")


def collect(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def assert_batches(datasets, image_size):
    for dataset in (datasets.train, datasets.test):
        images, labels = next(iter(dataset))
        assert images.dtype == tf.float32 and labels.dtype == tf.float32
        assert tuple(images.shape[1:]) == (image_size, image_size, 3)
        assert tuple(labels.shape[1:]) == (datasets.num_classes,)


def assert_colors_match_labels(images, labels):
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    np.testing.assert_array_equal(images.mean(axis=(1, 2)).argmax(axis=1), labels.argmax(axis=1))


# === image folders ===


def test_image_folder_with_test_folder(tmp_path):
    write_class_folders(tmp_path / "train", per_class=4)
    write_class_folders(tmp_path / "test", per_class=2)
    datasets = data.load_datasets(str(tmp_path), image_size=8, batch_size=5)
    assert datasets.class_names == ["cat", "dog", "fish"]
    assert (datasets.num_train, datasets.num_test, datasets.test_split) == (12, 6, "test")
    assert_batches(datasets, 8)
    images, labels = collect(datasets.train)
    assert len(images) == 12 and images.min() >= 0 and images.max() <= 255
    assert_colors_match_labels(images, labels)
    images, labels = collect(datasets.test)
    assert_colors_match_labels(images, labels)
    np.testing.assert_array_equal(labels.argmax(axis=1), [0, 0, 1, 1, 2, 2])


@pytest.mark.parametrize("layout", ["val", "held_out", "flat"])
def test_image_folder_layouts(tmp_path, layout):
    if layout == "flat":
        write_class_folders(tmp_path, per_class=4)
    else:
        write_class_folders(tmp_path / "train", per_class=4)
    if layout == "val":
        write_class_folders(tmp_path / "val", per_class=1)
    datasets = data.load_datasets(
        pathlib.Path(tmp_path), image_size=8, batch_size=4, validation_fraction=0.25
    )
    if layout == "val":
        assert (datasets.num_train, datasets.num_test, datasets.test_split) == (12, 3, "val")
    else:
        assert (datasets.num_train, datasets.num_test) == (9, 3)
        assert datasets.test_split.startswith("train")
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
    return "Cannot hold out"


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
    assert len(collect(datasets.train)[0]) == 9
    with pytest.raises(tf.errors.InvalidArgumentError, match="Cannot read or decode.*dog.0.png"):
        collect(datasets.test)


# === numpy arrays ===


def test_from_arrays_resizes_grayscale_and_keeps_test_order():
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 10, 10), dtype=np.uint8)
    x_test = rng.integers(0, 256, (7, 10, 10, 1), dtype=np.uint8)
    y_train, y_test = np.arange(20) % 3, np.array([2, 1, 0, 0, 1, 2, 2])
    datasets = data.from_arrays(
        x_train, y_train, x_test, y_test, class_names=["a", "b", "c"], image_size=12, batch_size=4
    )
    assert (datasets.num_classes, datasets.num_train, datasets.num_test) == (3, 20, 7)
    assert_batches(datasets, 12)
    images, labels = collect(datasets.test)
    np.testing.assert_array_equal(labels.argmax(axis=1), y_test)
    np.testing.assert_array_equal(images[..., 0], images[..., 2])  # grayscale -> RGB
    assert 0 <= images.min() and images.max() <= 255


def test_train_shuffles_each_epoch_and_sees_every_example_once():
    x = np.arange(40, dtype=np.float32)[:, None, None, None] * np.ones((1, 8, 8, 3), np.float32)
    y = np.arange(40) % 4
    datasets = data.from_arrays(x, y, x[:8], y[:8], batch_size=8, seed=3)
    epochs = [collect(datasets.train)[0][:, 0, 0, 0] for _ in range(2)]
    for order in epochs:
        np.testing.assert_array_equal(np.sort(order), np.arange(40))
        assert not np.array_equal(order, np.arange(40))
    assert not np.array_equal(epochs[0], epochs[1])
    again = data.from_arrays(x, y, x[:8], y[:8], batch_size=8, seed=3)
    np.testing.assert_array_equal(collect(again.train)[0][:, 0, 0, 0], epochs[0])
    np.testing.assert_array_equal(collect(datasets.test)[0][:, 0, 0, 0], np.arange(8))


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(y_train=np.array([0, 1, 2, 3])), r"class ids in \[0, 3\)"),
        (dict(y_test=np.array([0, -1])), ">= 0"),
        (dict(y_train=np.array([0, 1, 2])), "one per image"),
        (dict(y_train=np.array([0.0, 1.0, 2.0, 0.0])), "int class ids"),
        (dict(x_train=np.full((4, 8, 8, 3), 300.0)), "0..255"),
        (dict(x_train=np.zeros((4, 8))), "must be non-empty images"),
        (dict(x_train=np.zeros((4, 8, 8, 2))), "must be non-empty images"),
        (dict(image_size=4), "image_size"),
        (dict(x_train=np.zeros((4, 8, 10, 3))), "Pass `image_size`"),
        (dict(class_names=["a", "a", "b"]), "unique"),
    ],
)
def test_from_arrays_errors(change, match):
    arguments = dict(
        x_train=np.zeros((4, 8, 8, 3), np.uint8),
        y_train=np.array([0, 1, 2, 0]),
        x_test=np.zeros((2, 8, 8, 3), np.uint8),
        y_test=np.array([0, 1]),
        class_names=["a", "b", "c"],
    )
    arguments.update(change)
    with pytest.raises(ValueError, match=match):
        data.from_arrays(**arguments)


# === digits and tensorflow-datasets ===


def test_digits_fixed_stratified_split():
    datasets = data.load_datasets("digits", image_size=8, batch_size=512)
    assert datasets.class_names == [str(i) for i in range(10)]
    assert (datasets.num_train, datasets.num_test, datasets.test_split) == (1437, 360, "test")
    images, labels = collect(datasets.test)
    assert images.shape == (360, 8, 8, 3) and images.min() == 0 and images.max() == 255
    assert np.bincount(labels.argmax(axis=1)).min() >= 35
    other_seed = data.load_datasets("digits", image_size=16, batch_size=512, seed=1)
    np.testing.assert_array_equal(collect(other_seed.test)[1], labels)


class DataTestColors(tfds.core.GeneratorBasedBuilder):
    """Train and test splits of solid-colour RGB images of varying size."""

    VERSION = tfds.core.Version("1.0.0")

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


def test_tfds_dataset_built_locally(tmp_path):
    datasets = data.load_datasets("data_test_colors", data_dir=tmp_path, image_size=8, batch_size=4)
    assert datasets.class_names == list(COLORS)
    assert (datasets.num_train, datasets.num_test, datasets.test_split) == (9, 3, "test")
    assert_batches(datasets, 8)
    for dataset in (datasets.train, datasets.test):
        assert_colors_match_labels(*collect(dataset))


def test_tfds_without_test_split_holds_out_train(tmp_path):
    datasets = data.load_datasets(
        "data_test_gray_train_only", data_dir=tmp_path, image_size=8, validation_fraction=0.2
    )
    assert (datasets.num_train, datasets.num_test, datasets.test_split) == (8, 2, "train[8:]")
    images, labels = collect(datasets.test)
    assert images.shape == (2, 8, 8, 3)
    np.testing.assert_array_equal(images[:, 0, 0, 0] > 100, labels.argmax(axis=1) == 1)


def test_unknown_dataset_lists_what_is_accepted():
    with pytest.raises(ValueError, match="'no_such_dataset'.*digits.*cifar10.*image folder"):
        data.load_datasets("no_such_dataset")
    assert data.available_sources()[0] == "digits"


@pytest.mark.parametrize(
    "arguments, match",
    [
        (dict(image_size=7), "image_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(augment="autoaugment"), "augment"),
        (dict(library="torchvision"), "library"),
        (dict(validation_fraction=1.0), "validation_fraction"),
        (dict(seed=-1), "seed"),
    ],
)
def test_load_datasets_argument_errors(arguments, match):
    with pytest.raises(ValueError, match=match):
        data.load_datasets("digits", **arguments)


# === augmentation ===


def _image_batch(size=16, count=8):
    images = np.random.default_rng(0).integers(1, 256, (count, size, size, 3)).astype("float32")
    labels = tf.one_hot(np.arange(count) % 4, 4)
    return images, labels


def _augmented(policy, seed, library="keras", labels=None, num_classes=None):
    images, one_hot = _image_batch()
    augment = data.make_augmentation(
        policy, 16, seed=seed, num_classes=num_classes, library=library
    )
    dataset = tf.data.Dataset.from_tensors((images, one_hot if labels is None else labels))
    return [x.numpy() for x in next(iter(dataset.map(augment)))]


def _check_determinism(policy, library="keras"):
    images, labels = _augmented(policy, seed=1, library=library)
    same_images, same_labels = _augmented(policy, seed=1, library=library)
    other_images, _ = _augmented(policy, seed=2, library=library)
    np.testing.assert_array_equal(images, same_images)
    np.testing.assert_array_equal(labels, same_labels)
    assert not np.array_equal(images, other_images)
    assert not np.array_equal(images, _image_batch()[0])
    assert images.shape == (8, 16, 16, 3) and 0 <= images.min() and images.max() <= 255
    return images, labels


@pytest.mark.parametrize("library", ["keras", "keras_cv"])
def test_basic_augmentation_shifts_and_flips_per_image(library):
    if library == "keras_cv":
        pytest.importorskip("keras_cv")
    images, labels = _check_determinism("basic", library)
    np.testing.assert_array_equal(labels, _image_batch()[1])
    # Zero-padded shifts and flips only move pixels: every value comes from its own image.
    for augmented, original in zip(images, _image_batch()[0]):
        assert set(np.unique(augmented)) <= set(np.unique(original)) | {0.0}


@pytest.mark.parametrize("policy", ["mixup", "cutmix"])
def test_mixing_augmentation_makes_soft_labels(policy):
    _, labels = _check_determinism(policy)
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    assert (labels.max(axis=1) < 1).any()
    _, from_ids = _augmented(policy, seed=1, labels=np.arange(8) % 4, num_classes=4)
    np.testing.assert_array_equal(from_ids, labels)


@pytest.fixture
def mixed_float16():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    yield
    keras.config.set_dtype_policy(policy)


def test_augmentation_stays_float32_under_mixed_precision(mixed_float16):
    images, labels = _augmented("mixup", seed=1)
    assert images.dtype == np.float32 and labels.dtype == np.float32
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    assert keras.config.dtype_policy().name == "mixed_float16"


def test_keras_cv_mixup_with_global_seed():
    pytest.importorskip("keras_cv")
    keras.utils.set_random_seed(0)
    _, labels = _augmented("mixup", seed=1, library="keras_cv")
    np.testing.assert_allclose(labels.sum(axis=1), 1.0, rtol=1e-6)
    assert (labels.max(axis=1) < 1).any()


@pytest.mark.skipif(
    keras.backend.backend() == "jax",
    reason="Keras' Equalization (inside RandAugment) unrolls 256 histogram bins when the "
    "global backend is JAX, so each tf.data trace takes ~15 s; same code path on the others",
)
def test_randaugment_is_seeded():
    images, labels = _augmented("randaugment", seed=1)
    np.testing.assert_array_equal(images, _augmented("randaugment", seed=1)[0])
    # Same seed, same shifts and flips: what differs is RandAugment's work.
    assert not np.array_equal(images, _augmented("basic", seed=1)[0])
    assert 0 <= images.min() and images.max() <= 255
    np.testing.assert_array_equal(labels, _image_batch()[1])


def test_augmented_pipeline_feeds_model_fit():
    x_train, x_test = _image_batch(count=16)[0], _image_batch(count=4)[0]
    datasets = data.from_arrays(
        x_train, np.arange(16) % 4, x_test, np.arange(4), batch_size=8, augment="cutmix"
    )
    model = keras.Sequential(
        [keras.Input((16, 16, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(4)]
    )
    model.compile("sgd", keras.losses.CategoricalCrossentropy(from_logits=True))
    history = model.fit(
        datasets.train, validation_data=datasets.test, epochs=1, shuffle=False, verbose=0
    )
    assert np.isfinite(history.history["val_loss"][0])


def test_make_augmentation_errors():
    with pytest.raises(ValueError, match="augment"):
        data.make_augmentation("autoaugment", 32)
    with pytest.raises(ValueError, match="library"):
        data.make_augmentation("basic", 32, library="albumentations")
    with pytest.raises(ValueError, match="image_size"):
        data.make_augmentation("basic", 4)
