"""Temperature scaling inside the model, so every way of running it is calibrated.

A classifier trained to low loss is usually over-confident: its top probability is
larger than its accuracy. Dividing the logits by one temperature T > 1, fitted on
held-out data (`keras_astro.training.calibration.fit_temperature`), fixes most of that
without changing which class wins. Keeping T in the model's graph means the `.keras`
file, `predict`, `evaluate` and the exported signatures all return the calibrated
probabilities.
"""

import math

import keras
from keras import ops


def check_temperature(temperature):
    if temperature is not None and not (
        isinstance(temperature, (int, float))
        and not isinstance(temperature, bool)
        and math.isfinite(temperature)
        and temperature > 0
    ):
        raise ValueError(
            f"`temperature` must be None or a finite number > 0. Received: {temperature!r}"
        )


@keras.saving.register_keras_serializable(package="keras_astro")
class TemperatureScaling(keras.layers.Layer):
    """`activation(logits / temperature)`: the classifier's activation after scaling.

    Args:
        temperature: float > 0; above 1 softens the probabilities.
        activation: the classifier's activation (`"softmax"`, or `None` for logits).
    """

    def __init__(self, temperature, activation="softmax", **kwargs):
        super().__init__(**kwargs)
        check_temperature(temperature)
        self.temperature = float(temperature)
        self.activation = keras.activations.get(activation)
        self._activation_name = activation

    def call(self, logits):
        return self.activation(ops.divide(logits, ops.cast(self.temperature, logits.dtype)))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "temperature": self.temperature,
            "activation": self._activation_name,
        }


def rebuild(model, **changes):
    """A copy of `model` built from its config with `changes`, holding its weights.

    The temperature and view layers have no weights, so a model with and without them
    holds the same weights in the same order.
    """
    new = model.__class__.from_config({**model.get_config(), **changes})
    new.set_weights(model.get_weights())
    return new


def with_temperature(model, temperature):
    """`model` with its logits divided by `temperature` (`None`: the uncalibrated model)."""
    return rebuild(model, temperature=temperature)


def logits_model(model):
    """The uncalibrated logits of `model` for one view: its head without activation or
    temperature, and without the average of views (`test_time_augmentation`)."""
    return rebuild(model, classifier_activation=None, temperature=None, test_time_augmentation=None)
