"""The check every flux source runs on its training images before any pipeline is built."""

import numpy as np


def check_every_band_has_flux(images, bands, source):
    """Raises a `ValueError` naming `source` when a band has no finite pixel in `images`.

    A band of blanks would train on zeros without a word: the pipeline's resize turns
    NaN into 0 before the model's `FluxNormalization` could refuse it. `images` yields
    arrays [..., bands] (or [n, height, width] for one band); reading stops at the first
    finite pixel of every band, usually within the first image.
    """
    blank = np.ones(bands, bool)
    for batch in images:
        blank &= ~np.isfinite(np.asarray(batch)).reshape(-1, bands).any(axis=0)
        if not blank.any():
            return
    raise ValueError(
        f"{source}: band(s) {np.flatnonzero(blank).tolist()} of {bands} have no finite pixel "
        "in the training data (NaN or infinite everywhere); expected flux in every band: "
        "leave such a band out of the files."
    )
