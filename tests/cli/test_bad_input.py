"""Every bad input is refused with one line that says what was expected, before any work."""

import pytest

from tests.test_case import TINY_TRAIN, run_cli_error, write_class_folders


@pytest.mark.parametrize(
    "option, value",
    [
        ("--learning-rate", "inf"),
        ("--learning-rate", "nan"),
        ("--clipnorm", "inf"),
        ("--weight-decay", "inf"),
        ("--warmup-epochs", "inf"),
        ("--label-smoothing", "nan"),
    ],
)
def test_train_refuses_numbers_that_are_not_finite(option, value, image_folder, tmp_path, capsys):
    output = tmp_path / "run"
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, option, value, "--output", output
    )
    assert f"{option}: expected a finite number" in message
    assert not output.exists()  # the run folder stays free for a corrected command


def test_image_size_is_bounded_and_the_message_says_why(image_folder, tmp_path, capsys):
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, "--image-size", "100000", "--output", tmp_path / "r"
    )
    assert "<= 512" in message and "(H*W)^2" in message


def test_a_damaged_image_is_one_line_naming_the_file(tmp_path, capsys):
    write_class_folders(tmp_path / "data" / "train", per_class=2)
    write_class_folders(tmp_path / "data" / "test", per_class=1)
    damaged = tmp_path / "data" / "train" / "dog" / "0.png"
    damaged.write_bytes(damaged.read_bytes()[:40])  # PNG header kept, data cut
    message = run_cli_error(
        capsys, "train", "--data-dir", tmp_path / "data", *TINY_TRAIN, "--output", tmp_path / "run"
    )
    assert message.count("\n") == 1
    assert "Cannot read or decode image file" in message and "dog/0.png" in message
