"""benchmarks/harness.py (a script of the repository, imported by path) in a tiny form."""

import argparse

import keras
import pytest


@pytest.fixture(scope="module")
def harness(load_script):
    return load_script("benchmarks/harness.py")


@pytest.fixture
def parser(harness):
    parser = argparse.ArgumentParser()
    harness.add_arguments(parser)
    return parser


def test_tiny_benchmark_writes_a_markdown_table(harness, parser, tmp_path):
    output = tmp_path / "results.md"
    args = parser.parse_args(
        [
            "--backends", keras.backend.backend(),
            "--configs", "small",
            "--image-size", "8",
            "--batch-size", "4",
            "--steps", "2",
            "--warmup", "1",
            "--modes", "train",
            "--output", str(output),
        ]
    )
    table = harness.run(args)
    assert output.read_text() == table
    lines = table.splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    for column in ("backend", "train img/s", "train x ref", "train GFLOP/s", "train % peak",
                   "train peak RSS MiB", "infer img/s"):
        assert column in header
    rows = {line.split("|")[1].strip(): line.split("|") for line in lines[2:4]}
    assert set(rows) == {"reference (torch eager)", keras.backend.backend()}
    measured = rows[keras.backend.backend()]
    images_per_s = float(measured[header.index("train img/s") + 1])
    assert images_per_s > 0
    assert measured[header.index("train x ref") + 1].strip().endswith("x")
    assert "Failed measurements" not in table
    assert "FLOPs per image, small" in table


def test_bad_arguments_are_argparse_errors(parser):
    with pytest.raises(SystemExit):
        parser.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--backends", "numpy"])
