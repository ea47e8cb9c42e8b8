"""The data options' choices and bounds, light to import (the CLI's help texts use them)."""

from keras_astro.utils import is_int_at_least

AUGMENT_POLICIES = ("none", "basic", "dihedral", "rotate", "randaugment", "mixup", "cutmix")
AUGMENT_LIBRARIES = ("keras", "keras_cv")
# What raw inputs are: 8-bit pixels (0..255) or flux (keras_astro.preprocessing).
PREPROCESSING = ("pixels", "flux")
MIN_IMAGE_SIZE = 8


def check_image_size(image_size):
    if not is_int_at_least(image_size, MIN_IMAGE_SIZE):
        raise ValueError(
            f"`image_size` must be an int >= {MIN_IMAGE_SIZE}. Received: {image_size!r}"
        )
