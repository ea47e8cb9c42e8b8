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
from tests.test_case import CLASSES, COLORS, TINY_TRAIN, run_cli, run_cli_error, tiny_model


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


def test_a_calibrated_source_leaves_its_temperature_behind(source):
    from keras_astro.models.calibration import with_temperature

    calibrated = with_temperature(source, 0.5)
    model = initialize_from(calibrated, class_names=CLASSES)
    assert model.temperature is None  # the new run fits its own
    assert same(weights(model, backbone=False), weights(source, backbone=False))


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
    grads = [ops.ones(v.shape) for v in model.trainable_variables]
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
def test_a_run_killed_after_the_freeze_resumes_as_an_uninterrupted_one(source, tmp_path, monkeypatch):
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")

    def run(output):
        model = fine_tuning_model(source, epochs=3, steps=2, backbone_lr_factor=0.5)
        return model, resumable.fit(
            model, two_class_data(), epochs=3, freeze_epochs=1, output_dir=output, verbose=0
        )

    model, history = run(straight)
    assert history.epoch == [0, 1, 2]
    assert not same(weights(model), weights(source))  # trained after the freeze

    # Killed at the first epoch after the freeze (the backup holds the frozen phase's
    # optimizer), then at the next one (it holds the new optimizer's state).
    def killed_at(killed_epoch):
        def on_epoch_begin(self, epoch, logs=None):
            if epoch == killed_epoch:
                raise KeyboardInterrupt("killed")

        return on_epoch_begin

    for epoch in (1, 2):
        monkeypatch.setattr(resumable._StopOnNonFiniteLoss, "on_epoch_begin", killed_at(epoch))
        with pytest.raises(KeyboardInterrupt):
            run(resumed)
        monkeypatch.undo()
    again, history = run(resumed)
    assert history.epoch == [2]
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


def test_fine_tuning_options_on_the_command_line(image_folder, capsys):
    message = run_cli_error(capsys, "train", "--data-dir", image_folder, "--freeze-epochs", "1")
    assert "init_from" in message
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, "--init-from", "no_such_preset"
    )
    assert "frdeep_first_small" in message  # the shipped presets are listed


def fake_run_folder(folder):
    """What `benchmarks/frdeep_preset.py` packages: an untrained `small` and invented scores."""
    from keras_astro import AstroTransformer

    folder.mkdir()
    model = AstroTransformer.small(num_classes=3, input_shape=(8, 8, 3), class_names=list(COLORS))
    model.save(folder / training.CHECKPOINT_FILE)
    metrics = {
        "test_accuracy": 0.5, "test_balanced_accuracy": 0.5, "test_loss": 1.0, "num_train": 9,
        "num_validation": 3, "num_test": 6, "best_epoch": 1, "epochs": 1, "batch_size": 6,
        "backend": "tensorflow", "keras_version": keras.__version__,
    }
    (folder / training.METRICS_FILE).write_text(json.dumps(metrics))
    (folder / training.CONFIG_FILE).write_text(json.dumps({"learning_rate": 0.002, "weight_decay": 0.05,
                                                           "warmup_fraction": 0.1, "label_smoothing": 0.1}))
    return metrics


@pytest.mark.slow
def test_train_fine_tunes_a_packaged_run(image_folder, tmp_path, load_script):
    metrics = fake_run_folder(tmp_path / "first")
    script = load_script("benchmarks/frdeep_preset.py")
    preset = script.package(str(tmp_path / "first"), str(tmp_path / "preset"))
    metadata = json.loads((tmp_path / "preset" / "metadata.json").read_text())
    assert metadata["metrics"]["test_accuracy"] == metrics["test_accuracy"]
    assert metadata["class_names"] == list(COLORS)
    assert "## Not for" in (tmp_path / "preset" / "README.md").read_text()

    tuned = tmp_path / "tuned"
    tiny = [*TINY_TRAIN]
    tiny[tiny.index("--epochs") + 1] = "2"
    options = ("--init-from", preset, "--freeze-epochs", "1", "--backbone-lr-factor", "0.1")
    run_cli("train", "--data-dir", image_folder, *tiny, *options, "--output", tuned)
    saved = json.loads((tuned / training.CONFIG_FILE).read_text())
    assert (saved["init_from"], saved["freeze_epochs"], saved["backbone_lr_factor"]) == (preset, 1, 0.1)
    assert json.loads((tuned / training.METRICS_FILE).read_text())["epochs_this_run"] == 2
    # Another --model than the source's is refused before the run folder is made.
    config = ExperimentConfig(source=str(image_folder), model="base", image_size=8, init_from=preset)
    with pytest.raises(ValueError, match="pass --model small"):
        run_experiment(config, str(tmp_path / "base"), verbose=0)
    assert not (tmp_path / "base" / training.CONFIG_FILE).exists()
