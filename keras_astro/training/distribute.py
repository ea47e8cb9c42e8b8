"""Data-parallel training on every local device, or on several processes and machines.

Started as several processes (one per machine on JAX, one per device on torch), each
joins the others in `initialize`; `data_parallel` then replicates the model and splits
each global batch across all devices of all processes. How each backend is launched:

- torch: `torchrun --nproc-per-node N ...` (it sets `RANK`, `WORLD_SIZE`,
  `MASTER_ADDR`...); NCCL on GPUs, gloo on CPUs.
- JAX: one process per host with Keras' `KERAS_DISTRIBUTION_JOB_ADDRESSES`
  (the coordinator's `host:port` first), `KERAS_DISTRIBUTION_NUM_PROCESSES` and
  `KERAS_DISTRIBUTION_PROCESS_ID`.
- TensorFlow: one process per machine with `TF_CONFIG` (the cluster's workers and
  this one's index), which selects `tf.distribute.MultiWorkerMirroredStrategy`; without
  it, `data_parallel` uses `MirroredStrategy` over the local devices.
"""

import contextlib
import dataclasses
import os
import shutil
import tempfile
import warnings

import keras

from keras_astro.training import run_folder

TORCH_NOTE = (
    "The torch backend trains on one device per process: launch with `torchrun "
    "--nproc-per-node N keras-astro train --distribute ...` to train on N GPUs."
)
# Set by `initialize` in a TensorFlow process that TF_CONFIG makes one of several.
_tf_multi_worker_strategy = None


def _launched_as_several_processes():
    """The backend's launch variables are set: this process is one of several."""
    backend = keras.backend.backend()
    if backend == "torch":
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    if backend == "jax":
        return int(os.environ.get("KERAS_DISTRIBUTION_NUM_PROCESSES", "1")) > 1
    if backend == "tensorflow":
        return "TF_CONFIG" in os.environ
    return False


def initialize():
    """Joins the other processes of a multi-process launch; does nothing in a single one.

    Call it before JAX or TensorFlow computes anything (JAX fixes its devices when it
    starts, TensorFlow its collectives); `run_experiment` calls it first. Calling it
    again does nothing.
    """
    if not _launched_as_several_processes():
        return
    backend = keras.backend.backend()
    if backend == "torch":
        import torch
        import torch.distributed as dist

        if dist.is_initialized():
            return
        if torch.cuda.is_available():
            # Keras places tensors on "cuda", the current device: one GPU per process.
            torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    elif backend == "jax":
        import jax

        if jax.distributed.is_initialized():
            return
        # Cross-process collectives on CPU devices; GPUs and TPUs use their own.
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        keras.distribution.initialize()
    elif backend == "tensorflow":
        import tensorflow as tf

        global _tf_multi_worker_strategy
        if _tf_multi_worker_strategy is None:
            try:
                _tf_multi_worker_strategy = tf.distribute.MultiWorkerMirroredStrategy()
            except RuntimeError as error:  # "must be configured at program startup"
                raise RuntimeError(
                    "TF_CONFIG is set: this process is one TensorFlow worker of several, and "
                    "keras_astro.training.distribute.initialize() must run before TensorFlow runs "
                    "any operation. Expected it first in the program."
                ) from error


def process_count():
    """How many processes train together (1 unless `initialize` joined several)."""
    return _process()[1]


def is_chief():
    """Whether this process writes the run's files: the only one, or process 0 of several."""
    return _process()[0] == 0


def _process():
    """(index, count) of this process among those that `initialize` joined."""
    backend = keras.backend.backend()
    if backend == "torch":
        import torch.distributed as dist

        if dist.is_initialized():
            return dist.get_rank(), dist.get_world_size()
    elif backend == "jax":
        import jax

        if jax.distributed.is_initialized():
            return jax.process_index(), jax.process_count()
    elif backend == "tensorflow" and _tf_multi_worker_strategy is not None:
        # TensorFlow's numbering: the chief task (when there is one) first, then the workers.
        resolver = _tf_multi_worker_strategy.cluster_resolver
        cluster = resolver.cluster_spec().as_dict()
        chiefs = len(cluster.get("chief", ()))
        index = 0 if resolver.task_type == "chief" else chiefs + resolver.task_id
        return index, chiefs + len(cluster.get("worker", ()))
    return 0, 1


@contextlib.contextmanager
def data_parallel(enabled=True):
    """Replicates the model on every device of every process and splits each batch across them.

    Build, compile and fit the model inside the `with` block. The batch size given to
    `fit` is global: each of N devices gets batch_size / N examples per step, and the
    gradients are averaged, so one epoch sees the same data as on one device.

    - JAX: `keras.distribution.DataParallel` over `keras.distribution.list_devices()`
      (every process' devices after `initialize`), set as the global distribution for
      the block and restored afterwards.
    - TensorFlow: `tf.distribute.MirroredStrategy` over the GPUs (or, without GPUs, the
      logical CPU devices) of this machine, or after `initialize` in a TF_CONFIG
      cluster, `MultiWorkerMirroredStrategy` over every worker. Batch norm statistics
      are per replica there (as in Keras' default BN).
    - torch: one device per process, so `torchrun` starts one process per GPU (a
      single process with several GPUs warns); `fit` needs `callbacks()`.

    Several JAX or torch processes each take their part of every batch from
    `shard_training_data` (or `shard_batches`).

    Args:
        enabled: bool; `False` yields 1 and changes nothing, so callers can write
            `with data_parallel(args.distribute) as devices:`.
    Yields:
        int, the number of devices (replicas) the batch is split across.
    """
    if not enabled:
        yield 1
        return
    initialize()
    backend = keras.backend.backend()
    if backend == "jax":
        devices = keras.distribution.list_devices()
        previous = keras.distribution.distribution()
        # Several processes: `shard_training_data` gives each its part of every batch.
        distribution = keras.distribution.DataParallel(devices=devices, auto_shard_dataset=False)
        keras.distribution.set_distribution(distribution)
        try:
            yield len(devices)
        finally:
            keras.distribution.set_distribution(previous)
    elif backend == "tensorflow" and _tf_multi_worker_strategy is not None:
        with _tf_multi_worker_strategy.scope(), _keras_multi_worker_fixes():
            yield _tf_multi_worker_strategy.num_replicas_in_sync
    elif backend == "tensorflow":
        strategy = _tf_local_strategy()
        with strategy.scope():
            yield strategy.num_replicas_in_sync
    elif backend == "torch":
        if process_count() == 1 and _torch_gpu_count() > 1:
            warnings.warn(TORCH_NOTE, stacklevel=3)
        yield process_count()
    else:
        raise ValueError(
            "data_parallel supports the jax, tensorflow and torch backends. "
            f"Received backend: {backend!r}"
        )


def _torch_gpu_count():
    import torch

    return torch.cuda.device_count()


@contextlib.contextmanager
def _keras_multi_worker_fixes():
    """Keras' TensorFlow trainer made to run `fit` under MultiWorkerMirroredStrategy.

    Keras 3 fails there (keras-team/keras#20585) on two lines of
    `keras/src/backend/tensorflow/trainer.py`, replaced while the block runs:
    `_maybe_symbolic_build` reduces the distributed first batch with an eager
    collective only to learn its shapes (this process' part has them), and
    `reduce_per_replica` averages every logged value along axis 0 across workers,
    which scalar losses and metrics do not have. Two workers then train as one process
    does (tests/test_distribute.py). A Keras without these functions is refused.
    """
    import tensorflow as tf
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    build = getattr(trainer.TensorFlowTrainer, "_maybe_symbolic_build", None)
    reduce = getattr(trainer, "reduce_per_replica", None)
    is_multi_worker = getattr(trainer, "_collective_all_reduce_multi_worker", None)
    if build is None or reduce is None or is_multi_worker is None:
        raise ValueError(
            f"Expected Keras 3.15's TensorFlow trainer for training across TF_CONFIG workers "
            f"(keras-team/keras#20585); Keras {keras.__version__} has changed it. Train "
            "across machines with the JAX backend or torchrun instead."
        )

    def local_part(value, strategy):
        if isinstance(value, tf.distribute.DistributedValues):
            return strategy.experimental_local_results(value)[0]
        return value

    def symbolic_build_from_local_part(self, iterator=None, data_batch=None):
        if iterator is not None:
            for _, _, batches in iterator:
                batch = next(batches)
                data_batch = tree.map_structure(
                    lambda value: local_part(value, self.distribute_strategy), batch
                )
                break
        with self.distribute_strategy.scope():
            self._symbolic_build(data_batch=data_batch)

    def reduce_scalars_too(values, strategy, reduction="auto"):
        if reduction not in ("auto", "mean") or not is_multi_worker(strategy):
            return reduce(values, strategy, reduction)

        def mean(value):
            scalar = local_part(value, strategy).shape.rank == 0
            return strategy.reduce("MEAN", value, axis=None if scalar else 0)

        return tree.map_structure(mean, values)

    trainer.TensorFlowTrainer._maybe_symbolic_build = symbolic_build_from_local_part
    trainer.reduce_per_replica = reduce_scalars_too
    try:
        yield
    finally:
        trainer.TensorFlowTrainer._maybe_symbolic_build = build
        trainer.reduce_per_replica = reduce


def _tf_local_strategy():
    import tensorflow as tf

    devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
    return tf.distribute.MirroredStrategy(devices=[device.name for device in devices])


def shard_training_data(datasets, batch_size):
    """`datasets` with this process' part of each training batch (`shard_batches`).

    Process i of N takes examples i, i + N, ... of every global batch, so all processes
    run the same number of steps (each step's all-reduce waits for every process) and
    together see each batch once; every process builds the same batches (the same
    seed). One process keeps them whole: `datasets` is returned unchanged there.

    Args:
        datasets: a `keras_astro.data.ImageDatasets`; only `train` is sharded. Each
            process evaluates the whole test split (the same numbers everywhere).
        batch_size: int, the global batch size `datasets.train` was batched with.
    """
    count = process_count()
    if count == 1:
        return datasets
    last = datasets.num_train % batch_size or batch_size
    if keras.backend.backend() == "jax" and (batch_size % count or last % count):
        # JAX assembles the global batch from equal parts of every process.
        raise ValueError(
            f"Expected a batch size that splits evenly across {count} processes, every "
            f"batch included, but {datasets.num_train} training images in batches of "
            f"{batch_size} make batches of {batch_size} and {last}. Choose another "
            "--batch-size."
        )
    if last < count:
        raise ValueError(
            f"Expected every batch to hold at least one image per process ({count}), but "
            f"{datasets.num_train} training images in batches of {batch_size} leave a last "
            f"batch of {last}. Choose another --batch-size."
        )
    return dataclasses.replace(datasets, train=shard_batches(datasets.train))


def shard_batches(dataset):
    """Examples i, i + N, ... of every batch of a `tf.data` dataset, on process i of N.

    TensorFlow workers get the whole dataset: `fit` under MultiWorkerMirroredStrategy
    splits each batch across them itself, by examples (its DATA policy, which does not
    depend on how the dataset reads its files).
    """
    import tensorflow as tf

    index, count = _process()
    if count == 1:
        return dataset
    if keras.backend.backend() == "tensorflow":
        options = tf.data.Options()
        by_examples = tf.data.experimental.AutoShardPolicy.DATA
        options.experimental_distribute.auto_shard_policy = by_examples
        return dataset.with_options(options)

    def shard(*batch):
        return tf.nest.map_structure(lambda x: x[index::count], batch)

    return dataset.map(shard)


def callbacks():
    """The Keras callbacks that `fit` needs on this process: `[]` except on torch processes."""
    if process_count() == 1 or keras.backend.backend() != "torch":
        return []
    return [_TorchDataParallel()]


def _all_reduce_sum(tensors):
    """Sums each torch tensor over the processes in place, one collective per dtype."""
    import torch
    import torch.distributed as dist

    groups = {}
    for tensor in tensors:
        groups.setdefault(tensor.dtype, []).append(tensor)
    for group in groups.values():
        flat = torch.cat([tensor.reshape(-1) for tensor in group])
        dist.all_reduce(flat)
        for tensor, part in zip(group, flat.split([tensor.numel() for tensor in group])):
            tensor.copy_(part.view_as(tensor))


class _TorchDataParallel(keras.callbacks.Callback):
    """Makes `fit` on every torch process one data-parallel training, as DDP would.

    `torch.nn.parallel.DistributedDataParallel` cannot wrap Keras' `fit`: its reducer
    only runs when the forward pass goes through the DDP wrapper, and `fit`'s train
    step calls the model itself. This callback does DDP's part around `fit` with
    `torch.distributed`:

    - at the start, every variable (weights, optimizer state, also after a resume)
      is broadcast from process 0, so all processes start identical;
    - each gradient is all-reduced and averaged as backward produces it (a
      post-accumulate-grad hook), before the optimizer applies it;
    - after each step, the float non-trainable variables (batch norm's moving
      statistics) are averaged, so every process and the checkpoint hold one model;
      each process still normalises its own part of the batch with its statistics;
    - after each step, the metric states take the sum of every process' updates, so
      the epoch's logs (history.csv, the checkpoint's choice) are over the global
      batch. Exact for Keras' mean and count metrics.
    """

    def on_train_begin(self, logs=None):
        import torch.distributed as dist

        for variable in self.model.variables + self.model.optimizer.variables:
            dist.broadcast(variable.value.data, src=0)
        self._hooks = [
            variable.value.register_post_accumulate_grad_hook(self._average_gradient)
            for variable in self.model.trainable_variables
        ]

    @staticmethod
    def _average_gradient(parameter):
        import torch.distributed as dist

        dist.all_reduce(parameter.grad)
        parameter.grad.div_(dist.get_world_size())

    def on_epoch_begin(self, epoch, logs=None):
        # `fit` resets the metrics before each epoch.
        self._reported = [v.value.detach().clone() for v in self.model.metrics_variables]

    def on_train_batch_end(self, batch, logs=None):
        import torch.distributed as dist

        statistics = [
            v.value.data for v in self.model.non_trainable_variables if v.value.is_floating_point()
        ]
        _all_reduce_sum(statistics)
        for tensor in statistics:
            tensor.div_(dist.get_world_size())
        states = [v.value.data for v in self.model.metrics_variables]
        increments = [state - reported for state, reported in zip(states, self._reported)]
        _all_reduce_sum(increments)
        for state, reported, increment in zip(states, self._reported, increments):
            state.copy_(reported + increment)
            reported.copy_(state)

    def on_train_end(self, logs=None):
        for hook in self._hooks:
            hook.remove()


@contextlib.contextmanager
def process_folder(output_dir):
    """`output_dir` on the chief; on the other processes, a private copy to resume from.

    Only the chief writes the run's files (checkpoints, history, backup, logs). The
    others train into a temporary folder holding a copy of the run's backup and
    history, so that Keras' `BackupAndRestore` resumes them at the chief's epoch;
    across machines that needs the run folder on a filesystem all of them see.
    """
    if is_chief():
        yield output_dir
        return
    with tempfile.TemporaryDirectory(prefix="keras-astro-process-") as folder:
        backup = os.path.join(output_dir, run_folder.BACKUP_DIR)
        if os.path.isdir(backup):
            # Finished epochs only: the chief deletes the rest while it restores.
            ignore = shutil.ignore_patterns("state", "*.partial", "*.keras")
            shutil.copytree(backup, os.path.join(folder, run_folder.BACKUP_DIR), ignore=ignore)
        history = os.path.join(output_dir, run_folder.HISTORY_FILE)
        if os.path.exists(history):
            shutil.copy(history, folder)
        yield folder
