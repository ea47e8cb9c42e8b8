"""In-memory numpy arrays as a source."""

import numpy as np
import tensorflow as tf

from keras_astro.data.bands import check_every_band_has_flux
from keras_astro.data.pipeline import (
    PipelineOptions,
    content_fingerprint,
    held_out_description,
    make_datasets,
    stratified_split,
)
from keras_astro.utils import check_preprocessing


def from_arrays(
    x_train,
    y_train,
    x_test,
    y_test,
    *,
    class_names=None,
    image_size=None,
    batch_size=None,
    augment="none",
    seed=0,
    cache=True,
    library="keras",
    preprocessing="pixels",
    center_crop=None,
    validation_fraction=None,
):
    """Builds train, validation and test pipelines from in-memory numpy arrays.

    Args:
        x_train, x_test: images `[n, height, width]` or `[n, height, width, bands]`:
            with `preprocessing="pixels"`, raw 8-bit values in 0..255 (uint8 or float;
            one band becomes RGB), every value finite; with `"flux"`, float flux of any
            number of bands, NaN allowed.
        y_train, y_test: int class ids `[n]` in `[0, num_classes)`.
        class_names: optional list of str; defaults to `"0"`, `"1"`, ... up to the
            largest label, which then needs every class id below it present.
        image_size: int >= 8; `None` keeps the arrays' size (square images only).
        batch_size, augment, seed, cache, library, center_crop: as in `load_datasets`.
        preprocessing: `"pixels"` or `"flux"`: what the values are.
        validation_fraction: `None` (no validation split: `keras_astro.training.fit`
            then chooses the epoch on the test arrays, as Keras' `validation_data` would)
            or the fraction of the training arrays held out, fixed and stratified, to
            choose the epoch on.

    Returns:
        An `ImageDatasets` whose `test` comes from `x_test`, `y_test` in their order.
    """
    check_preprocessing(preprocessing)
    x_train, y_train = _check_arrays(x_train, y_train, "x_train", "y_train", preprocessing)
    x_test, y_test = _check_arrays(x_test, y_test, "x_test", "y_test", preprocessing)
    if x_train.shape[-1] != x_test.shape[-1]:
        raise ValueError(
            f"`x_train` has {x_train.shape[-1]} bands and `x_test` {x_test.shape[-1]}; they must agree."
        )
    if image_size is None:
        height, width = x_train.shape[1:3]
        if height != width or x_test.shape[1:3] != (height, width):
            raise ValueError(
                "Pass `image_size` when images are not square or train and test sizes "
                f"differ. Received: x_train {x_train.shape}, x_test {x_test.shape}"
            )
        image_size = int(height)
    options = PipelineOptions(
        image_size, batch_size, augment, seed, cache, library, center_crop, preprocessing,
        validation_fraction,
    )
    largest = int(max(y_train.max(), y_test.max()))
    if class_names is None:
        found = np.union1d(y_train, y_test)
        if len(found) != largest + 1:
            raise ValueError(
                f"Labels must be class ids 0..K-1 with every class present, or `class_names` "
                f"must name all {largest + 1} classes. Received the labels {found.tolist()[:20]}"
            )
        class_names = [str(i) for i in range(largest + 1)]
    class_names = list(class_names)
    if not class_names or not all(isinstance(name, str) for name in class_names):
        raise ValueError(
            f"`class_names` must be a non-empty list of str. Received: {class_names!r}"
        )
    if largest >= len(class_names):
        raise ValueError(
            f"Labels must be class ids in [0, {len(class_names)}) for {len(class_names)} "
            f"class names. Received a label {largest}."
        )

    fingerprint = content_fingerprint(
        *(np.ascontiguousarray(a).tobytes() for a in (x_train, y_train, x_test, y_test)),
        class_names, validation_fraction,
    )
    validation = {}
    labels = {}
    if validation_fraction is not None:
        kept, held = stratified_split(y_train, validation_fraction, "`x_train`", class_names)
        validation = dict(
            validation=tf.data.Dataset.from_tensor_slices((x_train[held], y_train[held])),
            validation_split=held_out_description(validation_fraction),
            num_validation=len(held),
        )
        labels["validation"] = y_train[held]
        x_train, y_train = x_train[kept], y_train[kept]
    return make_datasets(
        tf.data.Dataset.from_tensor_slices((x_train, y_train)),
        tf.data.Dataset.from_tensor_slices((x_test, y_test)),
        class_names=class_names,
        test_split="test",
        num_train=len(x_train),
        num_test=len(x_test),
        options=options,
        preprocessing=preprocessing,
        fingerprint=fingerprint,
        labels={"train": y_train, **labels, "test": y_test},
        **validation,
    )


def _check_arrays(x, y, x_name, y_name, preprocessing):
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(
            f"`{x_name}` must be non-empty images [n, height, width] or "
            f"[n, height, width, bands]. Received shape {x.shape}"
        )
    if not np.issubdtype(x.dtype, np.number):
        raise ValueError(f"`{x_name}` must hold numbers. Received dtype {x.dtype}")
    if preprocessing == "pixels":
        finite = np.isfinite(x)
        if not finite.all():
            first = int(np.argwhere(~finite)[0][0])
            raise ValueError(
                f"`{x_name}` holds NaN or infinite pixels (first in image {first}); 8-bit "
                "pixels must be finite. For flux with blanks, pass preprocessing='flux'."
            )
        if x.min() < 0 or x.max() > 255:
            raise ValueError(
                f"`{x_name}` must hold raw pixel values in 0..255. Received dtype {x.dtype}, "
                f"range {x.min()}..{x.max()}. For flux, pass preprocessing='flux'."
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
    if y.max() > np.iinfo(np.int32).max:  # it would wrap around in the int32 cast
        raise ValueError(f"`{y_name}` must hold int32 class ids. Received a label {y.max()}")
    if x.dtype not in (np.uint8, np.float32):
        x = x.astype(np.float32)
    if preprocessing == "flux":
        check_every_band_has_flux([x], x.shape[-1], f"`{x_name}`")
    return x, y.astype(np.int32)
