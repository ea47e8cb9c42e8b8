"""Input pipelines: batched `tf.data` datasets of raw RGB pixels and one-hot labels.

Sources: scikit-learn's handwritten digits (offline), any tensorflow-datasets image
classification dataset, an image folder, or numpy arrays. Images stay raw 0..255 floats
because AstroTransformer rescales inside the model. Augmentation uses Keras
preprocessing layers inside the `tf.data` graph, where they run on TensorFlow whatever
the Keras backend is, so the same pipelines feed `model.fit` on TensorFlow, JAX and
PyTorch.
"""

import contextlib
import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
AUGMENT_POLICIES = ("none", "basic", "randaugment", "mixup", "cutmix")
AUGMENT_LIBRARIES = ("keras", "keras_cv")
DIGITS = "digits"
TFDS_EXAMPLES = ("cifar10", "cifar100", "eurosat", "mnist", "fashion_mnist", "svhn_cropped")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
# Leading bytes of the formats `tf.io.decode_image` reads (JPEG, PNG, GIF, BMP).
IMAGE_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"GIF87a", b"GIF89a", b"BM")
TEST_FOLDERS = ("test", "val", "validation")
MIN_IMAGE_SIZE = 8
SHUFFLE_BUFFER = 10_000
# Random shifts reach 1/8 of the side: the usual 4-pixel padding at 32x32.
SHIFT_FRACTION = 1 / 8
DIGITS_TEST_FRACTION = 0.2
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


def available_sources():
    """What `load_datasets` accepts, for help texts and error messages."""
    return [
        DIGITS,
        *TFDS_EXAMPLES,
        "any other tensorflow-datasets image classification name",
        "a path to an image folder (DIR/train/<class>/*)",
    ]


def load_datasets(
    source,
    *,
    image_size=32,
    batch_size=64,
    augment="none",
    seed=0,
    validation_fraction=0.1,
    data_dir=None,
    cache=True,
    library="keras",
):
    """Builds train and test pipelines for a named dataset or an image folder.

    Args:
        source: `"digits"` (scikit-learn's 8x8 digits, 1437 train / 360 test, offline),
            a tensorflow-datasets name such as `"cifar10"` (downloaded by tfds on first
            use), or the path of an image folder (a `str` or `os.PathLike` naming an
            existing directory; it wins over a tfds name of the same spelling).
            Image folders hold `DIR/train/<class>/*` and `DIR/test/<class>/*`
            (or `val/`, `validation/`); a folder of class folders without a `train/`
            folder is read as training data. Images are jpg, jpeg, png, bmp or gif
            (first frame), found recursively; hidden files are skipped, other files are
            an error. Files that are not images by content raise a `ValueError` naming
            them when the folder is read; a file with an image header but damaged data
            stops the first pass over the dataset with a `tf.errors.InvalidArgumentError`
            naming the file.
        image_size: int >= 8, the side of the square images the pipelines yield.
        batch_size: int, examples per batch.
        augment: one of `AUGMENT_POLICIES`; applied to `train` only.
        seed: int; seeds the shuffle and the augmentation, so the same seed gives the
            same batches.
        validation_fraction: fraction of train held out as the evaluation split when
            the source has no test or validation split (fixed, stratified for folders).
        data_dir: tensorflow-datasets' data directory (tfds sources only).
        cache: keep decoded, resized images in memory after the first pass.
        library: `"keras"` or `"keras_cv"` (the `keras-astro[cv]` extra) augmentation layers.

    Returns:
        An `ImageDatasets`.
    """
    options = _PipelineOptions(image_size, batch_size, augment, seed, cache, library)
    if not 0 < validation_fraction < 1:
        raise ValueError(
            f"`validation_fraction` must be between 0 and 1. Received: {validation_fraction!r}"
        )
    if isinstance(source, os.PathLike) or (isinstance(source, str) and os.path.isdir(source)):
        return _load_folder(os.fspath(source), validation_fraction, options)
    if source == DIGITS:
        return _load_digits(options)
    if isinstance(source, str) and source:
        return _load_tfds(source, data_dir, validation_fraction, options)
    raise ValueError(_unknown_source_message(source))


def from_arrays(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    class_names=None,
    image_size=None,
    batch_size=64,
    augment="none",
    seed=0,
    cache=True,
    library="keras",
):
    """Builds train and test pipelines from in-memory numpy arrays.

    Args:
        x_train, x_test: images `[n, height, width]` (grayscale) or
            `[n, height, width, 1 or 3]`, raw pixel values in 0..255.
        y_train, y_test: int class ids `[n]` in `[0, num_classes)`.
        class_names: optional list of str; defaults to `"0"`, `"1"`, ... up to the
            largest label.
        image_size: int >= 8; `None` keeps the arrays' size (square images only).
        batch_size, augment, seed, cache, library: as in `load_datasets`.

    Returns:
        An `ImageDatasets` whose `test` comes from `x_test`, `y_test` in their order.
    """
    x_train, y_train = _check_arrays(x_train, y_train, "x_train", "y_train")
    x_test, y_test = _check_arrays(x_test, y_test, "x_test", "y_test")
    if image_size is None:
        height, width = x_train.shape[1:3]
        if height != width or x_test.shape[1:3] != (height, width):
            raise ValueError(
                "Pass `image_size` when images are not square or train and test sizes "
                f"differ. Received: x_train {x_train.shape}, x_test {x_test.shape}"
            )
        image_size = int(height)
    options = _PipelineOptions(image_size, batch_size, augment, seed, cache, library)
    largest = int(max(y_train.max(), y_test.max()))
    if class_names is None:
        class_names = [str(i) for i in range(largest + 1)]
    class_names = list(class_names)
    if not class_names or not all(isinstance(name, str) for name in class_names):
        raise ValueError(
            f"`class_names` must be a non-empty list of str. Received: {class_names!r}"
        )
    if len(set(class_names)) != len(class_names):
        raise ValueError(f"`class_names` must be unique. Received: {class_names!r}")
    if largest >= len(class_names):
        raise ValueError(
            f"Labels must be class ids in [0, {len(class_names)}) for {len(class_names)} "
            f"class names. Received a label {largest}."
        )

    def examples(x, y):
        dataset = tf.data.Dataset.from_tensor_slices((x, y))
        return dataset.map(
            lambda image, label: (_to_rgb_size(image, image_size), label),
            num_parallel_calls=AUTOTUNE,
        )

    return _make_datasets(
        examples(x_train, y_train),
        examples(x_test, y_test),
        class_names=class_names,
        test_split="test",
        num_train=len(x_train),
        num_test=len(x_test),
        options=options,
    )


def make_augmentation(policy, image_size, seed=0, num_classes=None, library="keras"):
    """Returns `fn(images, labels) -> (images, labels)` for batches inside `tf.data`.

    Policies (all keep images raw 0..255):
        "none": identity.
        "basic": a random shift of up to 1/8 of the side (4 pixels at 32x32) with zero
            fill, the same images as zero padding then a random crop but drawn per
            image (Keras' RandomCrop uses one window per batch), and a random
            horizontal flip.
        "randaugment": basic, then RandAugment (Keras draws its two ops once per batch
            and their magnitudes per image).
        "mixup", "cutmix": basic, then MixUp or CutMix across the batch; labels become
            soft one-hot mixtures.

    Keras layers hold their random state in the layers, so a pipeline built with the
    same seed yields the same batches; run the returned function in a sequential
    `map` so batches consume that state in order. keras-cv's MixUp, CutMix and
    RandAugment also draw from TensorFlow's global random state: seed it with
    `keras.utils.set_random_seed` (keras-cv's RandAugment is not reproducible even then).

    Args:
        policy: one of `AUGMENT_POLICIES`.
        image_size: int, the side of the square images.
        seed: int.
        num_classes: int; when given, int class-id labels are one-hot encoded first
            (MixUp and CutMix mix one-hot labels).
        library: `"keras"` (Keras core layers) or `"keras_cv"`.
    """
    _check_choice("augment", policy, AUGMENT_POLICIES)
    _check_choice("library", library, AUGMENT_LIBRARIES)
    _check_image_size(image_size)
    layers = _augmentation_layers(policy, image_size, seed, library)

    def augment(images, labels):
        if num_classes is not None and labels.shape.rank == 1:
            labels = tf.one_hot(labels, num_classes)
        data = {"images": images, "labels": labels}
        for layer in layers:
            data = layer(data)
        return data["images"], data["labels"]

    return augment


def _augmentation_layers(policy, image_size, seed, library):
    if policy == "none":
        return []
    # keras-cv falls back to TensorFlow's global generator for seed 0, hence seed + 1.
    module = keras.layers if library == "keras" else _import_keras_cv().layers
    shift = max(1, round(image_size * SHIFT_FRACTION)) / image_size  # whole pixels
    with _float32_policy():
        layers = [
            module.RandomTranslation(
                shift, shift, fill_mode="constant", interpolation="nearest", seed=seed + 1
            ),
            module.RandomFlip("horizontal", seed=seed + 2),
        ]
        if policy == "randaugment":
            layers.append(module.RandAugment(value_range=(0, 255), seed=seed + 3))
        elif policy == "mixup":
            layers.append(module.MixUp(seed=seed + 3))
        elif policy == "cutmix":
            layers.append(module.CutMix(seed=seed + 3))
    return layers


@contextlib.contextmanager
def _float32_policy():
    """Builds layers in float32 under a mixed-precision global policy, so pipelines
    yield float32 (keras-cv's RandAugment gives its sub-layers the global policy)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


def _import_keras_cv():
    try:
        import keras_cv
    except ImportError as error:
        raise ImportError(
            'library="keras_cv" needs keras-cv: pip install "keras-astro[cv]"'
        ) from error
    return keras_cv


@dataclasses.dataclass(frozen=True)
class _PipelineOptions:
    """The pipeline arguments `load_datasets` and `from_arrays` share, checked once."""

    image_size: int
    batch_size: int
    augment: str
    seed: int
    cache: bool
    library: str

    def __post_init__(self):
        _check_image_size(self.image_size)
        if not _is_int_at_least(self.batch_size, 1):
            raise ValueError(f"`batch_size` must be a positive int. Received: {self.batch_size!r}")
        if not _is_int_at_least(self.seed, 0):
            raise ValueError(f"`seed` must be an int >= 0. Received: {self.seed!r}")
        _check_choice("augment", self.augment, AUGMENT_POLICIES)
        _check_choice("library", self.library, AUGMENT_LIBRARIES)


def _make_datasets(train, test, *, class_names, test_split, num_train, num_test, options):
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


def _to_rgb_size(image, image_size):
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


# === digits ===


def _load_digits(options):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.repeat(digits.images[..., None] * (255.0 / 16.0), 3, axis=-1).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=SPLIT_RANDOM_STATE,
    )
    class_names = [str(name) for name in digits.target_names]
    return from_arrays(
        x_train, y_train, x_test, y_test, class_names=class_names, **dataclasses.asdict(options)
    )


# === tensorflow-datasets ===


def _load_tfds(name, data_dir, validation_fraction, options):
    import tensorflow_datasets as tfds

    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except tfds.core.DatasetNotFoundError as error:
        raise ValueError(_unknown_source_message(name)) from error
    info = builder.info
    if info.supervised_keys is None or len(info.supervised_keys) != 2:
        raise ValueError(f"tensorflow-datasets {name!r} has no (image, label) supervised keys.")
    image_key, label_key = info.supervised_keys
    image_feature, label_feature = info.features[image_key], info.features[label_key]
    if not (
        isinstance(image_feature, tfds.features.Image)
        and image_feature.shape[-1] in (1, 3)
        and isinstance(label_feature, tfds.features.ClassLabel)
    ):
        raise ValueError(
            f"tensorflow-datasets {name!r} is not an image classification dataset with "
            f"1- or 3-channel images and class labels. Features: {info.features}"
        )
    builder.download_and_prepare()
    splits = builder.info.splits
    if "train" not in splits:
        raise ValueError(
            f"tensorflow-datasets {name!r} has no 'train' split. Splits: {list(splits)}"
        )
    train_split = "train"
    test_split = next((split for split in ("test", "validation") if split in splits), None)
    if test_split is None:
        cut = round(splits["train"].num_examples * (1 - validation_fraction))
        train_split, test_split = f"train[:{cut}]", f"train[{cut}:]"

    def examples(split):
        dataset = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
        return dataset.map(
            lambda image, label: (
                _to_rgb_size(image, options.image_size),
                tf.cast(label, tf.int32),
            ),
            num_parallel_calls=AUTOTUNE,
        )

    return _make_datasets(
        examples(train_split),
        examples(test_split),
        class_names=list(label_feature.names),
        test_split=test_split,
        num_train=splits[train_split].num_examples,
        num_test=splits[test_split].num_examples,
        options=options,
    )


# === image folders ===


def _load_folder(root, validation_fraction, options):
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {root!r} does not exist or is not a directory.")
    train_dir = os.path.join(root, "train")
    test_dirs = [os.path.join(root, name) for name in TEST_FOLDERS]
    test_dir = next((path for path in test_dirs if os.path.isdir(path)), None)
    if not os.path.isdir(train_dir):
        if test_dir is not None:
            raise ValueError(f"Image folder {root!r} has {test_dir!r} but no 'train' folder.")
        train_dir = root
    class_names, train_files, train_labels = _index_class_folders(train_dir)
    if test_dir is not None:
        test_names, test_files, test_labels = _index_class_folders(test_dir)
        if test_names != class_names:
            raise ValueError(
                f"The class folders of {test_dir!r} differ from those of {train_dir!r}: "
                f"missing {sorted(set(class_names) - set(test_names))}, "
                f"extra {sorted(set(test_names) - set(class_names))}."
            )
        test_split = os.path.basename(test_dir)
    else:
        train_files, test_files, train_labels, test_labels = _hold_out(
            train_dir, train_files, train_labels, validation_fraction
        )
        test_split = f"train ({validation_fraction:.0%} held out, stratified)"
    _check_image_signatures(train_files + test_files)
    # The cache freezes the order of the first pass: start from a seeded permutation
    # so the shuffle buffer does not see the files class by class.
    order = np.random.default_rng(options.seed).permutation(len(train_files))
    train_files = [train_files[i] for i in order]
    train_labels = [train_labels[i] for i in order]
    return _make_datasets(
        _decode_files(train_files, train_labels, options.image_size),
        _decode_files(test_files, test_labels, options.image_size),
        class_names=class_names,
        test_split=test_split,
        num_train=len(train_files),
        num_test=len(test_files),
        options=options,
    )


def _index_class_folders(directory):
    """Lists `directory/<class>/**` image files; class ids follow sorted folder names."""
    entries = sorted(entry for entry in os.listdir(directory) if not entry.startswith("."))
    class_names = [entry for entry in entries if os.path.isdir(os.path.join(directory, entry))]
    stray = [entry for entry in entries if entry.lower().endswith(IMAGE_EXTENSIONS)]
    if not class_names:
        raise ValueError(
            f"{directory!r} has no class sub-folders. Expected {directory}/<class>/<images>."
        )
    if stray:
        raise ValueError(
            f"{directory!r} has image files outside class sub-folders: {stray[:5]}. "
            f"Move them into {directory}/<class>/."
        )
    files, labels = [], []
    for label, name in enumerate(class_names):
        class_files = _list_images(os.path.join(directory, name))
        files.extend(class_files)
        labels.extend([label] * len(class_files))
    return class_names, files, labels


def _list_images(class_dir):
    images, others = [], []
    for folder, subfolders, names in os.walk(class_dir, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else others).append(path)
    if others:
        raise ValueError(
            f"{class_dir!r} holds files that are not {'/'.join(IMAGE_EXTENSIONS)} images: "
            f"{others[:5]}{' ...' if len(others) > 5 else ''}"
        )
    if not images:
        raise ValueError(f"Class folder {class_dir!r} has no images.")
    return images


def _hold_out(train_dir, files, labels, fraction):
    from sklearn.model_selection import train_test_split

    try:
        return train_test_split(
            files, labels, test_size=fraction, stratify=labels, random_state=SPLIT_RANDOM_STATE
        )
    except ValueError as error:
        raise ValueError(
            f"Cannot hold out a stratified {fraction:g} of {train_dir!r} for evaluation "
            f"({error}). Add a test/ or val/ folder, more images, or change "
            "`validation_fraction`."
        ) from error


def _check_image_signatures(files):
    """Reads a few bytes per file: cheap, and names every file that is not an image."""
    bad = []
    for path in files:
        with open(path, "rb") as file:
            if not file.read(8).startswith(IMAGE_SIGNATURES):
                bad.append(path)
    if bad:
        raise ValueError(
            f"{len(bad)} file(s) are not JPEG, PNG, GIF or BMP images: "
            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}"
        )


def _decode_files(files, labels, image_size):
    """Reads and decodes in parallel; a file that fails stops iteration, named.

    Failed decodes are dropped by `ignore_errors` and then detected, in order, as a gap
    in the running index, whose file the assertion names. A final sentinel index that
    needs no decoding catches a failure of the last file.
    """
    count = len(files)
    paths = tf.constant(files + [""])
    label_ids = tf.constant(labels, tf.int32)

    def decode(index):
        def read():
            image = tf.io.decode_image(
                tf.io.read_file(paths[index]), channels=3, expand_animations=False
            )
            return _to_rgb_size(image, image_size)

        def sentinel():
            return tf.zeros((image_size, image_size, 3), tf.uint8)

        return index, tf.cond(index < count, read, sentinel)

    def check_order(expected, element):
        index, _ = element
        found = tf.debugging.Assert(
            tf.equal(index, expected), ["Cannot read or decode image file", paths[expected]]
        )
        with tf.control_dependencies([found]):
            return index + 1, element

    dataset = tf.data.Dataset.range(count + 1).map(decode, num_parallel_calls=AUTOTUNE)
    dataset = dataset.ignore_errors().scan(tf.constant(0, tf.int64), check_order)
    dataset = dataset.filter(lambda index, image: index < count)
    return dataset.map(lambda index, image: (image, label_ids[index]))


# === argument checks ===


def _unknown_source_message(source):
    return (
        f"Unknown dataset {source!r}: not 'digits', not a tensorflow-datasets name and not "
        f"an existing directory. Expected one of: {'; '.join(available_sources())}."
    )


def _check_choice(argument, value, choices):
    if value not in choices:
        raise ValueError(f"`{argument}` must be one of {choices}. Received: {value!r}")


def _is_int_at_least(value, minimum):
    return isinstance(value, int) and not isinstance(value, bool) and value >= minimum


def _check_image_size(image_size):
    if not _is_int_at_least(image_size, MIN_IMAGE_SIZE):
        raise ValueError(
            f"`image_size` must be an int >= {MIN_IMAGE_SIZE}. Received: {image_size!r}"
        )




def _check_arrays(x, y, x_name, y_name):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or x.shape[-1] not in (1, 3) or len(x) == 0:
        raise ValueError(
            f"`{x_name}` must be non-empty images [n, height, width] or "
            f"[n, height, width, 1 or 3]. Received shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number) or x.min() < 0 or x.max() > 255:
        raise ValueError(
            f"`{x_name}` must hold raw pixel values in 0..255. Received dtype {x.dtype}"
            + (f", range {x.min()}..{x.max()}" if np.issubdtype(x.dtype, np.number) else "")
        )
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or len(y) != len(x):
        raise ValueError(
            f"`{y_name}` must be {len(x)} class ids, one per image of `{x_name}`. "
            f"Received shape {y.shape}"
        )
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"`{y_name}` must hold int class ids. Received dtype {y.dtype}")
    if y.min() < 0:
        raise ValueError(f"`{y_name}` must hold class ids >= 0. Received a label {y.min()}")
    if x.dtype not in (np.uint8, np.float32):
        x = x.astype(np.float32)
    return x, y.astype(np.int32)
