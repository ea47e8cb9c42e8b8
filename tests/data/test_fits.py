"""FITS cutouts: `read_fits` and `fits_shape` on each layout, and every FITS error."""

import numpy as np
import pytest
import tensorflow as tf
from astropy.io import fits
from PIL import Image

from keras_astro import data
from keras_astro.data.fits import fits_shape, read_fits
from tests.test_case import collect, flux_cutout, write_fits, write_fits_folder

# Not square, so swapped axes show; every value distinct, so a wrong order shows.
PLANE = np.arange(12 * 16, dtype="float32").reshape(12, 16) - 50.0


def _image(path):
    write_fits(path, PLANE)
    return PLANE[..., None]


def _cube(path):
    cube = np.stack([PLANE, -PLANE, 2 * PLANE])
    write_fits(path, cube)
    return np.moveaxis(cube, 0, -1)


def _bands_last(path):
    # numpy's (height, width, RGB) saved as it is.
    cube = np.stack([PLANE, -PLANE, 2 * PLANE], axis=-1)
    write_fits(path, cube)
    return cube


def _radio_axes(path):
    # (Stokes, frequency, y, x) as radio surveys write them, with a NaN blank.
    plane = PLANE.copy()
    plane[3, 5] = np.nan
    write_fits(path, plane[None, None])
    return plane[..., None]


def _tile_compressed(path):
    integers = PLANE.astype("int32")  # integer tiles compress losslessly
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(integers)]).writeto(path)
    return integers[..., None].astype("float32")


def _extension_after_empty_primary(path):
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(PLANE)]).writeto(path)
    return PLANE[..., None]


@pytest.mark.parametrize(
    "name, write",
    [
        ("image.fits", _image),
        ("cube.fit", _cube),
        ("rgb.fits", _bands_last),
        ("radio.fts", _radio_axes),
        ("image.fits.gz", _image),
        ("image.fits.fz", _tile_compressed),
        ("extension.fits", _extension_after_empty_primary),
    ],
)
def test_read_fits_gives_height_width_bands(tmp_path, name, write):
    expected = write(tmp_path / name)
    image = read_fits(str(tmp_path / name))
    assert image.dtype == np.float32 and image.shape == expected.shape
    np.testing.assert_array_equal(image, expected)  # NaN blanks kept where they are
    assert fits_shape(str(tmp_path / name)) == expected.shape
    np.testing.assert_array_equal(read_fits(str(tmp_path / name).encode()), expected)  # numpy_function


def _table_only(path):
    table = fits.BinTableHDU.from_columns([fits.Column(name="flux", format="E", array=np.ones(3))])
    fits.HDUList([fits.PrimaryHDU(), table]).writeto(path)
    return "no image HDU with data"


def _four_dimensional(path):
    write_fits(path, np.zeros((2, 3, 8, 8), "float32"))
    return r"shape \(2, 3, 8, 8\)"


def _bands_first_or_last(path):
    write_fits(path, np.zeros((3, 16, 4), "float32"))
    return r"cube of shape \(3, 16, 4\), bands first or last; expected \(bands, height, width\)"


def _empty(path):
    open(path, "wb").close()
    return r"not a readable FITS file \(Empty or corrupt FITS file\)"


@pytest.mark.parametrize("write", [_table_only, _four_dimensional, _bands_first_or_last, _empty])
def test_files_without_an_image_or_cube_are_refused_by_name(tmp_path, write):
    path = str(tmp_path / "bad.fits")
    match = write(path)
    for read in (read_fits, fits_shape):
        with pytest.raises(ValueError, match=f"bad.fits.*{match}"):
            read(path)


def test_an_all_nan_file_stops_iteration_naming_it(tmp_path):
    write_fits_folder(tmp_path, per_split=(("train", 2), ("test", 1)))
    blank = tmp_path / "test" / "frii" / "0.fits"
    blank.unlink()
    write_fits(blank, np.full((16, 16), np.nan, "float32"))
    with pytest.raises(ValueError, match="0.fits: every pixel is NaN"):
        read_fits(str(blank))
    datasets = data.load_datasets(tmp_path, image_size=8, batch_size=2)  # headers are fine
    assert len(collect(datasets.train)[0]) == 2
    with pytest.raises(tf.errors.OpError, match=r"frii.0\.fits: every pixel is NaN"):
        collect(datasets.test)


def test_a_truncated_file_stops_iteration_naming_it(tmp_path):
    write_fits_folder(tmp_path, per_split=(("train", 2), ("test", 1)))
    damaged = tmp_path / "test" / "fri" / "0.fits"
    damaged.write_bytes(damaged.read_bytes()[:3000])  # the header and 30 of 256 pixels
    with pytest.raises(ValueError, match=r"0.fits: not a readable FITS file \(cannot reshape"):
        read_fits(str(damaged))
    datasets = data.load_datasets(tmp_path, image_size=8, batch_size=2)  # its header is whole
    with pytest.raises(tf.errors.OpError, match=r"fri.0\.fits: not a readable FITS file"):
        collect(datasets.test)


def test_a_folder_with_other_band_counts_names_the_file(tmp_path):
    write_fits_folder(tmp_path, per_split=(("train", 2), ("test", 1)))
    odd = tmp_path / "train" / "frii" / "1.fits.gz"
    odd.unlink()
    write_fits(odd, flux_cutout(1, bands=3))
    with pytest.raises(ValueError, match=r"same number of bands: .* has 1, .*frii.1\.fits\.gz' has 3"):
        data.load_datasets(tmp_path, image_size=8)


def test_a_folder_of_fits_and_photos_is_refused_naming_one_of_each(tmp_path):
    write_fits_folder(tmp_path, per_split=(("train", 2), ("test", 1)))
    Image.new("RGB", (16, 16)).save(tmp_path / "train" / "fri" / "photo.png")
    with pytest.raises(ValueError, match=r"FITS files or image files, not both: .*\.fits.* and .*photo\.png"):
        data.load_datasets(tmp_path, image_size=8)


def test_a_band_blank_in_every_file_is_refused_when_the_folder_is_read(tmp_path):
    write_fits_folder(tmp_path, bands=2, per_split=(("train", 2), ("test", 1)))
    for path in tmp_path.rglob("*.fit*"):
        cube = read_fits(str(path))
        cube[..., 1] = np.nan
        path.unlink()
        write_fits(path, np.moveaxis(cube, -1, 0))
    with pytest.raises(ValueError, match=r"band\(s\) \[1\] of 2 have no finite pixel in the training data"):
        data.load_datasets(tmp_path, image_size=8)
