"""The run that the `keras-astro` tests share: one `train` on the image folder."""

import pytest

from tests.test_case import TINY_TRAIN, run_cli


@pytest.fixture(scope="session")
def trained(image_folder, tmp_path_factory):
    """(run folder, what `keras-astro train ... --output FOLDER` printed)."""
    output = tmp_path_factory.mktemp("runs") / "run"
    stdout = run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    return output, stdout
