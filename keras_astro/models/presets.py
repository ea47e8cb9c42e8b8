"""The named AstroTransformer configurations and the channel plan they share."""

STEM_FILTERS = 32

# name -> (expansion, stage_depths)
CONFIGS = {
    "small": (2, (1, 1, 1)),
    "base": (2, (2, 2, 2)),
    "large": (3, (2, 3, 3)),
}


def stage_channels(expansion):
    """Output channels of stages S1..S3: 32e, 32e^2, 32e^3."""
    return tuple(STEM_FILTERS * expansion**i for i in (1, 2, 3))
