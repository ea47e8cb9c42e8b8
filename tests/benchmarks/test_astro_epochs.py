"""benchmarks/astro_epochs.py: the rules for which weights to keep, scored without test/."""

import json

import pytest

from tests.test_case import write_fits_folder


@pytest.mark.slow
def test_rules_are_scored_on_a_split_of_train_and_test_is_not_read(load_script, tmp_path):
    write_fits_folder(tmp_path / "data", per_split=(("train", 6),))
    (tmp_path / "data" / "test").mkdir()  # empty: reading it would fail
    results = tmp_path / "rules.jsonl"
    load_script("benchmarks/astro_epochs.py").main([
        str(tmp_path / "data"), "--epochs", "2", "--image-size", "8", "--batch-size", "4",
        "--check-fraction", "0.34", "--ema", "--dropout", "0.5", "--clip-sigma", "3",
        "--learning-rate", "0.001", "--results", str(results),
    ])
    *epochs, summary = [json.loads(line) for line in results.read_text().splitlines()]
    assert [row["epoch"] for row in epochs] == [1, 2]
    assert {row["scored"] for row in epochs} == {"check"}
    assert {
        (row["dropout"], row["clip_sigma"], row["learning_rate"]) for row in [*epochs, summary]
    } == {(0.5, 3.0, 0.001)}
    for row in epochs:
        assert {"val_loss_one_view", "val_loss_8_views", "ema_val_loss_one_view",
                "ema_val_loss_8_views"} <= set(row)
    rules = summary["rules"]
    assert sorted(rules) == sorted(
        f"{kind}_{rule}" for kind in ("raw", "ema")
        for rule in ("lowest_val_loss", "lowest_val_loss_8_views", "last")
    )
    assert rules["raw_last"]["epoch"] == rules["ema_last"]["epoch"] == 2
    # 2 of each class's 6 training cutouts are scored: accuracies in quarters.
    assert all(score[view] * 4 == round(score[view] * 4)
               for score in rules.values() for view in ("one_view", "views_8"))
