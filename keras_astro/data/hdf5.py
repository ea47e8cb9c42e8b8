"""HDF5 files of images and labels as a source, Galaxy10 DECaLS and SDSS among them.

The file holds an image array [n, height, width(, bands)] and a label array [n] under two
keys (Galaxy10: `images` and `ans`). Images are read in chunks inside `tf.data`, never
loaded whole: Galaxy10 DECaLS is 17,736 x 256 x 256 x 3 bytes. uint8 images are 8-bit
pixels; float images are flux. The evaluation split is a fixed, stratified fraction that
does not depend on the seed.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_astro.data.bands import check_every_band_has_flux
from keras_astro.data.pipeline import (
    AUTOTUNE,
    content_fingerprint,
    held_out_description,
    make_datasets,
    stratified_split,
)

# Rows read at a time: a chunk of Galaxy10 DECaLS is 25 MB.
CHUNK_ROWS = 128


@dataclasses.dataclass(frozen=True)
class Galaxy10:
    """One Galaxy10 file: where it comes from and what its classes are.

    `size` is approximate text for messages: the user placing the file by hand needs it.
    """

    file_name: str
    url: str
    sha256: str
    size: str
    class_names: tuple


GALAXY10 = {
    # Leung & Bovy; images from the DESI Legacy Imaging Surveys, labels from Galaxy Zoo.
    "galaxy10_decals": Galaxy10(
        "Galaxy10_DECals.h5",
        "https://zenodo.org/records/10845026/files/Galaxy10_DECals.h5",
        "19aefc477c41bb7f77ff07599a6b82a038dc042f889a111b0d4d98bb755c1571",
        "about 2.5 GB: 17,736 RGB images of 256x256",
        (
            "Disturbed", "Merging", "Round Smooth", "In-between Round Smooth",
            "Cigar Shaped Smooth", "Barred Spiral", "Unbarred Tight Spiral",
            "Unbarred Loose Spiral", "Edge-on without Bulge", "Edge-on with Bulge",
        ),
    ),
    "galaxy10_sdss": Galaxy10(
        "Galaxy10.h5",
        "https://zenodo.org/records/10844811/files/Galaxy10.h5",
        "969a6b1cefcc36e09fffa86febd2f699a4aa19b837ba0427f01b0bc6ded458af",
        "about 200 MB: 21,785 RGB images of 69x69",
        (
            "Disk, Face-on, No Spiral", "Smooth, Completely round", "Smooth, in-between round",
            "Smooth, Cigar shaped", "Disk, Edge-on, Rounded Bulge", "Disk, Edge-on, Boxy Bulge",
            "Disk, Edge-on, No Bulge", "Disk, Face-on, Tight Spiral",
            "Disk, Face-on, Medium Spiral", "Disk, Face-on, Loose Spiral",
        ),
    ),
}


def galaxy10_file(name, data_dir=None):
    """The path of a Galaxy10 file: found in `data_dir`, else downloaded there and checked.

    A file already in `data_dir` is used as it is (it may be a subset you made); a
    download is checked against the official SHA-256 (`keras.utils.get_file`). A failed
    download raises one `ValueError` saying where to place the file by hand: offline
    machines are common on clusters.
    """
    import keras

    spec = GALAXY10[name]
    data_dir = os.path.abspath(os.path.expanduser(data_dir or os.path.join("~", ".keras", "datasets")))
    path = os.path.join(data_dir, spec.file_name)
    if os.path.isfile(path):
        return path
    os.makedirs(data_dir, exist_ok=True)
    by_hand = (
        f"download {spec.url} elsewhere and place it in {data_dir} as {spec.file_name} "
        f"(SHA-256 {spec.sha256}, {spec.size})"
    )
    try:
        return keras.utils.get_file(
            spec.file_name, spec.url, file_hash=spec.sha256, hash_algorithm="sha256",
            cache_dir=data_dir, cache_subdir="",
        )
    except ValueError as error:
        # get_file leaves a download that fails the checksum in place, where the next
        # call would find it and use it unchecked.
        if os.path.isfile(path):
            os.remove(path)
        raise ValueError(f"Downloaded {spec.file_name} is damaged ({error}); {by_hand}.") from None
    except Exception as error:  # get_file raises a bare Exception for URL and HTTP errors
        raise ValueError(
            f"Could not download {spec.file_name} ({error}); without the network, {by_hand}."
        ) from None


def describe_hdf5(path, images_key="images", labels_key="ans"):
    """(image shape [n, h, w, bands], image dtype, int32 labels) of an HDF5 file, checked;
    `labels_key=None` checks the images alone (a survey to predict) and gives `None` labels.

    Raises a `ValueError` naming the file and key for a missing key, a group where a
    dataset belongs, images that are not [n, height, width] or [n, height, width, bands]
    with every axis at least 1 long (a zero-length axis crashes the reader later, with no
    message), labels that are not [n] class ids in int32's range, or images and labels of
    different lengths.
    """
    import h5py

    if not os.path.isfile(path):
        raise ValueError(f"No HDF5 file at {path!r}.")
    try:
        file = h5py.File(path, "r")
    except OSError as error:
        raise ValueError(f"{path}: not a readable HDF5 file ({error}).") from error
    with file:
        keys = (images_key,) if labels_key is None else (images_key, labels_key)
        missing = [key for key in keys if key not in file]
        if missing:
            raise ValueError(
                f"{path}: no dataset {missing[0]!r}; it has {sorted(file.keys())}. "
                "Name the keys with images_key= / labels_key= (--images-key, --labels-key)."
            )
        groups = [key for key in keys if not isinstance(file[key], h5py.Dataset)]
        if groups:
            raise ValueError(
                f"{path}: {groups[0]!r} is a group (of {sorted(file[groups[0]].keys())}), not a "
                "dataset; name the datasets with --images-key / --labels-key."
            )
        images = file[images_key]
        shape = images.shape if len(images.shape) == 4 else (*images.shape, 1)
        if len(shape) != 4 or 0 in shape:
            raise ValueError(
                f"{path}: {images_key!r} has shape {images.shape}; expected [n, height, width] "
                "or [n, height, width, bands], at least one image, every axis at least 1 long."
            )
        if not (np.issubdtype(images.dtype, np.integer) or np.issubdtype(images.dtype, np.floating)):
            raise ValueError(f"{path}: {images_key!r} holds {images.dtype}; expected numbers.")
        if labels_key is None:
            return shape, images.dtype, None
        labels = np.asarray(file[labels_key])
        if labels.ndim == 2 and labels.shape[1] == 1:
            labels = labels[:, 0]
        if labels.ndim != 1 or len(labels) != shape[0]:
            raise ValueError(
                f"{path}: {labels_key!r} has shape {labels.shape} but {images_key!r} holds "
                f"{shape[0]} images; expected one class id per image."
            )
        integral = np.issubdtype(labels.dtype, np.integer) or (
            np.issubdtype(labels.dtype, np.floating) and np.all(labels == np.round(labels))
        )
        if not integral:
            raise ValueError(f"{path}: {labels_key!r} holds {labels.dtype}; expected int class ids.")
        # Checked before the cast: 2**32 + 1 would wrap into class 1.
        outside = np.flatnonzero((labels < 0) | (labels > np.iinfo(np.int32).max))
        if len(outside):
            raise ValueError(
                f"{path}: {labels_key!r} holds {labels[outside[0]]} at row {outside[0]}; expected "
                "class ids 0, 1, ... (0..K-1 for K classes)."
            )
        return shape, images.dtype, labels.astype(np.int32)


def load_hdf5(path, images_key, labels_key, class_names, options):
    """Pipelines of an HDF5 file; `class_names` `None` numbers the classes."""
    shape, dtype, labels = describe_hdf5(path, images_key, labels_key)
    if class_names is None:
        found = np.unique(labels)
        if len(found) != found[-1] + 1:
            shown = ", ".join(map(str, found[:20])) + (" ..." if len(found) > 20 else "")
            raise ValueError(
                f"{path}: {labels_key!r} holds the class ids {shown}; expected 0..K-1 with "
                f"every class present, or --class-names naming all {found[-1] + 1} classes."
            )
        class_names = [str(i) for i in found]
    class_names = list(class_names)
    outside = np.flatnonzero((labels < 0) | (labels >= len(class_names)))
    if len(outside):
        raise ValueError(
            f"{path}: {labels_key!r} holds class ids outside [0, {len(class_names)}) for "
            f"{len(class_names)} class names, first at row {outside[0]} ({labels[outside[0]]}); "
            f"{len(outside)} rows in all."
        )
    # Test, then validation, held out of the file (a dataset's rows in increasing order).
    fraction = options.validation_fraction
    train_rows, test_rows = stratified_split(labels, fraction, path, class_names)
    kept, held = stratified_split(
        labels[train_rows], fraction, f"{path} (its training rows)", class_names
    )
    train_rows, validation_rows = train_rows[kept], train_rows[held]
    if np.issubdtype(dtype, np.floating):
        check_every_band_has_flux(
            _read_in_order(path, images_key, train_rows), shape[-1], f"{path} ({images_key!r})"
        )
    # Chunks of a seeded permutation: the shuffle buffer need not hold the whole file.
    train_rows = np.random.default_rng(options.seed).permutation(train_rows)
    label_ids = tf.constant(labels, tf.int32)

    def examples(rows):
        images = read_rows(path, images_key, rows, shape, dtype)
        return images.map(lambda image, row: (image, tf.gather(label_ids, row)))

    return make_datasets(
        examples(train_rows),
        examples(test_rows),
        validation=examples(validation_rows),
        class_names=class_names,
        test_split=held_out_description(fraction, "the file"),
        validation_split=held_out_description(fraction),
        num_train=len(train_rows),
        num_test=len(test_rows),
        num_validation=len(validation_rows),
        labels={split: labels[rows] for split, rows in (
            ("train", train_rows), ("validation", validation_rows), ("test", test_rows)
        )},
        options=options,
        preprocessing=options.preprocessing_or("pixels" if dtype == np.uint8 else "flux"),
        # Hashing the images would read the whole file; its size, shape and labels tell.
        fingerprint=content_fingerprint(
            os.path.getsize(path), images_key, shape, str(dtype), labels.tobytes(), class_names
        ),
    )


def _read_in_order(path, images_key, rows):
    """Chunks of `rows` images, read in increasing row order, as numpy arrays."""
    import h5py

    with h5py.File(path, "r") as file:
        for start in range(0, len(rows), CHUNK_ROWS):
            yield file[images_key][rows[start : start + CHUNK_ROWS]]


def read_rows(path, images_key, rows, shape, dtype):
    """`tf.data` examples (image [h, w, bands], row) of `rows`, read in chunks in parallel."""
    image_shape = shape[1:]
    tf_dtype = tf.uint8 if dtype == np.uint8 else tf.float32

    def read(chunk):
        import h5py

        order = np.argsort(chunk)  # HDF5 reads rows in increasing order
        with h5py.File(path, "r") as file:
            images = np.empty((len(chunk), *image_shape), tf_dtype.as_numpy_dtype)
            images[order] = file[images_key][chunk[order]].reshape(len(chunk), *image_shape)
        return images

    def read_chunk(chunk):
        images = tf.numpy_function(read, [chunk], tf_dtype, stateful=False)
        images.set_shape([None, *image_shape])
        return images, chunk

    chunks = tf.data.Dataset.from_tensor_slices(np.asarray(rows, np.int64)).batch(CHUNK_ROWS)
    return chunks.map(read_chunk, num_parallel_calls=AUTOTUNE).unbatch()
