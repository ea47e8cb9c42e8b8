"""The data options' choices and bounds, light to import (the CLI's help texts use them)."""

from keras_astro.utils import is_int_at_least

AUGMENT_POLICIES = ("none", "basic", "dihedral", "rotate", "randaugment", "mixup", "cutmix")
AUGMENT_LIBRARIES = ("keras", "keras_cv")
MIN_IMAGE_SIZE = 8
MAX_IMAGE_SIZE = 512
IMAGE_SIZE_LIMIT = "the attention's memory grows with (H*W)^2"


def check_image_size(image_size):
    if not is_int_at_least(image_size, MIN_IMAGE_SIZE) or image_size > MAX_IMAGE_SIZE:
        raise ValueError(
            f"`image_size` must be an int in [{MIN_IMAGE_SIZE}, {MAX_IMAGE_SIZE}] "
            f"({IMAGE_SIZE_LIMIT}). Received: {image_size!r}"
        )
