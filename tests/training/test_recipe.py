"""`compile_for_training`: AdamW, warmup then cosine decay, label smoothing, metrics."""

import keras
import pytest
from keras import ops

from keras_astro import training
from tests.test_case import learning_rates, tiny_model


def metric_names(model):
    return [metric["config"]["name"] for metric in model.get_compile_config()["metrics"]]


def test_schedule_warms_up_then_decays_to_zero():
    model = tiny_model(num_classes=10)
    training.compile_for_training(
        model, epochs=4, steps_per_epoch=10, learning_rate=0.01, warmup_epochs=1, clipnorm=1.0
    )
    optimizer = model.optimizer
    assert isinstance(optimizer, keras.optimizers.AdamW) and optimizer.clipnorm == 1.0

    def learning_rate_at(step):
        optimizer.iterations.assign(step)
        return float(ops.convert_to_numpy(optimizer.learning_rate))

    assert learning_rate_at(0) == 0.0
    assert learning_rate_at(5) == pytest.approx(0.005)
    assert learning_rate_at(10) == pytest.approx(0.01)
    assert 0.0 < learning_rate_at(25) < 0.01
    assert learning_rate_at(40) == pytest.approx(0.0, abs=1e-9)
    assert metric_names(model) == ["accuracy", "top5_accuracy"]
    assert model.get_compile_config()["loss"]["config"]["label_smoothing"] == 0.1


def test_few_classes_have_no_top5_and_warmup_is_capped():
    model = tiny_model()
    # One epoch of warmup in a one-epoch run would never decay: capped at half the run.
    training.compile_for_training(
        model, epochs=1, steps_per_epoch=4, learning_rate=0.01, warmup_epochs=1
    )
    model.optimizer.iterations.assign(2)
    assert float(ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.01)
    assert metric_names(model) == ["accuracy"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(epochs=0, steps_per_epoch=2), "epochs"),
        (dict(epochs=1, steps_per_epoch=2.5), "steps_per_epoch"),
        (dict(epochs=1, steps_per_epoch=2, learning_rate=0), "learning_rate"),
        (dict(epochs=1, steps_per_epoch=2, label_smoothing=1.0), "label_smoothing"),
        (dict(epochs=1, steps_per_epoch=2, clipnorm=-1), "clipnorm"),
    ],
)
def test_compile_rejects_bad_arguments(arguments, message):
    with pytest.raises(ValueError, match=message):
        training.compile_for_training(tiny_model(), **arguments)


def test_balanced_class_weights_count_the_labels():
    import numpy as np
    import tensorflow as tf

    from keras_astro.training.recipe import balanced_class_weights

    labels = np.eye(3, dtype="float32")[[0, 0, 0, 1, 0, 0, 1, 0]]  # 6, 2 and no class 2
    dataset = tf.data.Dataset.from_tensor_slices((np.zeros((8, 1)), labels)).batch(3)
    weights = balanced_class_weights(dataset, 3)
    assert weights == pytest.approx({0: 8 / (3 * 6), 1: 8 / (3 * 2), 2: 1.0})


@pytest.mark.parametrize("epochs, steps_per_epoch", [(4, 10), (20, 2)])
def test_warmup_is_a_fraction_of_the_run_whatever_the_epochs(epochs, steps_per_epoch):
    # 40 steps either way: 10% warmup is 4 steps, then cosine decay to 0 at step 40.
    model = tiny_model()
    training.compile_for_training(
        model, epochs=epochs, steps_per_epoch=steps_per_epoch, learning_rate=0.01,
        warmup_fraction=0.1,
    )
    start, mid_warmup, peak, end = learning_rates(model, [0, 2, 4, 40])
    assert start == 0.0 and mid_warmup == pytest.approx(0.005) and peak == pytest.approx(0.01)
    assert end == pytest.approx(0.0, abs=1e-9)
    assert not model.optimizer.use_ema


def test_no_warmup_starts_at_the_peak_and_warmup_epochs_override_the_fraction():
    model = tiny_model()
    training.compile_for_training(
        model, epochs=2, steps_per_epoch=5, learning_rate=0.01, warmup_fraction=0.0
    )
    assert learning_rates(model, [0])[0] == pytest.approx(0.01)
    training.compile_for_training(
        model, epochs=4, steps_per_epoch=10, learning_rate=0.01, warmup_epochs=2
    )
    assert learning_rates(model, [10, 20]) == pytest.approx([0.005, 0.01])


@pytest.mark.parametrize(
    "batch_size, peak", [(None, 2e-3), (128, 2e-3), (64, 2e-3), (16, 1e-3), (4, 5e-4)]
)
def test_the_default_peak_follows_the_square_root_of_smaller_batches(batch_size, peak):
    model = tiny_model()
    training.compile_for_training(
        model, epochs=2, steps_per_epoch=5, batch_size=batch_size, warmup_fraction=0.0
    )
    assert learning_rates(model, [0])[0] == pytest.approx(peak)
    # A learning rate given is kept whatever the batch size.
    training.compile_for_training(
        model, epochs=2, steps_per_epoch=5, batch_size=batch_size, learning_rate=0.01,
        warmup_fraction=0.0,
    )
    assert learning_rates(model, [0])[0] == pytest.approx(0.01)


def test_ema_momentum_follows_the_run_length_unless_given():
    from keras_astro.training.recipe import auto_ema_momentum

    model = tiny_model()
    training.compile_for_training(model, epochs=10, steps_per_epoch=100, use_ema=True)
    assert model.optimizer.use_ema and model.optimizer.ema_momentum == pytest.approx(0.99)
    training.compile_for_training(
        model, epochs=1, steps_per_epoch=2, use_ema=True, ema_momentum=0.5
    )
    assert model.optimizer.ema_momentum == 0.5
    assert auto_ema_momentum(5) == 0.0 and auto_ema_momentum(20_000) == pytest.approx(0.9995)


@pytest.mark.parametrize(
    "name, value",
    [
        ("warmup_fraction", 0.6),
        ("warmup_fraction", -0.1),
        ("warmup_fraction", float("nan")),
        ("warmup_fraction", "0.1"),
        ("warmup_epochs", -1),
        ("ema_momentum", 1.0),
        ("ema_momentum", -0.5),
        ("ema_momentum", float("inf")),
        ("use_ema", "yes"),
    ],
)
def test_new_options_are_checked_up_front(name, value):
    with pytest.raises(ValueError, match=f"`{name}` must be"):
        training.compile_for_training(tiny_model(), epochs=1, steps_per_epoch=2, **{name: value})


@pytest.mark.parametrize("value", [1.0, 1.5, -0.1, float("nan")])
def test_experiment_config_refuses_a_dropout_outside_0_1(value):
    from keras_astro.training.experiment import ExperimentConfig

    with pytest.raises(ValueError, match=r"`dropout` must be a finite number in \[0, 1\)"):
        ExperimentConfig(source="digits", dropout=value).check()


def test_compile_for_training_defaults_are_the_recipes():
    import dataclasses
    import inspect

    from keras_astro.training.recipe import Recipe

    parameters = inspect.signature(training.compile_for_training).parameters
    recipe = Recipe()
    assert set(recipe.compile_keywords()) == {f.name for f in dataclasses.fields(Recipe)} - {"calibrate", "test_time_augmentation"}
    for name, default in recipe.compile_keywords().items():
        assert parameters[name].default == default, name


def test_a_recipe_out_of_range_is_refused():
    from keras_astro.training.recipe import Recipe

    Recipe().check()
    with pytest.raises(ValueError, match="`warmup_fraction` must be a finite number in"):
        Recipe(warmup_fraction=0.6).check()
    with pytest.raises(ValueError, match="`use_ema` must be True or False"):
        Recipe(use_ema=1).check()
    with pytest.raises(ValueError, match="`calibrate` must be True or False"):
        Recipe(calibrate="no").check()
