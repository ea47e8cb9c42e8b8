"""The training recipe: AdamW with warmup and cosine decay, label smoothing, accuracy."""

import keras

from keras_astro.utils import check_int


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
    check_int("epochs", epochs)
    check_int("steps_per_epoch", steps_per_epoch)
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


def _require(condition, message):
    if not condition:
        raise ValueError(message)


def balanced_class_weights(dataset, num_classes):
    """{class id: n / (num_classes * n_c)} from one pass over the labels of `dataset`.

    The weights Keras' `fit(class_weight=...)` takes so that each class counts as much as
    any other in the loss, as scikit-learn's `class_weight="balanced"`. Labels are one-hot
    (or mixed) rows; a class absent from the data gets weight 1.
    """
    import numpy as np

    counts = np.zeros(num_classes)
    for _, labels in dataset.as_numpy_iterator():
        counts += labels.sum(axis=0)
    total = counts.sum()
    return {i: float(total / (num_classes * c)) if c else 1.0 for i, c in enumerate(counts)}
