"""`run_experiment`, the Python API of `keras-astro train`: one run folder per configuration.

tests/cli/test_train.py checks what the command prints and its usage errors; this
checks what the function returns and writes.
"""

import dataclasses
import json
import os
import shutil

import keras
import pytest

from keras_astro import training
from keras_astro.layers.preprocessing import LUPTON_SOFTENING, MAD_TO_SIGMA
from keras_astro.models.saving import load_model
from keras_astro.training import ExperimentConfig, resumable, run_experiment
from tests.test_case import COLORS, FITS_CLASSES, PNG, folder_contents, write_class_folders


@pytest.fixture(scope="module")
def experiment(image_folder, tmp_path_factory):
    """A finished run: small, 8x8, 1 epoch, batches of 6 (9 train, 3 validation and 6
    test images)."""
    config = ExperimentConfig(
        source=str(image_folder), model="small", epochs=1, batch_size=6, image_size=8
    )
    output = tmp_path_factory.mktemp("experiment") / "run"
    return config, output, run_experiment(config, str(output), verbose=0)


def test_writes_the_returned_metrics_the_config_the_model_and_pictures(experiment, image_folder):
    config, output, metrics = experiment
    assert json.loads((output / training.METRICS_FILE).read_text()) == metrics
    saved_config = json.loads((output / training.CONFIG_FILE).read_text())
    data = saved_config.pop(training.run_folder.DATA_KEY)
    assert saved_config == config.to_json(keras.backend.backend())
    assert data["class_names"] == list(COLORS)
    assert (data["num_train"], data["num_validation"], data["num_test"]) == (9, 3, 6)
    assert len(data["fingerprint"]) == 16
    assert (metrics["num_train"], metrics["num_validation"], metrics["num_test"]) == (9, 3, 6)
    assert metrics["epochs_this_run"] == 1
    assert metrics["dataset"] == image_folder.name and metrics["test_split"] == "test"
    assert metrics["validation_split"] == "held-out (10% of train, stratified)"
    assert load_model(output / training.CHECKPOINT_FILE).class_names == list(COLORS)
    for picture in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        assert (output / picture).read_bytes()[:8] == PNG


def test_the_saved_model_holds_the_temperature_fitted_on_validation(experiment):
    config, output, metrics = experiment
    assert config.calibrate and config.to_json("tensorflow")["calibrate"] is True
    model = load_model(output / training.CHECKPOINT_FILE)
    assert model.temperature == metrics["temperature"] > 0
    for key in ("ece", "nll", "brier"):
        assert metrics[f"test_{key}"] >= 0 and metrics[f"test_{key}_uncalibrated"] >= 0
    assert metrics["calibration_bins"] == 15
    assert (output / "reliability.png").read_bytes()[:8] == PNG
    assert not [name for name in os.listdir(output) if "partial" in name]


def test_a_run_killed_after_calibrating_keeps_its_temperature(experiment, tmp_path, monkeypatch):
    from keras_astro.training import calibration

    config, output, metrics = experiment
    copy = tmp_path / "run"
    shutil.copytree(output, copy)
    os.remove(copy / training.METRICS_FILE)  # killed while evaluating, after the save

    def no_second_fit(*args, **kwargs):
        raise AssertionError("the temperature was fitted twice")

    monkeypatch.setattr(calibration, "calibrate_model", no_second_fit)
    resumed = run_experiment(config, str(copy), verbose=0)
    assert resumed["epochs_this_run"] == 0
    for key in ("temperature", "test_accuracy", "test_ece", "test_ece_uncalibrated"):
        assert resumed[key] == pytest.approx(metrics[key])


def test_the_calibration_benchmark_rebuilds_the_run_and_refits_its_temperature(
    experiment, load_script, capsys
):
    config, output, metrics = experiment
    script = load_script("benchmarks/calibration.py")
    assert script.run_config(output)[0] == config
    script.main([str(output)])
    row = capsys.readouterr().out.strip().splitlines()[-1].split(" | ")
    assert row[1:3] == [str(metrics["num_test"]), f"{metrics['temperature']:.3f}"]
    assert row[4].split(" / ")[1] == f"{metrics['test_ece']:.3f}"


def test_the_same_config_returns_the_metrics_without_training(experiment, monkeypatch):
    config, output, metrics = experiment
    before = folder_contents(output)

    def no_training(*args, **kwargs):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(resumable, "fit", no_training)
    assert run_experiment(config, str(output), verbose=0) == metrics
    assert folder_contents(output) == before


def test_another_config_is_refused_with_the_differences(experiment):
    config, output, _ = experiment
    before = folder_contents(output)
    other = dataclasses.replace(config, learning_rate=3e-3)
    with pytest.raises(ValueError, match=r"a finished run of another configuration "
                       r"\(learning_rate None there, 0\.003 now\)"):
        run_experiment(other, str(output), verbose=0)
    assert folder_contents(output) == before


@pytest.mark.parametrize("change", ["rename a class", "remove an image"])
def test_a_run_does_not_resume_on_changed_data(change, image_folder, tmp_path, monkeypatch):
    source = tmp_path / "images"
    shutil.copytree(image_folder, source)
    config = ExperimentConfig(source=str(source), model="small", epochs=1, batch_size=6, image_size=8)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(resumable, "fit", killed)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(config, str(tmp_path / "run"), verbose=0)
    # Killed after its first epoch: there is a run to lose.
    (tmp_path / "run" / training.HISTORY_FILE).write_text("epoch,accuracy,loss\n0,0.5,1.0\n")
    if change == "rename a class":
        for split in ("train", "test"):
            (source / split / "cat").rename(source / split / "renamed")
        expected = r"class_names \['cat', 'dog', 'fish'\] then, \['dog', 'fish', 'renamed'\] now"
    else:
        os.remove(next((source / "train" / "cat").iterdir()))
        expected = r"num_train 9 then, 8 now; fingerprint '\w+' then, '\w+' now"
    before = folder_contents(tmp_path / "run")
    with pytest.raises(ValueError, match=rf"The data changed since the run .*\({expected}"):
        run_experiment(config, str(tmp_path / "run"), verbose=0)
    assert folder_contents(tmp_path / "run") == before


def test_a_run_whose_first_epoch_failed_starts_over_on_the_fixed_data(tmp_path, capsys):
    # A damaged image stops the first epoch; the user removes it, as the error says.
    write_class_folders(tmp_path / "images" / "train", per_class=4)
    write_class_folders(tmp_path / "images" / "test", per_class=2)
    damaged = tmp_path / "images" / "train" / "dog" / "0.png"
    damaged.write_bytes(damaged.read_bytes()[:40])
    config = ExperimentConfig(
        source=str(tmp_path / "images"), model="small", epochs=1, batch_size=6, image_size=8
    )
    output = tmp_path / "run"
    with pytest.raises(Exception, match="Cannot read or decode image file"):  # tf.data wraps it
        run_experiment(config, str(output), verbose=0)
    os.remove(damaged)
    capsys.readouterr()
    metrics = run_experiment(config, str(output), verbose=0)
    assert (
        f"Starting the run in {output} over: the data changed since it started (num_train 9 "
        "then, 8 now;" in capsys.readouterr().out
    )
    assert (metrics["num_train"], metrics["epochs_this_run"]) == (8, 1)
    recorded = json.loads((output / training.CONFIG_FILE).read_text())[training.run_folder.DATA_KEY]
    assert recorded["num_train"] == 8


def test_fits_folder_run_adapts_the_flux_statistics_and_scores_with_tta(
    fits_folder, tmp_path, monkeypatch
):
    weights = []

    def recording_fit(*args, class_weight=None, **kwargs):
        weights.append(class_weight)
        return original(*args, class_weight=class_weight, **kwargs)

    original = resumable.fit
    monkeypatch.setattr(resumable, "fit", recording_fit)
    config = ExperimentConfig(
        source=str(fits_folder), model="small", epochs=1, batch_size=4, image_size=8,
        center_crop=0.5, augment="dihedral", class_weight="balanced", normalization="dataset",
        learning_rate=2e-3,  # batch 4's default, 5e-4, leaves a temperature unconstrained
    )
    metrics = run_experiment(config, str(tmp_path), verbose=0)
    assert (metrics["normalization"], metrics["clip_sigma"]) == ("dataset", None)
    assert metrics["learning_rate"] == 2e-3
    assert weights == [{0: 1.0, 1: 1.0}]  # 4 training cutouts of each class
    assert (metrics["preprocessing"], metrics["bands"], metrics["center_crop"]) == ("flux", 1, 0.5)
    assert (metrics["num_train"], metrics["num_validation"], metrics["num_test"]) == (6, 2, 4)
    for key in ("test_accuracy_tta", "test_balanced_accuracy_tta", "test_balanced_accuracy",
                "test_accuracy_one_view"):
        assert 0 <= metrics[key] <= 1, key
    # Trained with dihedral views, the saved model averages them: its accuracy is theirs.
    assert metrics["test_time_augmentation"] == "dihedral"
    assert metrics["test_accuracy"] == metrics["test_accuracy_tta"]
    assert list(metrics["per_class"]) == list(FITS_CLASSES)
    for scores in metrics["per_class"].values():
        assert set(scores) == {"precision", "recall", "f1"}
    assert metrics["per_class"]["fri"]["recall"] == metrics["per_class_accuracy"]["fri"]
    assert (tmp_path / "confusion_matrix_normalized.png").read_bytes()[:8] == PNG

    model = load_model(tmp_path / training.CHECKPOINT_FILE)
    assert (model.preprocessing, model.center_crop, model.image_shape) == ("flux", 0.5, (8, 8, 1))
    assert model.test_time_augmentation == "dihedral" and model.temperature is not None
    # Adapted to the training batches: the central halves hold 10 (fri) and 20 (frii),
    # and the shifts fill in zeros, so the robust noise is 5 or 10, and the stretched
    # mean is positive.
    softening, mean, std = model.get_layer("flux_normalization").get_weights()
    assert LUPTON_SOFTENING * MAD_TO_SIGMA * 5 <= softening[0] <= LUPTON_SOFTENING * MAD_TO_SIGMA * 10
    assert mean[0] > 0 and 0 < std[0] != 1
    assert_scores_are_the_models(metrics, model, fits_folder)


def test_a_run_without_views_scores_them_beside_the_model(fits_folder, tmp_path):
    config = ExperimentConfig(
        source=str(fits_folder), model="small", epochs=1, batch_size=4, image_size=8,
        center_crop=0.5, augment="dihedral", test_time_augmentation="none",
    )
    metrics = run_experiment(config, str(tmp_path), verbose=0)
    model = load_model(tmp_path / training.CHECKPOINT_FILE)
    assert metrics["test_time_augmentation"] is None and model.test_time_augmentation is None
    assert "test_accuracy_one_view" not in metrics
    assert_scores_are_the_models(metrics, model, fits_folder)


def assert_scores_are_the_models(metrics, model, fits_folder):
    """metrics.json's scores, all derived from one pass per view, are those that
    `evaluate` gives the saved model, its views apart (one view when it averages 8, the
    8 averaged when not) and the model without its temperature."""
    from keras_astro.data import load_datasets
    from keras_astro.models.calibration import rebuild, with_temperature
    from keras_astro.training.evaluation import evaluate

    test = load_datasets(str(fits_folder), image_size=8, batch_size=4, center_crop=0.5).test
    if model.test_time_augmentation:
        views = evaluate(rebuild(model, test_time_augmentation=None), test), "_one_view"
    else:
        views = evaluate(model, test, tta=True), "_tta"
    for results, suffix in ((evaluate(model, test), ""), views):
        for key in ("accuracy", "balanced_accuracy", "ece", "nll", "brier"):
            assert metrics[f"test_{key}{suffix}"] == pytest.approx(results[key], rel=1e-4, abs=1e-6), (
                key + suffix
            )
    if model.temperature is not None:
        plain = evaluate(with_temperature(model, None), test)
        for key in ("ece", "nll", "brier"):
            assert metrics[f"test_{key}_uncalibrated"] == pytest.approx(plain[key], rel=1e-4, abs=1e-6)


def test_an_unknown_class_weight_is_refused_before_the_run_folder_is_made(image_folder, tmp_path):
    config = ExperimentConfig(source=str(image_folder), image_size=8, class_weight="inverse")
    with pytest.raises(ValueError, match="`class_weight` must be None or 'balanced'"):
        run_experiment(config, str(tmp_path / "run"))
    assert not (tmp_path / "run").exists()


def test_a_config_written_before_the_recipe_options_still_resumes(experiment, tmp_path):
    # keras-astro before warmup_fraction, EMA and per-image normalization: config.json has
    # warmup_epochs 1.0 and none of the new keys; it trained without EMA, with data-set
    # statistics.
    from keras_astro.training.experiment import experiment_state

    config, output, _ = experiment
    old = config.to_json(keras.backend.backend())
    for key in ("warmup_fraction", "use_ema", "ema_momentum", "normalization", "clip_sigma"):
        del old[key]
    old["warmup_epochs"] = 1.0
    (tmp_path / training.CONFIG_FILE).write_text(json.dumps(old))
    (tmp_path / training.HISTORY_FILE).write_text("epoch,accuracy,loss\n0,0.5,1.0\n")
    (tmp_path / "backup").mkdir()
    same = dataclasses.replace(config, warmup_epochs=1.0, use_ema=False, normalization="dataset")
    assert experiment_state(same, str(tmp_path)) == training.run_folder.RESUME
    with pytest.raises(ValueError, match=r"normalization 'dataset' there, None now"):
        experiment_state(dataclasses.replace(same, normalization=None), str(tmp_path))
    # Today's defaults are another recipe: refused, with what to pass to resume.
    with pytest.raises(ValueError, match=r"warmup_epochs 1\.0 there, None now"):
        experiment_state(dataclasses.replace(config, use_ema=False), str(tmp_path))
    with pytest.raises(ValueError, match=r"use_ema False there, True now"):
        experiment_state(dataclasses.replace(same, use_ema=True), str(tmp_path))


def test_config_json_holds_the_new_recipe_options(experiment):
    config, output, _ = experiment
    saved = json.loads((output / training.CONFIG_FILE).read_text())
    recipe = {key: saved[key] for key in ("warmup_fraction", "warmup_epochs", "use_ema", "ema_momentum")}
    assert recipe == {
        "warmup_fraction": config.warmup_fraction, "warmup_epochs": None,
        "use_ema": config.use_ema, "ema_momentum": None,
    }


def test_config_json_has_the_keys_and_values_of_a_run_folder_written_before_the_groups():
    # tests/data/config_from_main.json: `to_json` of this config before `Recipe` and
    # `SourceOptions` existed. run_folder compares configs key by key.
    config = ExperimentConfig(
        source="digits", model="small", epochs=4, image_size=16, batch_size=32,
        learning_rate=1e-3, warmup_epochs=1.0, use_ema=True, clipnorm=1.0,
        class_names=("a", "b"), images_key="x", split_column="", tfds_data_dir="/data",
        validation_fraction=0.2, dropout=0.1,
    )
    tests = os.path.dirname(os.path.dirname(__file__))
    # Fields added since hold their defaults, which `experiment_state` fills in.
    added = {"calibrate": True, "test_time_augmentation": "auto"}
    with open(os.path.join(tests, "data", "config_from_main.json")) as f:
        assert config.to_json("tensorflow") == {**json.load(f), **added}


def test_the_config_passes_its_recipe_and_source_options_whole():
    from keras_astro.data.options import SourceOptions
    from keras_astro.training.recipe import Recipe

    config = ExperimentConfig(source="digits", learning_rate=1e-3, tfds_data_dir="/data", seed=3)
    assert config.recipe == Recipe(learning_rate=1e-3)
    assert config.source_options == SourceOptions(tfds_data_dir="/data")
    assert config.source_options.load_keywords()["data_dir"] == "/data"


def test_the_header_names_each_split_with_its_images_per_class(image_folder):
    from keras_astro.data import load_datasets
    from keras_astro.training.experiment import data_header
    from tests.test_case import tiny_model

    datasets = load_datasets(image_folder, image_size=8, batch_size=6, center_crop=0.5)
    config = ExperimentConfig(source=str(image_folder), epochs=3, batch_size=6, image_size=8)
    header = data_header(config, datasets, tiny_model(normalization="image", clip_sigma=3.0), 2)
    data_line, splits_line, input_line = header.split("\n")
    assert data_line == (
        f"Data: {image_folder.name}, 3 classes, images per class (train / validation / test): "
        "cat 3/1/2, dog 3/1/2, fish 3/1/2; 9 / 3 / 6 in all."
    )
    assert splits_line == (
        "Splits: the epoch is chosen on held-out (10% of train, stratified), scored on test."
    )
    assert input_line == (
        "Input: pixels with 3 band(s), the central 0.5 of each side, resized to 8x8, normalized "
        "per image, clipped below 3 sigma; augmentation basic; 3 epochs of 2 steps of 6 images, "
        "peak learning rate 0.00061."
    )


def test_the_header_counts_one_epoch_of_one_step_in_the_singular(image_folder):
    from keras_astro.data import load_datasets
    from keras_astro.training.experiment import data_header
    from tests.test_case import tiny_model

    datasets = load_datasets(image_folder, image_size=8, batch_size=16)
    config = ExperimentConfig(source=str(image_folder), epochs=1, batch_size=16, image_size=8)
    header = data_header(config, datasets, tiny_model(), 1)
    assert header.endswith("; 1 epoch of 1 step of 16 images, peak learning rate 0.001.")
