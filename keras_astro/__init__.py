"""keras-astro: AstroTransformer for Keras 3 (TensorFlow, JAX and PyTorch backends)."""

from keras_astro import layers
from keras_astro.export import export_for_serving
from keras_astro.folding import fold_batch_norm
from keras_astro.layers import RelativeAttention, StageBlock
from keras_astro.model import AstroTransformer

__version__ = "0.1.0"

__all__ = [
    "AstroTransformer",
    "RelativeAttention",
    "StageBlock",
    "export_for_serving",
    "fold_batch_norm",
    "layers",
    "__version__",
]
