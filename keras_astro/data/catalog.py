"""Catalogue tables as a source: a CSV whose rows name an image file and its label.

The Zoobot / galaxy-datasets convention: a `file_loc` column of paths (relative ones are
relative to the table's folder) and a `label` column; a split column says which rows
are `train` and which `test` (or `val`, `validation`). A column named `split` is that
column unless another is named (or `""` for none); without one, a fixed, stratified
fraction of the rows is held out. The files are any the folders accept.

A table is checked whole before anything is read: a file listed twice would be trained
on twice or scored on rows it was trained on, and a label with a line break would shift
the class names that `labels.txt` gives serving clients.
"""

import codecs
import csv
import io
import os

from keras_astro.data.folders import file_datasets, pick
from keras_astro.data.pipeline import held_out_description, stratified_split

# What a split column may say, per split.
SPLITS = {"train": ("train",), "test": ("test",), "val": ("val", "validation")}
DEFAULT_SPLIT_COLUMN = "split"
# How workbook files begin: a zip archive (.xlsx, .ods) or an OLE2 compound file (.xls).
WORKBOOK_SIGNATURES = (b"PK\x03\x04", b"\xd0\xcf\x11\xe0")
WORKBOOK_EXTENSIONS = (".xlsx", ".xlsm", ".xls", ".ods")


def _sort_labels(labels):
    """Class names in order: numerically when every label is an integer, else as text."""
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def read_rows(path):
    """(columns, [(line number, row dict)]) of a UTF-8 table, a BOM (Excel's) allowed.

    Excel's other saves read too: UTF-16 "Unicode Text", and the semicolons or tabs
    between fields that it writes where the comma is the decimal mark. The header line
    says which: commas unless it has none and has semicolons or tabs.
    """
    with open(path, "rb") as file:
        content = file.read()
    if content.startswith(WORKBOOK_SIGNATURES) or path.lower().endswith(WORKBOOK_EXTENSIONS):
        raise ValueError(
            f"{path} is a spreadsheet workbook (.xlsx, .xls or .ods), not a table of text; "
            "expected a CSV file: save it as CSV (in Excel: 'CSV UTF-8')."
        )
    if content.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        text = _decode(path, content, "utf-16")
    else:
        text = _decode(path, content.removeprefix(codecs.BOM_UTF8), "utf-8")
    header = text.partition("\n")[0]
    delimiter = next((mark for mark in ",;\t" if mark in header), ",")
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    columns = next(reader, [])
    rows = []
    while True:
        line = reader.line_num + 1  # where the row starts: a quoted field may span lines
        fields = next(reader, None)
        if fields is None:
            return columns, rows
        if not fields:  # a blank line
            continue
        if len(fields) != len(columns):
            raise ValueError(
                f"{path}: line {line} has {len(fields)} fields; expected {len(columns)}, one "
                f"per column {columns}."
            )
        rows.append((line, dict(zip(columns, fields))))


def _decode(path, content, encoding):
    """`content` as text; a `ValueError` naming the line of the first byte that is not."""
    try:
        text = content.decode(encoding)
    except UnicodeDecodeError as error:
        line = content[: error.start].decode(encoding, errors="replace").count("\n") + 1
        raise ValueError(
            f"{path}: line {line} is not {encoding.upper()} text (byte "
            f"0x{content[error.start]:02x}); expected a UTF-8 table: save it as UTF-8 (in "
            "Excel: 'CSV UTF-8')."
        ) from None
    if "\0" in text:  # UTF-16 without its byte-order mark decodes as UTF-8 with NULs
        line = text[: text.index("\0")].count("\n") + 1
        raise ValueError(
            f"{path}: line {line} has a NUL character, as UTF-16 text without its byte-order "
            "mark would; expected a UTF-8 table: save it as UTF-8 (in Excel: 'CSV UTF-8')."
        )
    return text


def _check_each_file_once(path, files, lines, labels, splits):
    """Refuses a file listed twice, naming both lines and what differs between them."""
    first, repeated = {}, []
    for i, name in enumerate(files):
        key = os.path.realpath(name)
        if key in first:
            repeated.append((first[key], i))
        else:
            first[key] = i
    if not repeated:
        return
    i, j = repeated[0]
    if labels[i] != labels[j]:
        detail = f" with labels {labels[i]!r} and {labels[j]!r}"
    elif splits is not None and splits[i] != splits[j]:
        detail = f" as {splits[i]} and {splits[j]}: it would be scored on what it was trained on"
    else:
        detail = ""
    raise ValueError(
        f"{path}: {files[j]!r} is listed on lines {lines[i]} and {lines[j]}{detail}; expected "
        f"each file once ({len(repeated)} repeated row(s) in all)."
    )


def read_catalog(path, path_column="file_loc", label_column="label", split_column=None):
    """Reads and checks a catalogue.

    `split_column` `None` uses a column named `split` when there is one; `""` uses none.

    Returns:
        (files, label ids, split per row or None, class names, split column used or
        None). Raises a `ValueError` naming the table and the line or column for
        anything it cannot train on as meant (see the module docstring).
    """
    if not os.path.isfile(path):
        raise ValueError(f"No catalogue file at {path!r}.")
    folder = os.path.dirname(os.path.abspath(path))
    columns, rows = read_rows(path)
    if split_column is None and DEFAULT_SPLIT_COLUMN in columns:
        split_column = DEFAULT_SPLIT_COLUMN
    wanted = [path_column, label_column] + ([split_column] if split_column else [])
    missing = [column for column in wanted if column not in columns]
    if missing:
        raise ValueError(
            f"{path}: no column {missing[0]!r}; its columns are {columns}. Name them with "
            "--path-column, --label-column and --split-column."
        )
    if not rows:
        raise ValueError(f"{path}: the table has no rows.")
    empty = [line for line, row in rows if not row[path_column] or not row[label_column].strip()]
    if empty:
        raise ValueError(
            f"{path}: lines {empty[:5]}{' ...' if len(empty) > 5 else ''} have no "
            f"{path_column!r} or no {label_column!r} value; expected a file and a label per row."
        )
    broken = next(((line, row[label_column]) for line, row in rows
                   if "\n" in row[label_column] or "\r" in row[label_column]), None)
    if broken:
        raise ValueError(
            f"{path}: line {broken[0]} has the label {broken[1]!r}, with a line break; expected "
            "class names of one line (labels.txt holds one a line)."
        )
    lines = [line for line, _ in rows]
    files = [os.path.join(folder, row[path_column]) for _, row in rows]
    labels = [row[label_column].strip() for _, row in rows]
    splits = None
    if split_column:
        splits = [row[split_column].strip().lower() for _, row in rows]
        unknown = sorted(set(splits).difference(*SPLITS.values()))
        if unknown:
            raise ValueError(
                f"{path}: column {split_column!r} holds {unknown}; expected "
                f"{sum(SPLITS.values(), ())}."
            )
    _check_each_file_once(path, files, lines, labels, splits)
    absent = [name for name in files if not os.path.isfile(name)]
    if absent:
        raise ValueError(
            f"{path}: {len(absent)} of {len(files)} rows name files that do not exist, e.g. "
            f"{absent[:5]}."
        )
    class_names = _sort_labels(sorted(set(labels)))
    ids = {name: i for i, name in enumerate(class_names)}
    return files, [ids[label] for label in labels], splits, class_names, split_column or None


def load_catalog(path, path_column, label_column, split_column, options):
    """Pipelines of the files a catalogue names, split by its split column or held out.

    Rows marked test score the run and rows marked val choose its epoch; with only one
    of the two, it scores the run. A `split` column found without being named is
    announced in one line: it decides what is scored.
    """
    files, labels, splits, class_names, used = read_catalog(
        path, path_column, label_column, split_column
    )
    if splits is None:
        kept, test = stratified_split(labels, options.validation_fraction, path, class_names)
        train, test = pick(files, labels, kept, test)
        return file_datasets(
            train, test, held_out_description(options.validation_fraction, "the rows"),
            class_names, options,
        )
    rows = {name: [i for i, split in enumerate(splits) if split in names] for name, names in SPLITS.items()}
    if not rows["train"] or not (rows["test"] or rows["val"]):
        raise ValueError(
            f"{path}: column {used!r} names {len(rows['train'])} train and "
            f"{len(rows['test']) + len(rows['val'])} test or val rows; both are needed."
        )
    if split_column is None:
        print(
            f"{path}: its {used!r} column splits the rows ({len(rows['train'])} train, "
            f"{len(rows['test'])} test, {len(rows['val'])} val); --split-column '' holds out "
            "a fraction instead."
        )
    held = [name for name in ("test", "val") if rows[name]]
    described = [
        (pick(files, labels, rows[name])[0], f"{'/'.join(sorted({splits[i] for i in rows[name]}))} (column {used!r})")
        for name in held
    ]
    return file_datasets(
        pick(files, labels, rows["train"])[0], *described[0], class_names, options,
        *(described[1] if len(described) > 1 else ()),
    )
