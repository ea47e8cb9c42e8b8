"""What a survey run reads: the objects of files, folders, lists, a catalogue or an HDF5
file, one shard of them, and a `tf.data` pipeline of their images as the model takes them.

Every object keeps its place: a file that cannot be read becomes an image of zeros with
its error message, so the output has one row per object, in the input's order.
"""

import dataclasses
import hashlib
import os
import warnings

import numpy as np
import tensorflow as tf

from keras_astro.data.catalog import read_rows
from keras_astro.data.folders import SUPPORTED_EXTENSIONS
from keras_astro.data.hdf5 import describe_hdf5
from keras_astro.data.hdf5 import read_rows as read_hdf5_rows
from keras_astro.data.pipeline import AUTOTUNE

# A file with one of these suffixes lists image files, one a line.
LIST_EXTENSIONS = (".txt", ".lst", ".list")


@dataclasses.dataclass
class Objects:
    """The objects of a run, in order.

    `identifiers` are file paths (as given, or joined to their list's or catalogue's
    folder) or the HDF5 row indices; `columns` are the output's leading columns
    ({name: list of str or int}): the catalogue's own, else `path` or `row`. `source`
    is "files", "catalog" or "hdf5".
    """

    identifiers: list
    columns: dict
    source: str = "files"
    data_file: str = None
    images_key: str = "images"

    def __len__(self):
        return len(self.identifiers)

    def select(self, start, stop):
        """The objects [start, stop)."""
        return dataclasses.replace(
            self,
            identifiers=self.identifiers[start:stop],
            columns={name: values[start:stop] for name, values in self.columns.items()},
        )

    def fingerprint(self):
        """A hash of the objects and where they come from: a resumed run checks it."""
        digest = hashlib.sha256(f"{self.data_file}|{self.images_key}|".encode())
        for name, values in self.columns.items():
            digest.update(f"{name}\0".encode())
            digest.update("\0".join(map(str, values)).encode())
        return digest.hexdigest()


def _files_below(folder):
    """The image and FITS files below `folder`, recursively, in sorted order; a warning
    names the other files, which are left out (a catalogue or notes beside the cutouts)."""
    found, others = [], []
    for root, folders, names in os.walk(folder):
        folders.sort()
        for name in sorted(names):
            if not name.startswith("."):
                path = os.path.join(root, name)
                (found if name.lower().endswith(SUPPORTED_EXTENSIONS) else others).append(path)
    if others:
        shown = ", ".join(others[:5]) + (" ..." if len(others) > 5 else "")
        warnings.warn(
            f"Left out {len(others)} file(s) below {folder} that are neither images nor FITS "
            f"({', '.join(SUPPORTED_EXTENSIONS)}): {shown}",
            stacklevel=3,
        )
    return sorted(found)


def _listed_files(path):
    """The files a text list names, one a line (relative ones: to the list's folder)."""
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, encoding="utf-8") as f:
        lines = [line.strip() for line in f]
    return [os.path.normpath(os.path.join(folder, line))
            for line in lines if line and not line.startswith("#")]


def find_objects(inputs=(), catalog=None, path_column="file_loc", data_file=None,
                 images_key="images"):
    """The `Objects` of exactly one source.

    Args:
        inputs: image or FITS files, folders (their files, recursively, sorted) and text
            lists (`.txt`, `.lst`, `.list`: a file a line, relative to the list's folder).
        catalog: a CSV table whose `path_column` names a file a row (relative to the
            table's folder); its columns lead the output.
        data_file: an HDF5 file of images [n, h, w(, bands)] under `images_key`.
    """
    given = [name for name, value in (("input files", inputs), ("--catalog", catalog),
                                      ("--data-file", data_file)) if value]
    if len(given) != 1:
        raise ValueError(
            f"Expected one source of images: input files, --catalog or --data-file; got "
            f"{' and '.join(given) or 'none'}."
        )
    if catalog:
        return _catalog_objects(catalog, path_column)
    if data_file:
        count = describe_hdf5(data_file, images_key, None)[0][0]
        return Objects(list(range(count)), {"row": list(range(count))}, "hdf5", data_file,
                       images_key)
    paths = []
    for path in map(str, inputs):
        if os.path.isdir(path):
            paths += _files_below(path)
        elif path.lower().endswith(LIST_EXTENSIONS) and os.path.isfile(path):
            paths += _listed_files(path)
        else:
            paths.append(path)
    if not paths:
        raise ValueError(f"No image or FITS files in {list(map(str, inputs))}.")
    return Objects(paths, {"path": list(paths)})


def _catalog_objects(path, path_column):
    if not os.path.isfile(path):
        raise ValueError(f"No catalogue file at {path!r}.")
    columns, rows = read_rows(path)
    if path_column not in columns:
        raise ValueError(
            f"{path}: no column {path_column!r}; its columns are {columns}. Name the column "
            "of file paths with --path-column."
        )
    if not rows:
        raise ValueError(f"{path}: the table has no rows.")
    folder = os.path.dirname(os.path.abspath(path))
    files = [os.path.join(folder, row[path_column]) for _, row in rows]
    return Objects(files, {name: [row[name] for _, row in rows] for name in columns}, "catalog")


def parse_shard(text):
    """`I/N` (0 <= I < N) as (I, N); a `ValueError` otherwise."""
    try:
        index, count = (int(part) for part in str(text).split("/"))
    except ValueError:
        index = count = -1
    if not 0 <= index < count:
        raise ValueError(
            f"--shard {text!r}: expected I/N with 0 <= I < N, e.g. 0/10 for the first of 10 "
            "shards (SLURM: --shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT with --array=0-9)."
        )
    return index, count


def shard(objects, index, count):
    """The `index`-th of `count` contiguous, near-equal slices of `objects`: the shards
    concatenated in order are the whole, and a shard's rows keep the input's order."""
    return objects.select(index * len(objects) // count, (index + 1) * len(objects) // count)


def model_bands(model):
    """The number of bands the model takes, whatever its data format."""
    return model.image_shape[0 if model.data_format == "channels_first" else -1]


def read_image(path, model, converter):
    """A file prepared as the model's training images were: [size, size, bands] float32.

    Besides the converter's refusals (a file it cannot read, or of the other kind than
    the model's), a `ValueError` names a file of other bands than the model's and a
    band that the model would see as all blanks (flux NaN throughout, which the model
    turns into zeros).
    """
    if isinstance(path, bytes):
        path = path.decode()
    if not os.path.isfile(path):
        raise ValueError(f"No image file at {path!r}.")
    image = converter.read_file(path)
    bands = model_bands(model)
    if image.shape[-1] != bands:
        raise ValueError(f"{path!r} has {image.shape[-1]} band(s), but the model takes {bands}.")
    image = tf.cast(image, tf.float32).numpy()
    _check_finite_bands(image, path, model)
    return image


def _check_finite_bands(image, name, model):
    blank = np.flatnonzero(~np.isfinite(image).any(axis=(0, 1)))
    if blank.size:
        where = "" if model.center_crop is None else f" of its central {model.center_crop:.0%}"
        raise ValueError(
            f"{name!r} has no finite pixel in band(s) {blank.tolist()}{where}; expected flux "
            "in every band of what the model sees."
        )


def image_dataset(objects, model, converter):
    """`tf.data` of (float32 image [size, size, bands] channels_last, error message) per
    object, in order, decoded in parallel; a failed object gives zeros and its message."""
    size, bands = converter.image_size, model_bands(model)

    def zeros_and(error):
        return np.zeros((size, size, bands), np.float32), str(error)

    if objects.data_file is None:
        def read(path):
            try:
                return read_image(path.numpy(), model, converter), ""
            except ValueError as error:
                return zeros_and(error)

        dataset = tf.data.Dataset.from_tensor_slices(np.asarray(objects.identifiers, str))
        dataset = dataset.map(
            lambda path: tf.py_function(read, [path], (tf.float32, tf.string)),
            num_parallel_calls=AUTOTUNE,
        )
    else:
        dataset = _hdf5_images(objects, model, converter, zeros_and)

    def shaped(image, error):
        image.set_shape([size, size, bands])
        error.set_shape([])
        return image, error

    return dataset.map(shaped)


def _hdf5_images(objects, model, converter, zeros_and):
    path, key = objects.data_file, objects.images_key
    shape, dtype, _ = describe_hdf5(path, key, None)
    kind = "pixels" if dtype == np.uint8 else "flux"
    if kind != model.preprocessing or shape[-1] != model_bands(model):
        raise ValueError(
            f"{path}: {key!r} holds {shape[-1]}-band {kind} ({dtype}), but the model takes "
            f"{model_bands(model)}-band {model.preprocessing}."
        )

    def check(image, row):
        try:
            _check_finite_bands(image.numpy(), f"{path}[{int(row)}]", model)
        except ValueError as error:
            return zeros_and(error)
        return image, ""

    def prepare(image, row):
        image = tf.cast(converter(image), tf.float32)
        return tf.py_function(check, [image, row], (tf.float32, tf.string))

    rows = read_hdf5_rows(path, key, objects.identifiers, shape, dtype)
    return rows.map(prepare, num_parallel_calls=AUTOTUNE)
