"""Similarity search and anomaly scores on the embeddings that `embed` writes.

Objects are compared by the cosine distance of their pooled features (1 - cosine
similarity: 0 for the same direction, 2 for opposite ones), with scikit-learn's exact
`NearestNeighbors`. An object's anomaly score is its distance to its k-th nearest
neighbour: high where few objects look like it. Objects that failed (NaN features)
have no neighbours and are no one's neighbour.
"""

import csv
import os

import numpy as np

from keras_astro.survey.chunks import embedding_table
from keras_astro.utils import write_atomically


def load_embeddings(path):
    """(float32 features [n, d], the identifiers table {column: list of str}) of `embed`'s
    output `path` (.npy, its table beside it)."""
    table_path = embedding_table(path)
    if not (os.path.isfile(path) and os.path.isfile(table_path)):
        raise ValueError(
            f"No embeddings at {path!r} with their table {table_path!r}; expected what "
            "`keras-astro embed ... --output EMB.npy` writes."
        )
    features = np.load(path, mmap_mode="r").astype(np.float32)
    with open(table_path, newline="") as f:
        rows = list(csv.reader(f))
    columns = rows[0]
    table = {name: [row[i] for row in rows[1:]] for i, name in enumerate(columns)}
    if len(rows) - 1 != len(features):
        raise ValueError(
            f"{table_path} has {len(rows) - 1} rows but {path} holds {len(features)} vectors; "
            "expected one row per vector: embed again."
        )
    return features, table


def _index(features, k):
    """(fitted NearestNeighbors, row numbers of the valid objects)."""
    from sklearn.neighbors import NearestNeighbors

    valid = np.flatnonzero(np.isfinite(features).all(axis=1))
    if len(valid) <= k:
        raise ValueError(
            f"{len(valid)} objects have features; expected more than k={k} to find k neighbours."
        )
    return NearestNeighbors(metric="cosine").fit(features[valid]), valid


def nearest(features, rows, k=5):
    """(row numbers [q, k], cosine distances [q, k]) of the k nearest other objects of
    each object `rows`, nearest first."""
    search, valid = _index(features, k)
    queries = features[np.asarray(rows)]
    if not np.isfinite(queries).all():
        raise ValueError("A query object failed to embed (its error column says why): no features.")
    distances, found = search.kneighbors(queries, n_neighbors=k + 1)
    found = valid[found]
    # Drop each query itself (or, for a duplicate, the last one found).
    keep = [np.flatnonzero(row != query)[:k] for row, query in zip(found, rows)]
    return (np.stack([row[i] for row, i in zip(found, keep)]),
            np.stack([row[i] for row, i in zip(distances, keep)]))


def anomaly_scores(features, k=5):
    """Per object, the cosine distance to its k-th nearest other object (NaN for failed
    ones): high for objects unlike the rest."""
    search, valid = _index(features, k)
    distances, _ = search.kneighbors(features[valid], n_neighbors=k + 1)
    scores = np.full(len(features), np.nan)
    scores[valid] = distances[:, k]
    return scores


def find_row(table, query):
    """The row number of `query`: a value found in exactly one row of one of the table's
    columns (a path, an id), else a row number."""
    for name, values in table.items():
        rows = [i for i, value in enumerate(values) if value == query]
        if len(rows) == 1:
            return rows[0]
    if query.isdigit() and int(query) < len(next(iter(table.values()))):
        return int(query)
    raise ValueError(
        f"No object {query!r}: expected a value that names one row of a column of the "
        f"embeddings table ({', '.join(table)}), or a row number."
    )


def write_anomalies(path, table, scores):
    """The embeddings table with an `anomaly` column, as CSV, atomically."""
    def write(f):
        writer = csv.writer(f)
        writer.writerow([*table, "anomaly"])
        cells = ["" if np.isnan(score) else f"{score:.6g}" for score in scores]
        writer.writerows(zip(*table.values(), cells))

    write_atomically(path, write)


def cutout(table, row, data_file=None, images_key="images"):
    """The raw image of a table's row, for display: a file's, or an HDF5 file's row."""
    from keras_astro.data.converter import decode_file
    from keras_astro.data.fits import is_fits

    if "row" in table and "path" not in table and "file" not in table:
        if data_file is None:
            raise ValueError("These embeddings are of an HDF5 file's rows: name it with --data-file.")
        import h5py

        with h5py.File(data_file, "r") as file:
            return np.asarray(file[images_key][int(table["row"][row])])
    path = table["file" if "file" in table else "path"][row]
    image = np.asarray(decode_file(path))
    # A 16-bit PNG decodes to float 0..255: shown as the 8-bit photo it also is.
    return image if is_fits(path) else np.round(image).astype(np.uint8)


def _displayed(image):
    """uint8 RGB as it is; flux as the mean of its bands, scaled from its 1st to 99th
    percentile."""
    if image.dtype == np.uint8 and image.ndim == 3 and image.shape[-1] == 3:
        return image, None
    image = image.reshape(*image.shape[:2], -1).astype(np.float32).mean(axis=-1)
    finite = image[np.isfinite(image)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0, 1)
    return np.clip((np.nan_to_num(image, nan=low) - low) / max(high - low, 1e-12), 0, 1), "gray"


def plot_neighbours(path, table, rows, found, distances, data_file=None, images_key="images"):
    """A PNG grid: a row per query, the query then its neighbours with their distances."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = found.shape[1] + 1
    figure, axes = plt.subplots(len(rows), columns, figsize=(1.6 * columns, 1.8 * len(rows)),
                                squeeze=False)
    for axis_row, query, neighbours, far in zip(axes, rows, found, distances):
        shown = [(query, "query")] + [(n, f"{d:.3f}") for n, d in zip(neighbours, far)]
        for axis, (row, title) in zip(axis_row, shown):
            image, cmap = _displayed(cutout(table, row, data_file, images_key))
            axis.imshow(image, cmap=cmap)
            axis.set_title(title, fontsize=8)
            axis.axis("off")
    figure.tight_layout()
    write_atomically(path, lambda f: figure.savefig(f, format="png", dpi=100), binary=True)
    plt.close(figure)
