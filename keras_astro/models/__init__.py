"""AstroTransformer (`astro_transformer`), its named configurations (`presets`), and what
works on whole models: loading `.keras` files (`saving`), reference checkpoints
(`checkpoints`, `reference`), batch-norm folding (`folding`) and FLOP counts (`flops`).

`presets` and `saving` import nothing heavy; the rest loads on first use of its name.
"""

from keras_astro.models.presets import CONFIGS
from keras_astro.utils import lazy_exports

_EXPORTS = {
    "AstroTransformer": "keras_astro.models.astro_transformer",
    "load_model": "keras_astro.models.saving",
}
__all__ = [*_EXPORTS, "CONFIGS"]
__getattr__ = lazy_exports(__name__, _EXPORTS)
