"""Checks and helpers the test modules share (import them as `from tests.test_case import ...`).

`run_layer_test` and `run_model_test` are the checks every keras_astro layer and image
model must pass, in the spirit of keras-hub's `run_layer_test` and
`run_vision_backbone_test`. The rest are small plain helpers; fixtures live in
tests/conftest.py.
"""

import contextlib
import functools
import io
import os
import tempfile

import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

# Each class is a solid colour whose strongest channel is its class id, so a test can
# check that every image arrives with its own label.
COLORS = {"cat": (220, 20, 20), "dog": (20, 220, 20), "fish": (20, 20, 220)}
FORMATS = ("png", "jpg", "bmp", "gif")
PNG = b"\x89PNG\r\n\x1a\n"
IMAGE_SIZE = 8
CLASSES = ["a", "b", "c"]
# `keras-astro train` options of a run of seconds on an image folder of 12 train and 6
# test images: batches of 6, one batch shape, so JAX compiles each step once.
TINY_TRAIN = ("--model", "small", "--image-size", "8", "--epochs", "1", "--batch-size", "6")


# === models and layers ===


def jit_supported():
    """XLA compilation in fit: TensorFlow and JAX; the torch backend runs eagerly."""
    return keras.backend.backend() in ("tensorflow", "jax")


@functools.cache
def _tensorflow_runs_channels_first(dtype):
    import tensorflow as tf

    layer = keras.layers.Conv2D(2, 1, data_format="channels_first", dtype=dtype)
    try:
        with tf.GradientTape() as tape:
            loss = tf.reduce_sum(layer(tf.ones((1, 2, 3, 3), dtype)))
        tape.gradient(loss, layer.trainable_weights)
    except (tf.errors.UnimplementedError, tf.errors.InvalidArgumentError):
        return False
    return True


def backend_runs_channels_first(dtype="float32"):
    """Whether this backend can run and train channels_first convolutions on this machine.

    TensorFlow's CPU convolutions take NCHW only through oneDNN, which TensorFlow turns on
    by default only on CPUs with AVX-512 (and bfloat16 NCHW needs more): on an AVX2-only CPU
    every channels_first Conv2D fails with "only supports the NHWC tensor format".
    """
    return keras.backend.backend() != "tensorflow" or _tensorflow_runs_channels_first(dtype)


def skip_unless_channels_first_runs(dtype="float32"):
    if not backend_runs_channels_first(dtype):
        pytest.skip(f"TensorFlow's CPU kernels on this machine take NHWC only ({dtype}; no oneDNN without AVX-512)")


def random_images(batch=2, shape=(16, 16, 3), seed=0):
    """Raw pixels 0..255, float32."""
    return np.random.default_rng(seed).uniform(0, 255, (batch, *shape)).astype("float32")


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def tiny_model(num_classes=len(CLASSES), **kwargs):
    """The smallest AstroTransformer: 32 channels throughout, one block a stage, 8x8 images."""
    from keras_astro import AstroTransformer

    kwargs.setdefault("input_shape", (IMAGE_SIZE, IMAGE_SIZE, 3))
    return AstroTransformer(expansion=1, stage_depths=(1, 1, 1), num_classes=num_classes, **kwargs)


def learning_rates(model, steps):
    """The learning rate of `model`'s optimizer at each of `steps` (it moves the step counter)."""
    optimizer = model.optimizer
    values = []
    for step in steps:
        optimizer.iterations.assign(step)
        values.append(float(ops.convert_to_numpy(optimizer.learning_rate)))
    return values


def _numpy(x):
    return ops.convert_to_numpy(ops.cast(x, "float32"))


def _assert_one_jit_fit_step_changes_weights(model, x, y):
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_supported())
    before = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    history = model.fit(x, y, batch_size=len(x), verbose=0)
    assert np.isfinite(history.history["loss"][0])
    after = [ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights,
):
    # Config round trip: get_config holds exactly what from_config needs.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == value, key
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert revived.get_config() == config

    # Symbolic shapes, and build() creates every weight.
    symbolic_layer = layer_cls(**init_kwargs)
    symbolic_output = symbolic_layer(keras.KerasTensor((None, *input_shape[1:])))
    assert tuple(symbolic_output.shape) == (None, *expected_output_shape[1:])
    assert tuple(symbolic_layer.compute_output_shape(input_shape)) == expected_output_shape
    assert len(symbolic_layer.trainable_weights) == expected_num_trainable_weights
    assert len(symbolic_layer.non_trainable_weights) == expected_num_non_trainable_weights

    # Eager shapes.
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    eager_layer = layer_cls(**init_kwargs)
    output = keras.ops.convert_to_numpy(eager_layer(x))
    assert output.shape == expected_output_shape
    assert np.all(np.isfinite(output))

    # One jit-compiled fit step changes the trainable weights.
    inputs = keras.Input(input_shape[1:])
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    _assert_one_jit_fit_step_changes_weights(model, x, np.ones(expected_output_shape, "float32"))

    # Mixed precision: float16/bfloat16 compute, float32 variables, finite outputs.
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = layer_cls(**init_kwargs, dtype=policy)
        output = mixed(x)
        assert keras.backend.standardize_dtype(output.dtype) == policy.split("_")[1]
        assert all(w.dtype == "float32" for w in mixed.weights)
        assert np.all(np.isfinite(_numpy(output)))


def assert_channels_first_matches_channels_last(layer_cls, init_kwargs, output_channels):
    """The channels_first layer, given the channels_last layer's weights, computes the same."""
    skip_unless_channels_first_runs()
    x = np.random.default_rng(3).normal(size=(2, 5, 4, 6)).astype("float32")
    last = layer_cls(**init_kwargs, data_format="channels_last")
    first = layer_cls(**init_kwargs, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 6, 5, 4))
    first.set_weights(last.get_weights())
    expected = ops.convert_to_numpy(last(x))
    got = ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), expected, rtol=1e-5, atol=1e-5)
    assert first.compute_output_shape((None, 6, 5, 4)) == (None, output_channels, 5, 4)


def run_model_test(cls, init_kwargs, input_shape, expected_output_shape):
    """Checks an image model built as `cls(**init_kwargs, input_shape=..., dtype=...)`.

    `input_shape` is (height, width, channels); the batch is `expected_output_shape[0]`.
    Checks: eager outputs; the config round trip keeps every argument; a `.keras` file
    reloads the same class, config and outputs; the model built under the global
    mixed_float16 and mixed_bfloat16 keep float32 variables and give finite outputs;
    input_shape (None, None, channels) takes other sizes with the same weights; one
    jit-compiled fit step (eager on torch) changes the weights; the model built under the
    global channels_first format computes the same with the same weights.
    """
    height, width, channels = input_shape
    batch = expected_output_shape[0]
    x = random_images(batch, input_shape)
    model = cls(**init_kwargs, input_shape=input_shape)
    output = ops.convert_to_numpy(model(x))
    assert output.shape == expected_output_shape
    assert np.all(np.isfinite(output))

    # Config round trip: every argument is kept, and the config rebuilds the same model.
    config = model.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == (list(value) if isinstance(value, tuple) else value), key
    revived = cls.from_config(config)
    assert revived.get_config() == config
    assert trainable_count(revived) == trainable_count(model)
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    assert revived.get_config() == config

    # Saving round trip.
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "model.keras")
        model.save(path)
        loaded = keras.saving.load_model(path)
    assert isinstance(loaded, cls)
    assert loaded.get_config() == config
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )

    # Mixed precision: float32 variables, finite outputs.
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = cls(**init_kwargs, input_shape=input_shape, dtype=policy)
        assert all(w.dtype == "float32" for w in mixed.weights), policy
        assert np.all(np.isfinite(_numpy(mixed(x)))), policy

    # Dynamic spatial shapes: the weights do not depend on the image size.
    dynamic = cls(**init_kwargs, input_shape=(None, None, channels))
    dynamic.set_weights(model.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(dynamic(x)), output, rtol=1e-5, atol=1e-6)
    for size in ((height + 4, width + 2), (height, width + 5)):
        expected = expected_output_shape
        if len(expected) == 4:
            expected = (batch, *size, expected[-1])
        assert ops.convert_to_numpy(dynamic(random_images(batch, (*size, channels)))).shape == expected

    # One jit-compiled fit step (it changes the weights: the next check uses a copy).
    weights = model.get_weights()
    _assert_one_jit_fit_step_changes_weights(model, x, np.ones(expected_output_shape, "float32"))

    # Last, since TensorFlow cannot run it on every CPU (the test is then skipped here):
    # channels_first, taken from Keras' global image data format.
    skip_unless_channels_first_runs()
    data_format = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        first = cls(**init_kwargs, input_shape=(channels, height, width))
    finally:
        keras.config.set_image_data_format(data_format)
    first.set_weights(weights)
    first_output = ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    if first_output.ndim == 4:
        first_output = np.transpose(first_output, (0, 2, 3, 1))
    np.testing.assert_allclose(first_output, output, rtol=1e-4, atol=1e-6)


# === data ===


def write_class_folders(directory, per_class, classes=tuple(COLORS)):
    """`directory/<class>/<i>.<format>`: solid-colour images of slightly different sizes."""
    for name in classes:
        os.makedirs(directory / name)
        for i in range(per_class):
            image = Image.new("RGB", (10 + i, 12), COLORS[name])
            image.save(directory / name / f"{i}.{FORMATS[i % len(FORMATS)]}")


def collect(dataset):
    images, labels = zip(*((x.numpy(), y.numpy()) for x, y in dataset))
    return np.concatenate(images), np.concatenate(labels)


def assert_batches(datasets, image_size):
    import tensorflow as tf

    for dataset in (datasets.train, datasets.test):
        images, labels = next(iter(dataset))
        assert images.dtype == tf.float32 and labels.dtype == tf.float32
        assert tuple(images.shape[1:]) == (image_size, image_size, 3)
        assert tuple(labels.shape[1:]) == (datasets.num_classes,)


def assert_colors_match_labels(images, labels):
    np.testing.assert_array_equal(labels.sum(axis=1), 1.0)
    np.testing.assert_array_equal(images.mean(axis=(1, 2)).argmax(axis=1), labels.argmax(axis=1))


# === astronomy data ===

# Flux cutouts of two classes: a border of -1 (background after subtraction) around a
# central half (8x8 of 16x16) of 10 * (class + 1) * (band + 1), so a test can read the
# class off the centre, and tell a centre crop from a resize of the whole cutout.
FITS_CLASSES = ("fri", "frii")
FITS_SIDE = 16
FITS_EXTENSIONS = (".fits", ".fits.gz", ".fit", ".fts")


def flux_cutout(label, bands=1, blanks=False):
    """float32 [bands, 16, 16]; `blanks` puts NaN in two corners of the border."""
    image = np.full((bands, FITS_SIDE, FITS_SIDE), -1.0, "float32")
    quarter = FITS_SIDE // 4
    for band in range(bands):
        image[band, quarter:-quarter, quarter:-quarter] = 10.0 * (label + 1) * (band + 1)
    if blanks:
        image[:, 0, 0] = image[:, -1, -2] = np.nan
    return image


def write_fits(path, data):
    """A FITS file holding `data` in its primary HDU (`.gz`: gzip-compressed)."""
    from astropy.io import fits

    fits.PrimaryHDU(data).writeto(path)


def write_fits_folder(root, bands=1, per_split=(("train", 4), ("test", 2))):
    """`root/<split>/<class>/<i><ext>` flux cutouts of the FITS_CLASSES.

    One band: 2-D images and, every other file, (1, 1, 16, 16) cubes with the degenerate
    axes of radio images; more bands: (bands, 16, 16) cubes. The extensions cycle
    through FITS_EXTENSIONS (`.fits.gz` included) and every other file has NaN blanks.
    """
    for split, count in per_split:
        for label, name in enumerate(FITS_CLASSES):
            os.makedirs(root / split / name)
            for i in range(count):
                data = flux_cutout(label, bands, blanks=i % 2 == 0)
                if bands == 1:
                    data = data[None] if i % 2 else data[0]
                write_fits(root / split / name / f"{i}{FITS_EXTENSIONS[i % 4]}", data)


def centre_values(images):
    """The mean of the central 2x2 pixels of each image [n, h, w, bands], per band."""
    row, col = images.shape[1] // 2, images.shape[2] // 2
    return images[:, row - 1 : row + 1, col - 1 : col + 1].mean(axis=(1, 2))


def galaxy10_rows(count=40, classes=4, side=16):
    """uint8 [count, side, side, 3] images and their labels `row % classes`: channel 0
    of row r is r, channel 1 is 60 x its label, so a test can tell rows and labels apart."""
    rows = np.arange(count)
    labels = rows % classes
    images = np.zeros((count, side, side, 3), np.uint8)
    images[..., 0] = rows[:, None, None]
    images[..., 1] = 60 * labels[:, None, None]
    return images, labels


def write_hdf5(path, arrays):
    """An HDF5 file of {key: array}."""
    import h5py

    with h5py.File(path, "w") as file:
        for key, array in arrays.items():
            file[key] = array


# === run folders and the command line ===


def folder_contents(folder):
    """{relative path: bytes} of every file below `folder`."""
    contents = {}
    for root, _, names in os.walk(folder):
        for name in names:
            with open(os.path.join(root, name), "rb") as f:
                contents[os.path.relpath(os.path.join(root, name), folder)] = f.read()
    return contents


def run_cli(*argv):
    """Runs `keras-astro ARGV` in this process and returns what it printed."""
    from keras_astro import cli

    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        cli.main([str(arg) for arg in argv])
    return stdout.getvalue()


def run_cli_error(capsys, *argv):
    """Runs a command that must fail as a usage error; returns its message."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        run_cli(*argv)
    assert exit_info.value.code == 2
    return capsys.readouterr().err
