"""Catalogue tables as a source: a CSV whose rows name an image file and its label.

The Zoobot / galaxy-datasets convention: a `file_loc` column of paths (relative ones are
relative to the table's folder) and a `label` column; an optional split column says
which rows are `train` and which `test` (or `val`, `validation`). Without it a fixed,
stratified fraction of the rows is held out. The files are any the folders accept.
"""

import csv
import os

from keras_astro.data.folders import file_datasets, hold_out

TRAIN_SPLITS = ("train",)
TEST_SPLITS = ("test", "val", "validation")


def _sort_labels(labels):
    """Class names in order: numerically when every label is an integer, else as text."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def read_catalog(path, path_column="file_loc", label_column="label", split_column=None):
    """Reads and checks a catalogue.

    Returns:
        (files, label ids, split per row or None, class names). Raises a `ValueError`
        naming the table, the column or the rows when a column is missing, a row has
        no path or label, files are missing (the first ones and the count) or a split
        value is unknown.
    """
    if not os.path.isfile(path):
        raise ValueError(f"No catalogue file at {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    with open(path, newline="", encoding="utf-8") as file:
        reader = csv.DictReader(file)
        columns = reader.fieldnames or []
        wanted = [path_column, label_column] + ([split_column] if split_column else [])
        missing = [column for column in wanted if column not in columns]
        if missing:
            raise ValueError(
                f"{path}: no column {missing[0]!r}; its columns are {columns}. Name them with "
                "--path-column, --label-column and --split-column."
            )
        rows = list(reader)
    if not rows:
        raise ValueError(f"{path}: the table has no rows.")
    empty = [i + 2 for i, row in enumerate(rows) if not row[path_column] or not row[label_column]]
    if empty:
        raise ValueError(
            f"{path}: rows {empty[:5]} (line numbers) have no {path_column!r} or "
            f"{label_column!r} value{' ...' if len(empty) > 5 else ''}."
        )
    files = [os.path.join(folder, row[path_column]) for row in rows]
    absent = [name for name in files if not os.path.isfile(name)]
    if absent:
        raise ValueError(
            f"{path}: {len(absent)} of {len(files)} rows name files that do not exist, e.g. "
            f"{absent[:5]}."
        )
    labels = [row[label_column].strip() for row in rows]
    class_names = _sort_labels(sorted(set(labels)))
    ids = {name: i for i, name in enumerate(class_names)}
    splits = None
    if split_column:
        splits = [row[split_column].strip().lower() for row in rows]
        unknown = sorted(set(splits) - set(TRAIN_SPLITS) - set(TEST_SPLITS))
        if unknown:
            raise ValueError(
                f"{path}: column {split_column!r} holds {unknown}; expected "
                f"{TRAIN_SPLITS + TEST_SPLITS}."
            )
        splits = ["train" if split in TRAIN_SPLITS else "test" for split in splits]
    return files, [ids[label] for label in labels], splits, class_names


def load_catalog(path, path_column, label_column, split_column, validation_fraction, options):
    """Pipelines of the files a catalogue names, split by its split column or held out."""
    files, labels, splits, class_names = read_catalog(path, path_column, label_column, split_column)
    if splits is None:
        train_files, test_files, train_labels, test_labels = hold_out(
            path, files, labels, validation_fraction
        )
        test_split = f"{validation_fraction:.0%} of the rows held out, stratified"
    else:
        train = [i for i, split in enumerate(splits) if split == "train"]
        test = [i for i, split in enumerate(splits) if split == "test"]
        if not train or not test:
            raise ValueError(
                f"{path}: column {split_column!r} names {len(train)} train and {len(test)} test "
                "rows; both are needed."
            )
        train_files, train_labels = [files[i] for i in train], [labels[i] for i in train]
        test_files, test_labels = [files[i] for i in test], [labels[i] for i in test]
        test_split = f"rows with {split_column} = test"
    return file_datasets(
        (train_files, train_labels), (test_files, test_labels), class_names, test_split, options
    )
