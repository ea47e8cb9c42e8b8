"""The training recipe: AdamW with warmup and cosine decay, label smoothing, accuracy."""

import dataclasses
import math
import numbers

from keras_astro.data.options import NON_NEGATIVE, POSITIVE, RATE, option
from keras_astro.utils import check_int

# Keras is imported inside the functions: the CLI reads these defaults before it
# chooses the backend.

# The recipe's defaults, shared by `compile_for_training` and `Recipe`.
# Chosen by measurement on held-out data (BENCHMARKS.md, "Accuracy").
# The peak learning rate from LEARNING_RATE_BATCH_SIZE up; `default_learning_rate` scales
# it down for smaller batches (1e-3 at 16 scored higher on held-out radio and optical cutouts).
LEARNING_RATE = 2e-3
LEARNING_RATE_BATCH_SIZE = 64
WEIGHT_DECAY = 0.05
WARMUP_FRACTION = 0.1
LABEL_SMOOTHING = 0.1
USE_EMA = False
TEST_TIME_AUGMENTATION_CHOICES = ("auto", "dihedral", "none")
# EMA momentum None: averages over about the last EMA_HORIZON of the run's steps.
EMA_HORIZON = 0.1


@dataclasses.dataclass(frozen=True, kw_only=True)
class Recipe:
    """The recipe's settings, which `compile_for_training` documents, as one value.

    `ExperimentConfig` is made of these fields and `keras-astro train` has an option for
    each (its help below), so a setting added here reaches both.
    """

    learning_rate: float | None = option(
        None,
        "peak AdamW learning rate, reached after the warmup, then cosine decay to 0; "
        f"--find-lr suggests one (default: {LEARNING_RATE:g} at a batch size of "
        f"{LEARNING_RATE_BATCH_SIZE} or more, times the square root of batch size / "
        f"{LEARNING_RATE_BATCH_SIZE} below: "
        f"{LEARNING_RATE * math.sqrt(16 / LEARNING_RATE_BATCH_SIZE):g} at 16)",
        bounds=POSITIVE,
    )
    weight_decay: float = option(
        WEIGHT_DECAY,
        "AdamW weight decay (not on biases and BatchNorm; default: %(default)s)",
        bounds=NON_NEGATIVE,
    )
    warmup_fraction: float = option(
        WARMUP_FRACTION,
        "linear warmup over this fraction of the run's steps, 0 to 0.5, whatever the "
        "number of epochs (default: %(default)s)",
        bounds=dict(minimum=0, maximum=0.5),
    )
    warmup_epochs: float | None = option(
        None,
        "warmup in epochs instead of --warmup-fraction, at most half the run (the "
        "recipe of runs made before --warmup-fraction existed; default: off)",
        bounds=NON_NEGATIVE,
    )
    label_smoothing: float = option(
        LABEL_SMOOTHING, "0 to <1 (default: %(default)s)", bounds=RATE
    )
    use_ema: bool = option(
        USE_EMA,
        "keep an exponential moving average of the weights and validate, checkpoint and "
        "save the model with it (default: %(default)s)",
        flag="--ema",
    )
    ema_momentum: float | None = option(
        None,
        "EMA momentum, 0 to <1 (default: from the run's length, averaging about its "
        "last 10%% of steps)",
        bounds=RATE,
    )
    clipnorm: float | None = option(
        None, "clip each gradient to this norm (default: off)", bounds=POSITIVE
    )
    # Calibration: applied after training, so not a `compile_for_training` keyword.
    calibrate: bool = option(
        True,
        "after training, fit a temperature on the validation split so that the saved "
        "model's probabilities match its accuracy (default: %(default)s)",
    )
    # Test-time augmentation: also applied after training, to the saved model.
    test_time_augmentation: str = option(
        "auto",
        "the saved model averages its answers over the 8 rotations and reflections of "
        "each image (8x the inference cost): auto = when trained with --augment dihedral "
        "or rotate; dihedral = always; none = never (default: %(default)s)",
        choices=TEST_TIME_AUGMENTATION_CHOICES,
    )

    # === Fine-tuning ===
    backbone_lr_factor: float = option(
        1.0,
        "with --init-from: the backbone's learning rate (and weight decay) as a fraction "
        "of the head's, 0 to 1, e.g. 0.1 (default: %(default)s)",
        bounds=dict(minimum=0, maximum=1),
        metavar="F",
    )

    def compile_keywords(self):
        """The settings that `compile_for_training` takes: all but those applied after
        training (`calibrate`, `test_time_augmentation`)."""
        return {
            k: v for k, v in dataclasses.asdict(self).items()
            if k not in ("calibrate", "test_time_augmentation")
        }

    def check(self):
        """Raises a `ValueError` for a setting that would train a NaN model or never start.

        Each must be a finite number in its range: an infinite learning rate, weight
        decay or clip norm makes the weights NaN at the first step, and an infinite
        warmup overflows the schedule. `run_experiment` calls this before it writes
        anything to the run folder.
        """
        if self.learning_rate is not None:
            check_number("learning_rate", self.learning_rate, "None or > 0", lambda x: x > 0)
        check_number("weight_decay", self.weight_decay, ">= 0", lambda x: x >= 0)
        check_number(
            "warmup_fraction", self.warmup_fraction, "in [0, 0.5]", lambda x: 0 <= x <= 0.5
        )
        if self.warmup_epochs is not None:
            check_number("warmup_epochs", self.warmup_epochs, "None or >= 0", lambda x: x >= 0)
        check_number("label_smoothing", self.label_smoothing, "in [0, 1)", lambda x: 0 <= x < 1)
        if self.clipnorm is not None:
            check_number("clipnorm", self.clipnorm, "None or > 0", lambda x: x > 0)
        for name in ("use_ema", "calibrate"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(
                    f"`{name}` must be True or False. Received: {name}={getattr(self, name)!r}"
                )
        if self.test_time_augmentation not in TEST_TIME_AUGMENTATION_CHOICES:
            raise ValueError(
                f"`test_time_augmentation` must be one of {TEST_TIME_AUGMENTATION_CHOICES}. "
                f"Received: {self.test_time_augmentation!r}"
            )
        if self.ema_momentum is not None:
            check_number(
                "ema_momentum", self.ema_momentum, "None or in [0, 1)", lambda x: 0 <= x < 1
            )
        check_number(
            "backbone_lr_factor", self.backbone_lr_factor, "in [0, 1]", lambda x: 0 <= x <= 1
        )


def compile_for_training(
    model,
    *,
    epochs,
    steps_per_epoch,
    batch_size=None,
    learning_rate=None,
    weight_decay=WEIGHT_DECAY,
    warmup_fraction=WARMUP_FRACTION,
    warmup_epochs=None,
    label_smoothing=LABEL_SMOOTHING,
    clipnorm=None,
    use_ema=USE_EMA,
    ema_momentum=None,
    backbone_lr_factor=1.0,
    jit_compile="auto",
):
    """Compiles `model` (a classifier with probability outputs) with the training recipe.

    AdamW (no weight decay on biases and BatchNorm parameters) follows a schedule that
    rises linearly from 0 to `learning_rate` over the first `warmup_fraction` of the
    run's optimizer steps (at most half of the run) and then decays to 0 along a cosine;
    the schedule counts steps, so it needs the run's length, and the same fraction
    means the same shape at 4 epochs and at 200. With `use_ema`, the optimizer also
    keeps an exponential moving average of the weights; `keras_astro.training.fit`
    validates, checkpoints and returns the model with those averaged weights
    (`keras.callbacks.SwapEMAWeights`). The loss is categorical cross-entropy with label
    smoothing on one-hot labels; metrics are accuracy, plus top-5 accuracy when there
    are more than 5 classes. A `Recipe` passes as `**recipe.compile_keywords()`.

    Args:
        model: a Keras model whose output is class probabilities.
        epochs: int, epochs of the whole run (a resumed run counts its finished epochs).
        steps_per_epoch: int, batches per epoch.
        batch_size: int, the global batch size, which sets the default learning rate
            (`default_learning_rate`); None: `LEARNING_RATE_BATCH_SIZE` (64).
        learning_rate: float, peak learning rate; None: `default_learning_rate(batch_size)`.
        weight_decay: float, decoupled weight decay.
        warmup_fraction: float in [0, 0.5], length of the linear warmup as a fraction
            of all the run's steps.
        warmup_epochs: optional float >= 0; when given, the warmup lasts this many
            epochs instead (at most half the run): the recipe of keras-astro 0.x, kept so
            that runs configured that way resume the same.
        label_smoothing: float in [0, 1).
        clipnorm: optional float, clips each gradient to this norm.
        use_ema: bool, keep an exponential moving average of the weights.
        ema_momentum: float in [0, 1), or None: chosen from the run's length so that the
            average spans about the last `EMA_HORIZON` (10%) of the steps,
            `1 - 1 / (0.1 * total_steps)` (0 for runs of 10 steps or fewer).
        backbone_lr_factor: float in [0, 1]; below 1, every layer but the classifier
            learns (and decays) at this fraction of the rate
            (`keras_astro.training.fine_tune.BackboneAdamW`), for fine-tuning.
        jit_compile: bool or `"auto"`: Keras' choice, XLA on JAX and on TensorFlow
            with a GPU. On CPU-only TensorFlow, XLA measured 4x slower per step for
            this model, and PyTorch runs eagerly.
    """
    import keras

    check_int("epochs", epochs)
    check_int("steps_per_epoch", steps_per_epoch)
    Recipe(
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        warmup_fraction=warmup_fraction,
        warmup_epochs=warmup_epochs,
        label_smoothing=label_smoothing,
        clipnorm=clipnorm,
        use_ema=use_ema,
        ema_momentum=ema_momentum,
        backbone_lr_factor=backbone_lr_factor,
    ).check()
    if batch_size is not None:
        check_int("batch_size", batch_size)
    learning_rate = peak_learning_rate(learning_rate, batch_size or LEARNING_RATE_BATCH_SIZE)
    total_steps = epochs * steps_per_epoch
    warmup_steps = warmup_steps_for(total_steps, steps_per_epoch, warmup_fraction, warmup_epochs)
    if warmup_steps:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0,
            decay_steps=total_steps - warmup_steps,
            warmup_target=learning_rate,
            warmup_steps=warmup_steps,
        )
    else:
        schedule = keras.optimizers.schedules.CosineDecay(learning_rate, total_steps)
    ema = {}
    if use_ema:
        if ema_momentum is None:
            ema_momentum = auto_ema_momentum(total_steps)
        ema = {"use_ema": True, "ema_momentum": ema_momentum}
    adamw = dict(learning_rate=schedule, weight_decay=weight_decay, clipnorm=clipnorm, **ema)
    if backbone_lr_factor == 1:
        optimizer = keras.optimizers.AdamW(**adamw)
    else:
        from keras_astro.training.fine_tune import BackboneAdamW

        optimizer = BackboneAdamW(backbone_lr_factor, **adamw)
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


def peak_learning_rate(learning_rate, batch_size):
    """`learning_rate`, or when it is None the default for `batch_size`."""
    return default_learning_rate(batch_size) if learning_rate is None else learning_rate


def default_learning_rate(batch_size):
    """The recipe's peak learning rate for a global `batch_size`: `LEARNING_RATE` from
    `LEARNING_RATE_BATCH_SIZE` up, scaled by the square root of the batch size below
    (Adam's rule for keeping the noise of a step; scaling up was not measured)."""
    return LEARNING_RATE * math.sqrt(min(batch_size / LEARNING_RATE_BATCH_SIZE, 1))


def warmup_steps_for(total_steps, steps_per_epoch, warmup_fraction, warmup_epochs=None):
    """The warmup's length in steps: a fraction of the run (or epochs), at most half of it."""
    if warmup_epochs is not None:
        steps = int(warmup_epochs * steps_per_epoch)
    else:
        steps = round(warmup_fraction * total_steps)
    return min(steps, total_steps // 2)


def auto_ema_momentum(total_steps):
    """An EMA momentum whose average spans about the last `EMA_HORIZON` of the run's steps.

    A fixed 0.999 would keep most of the random initialisation in a run of a few hundred
    steps (0.999^300 = 0.74); the average's horizon 1 / (1 - momentum) follows the run.
    """
    horizon = EMA_HORIZON * total_steps
    return 0.0 if horizon <= 1 else 1.0 - 1.0 / horizon


def check_fraction_below_one(name, value):
    """Raises a `ValueError` unless `value` is a finite number in [0, 1) (a dropout rate)."""
    check_number(name, value, "in [0, 1)", lambda x: 0 <= x < 1)


def check_number(name, value, expected, in_range):
    """Raises a `ValueError` unless `value` is a finite real number with `in_range(value)`.

    `expected` words the range in the message, e.g. `"> 0"`.
    """
    valid = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if not (valid and math.isfinite(value) and in_range(value)):
        raise ValueError(f"`{name}` must be a finite number {expected}. Received: {name}={value!r}")


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
