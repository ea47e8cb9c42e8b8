"""Batched `tf.data` pipelines of raw images and one-hot labels, whatever the source.

Every source module (arrays, digits, folders, catalog, hdf5, tfds_source) yields
`(image, int label)` examples; the functions here crop and resize them to the model's
input (an `ImageConverter`, as predict and the exported signatures do), cache, shuffle,
batch, one-hot encode, augment and prefetch them the same way. Values stay raw (0..255
pixels, or flux) because AstroTransformer preprocesses inside the model.
"""

import dataclasses
import hashlib
import math

import numpy as np
import tensorflow as tf

from keras_astro.data.augment import make_augmentation
from keras_astro.data.converter import ImageConverter
from keras_astro.data.options import AUGMENT_LIBRARIES, AUGMENT_POLICIES, check_image_size
from keras_astro.utils import (
    check_center_crop,
    check_choice,
    check_preprocessing,
    is_int_at_least,
)

AUTOTUNE = tf.data.AUTOTUNE
SHUFFLE_BUFFER = 10_000
# Held-out splits (validation, and test where a source has none) never depend on
# `seed`, so runs with different seeds choose and score on the same images.
SPLIT_RANDOM_STATE = 0
# The default batch size: the largest that gives an epoch this many optimizer steps, within
# these bounds. Small astronomy sets (hundreds of cutouts) then take steps of 16 images
# instead of 6 steps of 64 an epoch, which learned less per epoch on FR-DEEP and galaxy-rings
# (BENCHMARKS.md, "Accuracy on astronomy data"); sets of 1024 images or more keep 64.
MIN_STEPS_PER_EPOCH = 16
DEFAULT_BATCH_SIZES = (64, 32, 16, 8)


def without_autotuning(dataset):
    """`dataset` with tf.data's autotuning off: its AUTOTUNE parallelism stays at the
    number of cores. With autotuning on, deleting an iterator (the end of each `fit` epoch
    and of each `evaluate` or `predict` call) waits for the autotuner's next wake-up,
    whose interval doubles from 10 ms: on 2 cores `fit` took 1.1-1.4x and `predict`
    1.4-1.5x as long (BENCHMARKS.md, "Input pipeline").
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return dataset.with_options(options)


@dataclasses.dataclass
class ImageDatasets:
    """Train, validation and test pipelines plus what a training script needs to know.

    `train` yields shuffled (and augmented, if asked) batches; `validation` (the images
    that choose the best epoch, held out of train; `None` when none was asked for) and
    `test` (the images a run is scored on) yield theirs in a fixed order. Each yields
    `(images, labels)`: float32 raw images
    `[batch, size, size, bands]` (`preprocessing` "pixels": 0..255, RGB for photos; "flux":
    physical units, NaN allowed) and float32 one-hot labels `[batch, classes]`.
    `center_crop` is the central fraction of each side kept before resizing.
    `fingerprint` identifies the examples (see `content_fingerprint`): a run records
    it and refuses to resume on data that changed. `batch_size` is what `train` and the
    others were batched with (`default_batch_size` when none was asked for). `class_counts` maps each split's
    name to its images per class (`None` where the source does not say: tfds).

    Each pass over `train` is one epoch, numbered by `next_epoch` (a `tf.Variable`
    that each pass counts up): its shuffle order and augmentation depend only on the
    seed and that number. `start_epoch` sets it, so that a resumed run sees what an
    uninterrupted one would (`keras_astro.training.fit` calls it at each epoch).
    """

    train: tf.data.Dataset
    test: tf.data.Dataset
    class_names: list[str]
    test_split: str
    num_train: int
    num_test: int
    batch_size: int
    preprocessing: str = "pixels"
    image_shape: tuple = ()
    center_crop: float | None = None
    next_epoch: tf.Variable | None = None
    fingerprint: str | None = None
    validation: tf.data.Dataset | None = None
    validation_split: str | None = None
    num_validation: int = 0
    class_counts: dict | None = None

    @property
    def num_classes(self):
        return len(self.class_names)

    def start_epoch(self, epoch):
        """Makes the next pass over `train` epoch `epoch` (counted from 0)."""
        self.next_epoch.assign(epoch)


@dataclasses.dataclass(frozen=True)
class PipelineOptions:
    """The pipeline arguments `load_datasets` and `from_arrays` share, checked once."""

    image_size: int
    batch_size: int | None
    augment: str
    seed: int
    cache: bool
    library: str
    center_crop: float | None = None
    preprocessing: str | None = None
    validation_fraction: float | None = None

    def __post_init__(self):
        check_image_size(self.image_size)
        if self.batch_size is not None and not is_int_at_least(self.batch_size, 1):
            raise ValueError(
                f"`batch_size` must be a positive int, or None. Received: {self.batch_size!r}"
            )
        if not is_int_at_least(self.seed, 0):
            raise ValueError(f"`seed` must be an int >= 0. Received: {self.seed!r}")
        check_choice("augment", self.augment, AUGMENT_POLICIES)
        check_choice("library", self.library, AUGMENT_LIBRARIES)
        check_center_crop(self.center_crop)
        if self.preprocessing is not None:
            check_preprocessing(self.preprocessing)
        if self.validation_fraction is not None and not 0 < self.validation_fraction < 1:
            raise ValueError(
                "`validation_fraction` must be between 0 and 1, or None. "
                f"Received: {self.validation_fraction!r}"
            )

    def preprocessing_or(self, detected):
        """The preprocessing asked for, else `detected`, the one the source's data implies."""
        return self.preprocessing or detected

def make_datasets(
    train, test, *, class_names, test_split, num_train, num_test, options, preprocessing,
    fingerprint, validation=None, validation_split=None, num_validation=0, labels=None,
):
    """Crops and resizes, caches, shuffles, batches, one-hot encodes, augments, prefetches.

    `train`, `test` and `validation` (or `None`) yield `(image [height, width, bands],
    int label)`, raw; `fingerprint` is the source's `content_fingerprint`; `labels`, if
    known, maps split names to their class ids, for `class_counts`.
    """
    num_classes = len(class_names)
    check_class_names(class_names)
    converter = ImageConverter(options.image_size, options.center_crop, preprocessing)
    batch_size = options.batch_size or default_batch_size(num_train)

    def prepare(image, label):
        if preprocessing == "pixels" and image.shape[-1] == 1:  # grayscale photos: RGB
            image = tf.image.grayscale_to_rgb(image)
        return converter(image), label

    train = train.map(prepare, num_parallel_calls=AUTOTUNE)
    test = test.map(prepare, num_parallel_calls=AUTOTUNE)
    if validation is not None:
        validation = validation.map(prepare, num_parallel_calls=AUTOTUNE)
    bands = train.element_spec[0].shape[-1]

    def to_model_inputs(images, labels):
        return tf.cast(images, tf.float32), tf.one_hot(labels, num_classes)

    if options.cache:
        train, test = train.cache(), test.cache()
        validation = None if validation is None else validation.cache()
    augment = None
    if options.augment != "none":
        augment = make_augmentation(
            options.augment, options.image_size, options.seed, library=options.library,
            preprocessing=preprocessing,
        )
    next_epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="next_epoch")

    def one_epoch(_):
        # Runs as each pass over `train` starts: the epoch's shuffle order and random
        # draws follow from (seed, epoch) alone, whatever ran before in this process.
        epoch = next_epoch.read_value()
        with tf.control_dependencies([epoch]):
            started = [next_epoch.assign_add(1)]
        shuffle_seed = tf.random.stateless_uniform(
            [], seed=tf.stack([tf.constant(options.seed, tf.int64), epoch]), dtype=tf.int64,
            minval=None, maxval=None,
        )
        batches = (
            _shuffle(train, min(num_train, SHUFFLE_BUFFER), shuffle_seed)
            .batch(batch_size)
            .map(to_model_inputs, num_parallel_calls=AUTOTUNE)
        )
        if augment is not None:
            # Sequential on purpose: each batch advances the layers' seed state in order.
            batches = batches.map(augment)
            started += augment.restart(epoch)
        with tf.control_dependencies(started):
            return batches.take(-1)

    def in_order(dataset, count):
        # The batch counts are known: Keras' progress bar gets its total, and a source
        # that yields another number of images fails instead of silently running short.
        batches = dataset.batch(batch_size).map(to_model_inputs, num_parallel_calls=AUTOTUNE)
        batches = batches.apply(tf.data.experimental.assert_cardinality(-(-count // batch_size)))
        return without_autotuning(batches.prefetch(AUTOTUNE))

    train = tf.data.Dataset.range(1).flat_map(one_epoch)
    train = train.apply(tf.data.experimental.assert_cardinality(-(-num_train // batch_size)))
    return ImageDatasets(
        train=without_autotuning(train.prefetch(AUTOTUNE)),
        test=in_order(test, num_test),
        class_names=list(class_names),
        test_split=test_split,
        num_train=int(num_train),
        num_test=int(num_test),
        batch_size=batch_size,
        preprocessing=preprocessing,
        image_shape=(options.image_size, options.image_size, bands),
        center_crop=options.center_crop,
        next_epoch=next_epoch,
        fingerprint=fingerprint,
        validation=None if validation is None else in_order(validation, num_validation),
        validation_split=validation_split,
        num_validation=int(num_validation),
        class_counts=None if labels is None else {
            split: np.bincount(ids, minlength=num_classes).tolist() for split, ids in labels.items()
        },
    )


def default_batch_size(num_train):
    """The largest of `DEFAULT_BATCH_SIZES` giving `MIN_STEPS_PER_EPOCH` steps, else the smallest."""
    for size in DEFAULT_BATCH_SIZES:
        if num_train >= size * MIN_STEPS_PER_EPOCH:
            return size
    return DEFAULT_BATCH_SIZES[-1]


def stratified_split(labels, fraction, what, class_names=None):
    """Fixed, stratified (kept, held-out) positions into `labels`, each in increasing order.

    At least one image per class is held out, so small sets get a split too; `what`
    names the images' source and `class_names` the classes in the error when a class
    has a single image.
    """
    from sklearn.model_selection import train_test_split

    rows = np.arange(len(labels))
    names, counts = np.unique(labels, return_counts=True)
    size = max(len(names), math.ceil(fraction * len(rows)))
    problem = None
    if counts.min() < 2:
        small = names[counts.argmin()].item()
        small = f"class id {small}" if class_names is None else f"class {class_names[small]!r}"
        problem = f"each class needs at least 2 images, {small} has 1"
    elif size > len(rows) - len(names):
        problem = f"{size} held out would leave a class without training images"
    if problem is not None:
        raise ValueError(
            f"{what}: cannot hold out a stratified {fraction:g} of its {len(rows)} images: "
            f"{problem}. Add images, a test/ or val/ split, or lower `validation_fraction`."
        )
    kept, held_out = train_test_split(
        rows, test_size=size, stratify=labels, random_state=SPLIT_RANDOM_STATE
    )
    return np.sort(kept), np.sort(held_out)


def held_out_description(fraction, of="train"):
    return f"held-out ({fraction:.0%} of {of}, stratified)"


def content_fingerprint(*parts):
    """16 hex digits of SHA-256 over what identifies a source's examples and labels.

    Each source passes what is cheap to read and changes when its examples do: file
    paths, labels and sizes; array bytes; an HDF5 file's size and labels; a
    tensorflow-datasets name, version and split sizes.
    """
    digest = hashlib.sha256()
    for part in parts:
        digest.update(part if isinstance(part, bytes) else repr(part).encode())
    return digest.hexdigest()[:16]


def _shuffle(dataset, buffer_size, seed):
    """`dataset.shuffle` with a tensor seed, inside a `tf.data` function's trace.

    tf.data combines an op seed with the global one (`keras.utils.set_random_seed`)
    through a Python comparison that fails for a tensor seed when the global seed is
    0; the graph's global seed is lifted while the op is made, and only then.
    """
    graph = tf.compat.v1.get_default_graph()
    global_seed = graph.seed
    graph.seed = None
    try:
        return dataset.shuffle(buffer_size, seed=seed)
    finally:
        graph.seed = global_seed


def check_class_names(class_names):
    """Two or more unique str names: one class has nothing to learn and scores 100%."""
    if not all(isinstance(name, str) for name in class_names) or len(set(class_names)) != len(class_names):
        raise ValueError(f"Class names must be unique str. Received: {class_names!r}")
    if len(class_names) < 2:
        raise ValueError(
            f"The data has {len(class_names)} class ({class_names}); a classifier needs at "
            "least 2."
        )
