"""AstroTransformer (`astro_transformer`) and its named configurations (`presets`).

`presets` imports nothing heavy; the model is imported on first use of its name.
"""

from keras_astro.models.presets import CONFIGS
from keras_astro.utils import lazy_exports

__all__ = ["AstroTransformer", "CONFIGS"]
__getattr__ = lazy_exports(__name__, {"AstroTransformer": "keras_astro.models.astro_transformer"})
