"""data_parallel: one epoch on 2 virtual CPU devices matches a single-device epoch.

The device count of JAX and TensorFlow is fixed when they initialise, so each check
runs this file as a script in a fresh subprocess that sets it up first.
"""

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

import keras

from keras_astro.distribute import TORCH_NOTE, data_parallel

BACKEND = keras.backend.backend()
RESULT_PREFIX = "DISTRIBUTE_RESULT "


def _epoch(distribute):
    """Trains a tiny model for one epoch; returns (devices, epoch loss, predictions)."""
    from keras_astro import AstroTransformer

    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (32, 8, 8, 3)).astype("float32")
    labels = rng.integers(0, 10, 32)
    with data_parallel(distribute) as devices:
        keras.utils.set_random_seed(0)
        model = AstroTransformer(expansion=1, stage_depths=(1, 1, 1), input_shape=(8, 8, 3))
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
        # Global batch 16: 8 examples per device on two devices.
        history = model.fit(images, labels, batch_size=16, epochs=1, shuffle=False, verbose=0)
        predictions = model.predict(images[:4], verbose=0)
    return devices, history.history["loss"][0], keras.ops.convert_to_numpy(predictions).tolist()


def _run_on_two_devices(env):
    completed = subprocess.run(
        [sys.executable, __file__],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=300,
    )
    for line in completed.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX):])
    raise AssertionError(f"worker failed:\n{completed.stdout}\n{completed.stderr[-3000:]}")


def _check(result, tolerance):
    assert result["single"][0] == 1
    assert result["parallel"][0] == 2
    # Same data and the same averaged gradients: the epoch loss and the trained model's
    # predictions agree up to summation order (and the batch statistics, see below).
    np.testing.assert_allclose(result["parallel"][1], result["single"][1], rtol=tolerance)
    np.testing.assert_allclose(result["parallel"][2], result["single"][2], atol=tolerance)


@pytest.mark.skipif(BACKEND != "jax", reason="JAX DataParallel check; runs under KERAS_BACKEND=jax")
def test_jax_data_parallel_matches_single_device():
    result = _run_on_two_devices(
        {"KERAS_BACKEND": "jax", "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    )
    # One SPMD program over the global batch: batch norm sees the whole batch too.
    _check(result, tolerance=1e-5)


@pytest.mark.skipif(
    BACKEND != "tensorflow",
    reason="TensorFlow MirroredStrategy check; runs under KERAS_BACKEND=tensorflow",
)
def test_tensorflow_mirrored_matches_single_device():
    result = _run_on_two_devices({"KERAS_BACKEND": "tensorflow", "SPLIT_TF_CPU": "2"})
    # Each replica normalises its half batch with its own batch-norm statistics
    # (measured: 1e-3 relative on the loss after one epoch).
    _check(result, tolerance=5e-3)


@pytest.mark.skipif(BACKEND != "torch", reason="the torch backend's single-device note")
def test_torch_stays_on_one_device_and_says_what_to_use():
    with pytest.warns(UserWarning, match="DistributedDataParallel"):
        with data_parallel() as devices:
            assert devices == 1
    assert "torchrun" in TORCH_NOTE


def test_disabled_changes_nothing():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with data_parallel(enabled=False) as devices:
            assert devices == 1
    if BACKEND == "jax":
        assert keras.distribution.distribution() is None


if __name__ == "__main__":
    if os.environ.get("SPLIT_TF_CPU"):
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        count = int(os.environ["SPLIT_TF_CPU"])
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
        )
    single = _epoch(distribute=False)
    parallel = _epoch(distribute=True)
    print(RESULT_PREFIX + json.dumps({"single": single, "parallel": parallel}), flush=True)
