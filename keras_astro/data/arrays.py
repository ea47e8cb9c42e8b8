"""In-memory numpy arrays as a source."""

import numpy as np
import tensorflow as tf

from keras_astro.data.pipeline import AUTOTUNE, PipelineOptions, make_datasets, to_rgb_size


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
    options = PipelineOptions(image_size, batch_size, augment, seed, cache, library)
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
            lambda image, label: (to_rgb_size(image, image_size), label),
            num_parallel_calls=AUTOTUNE,
        )

    return make_datasets(
        examples(x_train, y_train),
        examples(x_test, y_test),
        class_names=class_names,
        test_split="test",
        num_train=len(x_train),
        num_test=len(x_test),
        options=options,
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
