"""The training recipe: AdamW with warmup and cosine decay, label smoothing, and callbacks
that leave a run resumable wherever it is killed.

`compile_for_training` sets up the optimizer, loss and metrics; `fit` trains with a best
checkpoint (`model.keras`), `history.csv`, TensorBoard logs and a backup that the next
`fit` into the same `output_dir` resumes from; `evaluate` scores a model on a dataset.
"""

import csv
import os
import re
import shutil

import keras
import numpy as np

from keras_astro.data import ImageDatasets

CHECKPOINT_FILE = "model.keras"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def _is_positive_int(value):
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool) and value >= 1


def compile_for_training(
    model,
    *,
    epochs,
    steps_per_epoch,
    learning_rate=1e-3,
    weight_decay=0.05,
    warmup_epochs=1,
    label_smoothing=0.1,
    clipnorm=None,
    jit_compile="auto",
):
    """Compiles `model` (a classifier with probability outputs) with the training recipe.

    AdamW (no weight decay on biases and BatchNorm parameters) follows a schedule that
    rises linearly from 0 to `learning_rate` over `warmup_epochs` (at most half of the
    run) and then decays to 0 along a cosine; the schedule counts optimizer steps, so
    it needs the run's length. The loss is categorical cross-entropy with label
    smoothing on one-hot labels; metrics are accuracy, plus top-5 accuracy when there
    are more than 5 classes.

    Args:
        model: a Keras model whose output is class probabilities.
        epochs: int, epochs of the whole run (a resumed run counts its finished epochs).
        steps_per_epoch: int, batches per epoch.
        learning_rate: float, peak learning rate.
        weight_decay: float, decoupled weight decay.
        warmup_epochs: float, length of the linear warmup in epochs.
        label_smoothing: float in [0, 1).
        clipnorm: optional float, clips each gradient to this norm.
        jit_compile: bool or `"auto"`: Keras' choice, XLA on JAX and on TensorFlow
            with a GPU. On CPU-only TensorFlow, XLA measured 4x slower per step for
            this model, and PyTorch runs eagerly.
    """
    _require(_is_positive_int(epochs), f"`epochs` must be a positive int. Received: {epochs!r}")
    _require(
        _is_positive_int(steps_per_epoch),
        f"`steps_per_epoch` must be a positive int. Received: {steps_per_epoch!r}",
    )
    _require(learning_rate > 0, f"`learning_rate` must be > 0. Received: {learning_rate!r}")
    _require(weight_decay >= 0, f"`weight_decay` must be >= 0. Received: {weight_decay!r}")
    _require(warmup_epochs >= 0, f"`warmup_epochs` must be >= 0. Received: {warmup_epochs!r}")
    _require(
        0 <= label_smoothing < 1,
        f"`label_smoothing` must be in [0, 1). Received: {label_smoothing!r}",
    )
    _require(
        clipnorm is None or clipnorm > 0,
        f"`clipnorm` must be None or > 0. Received: {clipnorm!r}",
    )
    total_steps = epochs * steps_per_epoch
    warmup_steps = min(int(warmup_epochs * steps_per_epoch), total_steps // 2)
    if warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=total_steps - warmup_steps,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    else:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    optimizer = keras.optimizers.AdamW(
        learning_rate=schedule, weight_decay=weight_decay, clipnorm=clipnorm
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    metrics = [keras.metrics.CategoricalAccuracy(name="accuracy")]
    if model.output_shape[-1] > 5:
        metrics.append(keras.metrics.TopKCategoricalAccuracy(k=5, name="top5_accuracy"))
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        metrics=metrics,
        jit_compile=jit_compile,
    )


def _write_atomically(path, write):
    """Calls `write(file)` on a temporary sibling of `path`, then renames it over `path`."""
    partial = f"{path}.partial"
    with open(partial, "w", newline="") as f:
        write(f)
    os.replace(partial, path)


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


class _ResumableBackup(keras.callbacks.Callback):
    """Keeps a whole copy of BackupAndRestore's state for the last finished epoch.

    BackupAndRestore rewrites its weights and metadata in place at the end of each
    epoch, so a kill during that write would leave a state it cannot load (or
    weights and epoch count that disagree). After it writes, this callback copies
    its folder into a new `epoch-NNNNN` folder with one rename; `restore()` puts the
    latest such copy back in place before training starts.
    """

    _SNAPSHOT = re.compile(r"epoch-(\d+)")

    def __init__(self, root):
        super().__init__()
        self.root = root
        self.state_dir = os.path.join(root, "state")

    def keras_callback(self):
        return keras.callbacks.BackupAndRestore(self.state_dir)

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

    def on_epoch_end(self, epoch, logs=None):
        snapshot = os.path.join(self.root, f"epoch-{epoch + 1:05d}")
        partial = f"{snapshot}.partial"
        shutil.rmtree(partial, ignore_errors=True)
        shutil.copytree(self.state_dir, partial)
        os.replace(partial, snapshot)
        for _, path in self._snapshots():
            if path != snapshot:
                shutil.rmtree(path)

    def on_train_end(self, logs=None):
        shutil.rmtree(self.root, ignore_errors=True)


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

    _write_atomically(path, write)
    return kept


def finished(output_dir):
    """Whether `fit` completed in `output_dir`: its history is there and its backup is gone."""
    return os.path.exists(os.path.join(output_dir, HISTORY_FILE)) and not os.path.isdir(
        os.path.join(output_dir, BACKUP_DIR)
    )


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
        data: a `keras_astro.data.ImageDatasets` (its `test` split validates and its
            class names are stored in the model) or a batched `tf.data.Dataset`.
        val_ds: optional validation dataset; overrides `data.test`.
        epochs: int, epochs of the whole run.
        output_dir: str, folder for the files above.
        monitor: the metric that picks the best epoch; defaults to `"val_accuracy"`
            with validation data and `"accuracy"` without.
        callbacks: extra Keras callbacks, run after the built-in ones.
        verbose: passed to `model.fit` (`"auto"` shows Keras' progress bar).

    Returns:
        The `keras.callbacks.History` of this call (the epochs it ran); the whole
        run's history is `load_history(os.path.join(output_dir, "history.csv"))`.
    """
    _require(_is_positive_int(epochs), f"`epochs` must be a positive int. Received: {epochs!r}")
    if finished(output_dir):
        raise ValueError(
            f"{output_dir} holds a finished run ({HISTORY_FILE} and no {BACKUP_DIR}/); "
            "train into another `output_dir`."
        )
    if isinstance(data, ImageDatasets):
        train_ds = data.train
        val_ds = data.test if val_ds is None else val_ds
        _set_class_names(model, data.class_names)
    else:
        train_ds = data
    if not model.compiled:
        steps = int(train_ds.cardinality())
        _require(
            steps > 0,
            "`fit` compiles an uncompiled model with the number of batches per epoch, "
            "but the training dataset's length is unknown or infinite; call "
            "`compile_for_training` first.",
        )
        compile_for_training(model, epochs=epochs, steps_per_epoch=steps)
    monitor = monitor or ("val_accuracy" if val_ds is not None else "accuracy")

    os.makedirs(output_dir, exist_ok=True)
    backup = _ResumableBackup(os.path.join(output_dir, BACKUP_DIR))
    finished_epochs = backup.restore()
    history_path = os.path.join(output_dir, HISTORY_FILE)
    history = _truncate_history(history_path, finished_epochs)
    checkpoint_path = os.path.join(output_dir, CHECKPOINT_FILE)
    staging_path = os.path.join(output_dir, BACKUP_DIR, "best.keras")
    if history and monitor not in history[0]:
        raise ValueError(
            f"{history_path} has no {monitor!r} column to resume the best checkpoint "
            f"from; it has {sorted(history[0])}."
        )
    checkpoint = keras.callbacks.ModelCheckpoint(
        staging_path,
        monitor=monitor,
        mode="max" if "acc" in monitor else "min",
        save_best_only=True,
        initial_value_threshold=_best(history, monitor),
    )
    all_callbacks = [
        keras.callbacks.CSVLogger(history_path, append=True),
        checkpoint,
        _PublishCheckpoint(staging_path, checkpoint_path),
        backup.keras_callback(),
        backup,
        keras.callbacks.TensorBoard(os.path.join(output_dir, LOGS_DIR)),
        *callbacks,
    ]
    return model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=all_callbacks,
        verbose=verbose,
        shuffle=False,  # tf.data pipelines shuffle themselves
    )


def _best(history, monitor):
    values = [row[monitor] for row in history]
    if not values:
        return None
    return max(values) if "acc" in monitor else min(values)


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


def evaluate(model, dataset):
    """Scores `model` on batches of (images, one-hot labels) in a fixed order.

    Returns a dict with `accuracy`, `loss` (cross-entropy without label smoothing),
    `top5_accuracy` (more than 5 classes only), `per_class_accuracy` (a list; `None`
    for classes absent from the data), `confusion_matrix` (rows: true class,
    columns: predicted) and `num_images`.
    """
    from sklearn.metrics import confusion_matrix

    # The evaluation split comes in a fixed order, so a second pass reads its labels.
    probabilities = model.predict(dataset, verbose=0).astype("float64")
    labels = np.concatenate([one_hot for _, one_hot in dataset.as_numpy_iterator()])
    num_classes = probabilities.shape[-1]
    true = labels.argmax(-1)
    predicted = probabilities.argmax(-1)
    matrix = confusion_matrix(true, predicted, labels=np.arange(num_classes))
    support = matrix.sum(axis=1)
    results = {
        "accuracy": float(np.mean(true == predicted)),
        "loss": float(
            -np.mean(np.sum(labels * np.log(np.clip(probabilities, 1e-7, 1.0)), axis=-1))
        ),
    }
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=-1)[:, :5]
        results["top5_accuracy"] = float(np.mean((top5 == true[:, None]).any(axis=-1)))
    results["per_class_accuracy"] = [
        float(matrix[i, i] / support[i]) if support[i] else None for i in range(num_classes)
    ]
    results["confusion_matrix"] = matrix
    results["num_images"] = int(len(true))
    return results
