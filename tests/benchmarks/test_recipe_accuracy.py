"""benchmarks/recipe_accuracy.py: its settings and its table (the runs need the shared data)."""


def _row(setting, seed, test, **scores):
    return dict(data="rings", image_size=16, batch_size=64, epochs=20, seed=seed,
                setting=setting, val=0.5, test=test, seconds=10.0, **scores)  # fmt: skip


def test_a_setting_names_config_overrides(load_script):
    recipe_accuracy = load_script("benchmarks/recipe_accuracy.py")
    assert recipe_accuracy.parse_setting("default") == {}
    assert recipe_accuracy.parse_setting("lr=1e-3,ema=True,augment=none,ls=0") == {
        "learning_rate": 1e-3, "use_ema": True, "augment": "none", "label_smoothing": 0.0,
    }  # fmt: skip


def test_the_table_pairs_seeds_and_shows_the_last_epoch(load_script):
    recipe_accuracy = load_script("benchmarks/recipe_accuracy.py")
    rows = [
        _row("reference", 0, 0.5), _row("reference", 1, 0.6), _row("reference", 2, 0.9),
        _row("default", 0, 0.7, test_last=0.6), _row("default", 1, 0.7, test_last=0.8),
        _row("lr=1e-3", 3, 0.7),  # no reference for seed 3: no difference to show
    ]  # fmt: skip
    lines = recipe_accuracy.table(rows).splitlines()
    header = [cell.strip() for cell in lines[0].strip("|").split("|")]
    by_setting = {
        cells[4]: dict(zip(header, cells))
        for cells in ([c.strip() for c in line.strip("|").split("|")] for line in lines[2:])
    }
    assert list(by_setting) == ["reference", "default", "lr=1e-3"]
    default = by_setting["default"]
    assert default["seeds"] == "2" and default["test accuracy"] == "70.0% ± 0.0%"
    assert default["test - reference (paired by seed)"] == "+15.0 pt"  # (0.2 + 0.1) / 2
    assert default["test, last epoch"] == "70.0% ± 10.0%"
    assert by_setting["lr=1e-3"]["test - reference (paired by seed)"] == ""
    assert by_setting["reference"]["test, last epoch"] == ""
