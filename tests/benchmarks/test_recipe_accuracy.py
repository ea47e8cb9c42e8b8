"""benchmarks/recipe_accuracy.py: its settings and its table (the runs need the shared data)."""


def _row(setting, seed, test, **scores):
    return dict(data="rings", image_size=16, batch_size=64, epochs=20, seed=seed,
                setting=setting, val=0.5, test=test, seconds=10.0, **scores)


def test_a_setting_names_config_overrides(load_script):
    recipe_accuracy = load_script("benchmarks/recipe_accuracy.py")
    assert recipe_accuracy.parse_setting("default") == {}
    assert recipe_accuracy.parse_setting("lr=1e-3,ema=True,augment=none,ls=0") == {
        "learning_rate": 1e-3, "use_ema": True, "augment": "none", "label_smoothing": 0.0,
    }


def test_the_table_pairs_seeds_and_shows_the_last_epoch(load_script):
    recipe_accuracy = load_script("benchmarks/recipe_accuracy.py")
    rows = [
        _row("reference", 0, 0.5), _row("reference", 1, 0.6), _row("reference", 2, 0.9),
        _row("default", 0, 0.7, test_last=0.6), _row("default", 1, 0.7, test_last=0.8),
        _row("lr=1e-3", 3, 0.7),  # no reference for seed 3: no difference to show
    ]
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


def _epochs_row(seed, val_a, val_b, loss_a, loss_b, test):
    val = [(a + b) / 2 for a, b in zip(val_a, val_b)]  # halves of equal size
    loss = [(a + b) / 2 for a, b in zip(loss_a, loss_b)]
    return _row("default", seed, test[-1], val_epochs=val, val_a_epochs=val_a, val_b_epochs=val_b,
                loss_epochs=loss, loss_a_epochs=loss_a, loss_b_epochs=loss_b,
                test_epochs=test)


def test_the_rule_table_replays_each_rule_choosing_on_one_half_and_scoring_on_the_other(
    load_script,
):
    recipe_accuracy = load_script("benchmarks/recipe_accuracy.py")
    # Half A ties epochs 1 and 3, half B peaks at epoch 2; the loss is lowest at epoch 2.
    row = _epochs_row(
        0, val_a=[0.6, 0.5, 0.6], val_b=[0.5, 0.7, 0.6], loss_a=[0.9, 0.5, 0.7],
        loss_b=[0.9, 0.4, 0.8], test=[0.1, 0.2, 0.3],
    )
    lines = recipe_accuracy.rule_table([row, _row("reference", 0, 0.5)]).splitlines()
    cells = {line.split("|")[7].strip(): [c.strip() for c in line.split("|")[8:11]]
             for line in lines[2:]}
    # First of ties: A picks epoch 1 (B scores 0.5), B picks epoch 2 (A scores 0.5); on
    # the whole split, epochs 2 and 3 tie at 0.6 and epoch 2 is kept (test 0.2).
    assert cells["best accuracy, first of ties"] == ["50.0%", "20.0%", "2"]
    # Last of ties: A picks epoch 3 (B: 0.6), B epoch 2 (A: 0.5); whole split: epoch 3.
    assert cells["best accuracy, last of ties"] == ["55.0%", "30.0%", "3"]
    assert cells["lowest loss"] == ["60.0%", "20.0%", "2"]  # epoch 2 everywhere
    assert cells["last epoch"] == ["60.0%", "30.0%", "3"]
    assert len(lines) == 2 + 4  # the reference row records no epochs: not in this table


def test_epoch_scores_records_every_epoch_on_both_halves_and_test(load_script, tiny_datasets):
    import keras
    import numpy as np

    from keras_astro import AstroTransformer

    recipe_accuracy = load_script("benchmarks/recipe_accuracy.py")
    keras.utils.set_random_seed(0)
    model = AstroTransformer(expansion=1, stage_depths=(1, 1, 1), input_shape=(8, 8, 3),
                             num_classes=3)
    model.compile("adam", "categorical_crossentropy", metrics=["accuracy"])
    callback = recipe_accuracy.epoch_scores(tiny_datasets.test, tiny_datasets.test)
    history = model.fit(tiny_datasets.train, validation_data=tiny_datasets.test, epochs=2,
                        callbacks=[callback], verbose=0)
    scores = callback.scores
    assert all(len(values) == 2 for values in scores.values())
    np.testing.assert_allclose(scores["val_epochs"], history.history["val_accuracy"], atol=1e-6)
    np.testing.assert_allclose(scores["test_epochs"], scores["val_epochs"])  # the same split
    # 8 test images of classes (2, 3, 3), each class alternated: halves of 1+2+2 and 1+1+1.
    for epoch in range(2):
        right = 5 * scores["val_a_epochs"][epoch] + 3 * scores["val_b_epochs"][epoch]
        assert abs(right / 8 - scores["val_epochs"][epoch]) < 1e-6
    np.testing.assert_allclose(scores["loss_epochs"], history.history["val_loss"], rtol=1e-4)
