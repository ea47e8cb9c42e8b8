"""benchmarks/calibration.py: a finished run's calibration, refitted on its own splits."""

import json

import pytest

from tests.test_case import TINY_TRAIN, run_cli


@pytest.mark.slow
def test_the_table_refits_the_run_s_temperature_and_scores_its_test_split(
    image_folder, load_script, tmp_path, capsys
):
    run = tmp_path / "run"
    run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--epochs", "2", "--output", run)
    metrics = json.loads((run / "metrics.json").read_text())
    capsys.readouterr()
    load_script("benchmarks/calibration.py").main([str(run)])
    header, _, row = capsys.readouterr().out.strip().splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    cells = dict(zip(names, (cell.strip() for cell in row.strip("|").split("|"))))
    assert len(cells) == len(names) == 10
    assert cells["test"] == str(metrics["num_test"])
    temperature = metrics["temperature"]
    assert cells["T"] == ("-" if temperature is None else f"{temperature:.3f}")
    before, after = cells["ECE before / after"].split(" / ")
    assert float(after) == pytest.approx(metrics["test_ece"], abs=1e-3)
    chance, p_values = cells["ECE by noise alone (p before / after)"].split(" (")
    assert float(chance) == pytest.approx(metrics["test_ece_chance"], abs=1e-3)
    assert p_values.rstrip(")").split(" / ")[1] == f"{metrics['test_ece_p_value']:.2f}"
    assert 0 <= float(cells["ECE, T fitted on test"]) <= 1


def test_a_folder_that_is_not_a_run_is_refused(load_script, tmp_path):
    with pytest.raises(ValueError, match="is not a keras-astro train run folder"):
        load_script("benchmarks/calibration.py").main([str(tmp_path)])
