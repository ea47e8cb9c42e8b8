"""Batched `tf.data` pipelines of raw pixels and one-hot labels, whatever the source.

Every source module (arrays, digits, folders, tfds_source) yields `(image, int label)` examples; the
functions here cache, shuffle, batch, one-hot encode, augment and prefetch them the
same way. Images stay raw 0..255 because AstroTransformer rescales inside the model.
"""

import dataclasses

import tensorflow as tf

from keras_astro.data.augment import make_augmentation
from keras_astro.data.options import (
    AUGMENT_LIBRARIES,
    AUGMENT_POLICIES,
    check_image_size,
)
from keras_astro.utils import check_choice, is_int_at_least

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 10_000
# Held-out splits (digits, folders without a test folder) never depend on `seed`, so
# runs with different seeds are evaluated on the same images.
SPLIT_RANDOM_STATE = 0


@dataclasses.dataclass
class ImageDatasets:
    """Train and evaluation pipelines plus what a training script needs to know.

    `train` yields shuffled (and augmented, if asked) batches; `test` yields the
    evaluation split in a fixed order. Both yield `(images, labels)`: float32 raw pixels
    `[batch, size, size, 3]` in 0..255 and float32 one-hot labels `[batch, classes]`.
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list[str]
    test_split: str
    num_train: int
    num_test: int

    @property
    def num_classes(self):
        return len(self.class_names)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """The pipeline arguments `load_datasets` and `from_arrays` share, checked once."""

    image_size: int
    batch_size: int
    augment: str
    seed: int
    cache: bool
    library: str

    def __post_init__(self):
        check_image_size(self.image_size)
        if not is_int_at_least(self.batch_size, 1):
            raise ValueError(f"`batch_size` must be a positive int. Received: {self.batch_size!r}")
        if not is_int_at_least(self.seed, 0):
            raise ValueError(f"`seed` must be an int >= 0. Received: {self.seed!r}")
        check_choice("augment", self.augment, AUGMENT_POLICIES)
        check_choice("library", self.library, AUGMENT_LIBRARIES)


def make_datasets(train, test, *, class_names, test_split, num_train, num_test, options):
    """Caches, shuffles, batches, one-hot encodes, augments and prefetches.

    `train` and `test` yield `(image [size, size, 3], int label)`.
    """
    num_classes = len(class_names)

    def to_model_inputs(images, labels):
        return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)

    if options.cache:
        train, test = train.cache(), test.cache()
    train = train.shuffle(
        min(num_train, SHUFFLE_BUFFER), seed=options.seed, reshuffle_each_iteration=True
    )
    train = train.batch(options.batch_size).map(to_model_inputs, num_parallel_calls=AUTOTUNE)
    if options.augment != "none":
        augment = make_augmentation(
            options.augment, options.image_size, options.seed, library=options.library
        )
        # Sequential on purpose: each batch advances the layers' seed state in order.
        train = train.map(augment)
    test = test.batch(options.batch_size).map(to_model_inputs, num_parallel_calls=AUTOTUNE)
    return ImageDatasets(
        train=train.prefetch(AUTOTUNE),
        test=test.prefetch(AUTOTUNE),
        class_names=list(class_names),
        test_split=test_split,
        num_train=int(num_train),
        num_test=int(num_test),
    )


def to_rgb_size(image, image_size):
    """Grayscale -> RGB and an antialiased resize to `image_size`; uint8 stays uint8."""
    if image.shape[-1] == 1:
        image = tf.image.grayscale_to_rgb(image)
    if tuple(image.shape[:2]) == (image_size, image_size):
        return image
    resized = tf.image.resize(image, (image_size, image_size), antialias=True)
    if image.dtype == tf.uint8:
        # Keeps the cache of decoded images 4x smaller than float32.
        return tf.saturate_cast(tf.round(resized), tf.uint8)
    return resized
