"""Tests for keras_astro.training (recipe, resumable fit, evaluate) and keras_astro.plots."""

import csv
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_astro import AstroTransformer, data, plots, training

IMAGE_SIZE = 8
CLASSES = ["a", "b", "c"]


def tiny_model(num_classes=len(CLASSES), **kwargs):
    return AstroTransformer(
        expansion=1,
        stage_depths=(1, 1, 1),
        num_classes=num_classes,
        input_shape=(IMAGE_SIZE, IMAGE_SIZE, 3),
        **kwargs,
    )


@pytest.fixture(scope="module")
def datasets():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (24, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("float32")
    y = np.arange(24) % len(CLASSES)
    return data.from_arrays(x[:16], y[:16], x[16:], y[16:], class_names=CLASSES, batch_size=8)


def compiled_model(epochs):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    training.compile_for_training(model, epochs=epochs, steps_per_epoch=2)
    return model


def metric_names(model):
    return [metric["config"]["name"] for metric in model.get_compile_config()["metrics"]]


def history_epochs(output_dir):
    with open(os.path.join(output_dir, training.HISTORY_FILE), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


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
    training.compile_for_training(model, epochs=1, steps_per_epoch=4, learning_rate=0.01)
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


def test_fit_rejects_class_names_that_disagree_with_the_data(datasets, tmp_path):
    with pytest.raises(ValueError, match="outputs 10"):
        training.fit(tiny_model(num_classes=10), datasets, epochs=1, output_dir=str(tmp_path))
    model = tiny_model(class_names=["x", "y", "z"])
    with pytest.raises(ValueError, match="differ"):
        training.fit(model, datasets, epochs=1, output_dir=str(tmp_path))


@pytest.mark.slow
def test_interrupted_fit_resumes_without_repeating_epochs(datasets, tmp_path, monkeypatch):
    output = str(tmp_path)

    # Die at the worst moment: epoch 1 is in history.csv, but its backup never finished.
    def killed_while_backing_up(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        original(self, epoch, logs)

    original = training._ResumableBackup.on_epoch_end
    monkeypatch.setattr(training._ResumableBackup, "on_epoch_end", killed_while_backing_up)
    with pytest.raises(KeyboardInterrupt):
        training.fit(compiled_model(3), datasets, epochs=3, output_dir=output, verbose=0)
    assert history_epochs(output) == [0, 1]
    monkeypatch.undo()

    history = training.fit(compiled_model(3), datasets, epochs=3, output_dir=output, verbose=0)
    assert history.epoch == [1, 2]  # epoch 0 is not trained again
    assert history_epochs(output) == [0, 1, 2]  # each epoch once, header once
    assert [row["epoch"] for row in training.load_history(os.path.join(output, "history.csv"))] == [0, 1, 2]
    assert not os.path.exists(os.path.join(output, training.BACKUP_DIR))
    reloaded = keras.saving.load_model(os.path.join(output, training.CHECKPOINT_FILE))
    assert reloaded.class_names == CLASSES
    assert os.listdir(os.path.join(output, training.LOGS_DIR))  # TensorBoard


def test_a_kill_while_saving_leaves_the_previous_model_whole(datasets, tmp_path, monkeypatch):
    previous = tiny_model()
    previous.save(tmp_path / training.CHECKPOINT_FILE)

    def killed_while_saving(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(AstroTransformer, "save", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        training.fit(compiled_model(1), datasets, epochs=1, output_dir=str(tmp_path), verbose=0)
    monkeypatch.undo()
    reloaded = keras.saving.load_model(tmp_path / training.CHECKPOINT_FILE)
    for kept, saved in zip(reloaded.weights, previous.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(kept), ops.convert_to_numpy(saved))

    # Running again cleans up the half-written file and trains the unfinished epoch.
    history = training.fit(compiled_model(1), datasets, epochs=1, output_dir=str(tmp_path), verbose=0)
    assert history.epoch == [0] and history_epochs(tmp_path) == [0]


def test_fit_refuses_to_overwrite_a_finished_run(datasets, tmp_path):
    # A finished run: its history is there and its backup folder is gone.
    (tmp_path / training.HISTORY_FILE).write_text("epoch,accuracy,loss\n0,0.5,1.0\n")
    with pytest.raises(ValueError, match="finished run"):
        training.fit(compiled_model(1), datasets, epochs=1, output_dir=str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == [training.HISTORY_FILE]
    assert training.finished(str(tmp_path)) and not training.finished(str(tmp_path / "new"))


def test_evaluate_counts_every_image(datasets):
    model = tiny_model()
    results = training.evaluate(model, datasets.test)
    probabilities = model.predict(datasets.test, verbose=0)
    labels = np.arange(16, 24) % len(CLASSES)
    assert results["num_images"] == 8
    assert results["accuracy"] == pytest.approx(np.mean(probabilities.argmax(-1) == labels))
    expected_loss = -np.mean(np.log(probabilities[np.arange(8), labels]))
    assert results["loss"] == pytest.approx(expected_loss, rel=1e-4)
    matrix = results["confusion_matrix"]
    assert matrix.sum() == 8 and list(matrix.sum(axis=1)) == [2, 3, 3]
    assert "top5_accuracy" not in results


def test_attention_maps_are_the_layer_weights():
    images = np.random.default_rng(1).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
    averaged = plots.attention_maps(tiny_model(num_heads=2), images)
    assert averaged.shape == (2, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(averaged.sum(axis=(1, 2)), 1.0, rtol=1e-5)

    # One query's weights times the values must give the layer's output at that pixel.
    model = tiny_model(num_heads=1)
    layer = model.get_layer("relative_attention")
    features = keras.Model(model.input, layer.input)(images)
    tokens = ops.reshape(features, (2, IMAGE_SIZE * IMAGE_SIZE, -1))
    values = ops.convert_to_numpy(ops.split(layer.qkv_dense(tokens), 3, axis=-1)[2])
    attended = ops.convert_to_numpy(keras.Model(model.input, layer.output)(images))
    weights = plots.attention_maps(model, images, query=(2, 5)).reshape(2, -1)
    np.testing.assert_allclose(
        np.einsum("nk,nkc->nc", weights, values), attended[:, 2, 5], atol=1e-5
    )
    with pytest.raises(ValueError, match="query"):
        plots.attention_maps(model, images, query=(IMAGE_SIZE, 0))


def test_plots_write_png_files(tmp_path):
    history = [
        {"epoch": 0, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
        {"epoch": 1, "loss": 0.8, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.6},
    ]
    plots.plot_training_curves(history, str(tmp_path / "curves.png"))
    plots.plot_confusion_matrix(np.eye(3, dtype=int), CLASSES, str(tmp_path / "matrix.png"))
    model = tiny_model(class_names=CLASSES)
    images = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    plots.plot_attention_maps(model, images, str(tmp_path / "attention.png"), labels=[0, 1, 2])
    for name in ("curves.png", "matrix.png", "attention.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="class names"):
        plots.plot_confusion_matrix(np.eye(2), CLASSES, str(tmp_path / "bad.png"))
