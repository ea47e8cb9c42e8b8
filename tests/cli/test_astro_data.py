"""`keras-astro` on astronomy data: a FITS folder (train, evaluate --tta, predict), an
HDF5 file and a catalogue table."""

import csv
import json

import numpy as np
import pytest

from keras_astro import cli
from tests.test_case import (
    FITS_CLASSES,
    PNG,
    TINY_TRAIN,
    flux_cutout,
    galaxy10_rows,
    run_cli,
    run_cli_error,
    write_class_folders,
    write_fits,
    write_hdf5,
)


def test_train_on_fits_cutouts(fits_trained):
    output, stdout = fits_trained
    metrics = json.loads((output / "metrics.json").read_text())
    assert (metrics["preprocessing"], metrics["bands"], metrics["center_crop"]) == ("flux", 1, 0.5)
    assert list(metrics["per_class"]) == list(FITS_CLASSES)
    config = json.loads((output / "config.json").read_text())
    assert (config["augment"], config["class_weight"]) == ("dihedral", "balanced")
    last = stdout.strip().splitlines()[-1]
    assert "the average of 8 views; one view" in last and "balanced accuracy" in last


def test_randaugment_is_refused_for_fits_cutouts(fits_folder, tmp_path, capsys):
    message = run_cli_error(capsys, "train", "--data-dir", fits_folder, "--augment", "randaugment",
                            "--output", tmp_path / "run")
    assert "flux data takes 'none', 'basic', 'dihedral'" in message
    assert not (tmp_path / "run").exists()


def test_evaluate_with_tta_reports_the_imbalance_scores(fits_trained, fits_folder, tmp_path):
    output, _ = fits_trained
    stdout = run_cli("evaluate", output / "model.keras", "--data-dir", fits_folder, "--tta",
                     "--output", tmp_path)
    report = json.loads((tmp_path / "evaluation.json").read_text())
    metrics = json.loads((output / "metrics.json").read_text())
    assert report["tta"] is True and report["num_images"] == 4
    assert report["accuracy"] == pytest.approx(metrics["test_accuracy_tta"])
    assert report["balanced_accuracy"] == pytest.approx(metrics["test_balanced_accuracy_tta"])
    assert report["per_class"] == metrics["per_class"]  # the cropped cutouts are symmetric
    for name in ("confusion_matrix.png", "confusion_matrix_normalized.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert "with 8-view TTA" in stdout and "recall  precision      F1" in stdout
    assert all(f"  {name} " in stdout for name in FITS_CLASSES) and "balanced accuracy" in stdout


def test_predict_reads_fits_and_reports_unreadable_files(fits_trained, fits_folder, tmp_path, capsys):
    output, _ = fits_trained
    large = tmp_path / "large.fits"
    write_fits(large, np.pad(flux_cutout(1, blanks=True)[0], 8, constant_values=np.nan))  # 32x32
    table = tmp_path / "table.fits"
    write_fits(tmp_path / "cube.fits", flux_cutout(0, bands=2))
    from astropy.io import fits

    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns(
        [fits.Column(name="flux", format="E", array=np.ones(2))])]).writeto(table)
    (tmp_path / "empty.fits").write_bytes(b"")
    truncated = (fits_folder / "test" / "fri" / "0.fits").read_bytes()[:3000]
    (tmp_path / "truncated.fits").write_bytes(truncated)
    good = [fits_folder / "test" / "fri" / "0.fits", fits_folder / "test" / "frii" / "1.fits.gz", large]
    argv = ["predict", output / "model.keras", tmp_path / "empty.fits", good[0], table, good[1],
            tmp_path / "cube.fits", tmp_path / "truncated.fits", large, "--top-k", "2"]
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main([str(arg) for arg in argv])
    assert exit_info.value.code == 2
    printed = capsys.readouterr()
    lines = printed.out.strip().splitlines()
    assert [line.split(": ")[0] for line in lines] == [str(path) for path in good]
    for line in lines:
        top = [entry.rsplit(" ", 1)[0] for entry in line.split(": ", 1)[1].split(", ")]
        assert sorted(top) == sorted(FITS_CLASSES)
    assert "table.fits: no image HDU" in printed.err
    assert "cube.fits' has 2 band(s), but the model takes 1" in printed.err
    assert "empty.fits: not a readable FITS file (Empty or corrupt FITS file)" in printed.err
    assert "truncated.fits: not a readable FITS file (cannot reshape" in printed.err
    assert "4 of 7 file(s) could not be predicted" in printed.err

    tta = run_cli("predict", output / "model.keras", *good, "--tta", "--top-k", "1")
    assert [line.split(": ")[0] for line in tta.strip().splitlines()] == [str(path) for path in good]


def test_train_on_an_hdf5_file_with_class_names(tmp_path, capsys):
    images, labels = galaxy10_rows(count=20, classes=2)
    write_hdf5(tmp_path / "cutouts.h5", {"images": images, "ans": labels})
    train = ("train", "--data-file", tmp_path / "cutouts.h5", *TINY_TRAIN, "--batch-size", "8",
             "--validation-fraction", "0.2")
    message = run_cli_error(capsys, *train, "--class-names", "a", "--output", tmp_path / "bad")
    assert "class ids outside [0, 1)" in message and not (tmp_path / "bad").exists()
    assert "empty names" in run_cli_error(capsys, *train, "--class-names", "a,,b")
    stdout = run_cli(*train, "--class-names", "spiral, elliptical", "--output", tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert list(metrics["per_class_accuracy"]) == ["spiral", "elliptical"]
    assert (metrics["dataset"], metrics["num_test"], metrics["preprocessing"]) == ("cutouts", 4, "pixels")
    assert "small on cutouts" in stdout.strip().splitlines()[-1]


def test_train_on_a_catalogue_with_a_split_column(tmp_path):
    write_class_folders(tmp_path / "train", 3, classes=("cat", "dog"))
    write_class_folders(tmp_path / "test", 3, classes=("cat", "dog"))
    with open(tmp_path / "objects.csv", "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["image", "class", "set"])
        for split in ("train", "test"):
            for name in ("cat", "dog"):
                writer.writerows([f"{split}/{name}/{i}.{ext}", name, split]
                                 for i, ext in enumerate(("png", "jpg", "bmp")))
    stdout = run_cli("train", "--catalog", tmp_path / "objects.csv", "--path-column", "image",
                     "--label-column", "class", "--split-column", "set", *TINY_TRAIN,
                     "--output", tmp_path / "run")
    assert "(6 test (column 'set') images)" in stdout.strip().splitlines()[-1]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["num_train"], metrics["num_test"]) == ("objects", 4, 6)
    assert metrics["test_split"] == "test (column 'set')"
    assert list(metrics["per_class_accuracy"]) == ["cat", "dog"]
