"""The run that the `keras-astro` tests share: one `train` on the image folder."""

import pytest

from tests.test_case import TINY_TRAIN, run_cli


@pytest.fixture(scope="session")
def trained(image_folder, tmp_path_factory):
    """(run folder, what `keras-astro train ... --output FOLDER` printed)."""
    output = tmp_path_factory.mktemp("runs") / "run"
    stdout = run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    return output, stdout


# `train` options of the FITS run: the central half of each 16x16 cutout at 8x8, the 8
# symmetries of the square, classes weighted; 8 train and 4 test cutouts, batches of 4.
FITS_TRAIN = ("--model", "small", "--image-size", "8", "--epochs", "1", "--batch-size", "4",
              "--center-crop", "0.5", "--augment", "dihedral", "--class-weight", "balanced")


@pytest.fixture(scope="session")
def fits_trained(fits_folder, tmp_path_factory):
    """(run folder, what `keras-astro train --data-dir FITS_FOLDER ...` printed)."""
    output = tmp_path_factory.mktemp("runs") / "fits"
    stdout = run_cli("train", "--data-dir", fits_folder, *FITS_TRAIN, "--output", output)
    return output, stdout
