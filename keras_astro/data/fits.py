"""FITS cutouts: one image per file, read with astropy, as float32 [height, width, bands].

The image is the primary HDU's data, or the first image extension with data (tile-
compressed `.fz` files keep theirs in a compressed extension). A 2-D image is one band;
a 3-D cube (bands, height, width) is that many bands; leading axes of length 1 (radio
images often carry degenerate frequency and Stokes axes) are dropped. A cube whose last
axis is a few bands and whose other two are larger, (height, width, bands), is what
numpy's RGB arrays give when saved as they are: it is read as such. Flux stays as it is,
NaN blanks included: the model's `FluxNormalization` handles them.
"""

import warnings

import numpy as np

FITS_EXTENSIONS = (".fits", ".fit", ".fts", ".fits.gz", ".fit.gz", ".fits.fz", ".fz")
# The most bands a cube saved band-last (height, width, bands) is taken to have.
MAX_BANDS_LAST = 5


def is_fits(path):
    return path.lower().endswith(FITS_EXTENSIONS)


def _layout(shape, path):
    """(height, width, bands, bands_last) of a FITS data shape, or a `ValueError`."""
    shape = tuple(shape)
    while len(shape) > 3 and shape[0] == 1:
        shape = shape[1:]
    if 0 in shape:
        raise ValueError(f"{path}: image of shape {shape}; expected every axis at least 1 long.")
    if len(shape) == 2:
        return (*shape, 1, True)
    if len(shape) == 3:
        first, middle, last = shape
        if last <= MAX_BANDS_LAST < min(first, middle):
            return (first, middle, last, True)
        if first <= MAX_BANDS_LAST and last <= MAX_BANDS_LAST:
            raise ValueError(
                f"{path}: cube of shape {shape}, bands first or last; expected (bands, height, "
                f"width), or (height, width, bands) with at most {MAX_BANDS_LAST} bands and "
                f"sides over {MAX_BANDS_LAST} pixels."
            )
        return (middle, last, first, False)
    raise ValueError(
        f"{path}: image of shape {shape}; expected a 2-D image (height, width) or a 3-D cube "
        "(bands, height, width)."
    )


def _read(path, with_data):
    """(data shape, float32 data or None) of a FITS file's image; every error names the file.

    astropy says what failed ("Empty or corrupt FITS file", a reshape of a truncated
    array) but not in which file: in a folder of thousands, the name is what matters.
    """
    from astropy.io import fits

    images = (fits.PrimaryHDU, fits.ImageHDU, fits.CompImageHDU)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # before open: it warns of a truncated file
            with fits.open(path, memmap=False) as hdus:
                hdu = next((hdu for hdu in hdus if isinstance(hdu, images) and hdu.shape), None)
                if hdu is not None:
                    data = np.asarray(hdu.data, dtype=np.float32) if with_data else None
                    return hdu.shape, data
                kinds = ", ".join(type(hdu).__name__ for hdu in hdus) or "none"
    except (OSError, ValueError, TypeError, IndexError) as error:
        raise ValueError(f"{path}: not a readable FITS file ({error}).") from None
    raise ValueError(
        f"{path}: no image HDU with data (HDUs: {kinds}); expected a 2-D image or a 3-D cube."
    )


def fits_shape(path):
    """(height, width, bands) of a FITS file's image, from its header alone."""
    return _layout(_read(path, with_data=False)[0], path)[:3]


def read_fits(path):
    """float32 [height, width, bands]; a `ValueError` names the file when no pixel is finite."""
    if isinstance(path, bytes):  # from tf.numpy_function
        path = path.decode()
    shape, data = _read(path, with_data=True)
    height, width, bands, bands_last = _layout(shape, path)
    if bands_last:
        data = data.reshape(height, width, bands)
    else:
        data = np.moveaxis(data.reshape(bands, height, width), 0, -1)
    if not np.isfinite(data).any():
        raise ValueError(f"{path}: every pixel is NaN or infinite.")
    return np.ascontiguousarray(data)
