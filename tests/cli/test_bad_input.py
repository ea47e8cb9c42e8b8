"""Every bad input is refused with one line that says what was expected, before any work."""

import pytest

from tests.test_case import TINY_TRAIN, run_cli_error


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
