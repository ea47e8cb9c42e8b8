"""Every bad input is refused with one line that says what was expected, before any work."""

import re

import numpy as np
import pytest
from PIL import Image

from tests.test_case import (
    COLORS,
    TINY_TRAIN,
    flux_cutout,
    run_cli,
    run_cli_error,
    tiny_model,
    write_class_folders,
    write_fits,
)


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


def test_a_negative_seed_is_a_usage_error(image_folder, tmp_path, capsys):
    message = run_cli_error(
        capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, "--seed", "-1", "--output", tmp_path / "r"
    )
    assert "--seed: expected an integer >= 0 and <= 4294967295" in message


def test_an_output_that_cannot_be_created_is_one_line(image_folder, tmp_path, capsys):
    (tmp_path / "a-file").write_text("")
    output = tmp_path / "a-file" / "run"
    with pytest.raises(SystemExit) as exit_info:
        run_cli("train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output)
    assert exit_info.value.code == 1
    message = capsys.readouterr().err
    assert message.startswith("keras-astro train: error: [Errno 20] Not a directory:")
    assert message.count("\n") == 1 and "Traceback" not in message


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


@pytest.mark.parametrize(
    "kwargs, message",
    [({"include_top": False}, "include_top=False"), ({"include_preprocessing": False}, "include_preprocessing=False")],
)
@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_models_without_class_scores_of_raw_inputs_are_refused(
    command, kwargs, message, image_folder, tmp_path, capsys
):
    path = tmp_path / "model.keras"
    tiny_model(**kwargs).save(path)
    data = [next((image_folder / "test" / "cat").iterdir())] if command == "predict" else [
        "--data-dir", image_folder
    ]
    error = run_cli_error(capsys, command, path, *data)
    assert message in error and "Expected" in error and error.count("\n") == 1


@pytest.mark.parametrize("command", ["predict", "evaluate"])
def test_a_keras_model_that_is_no_astro_transformer_is_one_line(command, image_folder, tmp_path, capsys):
    import keras

    path = tmp_path / "model.keras"
    keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(), keras.layers.Dense(3)]).save(path)
    data = [next((image_folder / "test" / "cat").iterdir())] if command == "predict" else [
        "--data-dir", image_folder
    ]
    error = run_cli_error(capsys, command, path, *data)
    assert f"'{path}' holds a Sequential; expected an AstroTransformer" in error
    assert error.count("\n") == 1


def test_a_logits_model_predicts_probabilities(image_folder, tmp_path):
    path = tmp_path / "model.keras"
    tiny_model(classifier_activation=None).save(path)
    line = run_cli("predict", path, next((image_folder / "test" / "cat").iterdir()), "--top-k", "3")
    percents = [float(value) for value in re.findall(r"(-?[\d.]+)%", line)]
    assert len(percents) == 3 and min(percents) >= 0
    assert sum(percents) == pytest.approx(100, abs=0.2)


def _predict_refusing(capsys, model, *files):
    """(the files `predict` answered, its stderr) for a run that refuses some of `files`."""
    from keras_astro import cli

    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["predict", str(model), *map(str, files)])
    assert exit_info.value.code == 2
    printed = capsys.readouterr()
    return [line.split(": ")[0] for line in printed.out.splitlines()], printed.err


def test_predict_refuses_files_of_the_other_kind_than_the_model_takes(tmp_path, capsys):
    # Three bands each, so that only the kind of file tells them apart.
    tiny_model(preprocessing="flux").save(tmp_path / "flux.keras")
    tiny_model().save(tmp_path / "pixels.keras")
    Image.new("RGB", (16, 16), COLORS["cat"]).save(tmp_path / "photo.png")
    Image.new("RGB", (16, 16), COLORS["dog"]).save(tmp_path / "photo.jpg")
    write_fits(tmp_path / "cube.fits", flux_cutout(0, bands=3))
    photos, cube = [tmp_path / "photo.png", tmp_path / "photo.jpg"], tmp_path / "cube.fits"

    answered, err = _predict_refusing(capsys, tmp_path / "flux.keras", *photos, cube)
    assert answered == [str(cube)]
    for photo in photos:
        assert f"'{photo}' is not a FITS file (.fits, " in err
    assert "but the model expects FITS flux cutouts, not photos (preprocessing='flux')" in err
    assert "2 of 3 file(s) could not be predicted" in err

    answered, err = _predict_refusing(capsys, tmp_path / "pixels.keras", cube, *photos)
    assert answered == [str(photo) for photo in photos]
    assert f"'{cube}' is a FITS file, but the model expects photos: JPEG, PNG, GIF or BMP" in err
    assert "1 of 3 file(s) could not be predicted" in err


def test_predict_refuses_flux_cutouts_with_a_band_the_model_sees_as_blanks(tmp_path, capsys):
    tiny_model(input_shape=(8, 8, 2), preprocessing="flux", center_crop=0.5).save(tmp_path / "flux.keras")
    cutout = flux_cutout(1, bands=2, blanks=True)  # NaN in two corners, outside the crop
    write_fits(tmp_path / "good.fits", cutout)
    write_fits(tmp_path / "nan.fits", np.full_like(cutout, np.nan))
    band = cutout.copy()
    band[1] = np.nan
    write_fits(tmp_path / "band.fits", band)
    rim = np.full_like(cutout, np.nan)
    rim[:, 0] = 1.0  # flux in the first row only, which the central crop leaves out
    write_fits(tmp_path / "rim.fits", rim)
    files = [tmp_path / name for name in ("nan.fits", "band.fits", "good.fits", "rim.fits")]
    answered, err = _predict_refusing(capsys, tmp_path / "flux.keras", *files)
    assert answered == [str(tmp_path / "good.fits")]
    assert f"{tmp_path / 'nan.fits'}: every pixel is NaN or infinite" in err
    assert f"'{tmp_path / 'band.fits'}' has no finite pixel in band(s) [1] of its central 50%" in err
    assert f"'{tmp_path / 'rim.fits'}' has no finite pixel in band(s) [0, 1] of its central 50%" in err
    assert "3 of 4 file(s) could not be predicted" in err
