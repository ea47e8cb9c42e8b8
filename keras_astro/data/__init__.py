"""Input pipelines: batched `tf.data` datasets of raw pixels and one-hot labels.

Sources: scikit-learn's handwritten digits (`digits`, offline), any tensorflow-datasets
image classification dataset (`tfds_source`), an image folder (`folders`), or numpy
arrays (`arrays`). `loading.load_datasets` picks the source; `pipeline` turns any of
them into the `ImageDatasets` that `model.fit` takes on every backend, cropped and
resized by the `converter` that predict and export use too; `augment` holds the
augmentation and `options` its choices. Names load on first use (TensorFlow).
"""

from keras_astro.data.options import AUGMENT_LIBRARIES, AUGMENT_POLICIES, MIN_IMAGE_SIZE
from keras_astro.utils import lazy_exports, require

_EXPORTS = {
    "AUTOTUNE": "keras_astro.data.pipeline",
    "ImageConverter": "keras_astro.data.converter",
    "ImageDatasets": "keras_astro.data.pipeline",
    "available_sources": "keras_astro.data.loading",
    "from_arrays": "keras_astro.data.arrays",
    "load_datasets": "keras_astro.data.loading",
    "make_augmentation": "keras_astro.data.augment",
    "without_autotuning": "keras_astro.data.pipeline",
}
__all__ = ["AUGMENT_LIBRARIES", "AUGMENT_POLICIES", "MIN_IMAGE_SIZE", *_EXPORTS]
_lazy_export = lazy_exports(__name__, _EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:  # every one imports TensorFlow, which the core install lacks
        require(__name__, "data", "tensorflow")
    return _lazy_export(name)
