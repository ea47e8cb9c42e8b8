"""Augmentation: seeded, per image, soft labels for the mixing policies, float32 always."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astro import data


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


def _dihedral_views(block):
    return [np.rot90(block, k) for k in range(4)] + [np.rot90(block.T, k) for k in range(4)]


def test_dihedral_draws_each_of_the_8_symmetries_per_image():
    # A 3x3 block of distinct values in a zero image: shifts move it, symmetries rearrange it.
    block = np.arange(1, 10, dtype="float32").reshape(3, 3)
    images = np.zeros((64, 16, 16, 1), "float32")
    images[:, 6:9, 6:9, 0] = block
    augment = data.make_augmentation("dihedral", 16, seed=1, num_classes=2, preprocessing="flux")
    augmented, _ = augment(tf.constant(images), tf.zeros(64, tf.int32))
    views = _dihedral_views(block)
    drawn = []
    for image in augmented.numpy()[..., 0]:
        rows, cols = np.nonzero(image)
        moved = image[rows.min() : rows.max() + 1, cols.min() : cols.max() + 1]
        drawn += [i for i, view in enumerate(views) if np.array_equal(moved, view)]
    assert len(drawn) == 64  # each image is the block under one symmetry, shifted
    assert sorted(set(drawn)) == list(range(8))


@pytest.mark.parametrize("policy", ["dihedral", "rotate"])
def test_orientation_policies_are_seeded(policy):
    images, labels = _check_determinism(policy)
    np.testing.assert_array_equal(labels, _image_batch()[1])


def test_randaugment_is_refused_for_flux(fits_folder):
    with pytest.raises(ValueError, match="randaugment.*flux data"):
        data.make_augmentation("randaugment", 16, preprocessing="flux")
    with pytest.raises(ValueError, match="randaugment.*flux data"):
        data.load_datasets(fits_folder, image_size=8, augment="randaugment")


@pytest.mark.parametrize(
    "policy", ["none", "basic", "dihedral", "rotate", "mixup", "cutmix", "randaugment"]
)
def test_an_epoch_is_the_same_whatever_ran_before_it(policy):
    # What a resumed run relies on: epoch 2 of a new pipeline told to start there is
    # epoch 2 of one that ran epochs 0 and 1, even after an abandoned pass.
    if policy == "randaugment" and keras.backend.backend() != "tensorflow":
        pytest.skip("minutes to trace under JAX; the other policies cover the same random state")
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, 16, 16, 3)).astype("uint8")

    def datasets():
        return data.from_arrays(x, np.arange(24) % 2, x[:4], np.arange(4) % 2, image_size=16,
                                batch_size=8, augment=policy, seed=3)

    def one_pass(train):
        return np.concatenate([images for images, _ in train.as_numpy_iterator()])

    train = datasets().train
    epochs = [one_pass(train) for _ in range(3)]
    assert not np.array_equal(epochs[1], epochs[2])
    resumed = datasets()
    next(iter(resumed.train))  # abandoned, as Keras does before the first epoch
    resumed.start_epoch(2)
    np.testing.assert_array_equal(one_pass(resumed.train), epochs[2])
