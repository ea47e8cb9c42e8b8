"""The named AstroTransformer configurations, the channel plan they share and the ways the
model scales raw input; light to import (the data pipelines and the CLI use them)."""

STEM_FILTERS = 32
# How the model scales raw inputs (keras_astro.layers.preprocessing): per image, or one
# scale for the data set.
NORMALIZATIONS = ("image", "dataset")

# name -> (expansion, stage_depths)
CONFIGS = {
    "small": (2, (1, 1, 1)),
    "base": (2, (2, 2, 2)),
    "large": (3, (2, 3, 3)),
}


def stage_channels(expansion):
    """Output channels of stages S1..S3: 32e, 32e^2, 32e^3."""
    return tuple(STEM_FILTERS * expansion**i for i in (1, 2, 3))
