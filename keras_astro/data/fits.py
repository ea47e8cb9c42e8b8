"""FITS cutouts: one image per file, read with astropy, as float32 [height, width, bands].

The image is the primary HDU's data, or the first image extension with data (tile-
compressed `.fz` files keep theirs in a compressed extension). A 2-D image is one band;
a 3-D cube (bands, height, width) is that many bands; leading axes of length 1 (radio
images often carry degenerate frequency and Stokes axes) are dropped. Flux stays as it
is, NaN blanks included: the model's `FluxNormalization` handles them.
"""

import warnings

import numpy as np

FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")


def is_fits(path):
    return path.lower().endswith(FITS_EXTENSIONS)


def _image_hdu(hdus, path):
    from astropy.io import fits

    for hdu in hdus:
        if isinstance(hdu, (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)) and hdu.shape:
            return hdu
    kinds = ", ".join(type(hdu).__name__ for hdu in hdus) or "none"
    raise ValueError(f"{path}: no image HDU with data (HDUs: {kinds}); expected a 2-D image or a 3-D cube.")


def _bands_first_shape(shape, path):
    """(bands, height, width) from a FITS data shape, or a `ValueError` naming the file."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if len(shape) == 2:
        return (1, *shape)
    if len(shape) == 3:
        return shape
    raise ValueError(
        f"{path}: image of shape {shape}; expected a 2-D image (height, width) or a 3-D cube "
        "(bands, height, width)."
    )


def fits_shape(path):
    """(height, width, bands) of a FITS file's image, from its header alone."""
    from astropy.io import fits

    with warnings.catch_warnings(), fits.open(path, memmap=False) as hdus:
        warnings.simplefilter("ignore")
        bands, height, width = _bands_first_shape(_image_hdu(hdus, path).shape, path)
    return height, width, bands


def read_fits(path):
    """float32 [height, width, bands]; a `ValueError` names the file when no pixel is finite."""
    from astropy.io import fits

    if isinstance(path, bytes):  # from tf.numpy_function
        path = path.decode()
    with warnings.catch_warnings(), fits.open(path, memmap=False) as hdus:
        warnings.simplefilter("ignore")
        hdu = _image_hdu(hdus, path)
        data = np.asarray(hdu.data, dtype=np.float32)
    data = data.reshape(_bands_first_shape(data.shape, path))
    if not np.isfinite(data).any():
        raise ValueError(f"{path}: every pixel is NaN or infinite.")
    return np.ascontiguousarray(np.moveaxis(data, 0, -1))
