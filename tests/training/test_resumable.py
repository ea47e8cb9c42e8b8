"""`fit`: a kill at any moment leaves a run that the next `fit` resumes, never repeats."""

import csv
import os

import keras
import numpy as np
import pytest
from keras import ops

from keras_astro import AstroTransformer, training
from keras_astro.training import resumable
from tests.test_case import CLASSES, learning_rates, tiny_model


def compiled_model(epochs):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    training.compile_for_training(model, epochs=epochs, steps_per_epoch=2)
    return model


def history_epochs(output_dir):
    with open(os.path.join(output_dir, training.HISTORY_FILE), newline="") as f:
        return [int(row["epoch"]) for row in csv.DictReader(f)]


def test_fit_rejects_class_names_that_disagree_with_the_data(tiny_datasets, tmp_path):
    with pytest.raises(ValueError, match="outputs 10"):
        training.fit(tiny_model(num_classes=10), tiny_datasets, epochs=1, output_dir=str(tmp_path))
    model = tiny_model(class_names=["x", "y", "z"])
    with pytest.raises(ValueError, match="differ"):
        training.fit(model, tiny_datasets, epochs=1, output_dir=str(tmp_path))


def test_fit_validates_on_the_validation_split_and_keeps_its_lowest_loss(tmp_path):
    from keras_astro import data

    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (30, 8, 8, 3)).astype("float32")
    y = np.arange(30) % len(CLASSES)
    datasets = data.from_arrays(
        x[:24], y[:24], x[24:], y[24:], class_names=CLASSES, batch_size=8, validation_fraction=0.25
    )
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (18, 6, 6)
    model = compiled_model(3)
    training.fit(model, datasets, epochs=3, output_dir=str(tmp_path), verbose=0)
    history = training.load_history(os.path.join(tmp_path, training.HISTORY_FILE))
    last = model.evaluate(datasets.validation, verbose=0, return_dict=True)
    assert last["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-4)  # not the test split's
    kept = keras.saving.load_model(tmp_path / training.CHECKPOINT_FILE)
    lowest = min(row["val_loss"] for row in history)
    assert training.best_epoch(history)["val_loss"] == lowest
    kept.compile(loss=model.loss, metrics=["accuracy"])
    assert kept.evaluate(datasets.validation, verbose=0, return_dict=True)["loss"] == pytest.approx(lowest, rel=1e-4)


@pytest.mark.slow
def test_interrupted_fit_resumes_without_repeating_epochs(tiny_datasets, tmp_path, monkeypatch):
    output = str(tmp_path)

    # Die at the worst moment: epoch 1 is in history.csv, but its backup never finished.
    def killed_while_backing_up(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("killed")
        original(self, epoch, logs)

    original = resumable._ResumableBackup.on_epoch_end
    monkeypatch.setattr(resumable._ResumableBackup, "on_epoch_end", killed_while_backing_up)
    with pytest.raises(KeyboardInterrupt):
        training.fit(compiled_model(3), tiny_datasets, epochs=3, output_dir=output, verbose=0)
    assert history_epochs(output) == [0, 1]
    monkeypatch.undo()

    history = training.fit(compiled_model(3), tiny_datasets, epochs=3, output_dir=output, verbose=0)
    assert history.epoch == [1, 2]  # epoch 0 is not trained again
    assert history_epochs(output) == [0, 1, 2]  # each epoch once, header once
    assert [row["epoch"] for row in training.load_history(os.path.join(output, "history.csv"))] == [0, 1, 2]
    assert not os.path.exists(os.path.join(output, training.BACKUP_DIR))
    reloaded = keras.saving.load_model(os.path.join(output, training.CHECKPOINT_FILE))
    assert reloaded.class_names == CLASSES
    assert os.listdir(os.path.join(output, training.LOGS_DIR))  # TensorBoard


def augmented_datasets():
    """A new pipeline each call, as a new process builds it: dihedral, 3 batches a pass."""
    from keras_astro import data

    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (30, 8, 8, 3)).astype("float32")
    y = np.arange(30) % len(CLASSES)
    return data.from_arrays(
        x[:24], y[:24], x[24:], y[24:], class_names=CLASSES, batch_size=8, augment="dihedral", seed=5
    )


def dropout_model(epochs):
    keras.utils.set_random_seed(0)
    model = tiny_model(dropout=0.5)
    training.compile_for_training(model, epochs=epochs, steps_per_epoch=3)
    return model


@pytest.mark.slow
def test_a_resumed_run_has_the_history_of_an_uninterrupted_one(tmp_path, monkeypatch):
    # Shuffle order, augmentation and dropout draws all depend on the epoch; a run
    # killed after epoch 1 must continue with epoch 2's, not start them over.
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    training.fit(dropout_model(4), augmented_datasets(), epochs=4, output_dir=straight, verbose=0)

    def killed(self, epoch, logs=None):
        if epoch == 2:
            raise KeyboardInterrupt("killed")

    monkeypatch.setattr(resumable._StopOnNonFiniteLoss, "on_epoch_begin", killed)
    with pytest.raises(KeyboardInterrupt):
        training.fit(dropout_model(4), augmented_datasets(), epochs=4, output_dir=resumed, verbose=0)
    monkeypatch.undo()
    history = training.fit(dropout_model(4), augmented_datasets(), epochs=4, output_dir=resumed, verbose=0)
    assert history.epoch == [2, 3]

    expected = training.load_history(os.path.join(straight, training.HISTORY_FILE))
    received = training.load_history(os.path.join(resumed, training.HISTORY_FILE))
    assert [row["epoch"] for row in received] == [0, 1, 2, 3]
    for want, got in zip(expected, received):
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f"{key} {got['epoch']}")


def test_a_kill_while_saving_leaves_the_previous_model_whole(tiny_datasets, tmp_path, monkeypatch):
    previous = tiny_model()
    previous.save(tmp_path / training.CHECKPOINT_FILE)

    def killed_while_saving(self, filepath, *args, **kwargs):
        with open(filepath, "wb") as f:
            f.write(b"PK\x03\x04 half a model")
        raise KeyboardInterrupt("killed")

    monkeypatch.setattr(AstroTransformer, "save", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        training.fit(compiled_model(1), tiny_datasets, epochs=1, output_dir=str(tmp_path), verbose=0)
    monkeypatch.undo()
    reloaded = keras.saving.load_model(tmp_path / training.CHECKPOINT_FILE)
    for kept, saved in zip(reloaded.weights, previous.weights):
        np.testing.assert_array_equal(ops.convert_to_numpy(kept), ops.convert_to_numpy(saved))

    # Running again cleans up the half-written file and trains the unfinished epoch.
    history = training.fit(compiled_model(1), tiny_datasets, epochs=1, output_dir=str(tmp_path), verbose=0)
    assert history.epoch == [0] and history_epochs(tmp_path) == [0]


def test_fit_refuses_to_overwrite_a_finished_run(tiny_datasets, tmp_path):
    # A finished run: its history is there and its backup folder is gone.
    (tmp_path / training.HISTORY_FILE).write_text("epoch,accuracy,loss\n0,0.5,1.0\n")
    with pytest.raises(ValueError, match="finished run"):
        training.fit(compiled_model(1), tiny_datasets, epochs=1, output_dir=str(tmp_path), verbose=0)
    assert os.listdir(tmp_path) == [training.HISTORY_FILE]
    assert training.training_finished(str(tmp_path))
    assert not training.training_finished(str(tmp_path / "new"))


def ema_model(epochs):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    training.compile_for_training(
        model, epochs=epochs, steps_per_epoch=2, learning_rate=0.01, use_ema=True, ema_momentum=0.5
    )
    return model


def numpy_weights(variables):
    return [ops.convert_to_numpy(v).copy() for v in variables]


def test_ema_weights_are_validated_checkpointed_and_returned(tiny_datasets, tmp_path):
    model = ema_model(2)
    training.fit(model, tiny_datasets, epochs=2, output_dir=str(tmp_path), verbose=0)
    averages = numpy_weights(model.optimizer._model_variables_moving_average)
    # After fit the model holds the averaged weights (not the last step's)...
    for weight, average in zip(numpy_weights(model.trainable_variables), averages):
        np.testing.assert_allclose(weight, average, rtol=1e-6, atol=1e-7)
    # ... and so does the checkpoint of the best epoch, here the last.
    history = training.load_history(os.path.join(tmp_path, training.HISTORY_FILE))
    best = min(range(len(history)), key=lambda i: history[i]["val_loss"])
    if best == len(history) - 1:
        saved = keras.saving.load_model(tmp_path / training.CHECKPOINT_FILE)
        for weight, average in zip(numpy_weights(saved.trainable_variables), averages):
            np.testing.assert_allclose(weight, average, rtol=1e-6, atol=1e-7)
    # The validation loss is the averaged model's.
    evaluated = model.evaluate(tiny_datasets.test, verbose=0, return_dict=True)
    assert evaluated["loss"] == pytest.approx(history[-1]["val_loss"], rel=1e-4)


def test_backup_restores_the_ema_state_so_a_resumed_run_continues_the_same(tiny_datasets, tmp_path):
    # BackupAndRestore's weights file holds the optimizer's variables, the EMA averages
    # too; the backup is taken with the averages swapped into the model, and the resumed
    # run must swap them back before it trains on.
    class State(keras.callbacks.Callback):
        """The weights and averages that epoch 1 starts from; stops the first run there."""

        def __init__(self, kill):
            super().__init__()
            self.kill = kill

        def on_epoch_begin(self, epoch, logs=None):
            if epoch == 1:
                optimizer = self.model.optimizer
                self.weights = numpy_weights(self.model.trainable_variables)
                self.averages = numpy_weights(optimizer._model_variables_moving_average)
                self.iterations = int(ops.convert_to_numpy(optimizer.iterations))
                if self.kill:
                    raise KeyboardInterrupt("killed")

    output = str(tmp_path)
    killed = State(kill=True)
    with pytest.raises(KeyboardInterrupt):
        training.fit(ema_model(2), tiny_datasets, epochs=2, output_dir=output, callbacks=[killed],
                     verbose=0)
    resumed = State(kill=False)
    history = training.fit(ema_model(2), tiny_datasets, epochs=2, output_dir=output,
                           callbacks=[resumed], verbose=0)
    assert history.epoch == [1] and resumed.iterations == killed.iterations == 2
    for before, after in zip(killed.weights + killed.averages, resumed.weights + resumed.averages):
        np.testing.assert_array_equal(before, after)
    # The raw weights and their average differ after a step, so a swap would show.
    assert not all(np.array_equal(w, a) for w, a in zip(killed.weights, killed.averages))


def test_an_uncompiled_model_takes_the_recipe_at_the_batch_size_of_its_data(tiny_datasets, tmp_path):
    model = tiny_model()
    training.fit(model, tiny_datasets, epochs=1, output_dir=str(tmp_path / "data"), verbose=0)
    # The peak over the run's two steps.
    assert max(learning_rates(model, range(3))) == pytest.approx(2e-3 * (8 / 64) ** 0.5)  # batch 8
    model = tiny_model()
    training.fit(model, tiny_datasets.train, tiny_datasets.test, epochs=1,
                 output_dir=str(tmp_path / "tf_data"), verbose=0)
    assert max(learning_rates(model, range(3))) == pytest.approx(2e-3)  # a batch size unknown
