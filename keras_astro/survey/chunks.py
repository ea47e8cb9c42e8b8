"""Outputs written in chunks that a killed run resumes: never a row twice, none skipped.

Chunk i holds the objects [i * chunk_size, (i + 1) * chunk_size). Each is written whole
to `OUTPUT.parts/<i>` (a temporary name, then renamed), next to a record of what the run
is (its objects, model and settings). A run started again with the same command checks
the record, skips the chunks on disk and computes the rest; once every chunk is there,
they are joined in order into OUTPUT (again via a temporary name) and the parts folder
is removed. One process at a time writes an output: the parts folder is locked as a run
folder is (`training.run_folder.lock`).
"""

import contextlib
import csv
import json
import math
import os
import shutil
import sys

import numpy as np

from keras_astro.training.run_folder import LOCK_FILE, lock
from keras_astro.utils import require, write_atomically, write_json

PARTS_SUFFIX = ".parts"
RECORD_FILE = "record.json"


def _cell(value):
    """A CSV cell: floats to 7 significant digits, NaN and None empty."""
    if isinstance(value, (float, np.floating)):
        return "" if math.isnan(value) else f"{value:.7g}"
    return "" if value is None else value


class CsvTable:
    """A table chunk {column: values} as CSV; the chunks concatenate into the table."""

    suffix = ".csv"

    def write(self, path, table, arrays=None):
        def write(f):
            writer = csv.writer(f)
            writer.writerow(table)
            writer.writerows(zip(*([_cell(v) for v in values] for values in table.values())))

        write_atomically(path, write)

    def join(self, parts, output):
        def write(f):
            for i, part in enumerate(parts):
                with open(part, newline="") as source:
                    header = source.readline()
                    if i == 0:
                        f.write(header)
                    shutil.copyfileobj(source, f)

        write_atomically(output, write)

    def count_errors(self, output):
        """The rows of a finished table whose `error` is not empty."""
        with open(output, newline="") as f:
            return sum(1 for row in csv.DictReader(f) if row["error"])


class ParquetTable:
    """A table chunk as Parquet (pyarrow, the `parquet` extra); joined row group by row group."""

    suffix = ".parquet"

    def __init__(self):
        require("Parquet output", "parquet", "pyarrow")

    def write(self, path, table, arrays=None):
        import pyarrow as pa
        import pyarrow.parquet as pq

        write_atomically(path, lambda f: pq.write_table(pa.table(table), f), binary=True)

    def join(self, parts, output):
        import pyarrow.parquet as pq

        def write(f):
            with pq.ParquetWriter(f, pq.read_schema(parts[0])) as writer:
                for part in parts:
                    writer.write_table(pq.read_table(part))

        write_atomically(output, write, binary=True)

    def count_errors(self, output):
        import pyarrow.parquet as pq

        errors = pq.read_table(output, columns=["error"]).column("error").to_pylist()
        return sum(1 for error in errors if error)


class Embeddings:
    """Chunks of features [n, d] as `.npy` beside their table chunk; joined into
    OUTPUT (`.npy`, `dtype`) and OUTPUT's table (`.csv` beside it)."""

    suffix = ".csv"  # written last: a chunk whose table is there is whole

    def __init__(self, dtype="float16"):
        self.dtype = np.dtype(dtype)

    def write(self, path, table, arrays):
        write_atomically(path[: -len(self.suffix)] + ".npy",
                         lambda f: np.save(f, arrays.astype(self.dtype)), binary=True)
        CsvTable().write(path, table)

    def join(self, parts, output):
        arrays = [np.load(part[: -len(self.suffix)] + ".npy", mmap_mode="r") for part in parts]
        rows = sum(len(array) for array in arrays)

        def write(f):
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                    "shape": (rows, arrays[0].shape[1])}
            )
            for array in arrays:
                f.write(np.ascontiguousarray(array).tobytes())

        CsvTable().join(parts, embedding_table(output))
        write_atomically(output, write, binary=True)

    def count_errors(self, output):
        return CsvTable().count_errors(embedding_table(output))


def embedding_table(path):
    """The identifiers table of an embeddings file: `EMB.npy` -> `EMB.csv`."""
    return os.path.splitext(path)[0] + ".csv"


def output_format(path):
    """The table format of an output path: `.csv` or `.parquet`."""
    if path.endswith(".csv"):
        return CsvTable()
    if path.endswith(".parquet"):
        return ParquetTable()
    raise ValueError(f"--output {path!r}: expected a .csv or .parquet table.")


def _check_record(parts, record):
    path = os.path.join(parts, RECORD_FILE)
    if not os.path.exists(path):
        write_json(path, record)
        return
    with open(path) as f:
        previous = json.load(f)
    if previous != record:
        differences = "; ".join(
            f"{key} {previous.get(key)!r} there, {record.get(key)!r} now"
            for key in sorted(set(previous) | set(record)) if previous.get(key) != record.get(key)
        )
        raise ValueError(
            f"{parts} holds the unfinished output of another run ({differences}). Nothing was "
            "changed: run the same command as before to finish it, or delete that folder to "
            "start over."
        )


def write_chunks(output, fmt, record, total, chunk_size, compute, progress=True):
    """Writes `output` from chunks of `chunk_size` of `total` objects, resuming.

    `compute(first_chunk)` yields (table, arrays) for the chunks from `first_chunk` on,
    in order (`fmt.write` takes them); `record` (JSON) describes the run: a resumed run
    with another record is refused. Returns the number of chunks computed now.
    """
    if total == 0:
        raise ValueError(f"No objects to write to {output}: the input (or its shard) is empty.")
    parts = output + PARTS_SUFFIX
    count = max(1, math.ceil(total / chunk_size))
    names = [os.path.join(parts, f"{i:05d}{fmt.suffix}") for i in range(count)]
    with lock(parts):
        _check_record(parts, {**record, "total": total, "chunk_size": chunk_size})
        # Chunks are written in order: the first missing one is where the run stopped.
        start = next((i for i, name in enumerate(names) if not os.path.exists(name)), count)
        if start < count:
            from tqdm.auto import tqdm

            with tqdm(total=total, initial=min(total, start * chunk_size), unit=" objects",
                      disable=not progress, file=sys.stderr, mininterval=1) as bar:
                for i, (table, arrays) in enumerate(compute(start), start):
                    fmt.write(names[i], table, arrays)
                    bar.update(len(next(iter(table.values()))))
        fmt.join(names, output)
        for name in os.listdir(parts):
            if name != LOCK_FILE:  # the lock removes its own file, then a folder it made
                os.remove(os.path.join(parts, name))
    with contextlib.suppress(OSError):
        os.rmdir(parts)
    return count - start
