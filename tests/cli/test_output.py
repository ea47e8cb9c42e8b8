"""What the commands print: no escape codes in a log, labelled numbers, help as written."""

import pytest

from keras_astro import cli, data


def test_training_output_is_one_line_per_epoch_when_not_a_terminal(trained):
    _, stdout = trained  # printed into a StringIO: not a terminal
    assert "\r" not in stdout and "\x08" not in stdout and "\x1b[" not in stdout
    assert "Unknown" not in stdout
    assert "2/2 - " in stdout  # the one line of the epoch, with its total


def test_the_summary_says_its_loss_is_the_plain_cross_entropy(trained):
    _, stdout = trained
    assert "cross-entropy " in stdout and "(without label smoothing)" in stdout


def test_image_folder_batches_have_a_known_count(image_folder):
    datasets = data.load_datasets(image_folder, image_size=8, batch_size=5)
    assert int(datasets.train.cardinality()) == 2  # 9 images
    assert int(datasets.validation.cardinality()) == 1  # 3 images
    assert int(datasets.test.cardinality()) == 2  # 6 images
    assert len(list(datasets.train)) == 2


@pytest.mark.parametrize("command", ["demo", "train", "evaluate", "predict", "export"])
def test_help_shows_no_format_escapes(command, capsys):
    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    help_text = capsys.readouterr().out
    assert "%%" not in help_text and "%(" not in help_text
