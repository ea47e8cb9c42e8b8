"""Data-parallel training over every local device, one context manager for all backends."""

import contextlib
import os
import warnings

TORCH_NOTE = (
    "The torch backend trains on a single device here. Beyond one device, launch "
    "with `torchrun` and wrap the model in torch.nn.parallel.DistributedDataParallel "
    "(Keras guide: 'Multi-GPU distributed training with PyTorch'), or use the JAX or "
    "TensorFlow backend, which `data_parallel` spreads over every local device."
)


@contextlib.contextmanager
def data_parallel(enabled=True):
    """Replicates the model on every local device and splits each batch across them.

    Build, compile and fit the model inside the `with` block. The batch size given to
    `fit` is global: each of N devices gets batch_size / N examples per step, and the
    gradients are averaged, so one epoch sees the same data as on one device.

    - JAX: `keras.distribution.DataParallel` over `keras.distribution.list_devices()`,
      set as the global distribution for the block and restored afterwards.
    - TensorFlow: `tf.distribute.MirroredStrategy` over the GPUs (or, without GPUs, the
      logical CPU devices); `MultiWorkerMirroredStrategy` when `TF_CONFIG` is set.
      Batch norm statistics are per replica there (as in Keras' default BN).
    - torch: one device, with a warning that says what to use beyond it.

    Args:
        enabled: bool; `False` yields 1 and changes nothing, so callers can write
            `with data_parallel(args.distribute) as devices:`.
    Yields:
        int, the number of devices (replicas) the batch is split across.
    """
    import keras

    if not enabled:
        yield 1
        return
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow":
        strategy = _tf_strategy()
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "torch":
        warnings.warn(TORCH_NOTE, stacklevel=3)
        yield 1
    else:
        raise ValueError(
            "data_parallel supports the jax, tensorflow and torch backends. "
            f"Received backend: {backend!r}"
        )


def _tf_strategy():
    import tensorflow as tf

    if "TF_CONFIG" in os.environ:
        return tf.distribute.MultiWorkerMirroredStrategy()
    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])
