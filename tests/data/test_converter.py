import types

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from keras_astro.data.converter import ImageConverter, decode_file
from tests.test_case import PNG, flux_cutout, tiny_model, write_fits


def test_pixels_stay_uint8_and_round_what_the_float_resize_gives():
    images = np.random.default_rng(0).integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    converter = ImageConverter(8)
    resized = converter(images)
    assert resized.dtype == tf.uint8 and resized.shape == (2, 8, 8, 3)
    as_float = converter(tf.constant(images, tf.float32))
    assert as_float.dtype == tf.float32
    np.testing.assert_array_equal(resized, np.round(as_float.numpy()).astype(np.uint8))
    assert not np.array_equal(resized, images[:, ::2, ::2])  # antialiased, not subsampled


def test_center_crop_keeps_the_centre_and_skips_the_resize_at_the_model_size():
    image = np.arange(16 * 16 * 2, dtype=np.float32).reshape(16, 16, 2)
    for preprocessing in ("pixels", "flux"):
        cropped = ImageConverter(8, center_crop=0.5, preprocessing=preprocessing)(image)
        np.testing.assert_array_equal(cropped, image[4:12, 4:12])
    cropped = ImageConverter(4, center_crop=0.5)(image)  # the central 8 x 8, resized
    whole = ImageConverter(4)(image)
    assert cropped.shape == whole.shape == (4, 4, 2)
    assert np.min(cropped) > image[4, 4, 0] - 1 and np.min(whole) < image[4, 4, 0] - 1


def test_flux_is_float_and_its_blanks_stay_blanks():
    image = np.full((16, 16, 1), 5.0, np.float32)
    image[:8, :8] = np.nan  # a blank quarter
    image[12, 12] = np.nan  # and one blank pixel among finite ones
    resized = ImageConverter(8, preprocessing="flux")(image).numpy()
    assert np.isnan(resized[:3, :3]).all()  # blanks all under them: still blank
    finite = np.isfinite(resized)
    assert finite[4:].all() and finite[:, 4:].all()
    # Each output pixel averages the finite pixels under it: 5, whatever the blanks.
    np.testing.assert_allclose(resized[finite], 5.0, rtol=1e-6)
    # 8-bit values read as flux are float32 too.
    pixels = ImageConverter(8, preprocessing="flux")(np.full((16, 16, 1), 200, np.uint8))
    assert pixels.dtype == tf.float32
    np.testing.assert_allclose(pixels, 200.0, rtol=1e-6)


def test_from_model_reads_the_models_size_crop_and_preprocessing():
    model = tiny_model(input_shape=(16, 16, 2), preprocessing="flux", center_crop=0.5)
    converter = ImageConverter.from_model(model)
    assert (converter.image_size, converter.center_crop) == (16, 0.5)
    assert converter.preprocessing == "flux"
    channels_first = types.SimpleNamespace(
        image_shape=(2, 16, 16), data_format="channels_first", center_crop=None,
        preprocessing="pixels",
    )
    assert ImageConverter.from_model(channels_first).image_size == 16


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"center_crop": 0}, r"`center_crop` must be None or a fraction in \(0, 1\]"),
        ({"center_crop": 1.5}, "center_crop"),
        ({"center_crop": float("nan")}, "center_crop"),
        ({"center_crop": True}, "center_crop"),
        ({"preprocessing": "counts"}, r"`preprocessing` must be one of \('pixels', 'flux'\)"),
        ({"preprocessing": None}, "preprocessing"),
        ({"image_size": None}, "image_size"),
    ],
)
def test_bad_arguments_are_refused_as_the_model_refuses_them(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ImageConverter(**{"image_size": 8, **kwargs})


def test_reads_photos_of_any_size_as_rgb_pixels(tmp_path):
    Image.new("RGB", (16, 12), (220, 20, 20)).save(tmp_path / "photo.png")
    Image.new("L", (8, 8), 90).save(tmp_path / "gray.png")
    photo = ImageConverter(8).read_file(str(tmp_path / "photo.png"))
    assert photo.dtype == tf.uint8 and photo.shape == (8, 8, 3)
    np.testing.assert_array_equal(photo, np.broadcast_to([220, 20, 20], (8, 8, 3)))
    np.testing.assert_array_equal(ImageConverter(8).read_file(str(tmp_path / "gray.png")), 90)


def test_a_16_bit_png_keeps_its_bits_on_the_8_bit_scale(tmp_path):
    # A faint image (samples below 256) is not black, as its high bytes alone would be.
    values = np.array([[0, 257, 1000, 40000, 65535, 128, 200, 300]] * 8, np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode.startswith("I;16")
    image = decode_file(str(tmp_path / "deep.png"))
    assert image.dtype == tf.float32 and image.shape == (8, 8, 3)
    np.testing.assert_allclose(image[..., 0], values / 257.0, rtol=1e-6)
    np.testing.assert_array_equal(ImageConverter(8).read_file(str(tmp_path / "deep.png")), image)
    # RGB at 16 bits, as TensorFlow writes it.
    rgb = np.random.default_rng(0).integers(0, 2**16, (4, 4, 3), dtype=np.uint16)
    (tmp_path / "rgb.png").write_bytes(tf.io.encode_png(rgb).numpy())
    np.testing.assert_allclose(decode_file(str(tmp_path / "rgb.png")), rgb / 257.0, rtol=1e-6)
    # An 8-bit PNG stays uint8, the same values.
    Image.fromarray((values >> 8).astype(np.uint8)).save(tmp_path / "shallow.png")
    shallow = decode_file(str(tmp_path / "shallow.png"))
    assert shallow.dtype == tf.uint8
    np.testing.assert_array_equal(shallow[..., 0], values >> 8)


def test_reads_fits_as_flux_with_its_blanks(tmp_path):
    write_fits(tmp_path / "cube.fits", flux_cutout(1, bands=2, blanks=True))
    image = ImageConverter(16, preprocessing="flux").read_file(str(tmp_path / "cube.fits"))
    assert image.dtype == tf.float32 and image.shape == (16, 16, 2)
    expected = np.moveaxis(flux_cutout(1, bands=2, blanks=True), 0, -1)
    np.testing.assert_array_equal(image, expected)  # NaN where the file has NaN
    cropped = ImageConverter(8, center_crop=0.5, preprocessing="flux").read_file(
        str(tmp_path / "cube.fits")
    )
    np.testing.assert_array_equal(cropped, np.broadcast_to([20.0, 40.0], (8, 8, 2)))


def test_refuses_a_file_of_the_other_kind_than_its_preprocessing(tmp_path):
    Image.new("RGB", (8, 8)).save(tmp_path / "photo.png")
    write_fits(tmp_path / "cube.fits", flux_cutout(0, bands=3))
    with pytest.raises(ValueError, match=r"is a FITS file, but the model expects photos"):
        ImageConverter(8).read_file(str(tmp_path / "cube.fits"))
    with pytest.raises(ValueError, match=r"is not a FITS file \(.fits, .*expects FITS flux"):
        ImageConverter(8, preprocessing="flux").read_file(str(tmp_path / "photo.png"))


def test_a_damaged_file_is_a_value_error_naming_it(tmp_path):
    (tmp_path / "broken.png").write_bytes(PNG + b"not really")
    with pytest.raises(ValueError, match=r"Cannot read or decode image file '.*broken\.png': "
                       r"expected a whole JPEG, PNG, GIF or BMP image \(.+\)$"):
        ImageConverter(8).read_file(str(tmp_path / "broken.png"))
    (tmp_path / "broken.fits").write_bytes(b"SIMPLE  =                    T")
    with pytest.raises(ValueError, match=r"broken\.fits: not a readable FITS file"):
        ImageConverter(8, preprocessing="flux").read_file(str(tmp_path / "broken.fits"))


def test_decode_encoded_in_a_graph_matches_read_file(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "photo.png")
    converter = ImageConverter(8, center_crop=0.75)

    @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
    def decode(encoded):
        return converter.decode_encoded(encoded, 3)

    decoded = decode(tf.constant((tmp_path / "photo.png").read_bytes()))
    assert decoded.dtype == tf.float32 and decoded.shape == (8, 8, 3)
    expected = converter(tf.constant(pixels, tf.float32))  # float: no rounding to uint8
    np.testing.assert_allclose(decoded, expected, atol=1e-4)
    # A 16-bit PNG: every bit, as `decode_file` reads it.
    deep = np.random.default_rng(1).integers(0, 2**16, (16, 16, 3), dtype=np.uint16)
    encoded = tf.io.encode_png(deep).numpy()
    (tmp_path / "deep.png").write_bytes(encoded)
    np.testing.assert_allclose(
        decode(tf.constant(encoded)), converter.read_file(str(tmp_path / "deep.png")), atol=1e-4
    )
