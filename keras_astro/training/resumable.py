"""`fit`: training that a kill at any moment leaves resumable, with Keras' callbacks.

It writes a best checkpoint (`model.keras`), `history.csv`, TensorBoard logs and a
backup that the next `fit` into the same folder resumes from; `run_folder` names
those files and says when a run is finished.
"""

import csv
import json
import math
import os
import re
import shutil
import sys
import warnings

import keras

from keras_astro.data.pipeline import ImageDatasets
from keras_astro.training import fine_tune, run_folder
from keras_astro.training.recipe import compile_for_training
from keras_astro.utils import check_int, write_atomically, write_json


class _PublishCheckpoint(keras.callbacks.Callback):
    """Renames what ModelCheckpoint just wrote over `model.keras`.

    ModelCheckpoint writes its file in place; letting it write a staging file and
    renaming that means a kill during a save never leaves a half-written model.
    """

    def __init__(self, staging_path, path):
        super().__init__()
        self.staging_path = staging_path
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        if os.path.exists(self.staging_path):
            os.replace(self.staging_path, self.path)


class _StopOnNonFiniteLoss(keras.callbacks.Callback):
    """Raises a `ValueError` at the first batch whose loss is NaN or infinite.

    Keras' `TerminateOnNaN` only stops training: the epoch's end would still run, and
    the checkpoint, backup and `fit`'s callers would treat NaN weights as a finished
    run. Raising leaves the run folder at its last finished epoch, with no NaN model
    published.
    """

    def __init__(self, output_dir):
        super().__init__()
        self.output_dir = output_dir
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise ValueError(
                f"The training loss became {float(loss)} at epoch {self.epoch + 1}, batch "
                f"{batch + 1}; training stopped and no NaN model was saved. Expected finite "
                "inputs and a stable recipe: lower the learning rate or set a clip norm, and "
                f"train into a new folder (or delete {self.output_dir} to start over)."
            )


class _StartEpoch(keras.callbacks.Callback):
    """Numbers each pass over an `ImageDatasets`' training data by the epoch it serves.

    Keras iterates the data once more before the first epoch (to build the model's
    metrics), and a resumed run starts at a later epoch: setting the number at each
    epoch's begin keeps the shuffle order and augmentation of epoch `e` the same in
    an uninterrupted and a resumed run.
    """

    def __init__(self, data):
        super().__init__()
        self.data = data

    def on_epoch_begin(self, epoch, logs=None):
        self.data.start_epoch(epoch)


class _ResumableBackup(keras.callbacks.Callback):
    """Keeps a whole copy of BackupAndRestore's state for the last finished epoch.

    BackupAndRestore rewrites its weights and metadata in place at the end of each
    epoch, so a kill during that write would leave a state it cannot load (or
    weights and epoch count that disagree). After it writes, this callback copies
    its folder into a new `epoch-NNNNN` folder with one rename; `restore()` puts the
    latest such copy back in place before training starts.

    Keras' weight files leave out the random state of the model's layers (dropout's
    seed generators), so the snapshot holds it too, and training resumes with the
    draws the uninterrupted run would have made.
    """

    _SNAPSHOT = re.compile(r"epoch-(\d+)")
    _RANDOM_STATE_FILE = "random_state.json"

    def __init__(self, root):
        super().__init__()
        self.root = root
        self.state_dir = os.path.join(root, "state")

    def keras_callback(self):
        # `fit` deletes the backup after the run's last phase (`remove`), not each phase.
        return keras.callbacks.BackupAndRestore(self.state_dir, delete_checkpoint=False)

    def _snapshots(self):
        names = os.listdir(self.root) if os.path.isdir(self.root) else []
        return sorted(
            (int(match.group(1)), os.path.join(self.root, name))
            for name in names
            if (match := self._SNAPSHOT.fullmatch(name))
        )

    def restore(self):
        """Puts the latest whole snapshot back for BackupAndRestore; returns its epoch count."""
        os.makedirs(self.root, exist_ok=True)
        for name in os.listdir(self.root):
            # Half-written state, snapshot or checkpoint of an epoch that did not finish.
            if not self._SNAPSHOT.fullmatch(name):
                path = os.path.join(self.root, name)
                shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)
        snapshots = self._snapshots()
        if not snapshots:
            return 0
        *older, (finished_epochs, latest) = snapshots
        for _, path in older:
            shutil.rmtree(path)
        shutil.copytree(latest, self.state_dir)
        return finished_epochs

    def on_train_begin(self, logs=None):
        path = os.path.join(self.state_dir, self._RANDOM_STATE_FILE)
        if os.path.exists(path):  # BackupAndRestore, earlier in the list, restored the weights
            with open(path) as f:
                _set_random_state(self.model, json.load(f))

    def on_epoch_end(self, epoch, logs=None):
        write_json(os.path.join(self.state_dir, self._RANDOM_STATE_FILE), _random_state(self.model))
        snapshot = os.path.join(self.root, f"epoch-{epoch + 1:05d}")
        partial = f"{snapshot}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(self.state_dir, partial)
        os.replace(partial, snapshot)
        for _, path in self._snapshots():
            if path != snapshot:
                shutil.rmtree(path)

    def remove(self):
        """Deletes the backup: after the run's last epoch (a finished run has none)."""
        shutil.rmtree(self.root, ignore_errors=True)


def _seed_states(model):
    # In model order: the variables' paths depend on what else the process built.
    return [v for v in model.variables if v.name == "seed_generator_state"]


def _random_state(model):
    """The model's random state as JSON: its seed generators, and torch's global generator,
    which Keras' torch dropout draws from when its layer has no seed."""
    state = {"seed_generators": [keras.ops.convert_to_numpy(v).tolist() for v in _seed_states(model)]}
    if keras.backend.backend() == "torch":
        import torch

        state["torch"] = torch.get_rng_state().tolist()
    return state


def _set_random_state(model, state):
    for variable, value in zip(_seed_states(model), state["seed_generators"], strict=True):
        variable.assign(value)
    if "torch" in state:
        import torch

        torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))


def load_history(path):
    """Rows of a `history.csv` as dicts of floats (`epoch` as int), skipping none.

    A row that a kill cut short is the only one that may be incomplete; it is left
    out.
    """
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        rows = [row for row in reader if None not in row.values() and "" not in row.values()]
    return [{k: int(v) if k == "epoch" else float(v) for k, v in row.items()} for row in rows]


def _truncate_history(path, finished_epochs):
    """Keeps the rows of the first `finished_epochs` epochs in `path`, each once.

    A run killed after CSVLogger wrote an epoch but before that epoch was backed up
    repeats the epoch when it resumes; dropping its row first keeps one row per epoch.
    """
    kept = [row for row in load_history(path) if row["epoch"] < finished_epochs]
    if not kept:
        if os.path.exists(path):
            os.remove(path)
        return []
    with open(path, newline="") as f:
        fieldnames = next(csv.reader(f))

    def write(f):
        writer = csv.DictWriter(f, fieldnames=fieldnames)
        writer.writeheader()
        writer.writerows(kept)

    write_atomically(path, write)
    return kept


def fit(
    model,
    data,
    val_ds=None,
    *,
    epochs,
    output_dir,
    monitor=None,
    callbacks=(),
    verbose="auto",
    class_weight=None,
    freeze_epochs=0,
):
    """Trains `model` so that a killed run resumes where it stopped.

    Writes to `output_dir`: `model.keras` (the best epoch by `monitor`, replaced with
    one rename), `history.csv` (one row per epoch, across resumes), TensorBoard logs
    in `logs/`, and `backup/` while training. Calling `fit` again with the same
    `output_dir` resumes after the last finished epoch; the model must be built and
    compiled the same way as in the first call. A finished run is never overwritten.

    Args:
        model: an `AstroTransformer` (or any classifier on one-hot labels); compiled
            with `compile_for_training` defaults when it is not compiled yet.
        data: a `keras_astro.data.ImageDatasets` (its `validation` split validates, or
            its `test` split when it has none; its class names are stored in the model)
            or a batched `tf.data.Dataset`.
        val_ds: optional validation dataset; overrides `data`'s.
        epochs: int, epochs of the whole run.
        output_dir: str, folder for the files above.
        monitor: the metric that picks the best epoch (`best_epoch` reads it back);
            defaults to `"val_loss"` with validation data and `"loss"` without: on
            validation splits of tens of images accuracy ties between epochs, the loss
            does not.
        callbacks: extra Keras callbacks, run after the built-in ones.
        verbose: passed to `model.fit`; `"auto"` shows Keras' progress bar on a terminal
            and one line per epoch otherwise (a log file, CI), without escape codes.
        class_weight: passed to `model.fit`, e.g. `recipe.balanced_class_weights(...)`.
        freeze_epochs: int >= 0, for fine-tuning: the first `freeze_epochs` epochs
            train the classifier alone, the backbone frozen
            (`fine_tune.set_backbone_trainable`); the rest train the whole model with
            a new optimizer of the same settings, whose schedule starts again. A run
            killed in either phase resumes in it.

    Returns:
        The `keras.callbacks.History` of this call (the epochs it ran); the whole
        run's history is `load_history(os.path.join(output_dir, "history.csv"))`.
    """
    check_int("epochs", epochs)
    check_int("freeze_epochs", freeze_epochs, minimum=0)
    train_ds, val_ds = _training_and_validation_data(model, data, val_ds)
    if not model.compiled:
        batch_size = data.batch_size if isinstance(data, ImageDatasets) else None
        _compile_with_defaults(model, train_ds, epochs, batch_size)
    monitor = monitor or default_monitor(val_ds is not None)

    with run_folder.lock(output_dir):  # one process writes the folder
        if run_folder.training_finished(output_dir):
            raise ValueError(
                f"{output_dir} holds a finished run ({run_folder.HISTORY_FILE} and no "
                f"{run_folder.BACKUP_DIR}/); train into another `output_dir`."
            )
        backup = _ResumableBackup(os.path.join(output_dir, run_folder.BACKUP_DIR))
        history_path = os.path.join(output_dir, run_folder.HISTORY_FILE)
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        this_call = None
        # Each phase ends at one of these epochs; the second starts as a resumed run does.
        for end in sorted({min(freeze_epochs, epochs), epochs} - {0}):
            finished_epochs = backup.restore()
            if finished_epochs >= end and end < epochs:
                continue
            # The first epoch after the freeze starts a new optimizer (`set_backbone_trainable`).
            unfrozen = bool(freeze_epochs) and finished_epochs == freeze_epochs < end
            if freeze_epochs:
                fine_tune.set_backbone_trainable(model, end > freeze_epochs, new_optimizer=unfrozen)
            history = _truncate_history(history_path, finished_epochs)
            built_in = _callbacks(
                model, data, output_dir, monitor, history, backup, finished_epochs, unfrozen
            )
            with warnings.catch_warnings():
                # The backup of the freeze's last epoch holds the frozen phase's optimizer,
                # which the new one does not take (Keras warns, and loads the model alone).
                if unfrozen:
                    warnings.filterwarnings("ignore", "Skipping variable loading for optimizer")
                phase = model.fit(
                    train_ds,
                    validation_data=val_ds,
                    epochs=end,
                    callbacks=[*built_in, *callbacks],
                    verbose=verbose,
                    class_weight=class_weight,
                    shuffle=False,  # tf.data pipelines shuffle themselves
                )
            this_call = _joined(this_call, phase)
        backup.remove()
        return this_call


def _joined(first, second):
    """One History of two phases of a run (`second` alone when there is no `first`)."""
    if first is not None:
        second.epoch = first.epoch + second.epoch
        second.history = {
            key: first.history.get(key, []) + values for key, values in second.history.items()
        }
    return second


def _callbacks(model, data, output_dir, monitor, history, backup, finished_epochs, new_optimizer):
    """`fit`'s own callbacks, in the order they must run at each epoch's end: the backup
    after the checkpoint, so that a backed-up epoch has its checkpoint. `new_optimizer`:
    the model's optimizer holds no state of the epochs before."""
    epochs_of_data = []
    if isinstance(data, ImageDatasets) and data.next_epoch is not None:
        epochs_of_data = [_StartEpoch(data)]
    return [
        *epochs_of_data,
        _StopOnNonFiniteLoss(output_dir),  # before any callback saves the weights
        keras.callbacks.CSVLogger(os.path.join(output_dir, run_folder.HISTORY_FILE), append=True),
        *_ema_swap(model, resumed=finished_epochs > 0 and not new_optimizer),
        *_best_checkpoint(output_dir, monitor, history),
        backup.keras_callback(),
        backup,
        keras.callbacks.TensorBoard(os.path.join(output_dir, run_folder.LOGS_DIR)),
    ]


def _training_and_validation_data(model, data, val_ds):
    """`fit`'s training and validation datasets; an `ImageDatasets` also names the classes."""
    if not isinstance(data, ImageDatasets):
        return data, val_ds
    _set_class_names(model, data.class_names)
    if val_ds is None:
        val_ds = data.test if data.validation is None else data.validation
    return data.train, val_ds


def _compile_with_defaults(model, train_ds, epochs, batch_size):
    """`compile_for_training` with the recipe's defaults, which `fit` documents for an
    uncompiled model: the schedule needs the run's steps, so the data's length, and the
    default learning rate the batch size (an `ImageDatasets`' own, else 64's)."""
    steps = int(train_ds.cardinality())
    if steps <= 0:
        raise ValueError(
            "`fit` compiles an uncompiled model with the number of batches per epoch, "
            "but the training dataset's length is unknown or infinite; call "
            "`compile_for_training` first."
        )
    compile_for_training(model, epochs=epochs, steps_per_epoch=steps, batch_size=batch_size)


def _ema_swap(model, resumed):
    """With an EMA optimizer, Keras' swap of the averaged weights into the model at each
    epoch's end, for validation and every callback after it; the swap at the next epoch's
    start puts the raw weights back for training.

    The backup, after the swap, saves the averages in the model and the raw weights in the
    optimizer's average slots (a new optimizer, after a freeze, holds none: training goes
    on from the averages). Keras has no public way to tell a new `SwapEMAWeights` that
    a restored backup starts swapped, so this sets its private flag: without it, a resumed
    run would train on the averages.
    """
    if not getattr(model.optimizer, "use_ema", False):
        return []
    swap = keras.callbacks.SwapEMAWeights(swap_on_epoch=True)
    swap._ema_weights_in_model = resumed
    return [swap]


def _best_checkpoint(output_dir, monitor, history):
    """The callbacks that keep the best epoch by `monitor` as `model.keras`, the best so
    far of a resumed run's `history` included."""
    if history and monitor not in history[0]:
        raise ValueError(
            f"{os.path.join(output_dir, run_folder.HISTORY_FILE)} has no {monitor!r} column "
            f"to resume the best checkpoint from; it has {sorted(history[0])}."
        )
    staging_path = os.path.join(output_dir, run_folder.BACKUP_DIR, "best.keras")
    checkpoint = keras.callbacks.ModelCheckpoint(
        staging_path,
        monitor=monitor,
        mode="max" if _higher_is_better(monitor) else "min",
        save_best_only=True,
        initial_value_threshold=_best(history, monitor),
    )
    publish = _PublishCheckpoint(staging_path, os.path.join(output_dir, run_folder.CHECKPOINT_FILE))
    return [checkpoint, publish]


def default_monitor(validated):
    return "val_loss" if validated else "loss"


def best_epoch(history, monitor=None):
    """The row of `history` (from `load_history`) that `fit` keeps as `model.keras`:
    the first with the best `monitor` value."""
    monitor = monitor or default_monitor("val_loss" in history[0])
    pick = max if _higher_is_better(monitor) else min
    return pick(history, key=lambda row: row[monitor])


def _higher_is_better(monitor):
    return "acc" in monitor


def _best(history, monitor):
    return best_epoch(history, monitor)[monitor] if history else None


def _set_class_names(model, class_names):
    num_classes = model.output_shape[-1]
    if len(class_names) != num_classes:
        raise ValueError(
            f"The data has {len(class_names)} classes {class_names} but the model "
            f"outputs {num_classes}."
        )
    current = getattr(model, "class_names", None)
    if current is not None and list(current) != list(class_names):
        raise ValueError(
            f"The model's class names {current} differ from the data's {class_names}."
        )
    model.class_names = list(class_names)


