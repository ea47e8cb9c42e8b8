"""`from_arrays`: numpy arrays in, the same pipelines as every other source out."""

import numpy as np
import pytest

from keras_astro import data
from tests.test_case import assert_batches, collect, random_images


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
        (dict(y_test=np.array([0, 2**32 + 1])), "int32 class ids. Received a label 4294967297"),
        (dict(class_names=None, y_train=np.array([0, 5, 0, 5]), y_test=np.array([0, 5])),
         r"class ids 0..K-1 with every class present, or `class_names` must name all 6 classes. "
         r"Received the labels \[0, 5\]"),
        (dict(x_train=np.full((4, 8, 8, 3), np.nan), preprocessing="flux"),
         r"`x_train`: band\(s\) \[0, 1, 2\] of 3 have no finite pixel"),
        (dict(y_train=np.array([0, 1, 2])), "one per image"),
        (dict(y_train=np.array([0.0, 1.0, 2.0, 0.0])), "int class ids"),
        (dict(x_train=np.full((4, 8, 8, 3), 300.0)), "0..255"),
        (dict(x_train=np.zeros((4, 8))), "must be non-empty images"),
        (dict(x_train=np.zeros((4, 8, 8, 2))), "`x_train` has 2 bands and `x_test` 3"),
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


def test_flux_arrays_of_any_band_count_keep_their_blanks_through_the_resize():
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e-3, (6, 16, 16, 5)).astype("float32")  # Jy/beam: tiny, negative too
    x[0, :4, :4] = np.nan
    x[1, 7, 7, 2] = np.inf
    y = np.arange(6) % 2
    same_size = data.from_arrays(x, y, x, y, preprocessing="flux", batch_size=6)
    assert (same_size.preprocessing, same_size.image_shape) == ("flux", (16, 16, 5))
    images, _ = collect(same_size.test)
    np.testing.assert_array_equal(images, x)  # raw flux, NaN included: the model handles it
    resized = data.from_arrays(x, y, x, y, preprocessing="flux", image_size=8, center_crop=0.75)
    images, _ = collect(resized.test)
    assert images.shape == (6, 8, 8, 5)
    # The blank corner (2 of the 12 cropped pixels a side) stays blank where it covers most
    # of an output pixel; a lone inf is outweighed by its finite neighbours.
    finite = np.isfinite(images)
    assert not finite[0, 0, 0].any() and finite[0, 2:, 2:].all() and finite[1:].all()


def test_pixels_with_nan_name_the_first_image():
    x = np.full((4, 8, 8, 3), 100.0, "float32")
    x[2, 1, 1, 0] = np.nan
    x[3, 0, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"`x_test` holds NaN or infinite pixels \(first in image 2\)"):
        data.from_arrays(x[:2], np.array([0, 1]), x, np.array([0, 1, 0, 1]))


def test_one_class_is_refused():
    x = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(ValueError, match="a classifier needs at least 2"):
        data.from_arrays(x, np.zeros(4, int), x, np.zeros(4, int))
    with pytest.raises(ValueError, match="1 class"):
        data.from_arrays(x, np.zeros(4, int), x, np.zeros(4, int), class_names=["galaxy"])


@pytest.mark.parametrize(
    "num_train, batch_size",
    [(5, 8), (72, 8), (255, 8), (256, 16), (364, 16), (1023, 32), (1024, 64), (50_000, 64)],
)
def test_the_default_batch_size_gives_small_sets_steps(num_train, batch_size):
    from keras_astro.data.pipeline import default_batch_size

    assert default_batch_size(num_train) == batch_size


def test_from_arrays_without_a_batch_size_batches_by_the_training_set_size():
    x = np.zeros((40, 8, 8, 3), np.uint8)
    y = np.arange(40) % 2
    datasets = data.from_arrays(x, y, x[:10], y[:10])
    assert datasets.batch_size == 8
    assert [len(images) for images, _ in datasets.train] == [8] * 5
    assert [len(images) for images, _ in datasets.test] == [8, 2]
    assert data.from_arrays(x, y, x[:10], y[:10], batch_size=16).batch_size == 16


def test_every_split_runs_without_tf_data_autotuning():
    # With autotuning on, each deleted iterator (every epoch, evaluate and predict) waits
    # for the autotuner's next wake-up: up to as long again as the pass itself took.
    x = random_images(24, (8, 8, 3), seed=1)
    datasets = data.from_arrays(x, np.arange(24) % 2, x[:6], np.arange(6) % 2,
                                batch_size=4, validation_fraction=0.25)
    for split in (datasets.train, datasets.validation, datasets.test):
        assert split.options().autotune.enabled is False
