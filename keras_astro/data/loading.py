"""`load_datasets`: one entry point that picks the source module for a name or a path."""

import os

from keras_astro.data.catalog import WORKBOOK_EXTENSIONS, load_catalog
from keras_astro.data.digits import DIGITS, load_digits
from keras_astro.data.folders import load_folder
from keras_astro.data.hdf5 import GALAXY10, galaxy10_file, load_hdf5
from keras_astro.data.pipeline import PipelineOptions
from keras_astro.data.tfds_source import TFDS_EXAMPLES, UnknownDatasetError, load_tfds

HDF5_EXTENSIONS = (".h5", ".hdf5", ".he5")
# Excel saves tab-separated tables as .txt ("Unicode Text") or .tsv.
CATALOG_EXTENSIONS = (".csv", ".tsv", ".txt")


def available_sources():
    """What `load_datasets` accepts, for help texts and error messages."""
    return [
        DIGITS,
        *GALAXY10,
        *TFDS_EXAMPLES,
        "any other tensorflow-datasets image classification name",
        "a path to an image folder of photos or FITS files (DIR/train/<class>/*)",
        "a path to an HDF5 file (.h5) of images and labels",
        "a path to a catalogue table (.csv) of file paths and labels",
    ]


def load_datasets(
    source,
    *,
    image_size=32,
    batch_size=None,
    augment="none",
    seed=0,
    validation_fraction=0.1,
    data_dir=None,
    cache=True,
    library="keras",
    center_crop=None,
    preprocessing=None,
    images_key="images",
    labels_key="ans",
    class_names=None,
    path_column="file_loc",
    label_column="label",
    split_column=None,
):
    """Builds train, validation and test pipelines for a named dataset, a folder or a file.

    The test split scores a run; the validation split, held out of train unless the
    source has one besides its test split, chooses its epoch (`keras_astro.training.fit`).

    Args:
        source: one of
            - `"digits"`: scikit-learn's 8x8 digits, 1437 train (less the validation split) / 360 test, offline.
            - `"galaxy10_decals"`, `"galaxy10_sdss"`: Galaxy10 (Leung & Bovy), the HDF5
              file looked up in `data_dir` (default `~/.keras/datasets`) and downloaded
              there with its checksum when missing; official class names; a fixed,
              stratified `validation_fraction` held out for evaluation.
            - a tensorflow-datasets name such as `"cifar10"` (downloaded by tfds on first
              use, into `data_dir`).
            - the path of a folder (a `str` or `os.PathLike` naming an existing
              directory; it wins over a dataset name of the same spelling) holding
              `DIR/train/<class>/*` and `DIR/test/<class>/*` (or `val/`, `validation/`);
              a folder of class folders without `train/` is read as training data. The
              files are photos (jpg, jpeg, png, bmp, gif: first frame) or FITS cutouts
              (.fits, .fit, .fts, .fits.gz, .fz: flux, any number of bands, the same in
              every file), one kind per dataset, found recursively; hidden files are
              skipped, other files are an error. Files that are not images by content
              raise a `ValueError` naming them when the folder is read; a file with an
              image header but damaged data stops the first pass over the dataset with
              a `tf.errors.InvalidArgumentError` naming the file.
            - the path of an HDF5 file (.h5, .hdf5): images under `images_key`
              [n, height, width(, bands)], class ids under `labels_key`; read in chunks.
            - the path of a catalogue (.csv) with `path_column` (paths relative to the
              table's folder) and `label_column`, and optionally `split_column`
              (train / test / val per row; default: a column named "split" if there is
              one; without one, or with "", `validation_fraction` is held out).
        image_size: int >= 8, the side of the square images the pipelines yield.
        batch_size: int, examples per batch; None: the largest of 64, 32, 16 and 8
            that gives an epoch of the training images at least 16 steps.
        augment: one of `AUGMENT_POLICIES`; applied to `train` only.
        seed: int; seeds the shuffle and the augmentation, so the same seed gives the
            same batches.
        validation_fraction: fraction of train held out (fixed, stratified) as the
            validation split, and before that as the test split when the source has none.
        data_dir: tensorflow-datasets' data directory, or where the Galaxy10 files are.
        cache: keep decoded, resized images in memory after the first pass.
        library: `"keras"` or `"keras_cv"` (the `keras-astro[cv]` extra) augmentation layers.
        center_crop: `None` or the central fraction (0, 1] of each side kept before the
            resize: galaxies sit small in the middle of survey cutouts.
        preprocessing: `None` (photos, 8-bit files and uint8 arrays are "pixels"; FITS and
            float HDF5 data are "flux"), or `"pixels"` / `"flux"` to override.
        images_key, labels_key: the HDF5 datasets (Galaxy10: "images", "ans").
        class_names: the HDF5 file's class names in class-id order (default "0", "1", ...).
        path_column, label_column, split_column: the catalogue's columns.

    Returns:
        An `ImageDatasets`; its `preprocessing` says "pixels" or "flux".
    """
    if validation_fraction is None:
        raise ValueError("`validation_fraction` must be between 0 and 1. Received: None")
    options = PipelineOptions(
        image_size, batch_size, augment, seed, cache, library, center_crop, preprocessing,
        validation_fraction,
    )
    looks_like_path = isinstance(source, str) and source.startswith((os.sep, ".", "~"))
    if (
        isinstance(source, os.PathLike)
        or looks_like_path
        or (isinstance(source, str) and os.path.exists(source))
    ):
        path = os.fspath(source)
        if not os.path.exists(path):
            raise ValueError(f"{path!r} does not exist: expected a folder, an HDF5 file or a catalogue.")
        if os.path.isdir(path):
            return load_folder(path, options)
        if path.lower().endswith(HDF5_EXTENSIONS):
            return load_hdf5(path, images_key, labels_key, class_names, options)
        if path.lower().endswith(CATALOG_EXTENSIONS + WORKBOOK_EXTENSIONS):  # workbooks: refused there
            return load_catalog(path, path_column, label_column, split_column, options)
        raise ValueError(
            f"{path!r} is a file, but not an HDF5 file ({'/'.join(HDF5_EXTENSIONS)}) or a "
            f"catalogue ({'/'.join(CATALOG_EXTENSIONS)})."
        )
    if source == DIGITS:
        return load_digits(options)
    if source in GALAXY10:
        path = galaxy10_file(source, data_dir)
        names = GALAXY10[source].class_names
        return load_hdf5(path, "images", "ans", names, options)
    if isinstance(source, str) and source:
        try:
            return load_tfds(source, data_dir, options)
        except UnknownDatasetError as error:
            raise ValueError(unknown_source_message(source)) from error
    raise ValueError(unknown_source_message(source))


def unknown_source_message(source):
    return (
        f"Unknown dataset {source!r}: not a dataset name and not an existing folder or file. "
        f"Expected one of: {'; '.join(available_sources())}."
    )
