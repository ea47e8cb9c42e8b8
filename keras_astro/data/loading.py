"""`load_datasets`: one entry point that picks the source module for a name or a path."""

import os

from keras_astro.data.digits import DIGITS, load_digits
from keras_astro.data.folders import load_folder
from keras_astro.data.pipeline import PipelineOptions
from keras_astro.data.tfds_source import TFDS_EXAMPLES, UnknownDatasetError, load_tfds


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
    options = PipelineOptions(image_size, batch_size, augment, seed, cache, library)
    if not 0 < validation_fraction < 1:
        raise ValueError(
            f"`validation_fraction` must be between 0 and 1. Received: {validation_fraction!r}"
        )
    if isinstance(source, os.PathLike) or (isinstance(source, str) and os.path.isdir(source)):
        return load_folder(os.fspath(source), validation_fraction, options)
    if source == DIGITS:
        return load_digits(options)
    if isinstance(source, str) and source:
        try:
            return load_tfds(source, data_dir, validation_fraction, options)
        except UnknownDatasetError as error:
            raise ValueError(unknown_source_message(source)) from error
    raise ValueError(unknown_source_message(source))


def unknown_source_message(source):
    return (
        f"Unknown dataset {source!r}: not 'digits', not a tensorflow-datasets name and not "
        f"an existing directory. Expected one of: {'; '.join(available_sources())}."
    )
