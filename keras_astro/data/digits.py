"""scikit-learn's handwritten digits: the offline source of the demo and the tests."""

import dataclasses

import numpy as np

from keras_astro.data.arrays import from_arrays
from keras_astro.data.pipeline import SPLIT_RANDOM_STATE

DIGITS = "digits"
DIGITS_TEST_FRACTION = 0.2


def load_digits(options):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    images = np.repeat(digits.images[..., None] * (255.0 / 16.0), 3, axis=-1).astype("float32")
    x_train, x_test, y_train, y_test = train_test_split(
        images,
        digits.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=digits.target,
        random_state=SPLIT_RANDOM_STATE,
    )
    class_names = [str(name) for name in digits.target_names]
    return from_arrays(
        x_train, y_train, x_test, y_test, class_names=class_names,
        **{**dataclasses.asdict(options), "preprocessing": options.preprocessing_or("pixels")},
    )
