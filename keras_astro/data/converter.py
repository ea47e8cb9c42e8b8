"""`ImageConverter`: raw images and image files to what a model takes.

A model is trained on images cropped, resized and kept 8-bit or as flux in one way;
`predict`, `evaluate` and the exported signatures must prepare theirs the same way.
One object, built from the model's config (`ImageConverter.from_model`) or the
pipeline's options, owns that, as keras-hub's `ImageConverter` does. `decode_file` is
the one reader of image and FITS files.
"""

import re

import tensorflow as tf

from keras_astro.data.fits import FITS_EXTENSIONS, is_fits, read_fits
from keras_astro.utils import check_center_crop, check_int, check_preprocessing

PHOTO_FORMATS = "JPEG, PNG, GIF or BMP"
# Leading bytes of the two formats the exported `predict_encoded` signature takes.
JPEG_SIGNATURE = b"\xff\xd8\xff"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A PNG's bit depth is byte 24: after its signature and the IHDR chunk's length, type,
# width and height.
PNG_BIT_DEPTH_BYTE = 24


class ImageConverter:
    """Raw image(s) [h, w, c] or [n, h, w, c] -> the model's input: crop, then resize.

    Keeps the central `center_crop` fraction of each side, then resizes (antialiased)
    to `image_size` x `image_size`; uint8 stays uint8 (the cache stays 4x smaller). Flux
    blanks stay blanks: each output pixel averages the finite input pixels under it
    (a resize of the zero-filled image divided by the resize of the finite mask), and is
    NaN where blanks make up most of it, so that the model's per-image statistics skip
    blanks whether or not an image was resized.

    Args:
        image_size: int, the side of the square images the model takes.
        center_crop: `None` or the central fraction (0, 1] of each side that is kept.
        preprocessing: `"pixels"` (0..255) or `"flux"` (physical units, NaN allowed);
            8- or 16-bit files read as flux become float32.
    """

    def __init__(self, image_size, center_crop=None, preprocessing="pixels"):
        self.image_size = check_int("image_size", image_size)
        self.center_crop = check_center_crop(center_crop)
        self.preprocessing = check_preprocessing(preprocessing)

    @classmethod
    def from_model(cls, model):
        """The converter of an `AstroTransformer`: its input height, crop and preprocessing."""
        height = model.image_shape[1 if model.data_format == "channels_first" else 0]
        return cls(height, model.center_crop, model.preprocessing)

    def __call__(self, images):
        flux = self.preprocessing == "flux"
        if flux:
            images = tf.cast(images, tf.float32)
        if self.center_crop is not None and self.center_crop < 1:
            images = tf.image.central_crop(images, self.center_crop)
        size = (self.image_size, self.image_size)
        if tuple(images.shape[-3:-1]) == size:
            return images
        if flux:
            finite = tf.math.is_finite(images)
            filled = tf.image.resize(tf.where(finite, images, 0.0), size, antialias=True)
            coverage = tf.image.resize(tf.cast(finite, tf.float32), size, antialias=True)
            return tf.where(coverage > 0.5, filled / tf.maximum(coverage, 0.5), float("nan"))
        resized = tf.image.resize(images, size, antialias=True)
        if images.dtype == tf.uint8:
            return tf.saturate_cast(tf.round(resized), tf.uint8)
        return resized

    def read_file(self, path):
        """A file as the model takes it: [image_size, image_size, bands].

        A file of the other kind than `preprocessing` is refused with a `ValueError`:
        photos scaled as flux, or flux as 0..255 pixels, would still give probabilities.
        """
        fits = is_fits(path)
        if fits and self.preprocessing == "pixels":
            raise ValueError(
                f"{path!r} is a FITS file, but the model expects photos: {PHOTO_FORMATS} "
                "(preprocessing='pixels')."
            )
        if not fits and self.preprocessing == "flux":
            raise ValueError(
                f"{path!r} is not a FITS file ({', '.join(FITS_EXTENSIONS)}), but the model "
                "expects FITS flux cutouts, not photos (preprocessing='flux')."
            )
        return self(decode_file(path))

    def decode_encoded(self, encoded, channels):
        """JPEG or PNG bytes (a string scalar) -> float32 [image_size, image_size, channels].

        Graph ops only: the exported `predict_encoded` signature decodes with it.
        """
        is_png = tf.equal(tf.strings.substr(encoded, 0, len(PNG_SIGNATURE)), PNG_SIGNATURE)
        image = tf.cond(
            is_png,
            lambda: _decode_png_as_8_bit_scale(encoded, channels),
            lambda: tf.cast(
                tf.io.decode_image(encoded, channels=channels, expand_animations=False), tf.float32
            ),
        )
        image.set_shape([None, None, channels])
        return self(image)


def is_16_bit_png(head):
    """Whether a file's leading bytes (25 or more) are those of a PNG of 16-bit samples."""
    return head.startswith(PNG_SIGNATURE) and head[PNG_BIT_DEPTH_BYTE:PNG_BIT_DEPTH_BYTE + 1] == b"\x10"


def _decode_png_as_8_bit_scale(encoded, channels):
    """A PNG of 8 or 16 bits as float32 on the 0..255 scale of 8-bit pixels, every bit kept.

    TensorFlow's 8-bit decode keeps a 16-bit sample's high byte only, so a faint image
    (samples below 256) would be black. Decoded to 16 bits, an 8-bit sample v is v * 257,
    so / 257 gives it back exactly and a 16-bit one keeps its fraction.
    """
    image = tf.io.decode_png(encoded, channels=channels, dtype=tf.uint16)
    return tf.cast(image, tf.float32) / 257.0


def decode_file(path):
    """A file's raw image: FITS flux float32 [h, w, bands], or a photo's uint8 RGB [h, w, 3].

    A GIF gives its first frame; a 16-bit PNG float32 RGB on the same 0..255 scale,
    with its 16 bits (`_decode_png_as_8_bit_scale`). A damaged file raises a
    `ValueError` naming it; any other error (a missing file, out of memory) propagates
    unchanged. `path` may be bytes (from `tf.data`).
    """
    if isinstance(path, bytes):
        path = path.decode()
    if is_fits(path):
        return tf.constant(read_fits(path))
    try:
        encoded = tf.io.read_file(path)
        if is_16_bit_png(encoded.numpy()[: PNG_BIT_DEPTH_BYTE + 1]):
            return _decode_png_as_8_bit_scale(encoded, 3)
        return tf.io.decode_image(encoded, channels=3, expand_animations=False)
    except tf.errors.InvalidArgumentError as error:
        raise ValueError(
            f"Cannot read or decode image file {path!r}: expected a whole {PHOTO_FORMATS} "
            f"image ({_op_message(error)})"
        ) from None


def _op_message(error):
    """A TensorFlow op error's own words, without its function-node and op decorations."""
    return re.sub(r"\{\{[^}]*\}\}\s*|\s*\[Op:.*$", "", error.message, flags=re.S).strip()
