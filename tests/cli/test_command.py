"""`keras-astro` itself: help, usage errors, and a parser that loads no framework."""

import os
import subprocess
import sys
import textwrap

import keras
import pytest

from keras_astro import cli
from keras_astro.cli.arguments import BACKENDS
from tests.test_case import run_cli_error


def test_help_explains_every_subcommand(capsys):
    commands = ("train", "evaluate", "predict", "demo", "export", "benchmark")
    helps = {}
    for argv in ([], *([command] for command in commands)):
        with pytest.raises(SystemExit) as exit_info:
            cli.main([*argv, "--help"])
        assert exit_info.value.code == 0
        helps[" ".join(argv)] = capsys.readouterr().out
    assert all(command in helps[""] for command in commands)
    for option in ("--dataset", "--data-dir", "--epochs", "--batch-size", "--image-size",
                   "--learning-rate", "--augment", "--mixed-precision", "--remat",
                   "--distribute", "--backend", "--seed", "--output"):
        assert option in helps["train"]
    assert "--top-k" in helps["predict"] and "--output" in helps["demo"]


def test_parser_and_help_import_neither_keras_nor_tensorflow():
    # The choices come from the library's light modules; Keras loads after --backend is read.
    script = textwrap.dedent(
        """
        import contextlib, io, sys
        from keras_astro.cli.command import build_parser, main
        build_parser()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
            main(["--help"])
        print(sorted({"keras", "tensorflow"} & set(sys.modules)))
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_train_help_prints_no_tensorflow_log_lines():
    command = os.path.join(os.path.dirname(sys.executable), "keras-astro")
    argv = [command] if os.path.exists(command) else [sys.executable, "-m", "keras_astro.cli"]
    result = subprocess.run(
        [*argv, "train", "--help"], capture_output=True, text=True, check=True, timeout=120
    )
    printed = result.stdout + result.stderr
    assert "--data-dir" in result.stdout
    for marker in ("oneDNN", "cuda", "absl"):
        assert marker.lower() not in printed.lower(), marker


def test_bad_arguments_are_usage_errors(image_folder, tmp_path, capsys, monkeypatch):
    train = ("train", "--data-dir", image_folder, "--output", tmp_path / "out")
    assert "expected an integer >= 8" in run_cli_error(capsys, *train, "--image-size", "4")
    assert "invalid choice: 'nope'" in run_cli_error(capsys, *train, "--backend", "nope")
    other = next(backend for backend in BACKENDS if backend != keras.backend.backend())
    assert "already imported" in run_cli_error(capsys, *train, "--backend", other)
    fraction = "expected a finite number > 0 and <= 1, got"
    assert f"{fraction} '0'" in run_cli_error(capsys, *train, "--center-crop", "0")
    assert f"{fraction} '1.5'" in run_cli_error(capsys, *train, "--center-crop", "1.5")
    assert "invalid choice: 'inverse'" in run_cli_error(capsys, *train, "--class-weight", "inverse")
    assert "not allowed with argument --data-dir" in run_cli_error(capsys, *train, "--data-file", "x.h5")
    missing = str(tmp_path / "x.h5")
    assert f"--data-file {missing!r} is not a file" in run_cli_error(
        capsys, "train", "--data-file", missing, "--output", tmp_path / "out"
    )
    assert "Unknown dataset 'no_such_dataset'" in run_cli_error(
        capsys, "train", "--dataset", "no_such_dataset", "--output", tmp_path / "out"
    )
    assert not (tmp_path / "out").exists()
    monkeypatch.setenv("KERAS_BACKEND", "nope")
    assert "KERAS_BACKEND='nope'" in run_cli_error(capsys, "predict", "model.keras", "image.png")


def test_ctrl_c_says_how_to_resume():
    from keras_astro.cli.command import _interrupted, build_parser

    parser = build_parser()
    train = parser.parse_args(["train", "--dataset", "digits", "--output", "runs/d"])
    assert "kept in runs/d; run the same command to resume" in _interrupted(train)
    predict = parser.parse_args(["predict", "m.keras", "cutouts/", "--output", "t.csv"])
    assert "chunk is kept beside t.csv; run the same command to resume" in _interrupted(predict)
    printing = parser.parse_args(["predict", "m.keras", "a.fits"])
    assert _interrupted(printing) == "keras-astro predict: interrupted."
