"""Test-time augmentation over the symmetries of the square, inside the model.

The sky has no up or left: a galaxy rotated by a quarter turn or mirrored is the same
galaxy. A model trained with those views (`--augment dihedral`) still answers each of
them a little differently; averaging its 8 answers in inference mode gives one answer
that does not depend on the cutout's orientation. Done in the graph, so `predict`,
`evaluate`, `.keras` files and the exported signatures all average the same views.

`DihedralViews` stacks the 8 views along the batch axis before the network and
`ViewAverage` averages the network's outputs over them; both pass their input through
unchanged in training, where the random augmentation already shows the network the views.
"""

import keras
from keras import ops

from keras_astro.layers.arguments import standardize_data_format

DIHEDRAL_VIEWS = 8
TEST_TIME_AUGMENTATIONS = (None, "dihedral")


def check_test_time_augmentation(test_time_augmentation, image_shape=None, data_format=None):
    """Raises a `ValueError` for an unknown mode, or for images that are not square
    (a quarter turn of a non-square image has another shape)."""
    if test_time_augmentation not in TEST_TIME_AUGMENTATIONS:
        raise ValueError(
            f"`test_time_augmentation` must be one of {TEST_TIME_AUGMENTATIONS}. "
            f"Received: {test_time_augmentation!r}"
        )
    if test_time_augmentation is None or image_shape is None:
        return
    spatial = image_shape[:2] if data_format == "channels_last" else image_shape[1:]
    if spatial[0] is None or spatial[0] != spatial[1]:
        raise ValueError(
            "test_time_augmentation='dihedral' turns images by quarter turns, so they must be "
            f"square with a known size. Received: input_shape={tuple(image_shape)!r}"
        )


def dihedral_views(images, data_format="channels_last"):
    """The 8 views of a batch of square images, stacked along the batch axis: view k
    (rows k*B to (k+1)*B) is `k % 4` quarter turns, transposed first for k >= 4."""
    rows, cols = (1, 2) if data_format == "channels_last" else (2, 3)
    swap = list(range(4))
    swap[rows], swap[cols] = cols, rows
    views = []
    for transposed in (images, ops.transpose(images, swap)):
        view = transposed
        for _ in range(4):
            views.append(view)
            # A quarter turn: transpose, then flip the new rows.
            view = ops.flip(ops.transpose(view, swap), axis=rows)
    return ops.concatenate(views, axis=0)


@keras.saving.register_keras_serializable(package="keras_astro")
class DihedralViews(keras.layers.Layer):
    """In inference, a batch [B, ...] of square images becomes its 8 views [8B, ...].

    Args:
        data_format: `"channels_last"`, `"channels_first"` or `None` (Keras' global).
    """

    def __init__(self, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.data_format = standardize_data_format(data_format)

    def call(self, images, training=None):
        if training:
            return images
        return dihedral_views(images, self.data_format)

    def compute_output_shape(self, input_shape):  # in inference
        batch = input_shape[0]
        return (None if batch is None else DIHEDRAL_VIEWS * batch, *input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "data_format": self.data_format}


@keras.saving.register_keras_serializable(package="keras_astro")
class ViewAverage(keras.layers.Layer):
    """In inference, outputs [8B, ...] of `DihedralViews`' batch become their mean over
    the views [B, ...]; placed after the softmax, it averages probabilities."""

    def call(self, outputs, training=None):
        if training:
            return outputs
        views = ops.reshape(outputs, (DIHEDRAL_VIEWS, -1, *outputs.shape[1:]))
        return ops.mean(views, axis=0)

    def compute_output_shape(self, input_shape):  # in inference
        batch = input_shape[0]
        return (None if batch is None else batch // DIHEDRAL_VIEWS, *input_shape[1:])
