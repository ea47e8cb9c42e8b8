import keras
import numpy as np
import pytest
from keras import ops

from keras_astro import plots
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
