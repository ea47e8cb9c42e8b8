"""Fine-tuning: a model started from a trained one, its frozen phase, the backbone's
learning rate, and a run that resumes across the freeze boundary."""

import json
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_astro import training
from keras_astro.models.fine_tune import HEAD, initialize_from
from keras_astro.training import ExperimentConfig, fine_tune, resumable, run_experiment
from tests.test_case import CLASSES, tiny_model


def weights(model, backbone=True):
    layers = fine_tune.backbone_layers(model) if backbone else [model.get_layer(HEAD)]
    return [ops.convert_to_numpy(w) for layer in layers for w in layer.weights]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))


@pytest.fixture(scope="module")
def source():
    keras.utils.set_random_seed(1)
    return tiny_model(class_names=CLASSES)


def test_new_classes_get_a_new_head_on_the_source_backbone(source):
    model = initialize_from(source, class_names=["x", "y"], input_shape=(16, 16, 3))
    assert model.num_classes == 2 and model.class_names == ["x", "y"]
    assert model.image_shape == (16, 16, 3)  # no weight depends on the image size
    assert same(weights(model), weights(source))
    assert model.get_layer(HEAD).kernel.shape == (32, 2)


def test_the_same_classes_keep_the_head(source):
    model = initialize_from(source, class_names=CLASSES, center_crop=0.5)
    assert model.center_crop == 0.5
    assert same(weights(model, backbone=False), weights(source, backbone=False))
    renamed = initialize_from(source, class_names=["a", "b", "z"])
    assert not same(weights(renamed, backbone=False), weights(source, backbone=False))


def test_other_bands_or_kind_of_input_are_refused_by_name(source):
    with pytest.raises(ValueError, match="takes 3 band.* new data has 1"):
        initialize_from(source, class_names=CLASSES, input_shape=(8, 8, 1))
    with pytest.raises(ValueError, match="trained on pixels but the new data is flux"):
        initialize_from(source, class_names=CLASSES, preprocessing="flux")


def fine_tuning_model(source, epochs, steps, **recipe):
    keras.utils.set_random_seed(0)
    model = initialize_from(source, class_names=["x", "y"])
    training.compile_for_training(model, epochs=epochs, steps_per_epoch=steps, **recipe)
    return model


def two_class_data(seed=0):
    from keras_astro import data

    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (24, 8, 8, 3)).astype("float32")
    y = np.arange(24) % 2
    return data.from_arrays(x[:16], y[:16], x[16:], y[16:], class_names=["x", "y"], batch_size=8)


def test_frozen_epochs_train_the_head_alone(source, tmp_path):
    model = fine_tuning_model(source, epochs=1, steps=2)
    resumable.fit(model, two_class_data(), epochs=1, freeze_epochs=1, output_dir=str(tmp_path), verbose=0)
    # BatchNorm statistics too: a frozen layer runs in inference mode.
    assert same(weights(model), weights(source))
    head_before = weights(fine_tuning_model(source, epochs=1, steps=2), backbone=False)
    assert not same(weights(model, backbone=False), head_before)


@pytest.mark.parametrize("factor", [0.0, 0.5])
def test_the_backbone_learns_at_a_fraction_of_the_rate(source, factor):
    model = fine_tuning_model(source, epochs=1, steps=1, backbone_lr_factor=factor)
    optimizer = model.optimizer
    assert isinstance(optimizer, fine_tune.BackboneAdamW)
    rates = {v.path: optimizer.lr_factor(v) for v in model.trainable_variables}
    assert rates["predictions/kernel"] == 1.0 and rates["stem_conv1/kernel"] == factor
    backbone = [v for v in model.trainable_variables if optimizer.lr_factor(v) != 1.0]
    before = [ops.convert_to_numpy(v) for v in backbone]
    # One step by hand: Adam's first step moves each weight by about its rate.
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(5)  # past the warmup's zero rate
    grads = [ops.ones_like(v) for v in model.trainable_variables]
    model.optimizer.apply(grads, model.trainable_variables)
    moved = [np.abs(ops.convert_to_numpy(v) - b).max() for v, b in zip(backbone, before)]
    head = model.get_layer(HEAD).kernel
    if factor == 0:
        assert max(moved) == 0
    else:
        lr = float(ops.convert_to_numpy(optimizer.learning_rate))
        head_step = lr  # Adam's first step on a constant gradient is the rate itself
        assert max(moved) == pytest.approx(factor * head_step, rel=0.05, abs=1e-7)
    assert head.trainable


def test_the_optimizer_round_trips_its_config():
    optimizer = fine_tune.BackboneAdamW(0.1, learning_rate=1e-3, weight_decay=0.05)
    revived = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
    assert isinstance(revived, fine_tune.BackboneAdamW)
    assert (revived.backbone_lr_factor, revived.head) == (0.1, ("predictions",))


@pytest.mark.slow
@pytest.mark.parametrize("killed_at", [1, 2])  # the first epoch after the freeze, the next
def test_a_run_killed_after_the_freeze_resumes_as_an_uninterrupted_one(
    source, tmp_path, monkeypatch, killed_at
):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")

    def run(output):
        model = fine_tuning_model(source, epochs=3, steps=2, backbone_lr_factor=0.5)
        return model, resumable.fit(
            model, two_class_data(), epochs=3, freeze_epochs=1, output_dir=output, verbose=0
        )

    model, history = run(straight)
    assert history.epoch == [0, 1, 2]
    assert not same(weights(model), weights(source))  # trained after the freeze

    def killed(self, epoch, logs=None):
        if epoch == killed_at:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(resumable._StopOnNonFiniteLoss, "on_epoch_begin", killed)
    with pytest.raises(KeyboardInterrupt):
        run(resumed)
    monkeypatch.undo()
    again, history = run(resumed)
    assert history.epoch == list(range(killed_at, 3))
    rows = [training.load_history(os.path.join(o, training.HISTORY_FILE)) for o in (straight, resumed)]
    assert [row["epoch"] for row in rows[1]] == [0, 1, 2]
    for a, b in zip(*rows):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(weights(again), weights(model)))


def test_fine_tuning_options_need_a_source(image_folder):
    with pytest.raises(ValueError, match="init_from"):
        ExperimentConfig(source=str(image_folder), freeze_epochs=1).check()
    with pytest.raises(ValueError, match="init_from"):
        ExperimentConfig(source=str(image_folder), backbone_lr_factor=0.1).check()
    with pytest.raises(ValueError, match="no_such_preset"):
        ExperimentConfig(source=str(image_folder), init_from="no_such_preset").check()


@pytest.mark.slow
def test_run_experiment_fine_tunes_a_preset(image_folder, tmp_path):
    keras.utils.set_random_seed(0)
    first = ExperimentConfig(source=str(image_folder), epochs=1, batch_size=6, image_size=8)
    run_experiment(first, str(tmp_path / "first"), verbose=0)
    source = keras.saving.load_model(tmp_path / "first" / training.CHECKPOINT_FILE)
    source.save_to_preset(tmp_path / "preset")
    config = ExperimentConfig(
        source=str(image_folder), epochs=2, batch_size=6, image_size=16,
        init_from=str(tmp_path / "preset"), freeze_epochs=1, backbone_lr_factor=0.1,
    )
    metrics = run_experiment(config, str(tmp_path / "tuned"), verbose=0)
    assert metrics["epochs_this_run"] == 2
    saved = json.loads((tmp_path / "tuned" / training.CONFIG_FILE).read_text())
    assert (saved["freeze_epochs"], saved["backbone_lr_factor"]) == (1, 0.1)
    assert saved["init_from"] == str(tmp_path / "preset")
    # The same config finds the run finished; another --model is refused before any file.
    assert run_experiment(config, str(tmp_path / "tuned"), verbose=0) == metrics
    with pytest.raises(ValueError, match="pass --model small"):
        run_experiment(
            ExperimentConfig(**{**config.__dict__, "model": "base"}), str(tmp_path / "base"), verbose=0
        )
    assert not (tmp_path / "base" / training.CONFIG_FILE).exists()
