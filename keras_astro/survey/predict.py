"""Catalogue-scale prediction and embeddings: one row per object, written in resumable
chunks (`chunks`), images decoded in parallel by `tf.data` while the model runs.

`predict_table` writes the class, every class' probability, the predictive entropy
(and with `tta` the spread of the 8 views) per object; `embed` writes the pooled
features that the classifier reads (the `avg_pool` layer). Both read the same stream of
chunks (`predicted_chunks`), so a file that fails is a row with its error either way.
"""

import dataclasses
import os

import numpy as np
import tensorflow as tf

from keras_astro.data.converter import ImageConverter
from keras_astro.data.pipeline import without_autotuning
from keras_astro.survey.chunks import Embeddings, output_format, write_chunks
from keras_astro.survey.objects import image_dataset, shard
from keras_astro.training.evaluation import (
    DIHEDRAL_VIEWS,
    predict_views,
    predictive_entropy,
    view_spread,
)
from keras_astro.utils import check_classifier, class_names, returns_logits

DEFAULT_CHUNK_SIZE = 1024
DEFAULT_BATCH_SIZE = 64
FEATURES_LAYER = "avg_pool"


def channels_last(model, core=None):
    """`core` (default: `model`), taking channels_last images: a channels_first model's
    behind a transpose, since images are read and the dihedral views of `predict_views`
    made channels_last."""
    import keras

    core = model if core is None else core
    if model.data_format != "channels_first":
        return core
    bands, height, width = model.image_shape
    inputs = keras.Input((height, width, bands))
    wrapped = keras.Model(inputs, core(keras.layers.Permute((3, 1, 2))(inputs)))
    wrapped.classifier_activation = "linear" if returns_logits(model) else "softmax"
    return wrapped


def predicted_chunks(model, objects, chunk_size, compute, start=0):
    """Yields `compute(images [n, size, size, bands], ok [n] bool)` for each chunk of
    objects from chunk `start` on, with the chunk's objects and error messages ("" when
    fine): (objects, errors, result). The next chunk decodes while this one is computed."""
    converter = ImageConverter.from_model(model)
    rest = objects.select(start * chunk_size, len(objects))
    batches = image_dataset(rest, model, converter).batch(chunk_size).prefetch(1)
    batches = without_autotuning(batches)
    for i, (images, errors) in enumerate(batches.as_numpy_iterator()):
        errors = [error.decode() for error in errors]
        ok = np.array([not error for error in errors])
        yield rest.select(i * chunk_size, (i + 1) * chunk_size), errors, compute(images, ok)


def _batches(images, batch_size):
    """A chunk's decoded images as the batches `predict` takes (`without_autotuning`: each
    chunk is one `predict` call)."""
    return without_autotuning(tf.data.Dataset.from_tensor_slices(images).batch(batch_size))


def _probability_columns(model, tta, batch_size):
    names = class_names(model)
    classifier = channels_last(model)

    def compute(images, ok):
        views = np.full((DIHEDRAL_VIEWS if tta else 1, len(ok), len(names)), np.nan)
        if ok.any():
            views[:, ok] = predict_views(classifier, _batches(images[ok], batch_size), tta=tta)
        probabilities = views.mean(axis=0)
        best = np.nan_to_num(probabilities).argmax(axis=-1)
        table = {"class": [names[i] if good else "" for i, good in zip(best, ok)]}
        table.update({f"p_{name}": probabilities[:, i] for i, name in enumerate(names)})
        table["entropy"] = np.where(ok, predictive_entropy(np.nan_to_num(probabilities)), np.nan)
        if tta:
            table["tta_spread"] = np.where(ok, view_spread(np.nan_to_num(views)), np.nan)
        return table

    return compute


def print_top_classes(model, objects, top_k=3, tta=False, batch_size=DEFAULT_BATCH_SIZE):
    """Prints `identifier: class p, ...` (the `top_k` likeliest) for each object read,
    then each failure's message on stderr; returns the number of failures."""
    import sys

    names = class_names(model)
    failures = []
    compute = _probability_columns(model, tta, batch_size)
    for part, errors, table in predicted_chunks(model, objects, DEFAULT_CHUNK_SIZE, compute):
        probabilities = np.stack([table[f"p_{name}"] for name in names], axis=-1)
        for identifier, error, p in zip(part.identifiers, errors, probabilities):
            if error:
                failures.append(error)
                continue
            best = np.argsort(-p)[:top_k]
            print(f"{identifier}: " + ", ".join(f"{names[i]} {p[i]:.1%}" for i in best))
    for failure in failures:
        print(failure, file=sys.stderr)
    return len(failures)


def prediction_columns(model, tta=False):
    """The columns `predict_table` adds after the objects' own."""
    return ["class", *(f"p_{name}" for name in class_names(model)), "entropy",
            *(["tta_spread"] if tta else []), "error"]


def _check_columns(objects, added):
    clash = [name for name in objects.columns if name in added]
    if clash:
        raise ValueError(
            f"The catalogue has a column {clash[0]!r}, which the output adds too; expected "
            f"none of {added}: rename it."
        )


def _record(model_path, objects, shard_spec, **settings):
    stat = os.stat(model_path)
    return {
        "model": os.path.realpath(model_path), "model_size": stat.st_size,
        "model_mtime_ns": stat.st_mtime_ns, "objects": objects.fingerprint(),
        "shard": list(shard_spec or (0, 1)), **settings,
    }


def _run(model, model_path, objects, output, fmt, compute, shard_spec, chunk_size,
         progress, **settings):
    """Writes `output` (resuming); returns the number of objects that failed."""
    if shard_spec:
        objects = shard(objects, *shard_spec)

    def chunks(start):
        for part, failures, result in predicted_chunks(model, objects, chunk_size, compute, start):
            table, arrays = result if isinstance(result, tuple) else (result, None)
            yield {**part.columns, **table, "error": failures}, arrays

    record = _record(model_path, objects, shard_spec, **settings)
    write_chunks(output, fmt, record, len(objects), chunk_size, chunks, progress)
    return fmt.count_errors(output)  # chunks of an earlier, killed run included


def predict_table(model, model_path, objects, output, tta=False, shard=None,
                  chunk_size=DEFAULT_CHUNK_SIZE, batch_size=DEFAULT_BATCH_SIZE, progress=True):
    """Writes one row per object to `output` (.csv or .parquet), resuming a killed run.

    Rows follow `objects`' order: their own columns, `class`, `p_<class>` for each class,
    `entropy` (nats), `tta_spread` with `tta`, and `error` (empty when fine; a failed
    object has no class or probabilities). `shard` (I, N) writes the I-th of N
    contiguous slices. `model_path` is recorded so that a resumed run uses the same
    model. Returns the number of objects that failed.
    """
    check_classifier(model, "predict")
    _check_columns(objects, prediction_columns(model, tta))
    return _run(model, model_path, objects, output, output_format(output),
                _probability_columns(model, tta, batch_size), shard, chunk_size, progress,
                kind="predict", tta=bool(tta))


def feature_model(model):
    """The model up to its pooled features (`avg_pool`), taking channels_last images;
    averaged over the 8 views when the model averages them."""
    import keras

    names = [layer.name for layer in model.layers]
    if FEATURES_LAYER not in names:
        raise ValueError(
            f"The model has no {FEATURES_LAYER!r} layer; expected an AstroTransformer with its "
            "classifier (include_top=True) or pooling='avg'."
        )
    features = model.get_layer(FEATURES_LAYER).output
    if getattr(model, "test_time_augmentation", None):
        from keras_astro.layers.symmetry import ViewAverage

        features = ViewAverage(name="features_view_average")(features)  # orientation-free
    return channels_last(model, keras.Model(model.inputs, features))


def embed(model, model_path, objects, output, dtype="float16", shard=None,
          chunk_size=DEFAULT_CHUNK_SIZE, batch_size=DEFAULT_BATCH_SIZE, progress=True):
    """Writes the pooled features of each object to `output` (.npy, [n, features]) and
    their identifiers table beside it (`.csv`: the objects' columns, a catalogue's
    absolute `file` paths, and `error`; a failed object's features are NaN). Resumes and
    shards as `predict_table`. Returns the number of objects that failed."""
    if not output.endswith(".npy"):
        raise ValueError(f"--output {output!r}: expected a .npy file for the embeddings.")
    if objects.source == "catalog":  # where `similar --plot` finds the cutouts
        _check_columns(objects, ["file", "error"])
        objects = dataclasses.replace(
            objects, columns={**objects.columns, "file": objects.identifiers}
        )
    _check_columns(objects, ["error"])
    features = feature_model(model)
    width = features.outputs[0].shape[-1]
    # A model that averages 8 views runs 8 images per object: the same memory per batch.
    views = getattr(model, "test_time_augmentation", None)
    batch = max(1, batch_size // DIHEDRAL_VIEWS) if views else batch_size

    def compute(images, ok):
        vectors = np.full((len(ok), width), np.nan, np.float32)
        if ok.any():
            vectors[ok] = features.predict(_batches(images[ok], batch), verbose=0)
        return {}, vectors

    fmt = Embeddings(dtype)
    return _run(model, model_path, objects, output, fmt, compute, shard, chunk_size, progress,
                kind="embed", dtype=fmt.dtype.name)
