"""keras-astro: AstroTransformer for Keras 3 (TensorFlow, JAX and PyTorch backends).

Importing the package imports neither Keras nor TensorFlow: each public name loads its
module on first use (PEP 562), so `keras-astro --help` is instant and the CLI can choose
the Keras backend first. The model, its layers and `.keras` files need Keras alone;
`keras_astro.data`, `training` and `export` also use TensorFlow (tf.data, SavedModel).

`keras.saving.load_model` needs the package's classes registered: that happens at
`import keras_astro` when Keras was imported before it, and otherwise on first use of
any name of the package (or use `keras_astro.models.load_model`).
"""

import sys

from keras_astro.models.saving import register_saved_classes
from keras_astro.utils import lazy_exports

__version__ = "0.1.0"

# public name -> the module that defines it (for a module's name: that module)
_EXPORTS = {
    "AstroTransformer": "keras_astro.models.astro_transformer",
    "RelativeAttention": "keras_astro.layers.relative_attention",
    "StageBlock": "keras_astro.layers.stage_block",
    "count_flops": "keras_astro.models.flops",
    "export_for_serving": "keras_astro.export",
    "fold_batch_norm": "keras_astro.models.folding",
    "checkpoints": "keras_astro.models.checkpoints",
    "cli": "keras_astro.cli",
    "data": "keras_astro.data",
    "distribute": "keras_astro.training.distribute",
    "export": "keras_astro.export",
    "flops": "keras_astro.models.flops",
    "folding": "keras_astro.models.folding",
    "layers": "keras_astro.layers",
    "models": "keras_astro.models",
    "plots": "keras_astro.training.plots",
    "preprocessing": "keras_astro.layers.preprocessing",
    "reference": "keras_astro.models.reference",
    "survey": "keras_astro.survey",
    "training": "keras_astro.training",
    "utils": "keras_astro.utils",
}
__all__ = [*_EXPORTS, "__version__"]
__getattr__ = lazy_exports(__name__, _EXPORTS)


def __dir__():
    return sorted(set(globals()) | set(__all__))


if "keras" in sys.modules:
    # Keras is loaded already, so registering costs nothing: `keras.saving.load_model`
    # then finds the classes a `.keras` file names after a plain `import keras_astro`.
    register_saved_classes()
