"""`.keras` files saved by keras-astro 0.1.0 still load and predict the same.

tests/data/saved_*.keras are files that the code of commit 4a22fb0 saved on the torch
backend (tiny models at 8x8, after one SGD step); saved_predictions.npz holds the images
and the predictions it recorded. `saved_pixels.keras`: an AstroTransformer with
per-image normalization and clip_sigma=3. `saved_flux_folded.keras`: flux with data-set
statistics (adapted FluxNormalization weights) through `fold_batch_norm`. A file names
each layer's class by its registered name (`keras_astro>FluxNormalization`) and the
module that defined it then: moving a class keeps old files loading only while its
registered name stays.
"""

import pathlib

import keras
import numpy as np
import pytest

from keras_astro.models.saving import load_model, register_saved_classes

DATA = pathlib.Path(__file__).resolve().parent.parent / "data"


@pytest.fixture(scope="module")
def recorded():
    return np.load(DATA / "saved_predictions.npz")


def test_an_astro_transformer_file_predicts_as_when_saved(recorded):
    model = load_model(DATA / "saved_pixels.keras")
    assert (model.normalization, model.clip_sigma) == ("image", 3.0)
    assert model.class_names == ["a", "b", "c"]
    np.testing.assert_allclose(
        model.predict(recorded["pixels_images"], verbose=0),
        recorded["pixels_predictions"],
        rtol=1e-5,
        atol=1e-6,
    )


def test_a_folded_flux_file_predicts_as_when_saved(recorded):
    register_saved_classes()
    model = keras.saving.load_model(DATA / "saved_flux_folded.keras")
    classes = {type(layer).__name__ for layer in model.layers}
    assert {"FluxNormalization", "FoldedStageBlock", "FoldedAway"} <= classes
    np.testing.assert_allclose(
        model.predict(recorded["flux_folded_images"], verbose=0),
        recorded["flux_folded_predictions"],
        rtol=1e-5,
        atol=1e-6,
    )
