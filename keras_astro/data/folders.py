"""Image folders as a source: DIR/train/<class>/*, DIR/test/<class>/* (or val/).

With both test/ and val/, val/ chooses the best epoch; otherwise a fraction of train does.
The files are photos (JPEG, PNG, BMP, GIF: 8-bit pixels; 16-bit PNGs keep their bits as
float32 on the same scale) or FITS cutouts (flux, any number of bands), one kind per
dataset. `file_datasets` turns any list of such files into pipelines; the catalogue
source uses it too.
"""

import os

import numpy as np
import tensorflow as tf

from keras_astro.data.bands import check_every_band_has_flux
from keras_astro.data.converter import (
    JPEG_SIGNATURE,
    PNG_BIT_DEPTH_BYTE,
    PNG_SIGNATURE,
    decode_file,
    is_16_bit_png,
)
from keras_astro.data.fits import FITS_EXTENSIONS, fits_shape, is_fits, read_fits
from keras_astro.data.pipeline import (
    AUTOTUNE,
    content_fingerprint,
    held_out_description,
    make_datasets,
    stratified_split,
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
SUPPORTED_EXTENSIONS = IMAGE_EXTENSIONS + FITS_EXTENSIONS
# Leading bytes of the formats `tf.io.decode_image` reads (JPEG, PNG, GIF, BMP).
IMAGE_SIGNATURES = (JPEG_SIGNATURE, PNG_SIGNATURE, b"GIF87a", b"GIF89a", b"BM")
TEST_FOLDERS = ("test", "val", "validation")


def load_folder(root, options):
    if not os.path.isdir(root):
        raise ValueError(f"Image folder {root!r} does not exist or is not a directory.")
    train_dir = os.path.join(root, "train")
    # The first of test/, val/, validation/ scores the run; a second one chooses its epoch.
    held_dirs = [os.path.join(root, name) for name in TEST_FOLDERS]
    held_dirs = [path for path in held_dirs if os.path.isdir(path)]
    if not os.path.isdir(train_dir):
        if held_dirs:
            raise ValueError(f"Image folder {root!r} has {held_dirs[0]!r} but no 'train' folder.")
        train_dir = root
    class_names, train_files, train_labels = _index_class_folders(train_dir)
    held = []
    for folder in held_dirs[:2]:
        names, files, labels = _index_class_folders(folder)
        if names != class_names:
            raise ValueError(
                f"The class folders of {folder!r} differ from those of {train_dir!r}: "
                f"missing {sorted(set(class_names) - set(names))}, "
                f"extra {sorted(set(names) - set(class_names))}."
            )
        held.append(((files, labels), os.path.basename(folder)))
    if not held:
        fraction = options.validation_fraction
        kept, test = stratified_split(train_labels, fraction, repr(train_dir), class_names)
        (train_files, train_labels), test = pick(train_files, train_labels, kept, test)
        held.append((test, held_out_description(fraction)))
    return file_datasets(
        (train_files, train_labels), *held[0], class_names, options, *(held[1] if len(held) > 1 else ())
    )


def file_datasets(train, test, test_split, class_names, options, validation=None, validation_split=None):
    """Pipelines from (files, label ids) pairs of one kind; `validation` `None` holds
    out `options.validation_fraction` of train, if set."""
    if validation is None and options.validation_fraction is not None:
        kept, held = stratified_split(
            train[1], options.validation_fraction, "The training split", class_names
        )
        train, validation = pick(*train, kept, held)
        validation_split = held_out_description(options.validation_fraction)
    splits = [train, test] + ([] if validation is None else [validation])
    detected, decode = _file_decoder([path for files, _ in splits for path in files])
    # Paths below the files' common folder: the same data spelt from another working
    # directory, or as an absolute path, resumes the same run.
    root = os.path.commonpath([os.path.abspath(path) for files, _ in splits for path in files])
    fingerprint = content_fingerprint(
        *(
            [(os.path.relpath(os.path.abspath(path), root), label, os.path.getsize(path))
             for path, label in zip(*split)]
            for split in splits
        ),
        class_names,
    )
    # The cache freezes the order of the first pass: start from a seeded permutation
    # so the shuffle buffer does not see the files class by class.
    train_files, train_labels = train
    order = np.random.default_rng(options.seed).permutation(len(train_files))
    train_files = [train_files[i] for i in order]
    train_labels = [train_labels[i] for i in order]
    return make_datasets(
        decode(train_files, train_labels),
        decode(*map(list, test)),
        validation=None if validation is None else decode(*map(list, validation)),
        class_names=class_names,
        test_split=test_split,
        validation_split=validation_split,
        num_train=len(train_files),
        num_test=len(test[0]),
        num_validation=0 if validation is None else len(validation[0]),
        options=options,
        preprocessing=options.preprocessing_or(detected),
        fingerprint=fingerprint,
        labels={
            "train": train_labels,
            **({} if validation is None else {"validation": validation[1]}),
            "test": test[1],
        },
    )


def pick(files, labels, *positions):
    """(files, labels) at each array of `positions`."""
    return [([files[i] for i in rows], [labels[i] for i in rows]) for rows in positions]


def _file_decoder(files):
    """("pixels" or "flux", decode(files, labels) -> dataset) for files of one kind."""
    fits_files = [path for path in files if is_fits(path)]
    if fits_files and len(fits_files) < len(files):
        image = next(path for path in files if not is_fits(path))
        raise ValueError(
            f"A dataset holds FITS files or image files, not both: {fits_files[0]!r} and "
            f"{image!r}."
        )
    if not fits_files:
        dtype = _photo_dtype(files)
        return "pixels", lambda paths, labels: _decode_files(paths, labels, dtype, 3)
    bands = _check_fits_bands(files)
    check_every_band_has_flux(map(read_fits, files), bands, os.path.commonpath(files))
    return "flux", lambda paths, labels: _decode_files(paths, labels, tf.float32, bands)


def _check_fits_bands(files):
    """The band count every FITS file shares, read from the headers; names the first odd one."""
    bands = fits_shape(files[0])[2]
    for path in files[1:]:
        other = fits_shape(path)[2]
        if other != bands:
            raise ValueError(
                f"Every FITS file of a dataset needs the same number of bands: {files[0]!r} "
                f"has {bands}, {path!r} has {other}."
            )
    return bands


def _decode_files(files, labels, dtype, bands):
    """Reads in parallel with `decode_file`; a damaged file stops iteration with its name.

    Each decode runs eagerly in a `tf.py_function`, where its error can be caught and
    raised again naming the file; a photo's decode ops run without the GIL, so they overlap.
    """

    def decode(path, label):
        image = tf.py_function(lambda path: tf.cast(decode_file(path.numpy()), dtype), [path], dtype)
        image.set_shape([None, None, bands])
        return image, label

    dataset = tf.data.Dataset.from_tensor_slices((files, tf.constant(labels, tf.int32)))
    return dataset.map(decode, num_parallel_calls=AUTOTUNE)


def _index_class_folders(directory):
    """Lists `directory/<class>/**` image files; class ids follow sorted folder names."""
    entries = sorted(entry for entry in os.listdir(directory) if not entry.startswith("."))
    class_names = [entry for entry in entries if os.path.isdir(os.path.join(directory, entry))]
    stray = [entry for entry in entries if entry.lower().endswith(SUPPORTED_EXTENSIONS)]
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
    visited = {os.path.realpath(class_dir)}
    for folder, subfolders, names in os.walk(class_dir, followlinks=True):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in subfolders:
            # Links are followed: a link back to a folder already walked would loop forever.
            real = os.path.realpath(os.path.join(folder, name))
            if real in visited:
                raise ValueError(
                    f"{os.path.join(folder, name)!r} links to {real!r}, a folder already read "
                    f"under {class_dir!r}; expected each folder once (no link cycles)."
                )
            visited.add(real)
        for name in sorted(names):
            if name.startswith("."):
                continue
            path = os.path.join(folder, name)
            (images if name.lower().endswith(SUPPORTED_EXTENSIONS) else others).append(path)
    if others:
        raise ValueError(
            f"{class_dir!r} holds files that are neither images ({'/'.join(IMAGE_EXTENSIONS)}) "
            f"nor FITS ({'/'.join(FITS_EXTENSIONS)}): {others[:5]}{' ...' if len(others) > 5 else ''}"
        )
    if not images:
        raise ValueError(f"Class folder {class_dir!r} has no images.")
    return images


def _photo_dtype(files):
    """uint8, or float32 when a file is a 16-bit PNG (whose bits 8-bit pixels would lose).

    Reads a few bytes per file: cheap, and names every file that is not an image.
    """
    bad = []
    deep = False
    for path in files:
        with open(path, "rb") as file:
            head = file.read(PNG_BIT_DEPTH_BYTE + 1)
        if not head.startswith(IMAGE_SIGNATURES):
            bad.append(path)
        deep = deep or is_16_bit_png(head)
    if bad:
        raise ValueError(
            f"{len(bad)} file(s) are not JPEG, PNG, GIF or BMP images: "
            f"{bad[:5]}{' ...' if len(bad) > 5 else ''}"
        )
    return tf.float32 if deep else tf.uint8
