"""The learning-rate range test (Smith 2015; fastai's `lr_find`, Lightning's `lr_find`).

Train for a few batches while the learning rate grows exponentially, record the loss
of each batch, and suggest a learning rate from the curve; the model's weights are put
back afterwards.
"""

import math

import keras

from keras_astro.utils import check_int

__all__ = ["find_learning_rate", "plot_lr_finder"]


def find_learning_rate(
    model,
    dataset,
    *,
    min_lr=1e-7,
    max_lr=10.0,
    num_steps=100,
    weight_decay=None,
    label_smoothing=None,
    smoothing=0.05,
    divergence=4.0,
    plot_path=None,
):
    """Runs a learning-rate range test on `model` and suggests a peak learning rate.

    The optimizer is the recipe's AdamW (no decay on biases and BatchNorm) with a
    learning rate that grows exponentially from `min_lr` to `max_lr` over `num_steps`
    batches of `dataset` (repeated when shorter). The test stops early once the
    smoothed loss exceeds `divergence` times its minimum. The suggestion is the
    learning rate at the steepest descent of the smoothed loss (Lightning's rule),
    capped at a tenth of the learning rate of the lowest loss (fastai's classic rule),
    which keeps it off the cliff where the loss explodes, and never below `min_lr`. The
    model's weights are restored afterwards; it is left compiled with the test's
    optimizer, so compile it again (`compile_for_training`) before training.

    Args:
        model: a classifier with probability outputs (an `AstroTransformer`).
        dataset: a batched `tf.data.Dataset` of (images, one-hot labels), e.g.
            `load_datasets(...).train`.
        min_lr, max_lr: the range, 0 < min_lr < max_lr, finite.
        num_steps: int >= 5, batches in the test.
        weight_decay, label_smoothing: the recipe's, by default.
        smoothing: weight of the newest loss in the exponential smoothing, in (0, 1].
        divergence: stop when the smoothed loss exceeds this multiple of its minimum.
        plot_path: optional PNG path: loss against learning rate (log scale), the
            suggestion marked.

    Returns:
        A dict: `learning_rates` and `losses` (raw per batch) and `smoothed_losses`,
        lists of equal length; `suggestion` (float), `steepest` and `min_loss_lr`.
    """
    import numpy as np

    from keras_astro.training import recipe

    weight_decay = recipe.WEIGHT_DECAY if weight_decay is None else weight_decay
    label_smoothing = recipe.LABEL_SMOOTHING if label_smoothing is None else label_smoothing
    recipe.check_number("min_lr", min_lr, "> 0", lambda x: x > 0)
    recipe.check_number("max_lr", max_lr, "> 0", lambda x: x > 0)
    if not min_lr < max_lr:
        raise ValueError(f"`min_lr` must be below `max_lr`. Received: {min_lr!r} and {max_lr!r}")
    check_int("num_steps", num_steps, minimum=5)
    recipe.check_number("smoothing", smoothing, "in (0, 1]", lambda x: 0 < x <= 1)
    recipe.check_number("divergence", divergence, "> 1", lambda x: x > 1)
    recipe.Recipe(
        learning_rate=max_lr, weight_decay=weight_decay, label_smoothing=label_smoothing
    ).check()

    weights = model.get_weights()
    schedule = keras.optimizers.schedules.ExponentialDecay(
        min_lr, decay_steps=num_steps - 1, decay_rate=max_lr / min_lr
    )
    optimizer = keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(
        optimizer=optimizer,
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=label_smoothing),
        jit_compile="auto",
    )
    # Equal batches, so that each batch's loss follows from Keras' running mean.
    batch_size = int(next(iter(dataset))[0].shape[0])
    batches = dataset.unbatch().batch(batch_size, drop_remainder=True).repeat()
    recorder = _LossRecorder(smoothing, divergence)
    try:
        model.fit(
            batches, epochs=1, steps_per_epoch=num_steps, callbacks=[recorder], verbose=0,
            shuffle=False,
        )
    finally:
        model.set_weights(weights)
    losses = recorder.losses
    if len(losses) < 3:
        raise ValueError(
            f"The loss diverged after {len(losses)} batches of the range test: lower `min_lr`."
        )
    rates = [float(schedule(step)) for step in range(len(losses))]
    smoothed = recorder.smoothed
    log_rates = np.log10(rates)
    # Steepest descent of the smoothed loss, away from the noisy ends.
    start, stop = min(len(losses) // 10, 10), max(len(losses) - 2, 2)
    gradient = np.gradient(np.asarray(smoothed), log_rates)
    steepest = rates[start + int(np.argmin(gradient[start:stop]))]
    min_loss_lr = rates[int(np.argmin(smoothed))]
    # A tenth of the lowest loss's rate, but never below the tested range: a loss lowest at
    # the first rate says the range starts too high, not that an untested rate is better.
    suggestion = max(min(steepest, min_loss_lr / 10), rates[0])
    result = {
        "learning_rates": rates,
        "losses": losses,
        "smoothed_losses": smoothed,
        "suggestion": float(suggestion),
        "steepest": float(steepest),
        "min_loss_lr": float(min_loss_lr),
    }
    if plot_path is not None:
        plot_lr_finder(result, plot_path)
    return result


class _LossRecorder(keras.callbacks.Callback):
    """Each batch's loss from Keras' running mean, smoothed; stops at divergence."""

    def __init__(self, smoothing, divergence):
        super().__init__()
        self.smoothing = smoothing
        self.divergence = divergence
        self.losses, self.smoothed = [], []
        self._sum = 0.0
        self._average = None

    def on_train_batch_end(self, batch, logs=None):
        # Keras logs the mean loss of the epoch's batches so far (equal batches).
        mean = float(logs["loss"])
        loss = mean * (batch + 1) - self._sum
        self._sum = mean * (batch + 1)
        if not math.isfinite(loss):
            self.model.stop_training = True
            return
        self._average = (
            loss
            if self._average is None
            else self.smoothing * loss + (1 - self.smoothing) * self._average
        )
        self.losses.append(loss)
        self.smoothed.append(self._average)
        if len(self.smoothed) > 5 and self._average > self.divergence * min(self.smoothed):
            self.model.stop_training = True


def plot_lr_finder(result, path):
    """Loss against learning rate (log scale), raw and smoothed, the suggestion marked."""
    from matplotlib.figure import Figure

    from keras_astro.training.plots import save_figure

    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(result["learning_rates"], result["losses"], alpha=0.3, label="loss per batch")
    ax.plot(result["learning_rates"], result["smoothed_losses"], label="smoothed")
    ax.axvline(
        result["suggestion"], color="C3", linestyle="--",
        label=f"suggested {result['suggestion']:.2g}",
    )
    # From just under the lowest smoothed loss to a little over the first: the final
    # divergence (often 100x the loss) would flatten the part that matters.
    start, lowest = result["smoothed_losses"][0], min(result["smoothed_losses"])
    span = max(start - lowest, 0.05 * abs(start), 1e-3)
    ax.set_ylim(lowest - 0.2 * span, start + 0.5 * span)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("training loss")
    ax.set_title("Learning-rate range test")
    ax.grid(alpha=0.3)
    ax.legend()
    save_figure(fig, path)
