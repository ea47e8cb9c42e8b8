"""Catalogue tables: a CSV of file paths (relative to the table) and labels, with or
without a split column, and every catalogue error."""

import csv
import zipfile

import numpy as np
import pytest

from keras_astro import data
from keras_astro.data.catalog import read_catalog
from tests.test_case import (
    COLORS,
    FITS_CLASSES,
    assert_colors_match_labels,
    centre_values,
    collect,
    write_class_folders,
    write_fits_folder,
)


def write_catalog(
    path, rows, columns=("file_loc", "label", "split"), encoding="utf-8", delimiter=","
):
    with open(path, "w", newline="", encoding=encoding) as file:
        writer = csv.writer(file, delimiter=delimiter)
        writer.writerow(columns)
        writer.writerows(rows)


def _photo_rows(root):
    """Rows (relative path, class, split) of an image folder written under `root/images`."""
    write_class_folders(root / "images" / "train", 2)
    write_class_folders(root / "images" / "test", 1)
    return [
        (f"images/{split}/{name}/{i}.{ext}", name, split)
        for split, count in (("train", 2), ("test", 1))
        for name in COLORS
        for i, ext in zip(range(count), ("png", "jpg"))
    ]


def test_catalogue_of_photos_with_a_split_column(tmp_path):
    write_catalog(tmp_path / "catalogue.csv", _photo_rows(tmp_path))
    datasets = data.load_datasets(
        str(tmp_path / "catalogue.csv"), split_column="split", image_size=8, batch_size=4
    )
    assert datasets.class_names == sorted(COLORS) and datasets.preprocessing == "pixels"
    # One image per class of train chooses the epoch: the least a stratified split holds.
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (3, 3, 3)
    assert datasets.test_split == "test (column 'split')"
    assert datasets.validation_split == "held-out (10% of train, stratified)"
    for dataset in (datasets.train, datasets.validation, datasets.test):
        assert_colors_match_labels(*collect(dataset))


def test_catalogue_val_rows_choose_the_epoch_and_test_rows_score(tmp_path, capsys):
    rows = _photo_rows(tmp_path)
    write_class_folders(tmp_path / "images" / "val", 1)
    rows += [(f"images/val/{name}/0.png", name, "validation") for name in COLORS]
    write_catalog(tmp_path / "t.csv", rows)
    datasets = data.load_datasets(tmp_path / "t.csv", image_size=8)
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (6, 3, 3)
    assert datasets.validation_split == "validation (column 'split')"
    assert "(6 train, 3 test, 3 val)" in capsys.readouterr().out
    images, labels = collect(datasets.validation)
    assert_colors_match_labels(images, labels)


def test_catalogue_of_fits_files_without_a_split_column(tmp_path):
    write_fits_folder(tmp_path / "cutouts", per_split=(("all", 5),))
    rows = [(f"cutouts/all/{name}/{i}.{ext}", f"type {label}")
            for label, name in enumerate(FITS_CLASSES)
            for i, ext in zip(range(5), ("fits", "fits.gz", "fit", "fts", "fits"))]
    write_catalog(tmp_path / "sources.csv", rows, columns=("path", "morphology"))
    datasets = data.load_datasets(
        tmp_path / "sources.csv", path_column="path", label_column="morphology",
        image_size=8, batch_size=4, validation_fraction=0.2,
    )
    assert datasets.class_names == ["type 0", "type 1"]
    assert (datasets.preprocessing, datasets.image_shape) == ("flux", (8, 8, 1))
    assert (datasets.num_train, datasets.num_validation, datasets.num_test) == (6, 2, 2)
    images, labels = collect(datasets.test)
    np.testing.assert_array_equal(np.sort(labels.argmax(axis=1)), [0, 1])  # stratified
    np.testing.assert_allclose(centre_values(images)[:, 0], 10.0 * (labels.argmax(axis=1) + 1))


def test_numeric_labels_are_sorted_as_numbers(tmp_path):
    rows = _photo_rows(tmp_path)
    numbers = dict(zip(COLORS, ("10", "2", "-1")))
    write_catalog(tmp_path / "t.csv", [(path, numbers[name], split) for path, name, split in rows])
    assert read_catalog(str(tmp_path / "t.csv"))[3] == ["-1", "2", "10"]
    write_catalog(tmp_path / "t.csv", [(path, "x" + numbers[name], split) for path, name, split in rows])
    assert read_catalog(str(tmp_path / "t.csv"))[3] == ["x-1", "x10", "x2"]


def _missing_files(rows):
    return [(f"gone/{i}.png", "cat", "train") for i in range(7)] + rows, (
        r"7 of 16 rows name files that do not exist, e.g. \[.*gone.0\.png.*gone.4\.png'\]"
    )


def _unknown_split(rows):
    return [(*rows[0][:2], "holdout")] + rows[1:], r"column 'split' holds \['holdout'\]"


def _no_test_rows(rows):
    return [(path, name, "train") for path, name, _ in rows], "names 9 train and 0 test or val rows"


@pytest.mark.parametrize("change", [_missing_files, _unknown_split, _no_test_rows])
def test_catalogue_errors_name_the_rows(tmp_path, change):
    rows, match = change(_photo_rows(tmp_path))
    write_catalog(tmp_path / "t.csv", rows)
    with pytest.raises(ValueError, match=match):
        data.load_datasets(tmp_path / "t.csv", split_column="split", image_size=8)


def test_missing_column_lists_the_columns(tmp_path):
    write_catalog(tmp_path / "t.csv", _photo_rows(tmp_path))
    with pytest.raises(ValueError, match=r"no column 'path'; its columns are \['file_loc', 'label', 'split'\]"):
        data.load_datasets(tmp_path / "t.csv", path_column="path", image_size=8)
    with pytest.raises(ValueError, match="no column 'set'"):
        data.load_datasets(tmp_path / "t.csv", split_column="set", image_size=8)


def test_a_column_named_split_is_used_unless_told_otherwise(tmp_path, capsys):
    write_catalog(tmp_path / "t.csv", _photo_rows(tmp_path))
    datasets = data.load_datasets(tmp_path / "t.csv", image_size=8)
    assert (datasets.num_train, datasets.num_test) == (3, 3)
    assert datasets.test_split == "test (column 'split')"
    assert capsys.readouterr().out == (
        f"{tmp_path / 't.csv'}: its 'split' column splits the rows (6 train, 3 test, 0 val); "
        "--split-column '' holds out a fraction instead.\n"
    )
    held_out = data.load_datasets(
        tmp_path / "t.csv", split_column="", image_size=8, validation_fraction=1 / 3
    )
    assert (held_out.num_train, held_out.num_validation, held_out.num_test) == (3, 3, 3)
    assert held_out.test_split == "held-out (33% of the rows, stratified)"
    assert capsys.readouterr().out == ""


def _same_file_in_train_and_test(rows):
    return rows + [(rows[0][0], rows[0][1], "test")], (
        r"'.*train/cat/0.png' is listed on lines 2 and 11 as train and test: it would be "
        r"scored on what it was trained on; expected each file once \(1 repeated row\(s\) in all\)"
    )


def _same_row_twice(rows):
    return rows + rows[:2], r"'.*train/cat/0.png' is listed on lines 2 and 11; expected each file once \(2 repeated"


def _one_file_two_labels(rows):
    return rows + [(rows[0][0], "dog", "train")], r"'.*cat/0.png' is listed on lines 2 and 11 with labels 'cat' and 'dog'"


def _same_file_by_another_path(rows):
    return rows + [("images/../" + rows[0][0], *rows[0][1:])], "is listed on lines 2 and 11"


def _label_with_a_line_break(rows):
    return rows[:1] + [(rows[1][0], "do\ng", rows[1][2])] + rows[2:], (
        r"line 3 has the label 'do\\ng', with a line break; expected class names of one line"
    )


def _blank_label(rows):
    return rows[:2] + [(rows[2][0], "  ", rows[2][2])] + rows[3:], (
        r"lines \[4\] have no 'file_loc' or no 'label' value; expected a file and a label per row"
    )


def _missing_field(rows):
    return rows[:3] + [rows[3][:2]] + rows[4:], (
        r"line 5 has 2 fields; expected 3, one per column \['file_loc', 'label', 'split'\]"
    )


@pytest.mark.parametrize(
    "change",
    [_same_file_in_train_and_test, _same_row_twice, _one_file_two_labels,
     _same_file_by_another_path, _label_with_a_line_break, _blank_label, _missing_field],
)
def test_catalogue_rows_that_would_train_on_something_else_are_refused(tmp_path, change):
    rows, match = change(_photo_rows(tmp_path))
    write_catalog(tmp_path / "t.csv", rows)
    with pytest.raises(ValueError, match=match) as raised:
        data.load_datasets(tmp_path / "t.csv", image_size=8)
    assert str(raised.value).startswith(f"{tmp_path / 't.csv'}: ")


@pytest.mark.parametrize(
    "encoding, delimiter",
    [("utf-8-sig", ";"), ("utf-8", "\t"), ("utf-16", "\t")],
    ids=["excel-csv-where-the-comma-is-the-decimal-mark", "tab-separated", "excel-unicode-text"],
)
def test_excel_saves_with_semicolons_tabs_or_utf16_read_as_the_comma_table(
    tmp_path, encoding, delimiter
):
    rows = _photo_rows(tmp_path)
    write_catalog(tmp_path / "commas.csv", rows)
    write_catalog(tmp_path / "excel.csv", rows, encoding=encoding, delimiter=delimiter)
    assert read_catalog(str(tmp_path / "excel.csv")) == read_catalog(str(tmp_path / "commas.csv"))


def test_excel_unicode_text_is_a_catalogue_under_its_own_name(tmp_path):
    rows = _photo_rows(tmp_path)
    write_catalog(tmp_path / "excel.txt", rows, encoding="utf-16", delimiter="\t")
    datasets = data.load_datasets(tmp_path / "excel.txt", image_size=8)
    assert datasets.class_names == sorted(COLORS)


def test_utf16_without_its_byte_order_mark_is_refused_naming_the_line(tmp_path):
    write_catalog(tmp_path / "t.csv", _photo_rows(tmp_path), encoding="utf-16-le", delimiter="\t")
    with pytest.raises(ValueError, match=(
        r"t.csv: line 1 has a NUL character, as UTF-16 text without its byte-order mark would; "
        r"expected a UTF-8 table: save it as UTF-8 \(in Excel: 'CSV UTF-8'\)\.$"
    )):
        read_catalog(str(tmp_path / "t.csv"))


@pytest.mark.parametrize("suffix", [".xlsx", ".xls"])
def test_a_workbook_is_refused_as_not_a_csv(tmp_path, suffix):
    workbook = tmp_path / f"catalogue{suffix}"
    if suffix == ".xlsx":
        with zipfile.ZipFile(workbook, "w") as archive:
            archive.writestr("[Content_Types].xml", "<Types/>")
    else:
        workbook.write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(504))
    with pytest.raises(ValueError, match=(
        rf"catalogue{suffix} is a spreadsheet workbook \(.xlsx, .xls or .ods\), not a table of "
        r"text; expected a CSV file: save it as CSV \(in Excel: 'CSV UTF-8'\)\.$"
    )):
        read_catalog(str(workbook))


@pytest.mark.parametrize("suffix", [".xlsx", ".ods"])
def test_a_source_named_as_a_workbook_is_refused_with_what_to_save_instead(tmp_path, suffix):
    # Named, not only shaped, as a workbook: a text file renamed .xlsx is refused too.
    write_catalog(tmp_path / f"catalogue{suffix}", _photo_rows(tmp_path))
    with pytest.raises(ValueError, match=r"is a spreadsheet workbook .* save it as CSV"):
        data.load_datasets(tmp_path / f"catalogue{suffix}", image_size=8)


def test_excel_bom_is_read_and_latin1_is_refused_naming_the_line(tmp_path):
    rows = _photo_rows(tmp_path)
    write_catalog(tmp_path / "excel.csv", rows, encoding="utf-8-sig")
    assert read_catalog(str(tmp_path / "excel.csv"))[3] == sorted(COLORS)
    rows[4] = (rows[4][0], "caf\u00e9", rows[4][2])
    write_catalog(tmp_path / "latin1.csv", rows, encoding="latin-1")
    # A BOM before the bad byte must not shift the line number.
    (tmp_path / "latin1.csv").write_bytes(b"\xef\xbb\xbf" + (tmp_path / "latin1.csv").read_bytes())
    with pytest.raises(ValueError, match=(
        r"latin1.csv: line 6 is not UTF-8 text \(byte 0xe9\); expected a UTF-8 table: save it "
        r"as UTF-8 \(in Excel: 'CSV UTF-8'\)\.$"
    )):
        read_catalog(str(tmp_path / "latin1.csv"))
