"""`keras-astro train`: what a run writes and prints; the same command resumes or reads it."""

import json
import os
import shutil

import keras
import pytest

from tests.test_case import COLORS, PNG, TINY_TRAIN, folder_contents, run_cli, run_cli_error


def test_train_writes_model_history_metrics_and_pictures(trained):
    output, stdout = trained
    for name in ("model.keras", "history.csv", "metrics.json", "config.json"):
        assert (output / name).is_file()
    for name in ("training_curves.png", "confusion_matrix.png", "attention_maps.png"):
        assert (output / name).read_bytes()[:8] == PNG
    assert os.listdir(output / "logs") and not (output / "backup").exists()
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["backend"] == keras.backend.backend()
    assert metrics["devices"] == 1 and metrics["epochs"] == 1 and metrics["num_test"] == 6
    assert 0 <= metrics["test_accuracy"] <= 1 and metrics["test_loss"] > 0
    assert metrics["keras_version"] == keras.__version__ and metrics["images_per_second"] > 0
    assert list(metrics["per_class_accuracy"]) == list(COLORS)
    assert "step - accuracy" in stdout  # Keras' progress bar
    assert stdout.strip().splitlines()[-1].startswith("small on images")
    model = keras.saving.load_model(output / "model.keras")
    assert model.class_names == list(COLORS)


def test_same_command_again_does_not_retrain(trained, image_folder):
    output, _ = trained
    before = folder_contents(output)
    stdout = run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    assert "Already finished" in stdout
    assert folder_contents(output) == before


@pytest.mark.parametrize("damage", ["{}", '{"model": "small", '])
def test_a_damaged_metrics_file_is_one_line_saying_what_to_do(damage, trained, image_folder, tmp_path, capsys):
    output = tmp_path / "run"
    shutil.copytree(trained[0], output)
    (output / "metrics.json").write_text(damage)
    message = run_cli_error(capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    assert message.count("\n") == 1
    assert f"{output / 'metrics.json'} is damaged (" in message
    assert "Delete that file and run the same command again" in message


def test_another_configuration_is_refused_and_nothing_changes(trained, image_folder, capsys):
    output, _ = trained
    before = folder_contents(output)
    arguments = [arg if arg != "1" else "2" for arg in TINY_TRAIN]  # --epochs 2
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, *arguments, "--output", output
    )
    assert "another configuration" in message and "epochs 1 there, 2 now" in message
    assert folder_contents(output) == before


def test_a_folder_without_a_run_is_refused(image_folder, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, "--output", tmp_path
    )
    assert "holds no keras-astro run" in message
    assert os.listdir(tmp_path) == ["notes.txt"]


def test_find_lr_draws_the_range_test_and_leaves_the_folder_to_train_in(image_folder, tmp_path):
    from keras_astro.training.experiment import ExperimentConfig, experiment_state

    output = tmp_path / "run"
    stdout = run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--find-lr", "--output", output)
    assert "suggested --learning-rate" in stdout
    assert os.listdir(output) == ["lr_finder.png"]
    assert (output / "lr_finder.png").read_bytes()[:8] == PNG
    config = ExperimentConfig(source=str(image_folder), image_size=8, epochs=1, batch_size=6)
    assert experiment_state(config, str(output)) == "new"
    # A given path instead of the run folder, in a folder that does not exist yet.
    plot = tmp_path / "plots" / "elsewhere.png"
    run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--find-lr", plot, "--output", output)
    assert plot.read_bytes()[:8] == PNG


def test_ema_and_warmup_fraction_reach_the_run(image_folder, tmp_path):
    output = tmp_path / "run"
    run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--ema", "--ema-momentum", "0.9",
            "--warmup-fraction", "0.25", "--output", output)
    config = json.loads((output / "config.json").read_text())
    assert (config["use_ema"], config["ema_momentum"], config["warmup_fraction"]) == (True, 0.9, 0.25)
    assert config["warmup_epochs"] is None
    assert (output / "model.keras").is_file() and (output / "metrics.json").is_file()


def test_recipe_options_are_checked_before_any_work(image_folder, tmp_path, capsys):
    cases = [
        ("--warmup-fraction", "0.6", "expected a finite number >= 0 and <= 0.5"),
        ("--warmup-fraction", "nan", "expected a finite number"),
        ("--dropout", "1", "expected a finite number >= 0 and < 1"),
        ("--dropout", "1.5", "expected a finite number >= 0 and < 1"),
        ("--ema-momentum", "1", "expected a finite number >= 0 and < 1"),
        ("--label-smoothing", "1", "expected a finite number >= 0 and < 1"),
    ]
    output = tmp_path / "run"
    for option, value, expected in cases:
        message = run_cli_error(
            capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, option, value,
            "--output", output,
        )
        assert f"{option}: {expected}" in message
    assert not output.exists()


def test_help_documents_the_recipe_options():
    import contextlib
    import io

    import pytest

    from keras_astro import cli

    stdout = io.StringIO()
    with pytest.raises(SystemExit), contextlib.redirect_stdout(stdout):
        cli.main(["train", "--help"])
    text = " ".join(stdout.getvalue().split())
    for option in ("--warmup-fraction", "--ema, --no-ema", "--ema-momentum", "--find-lr [PNG]"):
        assert option in text


def test_every_train_option_reaches_the_config_or_is_a_run_option():
    from keras_astro.cli.command import build_parser
    from keras_astro.cli.train import experiment_config

    args = build_parser().parse_args(["train", "--dataset", "digits", "--epochs", "3"])
    assert experiment_config(args).epochs == 3
    args.new_option = 1  # parsed, but in neither list
    with pytest.raises(TypeError, match=r"\['new_option'\]"):
        experiment_config(args)


def test_each_recipe_and_source_field_is_an_option_with_its_default():
    from keras_astro.cli.command import build_parser
    from keras_astro.data.options import SourceOptions, options_from
    from keras_astro.training.recipe import Recipe

    args = build_parser().parse_args(["train", "--dataset", "digits"])
    assert options_from(Recipe, args) == Recipe()
    assert options_from(SourceOptions, args) == SourceOptions()
    args = build_parser().parse_args(
        ["train", "--dataset", "digits", "--no-ema", "--clipnorm", "2", "--class-names", "a, b"]
    )
    assert options_from(Recipe, args) == Recipe(use_ema=False, clipnorm=2.0)
    assert options_from(SourceOptions, args).class_names == ("a", "b")


def test_a_field_added_to_a_group_is_an_option(capsys):
    import argparse
    import dataclasses

    from keras_astro.cli.arguments import add_options
    from keras_astro.data.options import POSITIVE, option, options_from
    from keras_astro.training.recipe import Recipe

    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Wider(Recipe):
        beta_2: float = option(0.999, "AdamW's beta_2 (default: %(default)s)", bounds=POSITIVE)
        lookahead: bool = option(False, "wrap the optimizer in Lookahead", group="extras")

    parser = argparse.ArgumentParser()
    add_options(parser, Wider)
    assert options_from(Wider, parser.parse_args([])) == Wider()
    parsed = options_from(Wider, parser.parse_args(["--beta-2", "0.9", "--lookahead"]))
    assert (parsed.beta_2, parsed.lookahead) == (0.9, True)
    with pytest.raises(SystemExit):
        parser.parse_args(["--beta-2", "inf"])
    assert "--beta-2: expected a finite number > 0, got 'inf'" in capsys.readouterr().err
    help_text = parser.format_help()
    assert "extras:" in help_text and "AdamW's beta_2 (default: 0.999)" in help_text
