"""Surveys: the classifier over a catalogue's objects, to a table (`predict_table`) or
to embeddings (`embed`) for similarity search and anomaly scores (`similar`), written
in resumable chunks and shards. Names load on first use (TensorFlow).
"""

from keras_astro.utils import lazy_exports

_EXPORTS = {
    "find_objects": "keras_astro.survey.objects",
    "shard": "keras_astro.survey.objects",
    "predict_table": "keras_astro.survey.predict",
    "embed": "keras_astro.survey.predict",
    "load_embeddings": "keras_astro.survey.similar",
    "nearest": "keras_astro.survey.similar",
    "anomaly_scores": "keras_astro.survey.similar",
}
__all__ = list(_EXPORTS)
__getattr__ = lazy_exports(__name__, _EXPORTS)
