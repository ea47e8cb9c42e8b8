import keras
import numpy as np
import pytest
from keras import ops

from keras_astro.training import plots
from tests.test_case import CLASSES, IMAGE_SIZE, PNG, tiny_model


def test_attention_maps_are_the_layer_weights():
    images = np.random.default_rng(1).uniform(0, 255, (2, IMAGE_SIZE, IMAGE_SIZE, 3))
    averaged = plots.attention_maps(tiny_model(num_heads=2), images)
    assert averaged.shape == (2, IMAGE_SIZE, IMAGE_SIZE)
    np.testing.assert_allclose(averaged.sum(axis=(1, 2)), 1.0, rtol=1e-5)

    # One query's weights times the values must give the layer's output at that pixel.
    model = tiny_model(num_heads=1)
    layer = model.get_layer("relative_attention")
    features = keras.Model(model.input, layer.input)(images)
    tokens = ops.reshape(features, (2, IMAGE_SIZE * IMAGE_SIZE, -1))
    values = ops.convert_to_numpy(ops.split(layer.qkv_dense(tokens), 3, axis=-1)[2])
    attended = ops.convert_to_numpy(keras.Model(model.input, layer.output)(images))
    weights = plots.attention_maps(model, images, query=(2, 5)).reshape(2, -1)
    np.testing.assert_allclose(
        np.einsum("nk,nkc->nc", weights, values), attended[:, 2, 5], atol=1e-5
    )
    with pytest.raises(ValueError, match="query"):
        plots.attention_maps(model, images, query=(IMAGE_SIZE, 0))


def test_plots_write_png_files(tmp_path):
    history = [
        {"epoch": 0, "loss": 1.0, "accuracy": 0.5, "val_loss": 1.1, "val_accuracy": 0.4},
        {"epoch": 1, "loss": 0.8, "accuracy": 0.7, "val_loss": 0.9, "val_accuracy": 0.6},
    ]
    plots.plot_training_curves(history, str(tmp_path / "curves.png"))
    plots.plot_confusion_matrix(np.eye(3, dtype=int), CLASSES, str(tmp_path / "matrix.png"))
    model = tiny_model(class_names=CLASSES)
    images = np.zeros((3, IMAGE_SIZE, IMAGE_SIZE, 3), "float32")
    plots.plot_attention_maps(model, images, str(tmp_path / "attention.png"), labels=[0, 1, 2])
    for name in ("curves.png", "matrix.png", "attention.png"):
        with open(tmp_path / name, "rb") as f:
            assert f.read(8) == PNG
    with pytest.raises(ValueError, match="class names"):
        plots.plot_confusion_matrix(np.eye(2), CLASSES, str(tmp_path / "bad.png"))


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")  # Lupton's zero pixels
@pytest.mark.parametrize("bands", [1, 2, 3, 5])
def test_flux_is_displayed_in_0_1_grey_or_rgb(bands):
    rng = np.random.default_rng(bands)
    flux = rng.normal(0, 1e-3, (12, 10, bands)).astype("float32")
    flux[2, 3] = np.nan
    flux[4:6, 4:6] += 0.05  # a bright source
    picture, cmap = plots.display_image(flux, "flux")
    assert picture.shape == ((12, 10) if bands < 3 else (12, 10, 3))
    assert cmap == ("gray" if bands < 3 else None)
    assert np.isfinite(picture).all() and picture.min() >= 0 and picture.max() <= 1
    assert picture[4:6, 4:6].mean() > picture.mean()  # the source stands out


def test_rgb_composite_takes_the_first_three_bands_blue_to_red():
    flux = np.zeros((8, 8, 5), "float32")
    flux[..., 0] = 1.0  # g: blue
    flux[..., 4] = 100.0  # a fifth band is not shown
    picture, _ = plots.display_image(flux, "flux")
    assert (picture[..., 2] > 0.5).all() and (picture[..., :2] == 0).all()
    # Negative flux is dark, however negative the whole cutout is.
    assert (plots.display_image(np.full((8, 8, 3), -2.0, "float32"), "flux")[0] == 0).all()


def test_pixels_are_displayed_as_they_are():
    pixels = np.random.default_rng(0).integers(0, 256, (6, 6, 3)).astype("float32")
    picture, cmap = plots.display_image(pixels)
    np.testing.assert_allclose(picture, pixels / 255.0)
    assert cmap is None
    grey, cmap = plots.display_image(pixels[..., :1], "pixels")
    assert grey.shape == (6, 6) and cmap == "gray"


def test_normalized_confusion_matrix_writes_a_png(tmp_path):
    matrix = np.array([[8, 2], [1, 0]])  # the second class is never right
    plots.plot_confusion_matrix(matrix, ["common", "rare"], str(tmp_path / "counts.png"))
    plots.plot_confusion_matrix(matrix, ["common", "rare"], str(tmp_path / "norm.png"), normalize=True)
    plots.plot_confusion_matrix(np.zeros((2, 2), int), ["a", "b"], str(tmp_path / "empty.png"), normalize=True)
    for name in ("counts.png", "norm.png", "empty.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
    assert (tmp_path / "norm.png").read_bytes() != (tmp_path / "counts.png").read_bytes()


@pytest.mark.filterwarnings("ignore:invalid value encountered in divide")
def test_attention_maps_picture_of_a_flux_model(tmp_path):
    model = tiny_model(input_shape=(IMAGE_SIZE, IMAGE_SIZE, 5), preprocessing="flux", class_names=CLASSES)
    flux = np.random.default_rng(0).normal(0, 1e-3, (2, IMAGE_SIZE, IMAGE_SIZE, 5)).astype("float32")
    flux[0, 0, 0] = np.nan
    plots.plot_attention_maps(model, flux, str(tmp_path / "attention.png"), labels=[0, 2])
    assert (tmp_path / "attention.png").read_bytes()[:8] == PNG


def test_reliability_and_coverage_pictures(tmp_path):
    from keras_astro.training.calibration import accuracy_coverage, softmax

    rng = np.random.default_rng(0)
    logits, labels = rng.normal(0, 3, (50, 3)), rng.integers(0, 3, 50)
    curves = {"uncalibrated": softmax(logits), "T = 2": softmax(logits, 2.0)}
    plots.plot_reliability(curves, labels, tmp_path / "reliability.png", "test")
    plots.plot_coverage(accuracy_coverage(curves["T = 2"], labels), tmp_path / "coverage.png")
    for name in ("reliability.png", "coverage.png"):
        assert (tmp_path / name).read_bytes()[:8] == PNG
