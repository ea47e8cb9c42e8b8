"""Training augmentation with Keras preprocessing layers, inside the `tf.data` graph.

The layers run on TensorFlow there whatever the Keras backend is, so the same pipelines
feed `model.fit` on TensorFlow, JAX and PyTorch.
"""

import contextlib

import keras
import tensorflow as tf

from keras_astro.data.options import AUGMENT_LIBRARIES, AUGMENT_POLICIES, check_image_size
from keras_astro.utils import check_choice

# Random shifts reach 1/8 of the side: the usual 4-pixel padding at 32x32.
SHIFT_FRACTION = 1 / 8


def make_augmentation(
    policy, image_size, seed=0, num_classes=None, library="keras", preprocessing="pixels"
):
    """Returns `fn(images, labels) -> (images, labels)` for batches inside `tf.data`.

    Policies (all keep images raw: 0..255 pixels or flux):
        "none": identity.
        "basic": a random shift of up to 1/8 of the side (4 pixels at 32x32) with zero
            fill, the same images as zero padding then a random crop but drawn per
            image (Keras' RandomCrop uses one window per batch), and a random
            horizontal flip.
        "dihedral": the shift of "basic", then one of the 8 symmetries of the square
            (rotations by 90 degrees, with or without a mirror flip) per image: a
            galaxy has no preferred orientation on the sky. A mirror turns a clockwise
            spiral into an anticlockwise one: do not use it to learn handedness.
        "rotate": the shift, then a rotation by any angle (bilinear, zero fill) and a
            horizontal flip, per image.
        "randaugment": basic, then RandAugment (Keras draws its two ops once per batch
            and their magnitudes per image).
        "mixup", "cutmix": basic, then MixUp or CutMix across the batch; labels become
            soft one-hot mixtures.

    The random state lives in the layers: run the returned `Augmentation` in a
    sequential `map` so batches consume it in order, and call its `restart(epoch)`
    at the start of each pass (the pipelines of `keras_astro.data` do) so that an
    epoch's draws depend only on (seed, epoch), and a resumed run augments exactly
    as an uninterrupted one. keras-cv's layers keep state that `restart` cannot
    reach, and its MixUp, CutMix and RandAugment also draw from TensorFlow's global
    random state: with `library="keras_cv"` runs are repeatable from the start
    (keras-cv's RandAugment not even then) but a resumed one is not exact.

    Args:
        policy: one of `AUGMENT_POLICIES`.
        image_size: int, the side of the square images.
        seed: int.
        num_classes: int; when given, int class-id labels are one-hot encoded first
            (MixUp and CutMix mix one-hot labels).
        library: `"keras"` (Keras core layers) or `"keras_cv"`.
        preprocessing: `"pixels"` or `"flux"`; RandAugment's colour operations assume 8-bit
            pixels and are refused for flux.
    """
    check_choice("augment", policy, AUGMENT_POLICIES)
    if preprocessing == "flux" and policy == "randaugment":
        raise ValueError(
            "`augment='randaugment'` changes colours and contrast of 0..255 pixels; flux data "
            "takes 'none', 'basic', 'dihedral', 'rotate', 'mixup' or 'cutmix'."
        )
    check_choice("library", library, AUGMENT_LIBRARIES)
    check_image_size(image_size)
    return Augmentation(_augmentation_layers(policy, image_size, seed, library), num_classes)


class Augmentation:
    """`fn(images, labels) -> (images, labels)` over Keras layers, restartable per epoch."""

    # Draws one epoch may take from each random state before the next epoch's begin.
    _DRAWS_PER_EPOCH = 2**24

    def __init__(self, layers, num_classes=None):
        self.layers = layers
        self.num_classes = num_classes

    def __call__(self, images, labels):
        if self.num_classes is not None and labels.shape.rank == 1:
            labels = tf.one_hot(labels, self.num_classes)
        data = {"images": images, "labels": labels}
        for layer in self.layers:
            data = layer(data)
        return data["images"], data["labels"]

    def restart(self, epoch):
        """Ops that set every random state to its value at the start of epoch `epoch`.

        For use inside a `tf.data` function, after this augmentation was traced in
        one (that trace creates the TensorFlow-side state the layers use in `tf.data`
        under the JAX and torch backends). Each state restarts at
        `[its seed, epoch * 2**24]`, so epochs draw from disjoint streams.
        """
        offset = tf.cast(epoch, tf.int64) * self._DRAWS_PER_EPOCH
        ops = []
        for layer in self.layers:
            if isinstance(layer, _RandomTranspose):
                ops.append(layer.restart(offset))
                continue
            for sublayer in layer._flatten_layers():
                # Keras' data layers draw from `_get_seed_generator(backend)`: in
                # `tf.data` it is the TensorFlow one whatever the Keras backend is.
                keras_data_layer = hasattr(sublayer, "generator") and hasattr(
                    sublayer, "_get_seed_generator"
                )
                if getattr(sublayer, "seed", None) is None or not keras_data_layer:
                    continue
                state = sublayer._get_seed_generator("tensorflow").state
                value = tf.stack([tf.constant(sublayer.seed, tf.int64), offset])
                ops.append(state.assign(tf.cast(value, state.dtype)))
        return ops


def _augmentation_layers(policy, image_size, seed, library):
    if policy == "none":
        return []
    # keras-cv falls back to TensorFlow's global generator for seed 0, hence seed + 1.
    module = keras.layers if library == "keras" else _import_keras_cv().layers
    shift = max(1, round(image_size * SHIFT_FRACTION)) / image_size  # whole pixels
    with _float32_policy():
        layers = [
            module.RandomTranslation(
                shift, shift, fill_mode="constant", interpolation="nearest", seed=seed + 1
            )
        ]
        if policy == "dihedral":
            # Two layers: "horizontal_and_vertical" draws one flip for both axes (identity
            # or a half turn only), and with the transpose that reached 4 of the 8.
            layers += [module.RandomFlip("horizontal", seed=seed + 2)]
            layers += [module.RandomFlip("vertical", seed=seed + 4)]
            layers += [_RandomTranspose(seed=seed + 3)]
        elif policy == "rotate":
            layers += [
                module.RandomRotation(0.5, fill_mode="constant", seed=seed + 2),
                module.RandomFlip("horizontal", seed=seed + 3),
            ]
        else:
            layers += [module.RandomFlip("horizontal", seed=seed + 2)]
        if policy == "randaugment":
            layers.append(module.RandAugment(value_range=(0, 255), seed=seed + 3))
        elif policy == "mixup":
            layers.append(module.MixUp(seed=seed + 3))
        elif policy == "cutmix":
            layers.append(module.CutMix(seed=seed + 3))
    return layers


class _RandomTranspose:
    """Swaps rows and columns of each image with probability 1/2, drawn per image.

    After independent random horizontal and vertical flips (4 of the square's symmetries),
    this makes each of the 8 equally likely. Its random state is a seeded
    `tf.random.Generator`, so a pipeline built with the same seed draws the same transposes.
    """

    def __init__(self, seed):
        self.generator = tf.random.Generator.from_seed(seed)
        self._key = self.generator.state[-1:].numpy()

    def restart(self, offset):
        """The op that moves the Philox counter to `offset`, keeping the seed's key."""
        return self.generator.state.assign(tf.concat([tf.zeros([1], tf.int64), [offset], self._key], axis=0))

    def __call__(self, data):
        images = data["images"]
        swap = self.generator.uniform([tf.shape(images)[0]]) < 0.5
        transposed = tf.transpose(images, [0, 2, 1, 3])
        return {**data, "images": tf.where(swap[:, None, None, None], transposed, images)}


@contextlib.contextmanager
def _float32_policy():
    """Builds layers in float32 under a mixed-precision global policy, so pipelines
    yield float32 (keras-cv's RandAugment gives its sub-layers the global policy)."""
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        yield
    finally:
        keras.config.set_dtype_policy(policy)


def _import_keras_cv():
    try:
        import keras_cv
    except ImportError as error:
        raise ImportError(
            'library="keras_cv" needs keras-cv: pip install "keras-astro[cv]"'
        ) from error
    return keras_cv
