import io
import zipfile

import h5py
import keras
import numpy as np
import pytest
from keras import ops

from keras_astro.layers import (
    AddmmDense,
    DepthwiseConv3x3,
    FastConv2D,
    FusedBatchNormalization,
)
from tests.test_case import skip_unless_channels_first_runs, tiny_model

KERAS_EQUIVALENTS = [
    (DepthwiseConv3x3, keras.layers.DepthwiseConv2D, dict(kernel_size=3, padding="same")),
    (FastConv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=1)),
    (FastConv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=3, padding="same")),
    (FusedBatchNormalization, keras.layers.BatchNormalization, dict(momentum=0.9, epsilon=1e-5)),
    (AddmmDense, keras.layers.Dense, dict(units=5)),
]


@pytest.mark.parametrize("layer_cls, keras_cls, kwargs", KERAS_EQUIVALENTS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_fast_layers_train_like_their_keras_layers(layer_cls, keras_cls, kwargs, data_format, dtype):
    # Backend-specific kernels (torch and JAX paths) against Keras' own layer: one SGD
    # step, so outputs, the input gradient (through the 1x1 convolution in front), the
    # weight gradients and batch norm's moving statistics all have to agree.
    if data_format == "channels_first":
        skip_unless_channels_first_runs(dtype.removeprefix("mixed_"))
    shape = (2, 5, 6, 4) if data_format == "channels_last" else (2, 4, 5, 6)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    if "filters" in kwargs or "units" in kwargs:
        shape = shape[:-1] + (5,) if data_format == "channels_last" else (2, 5) + shape[2:]
    y = np.random.default_rng(1).normal(size=shape).astype("float32")
    if layer_cls is FusedBatchNormalization:
        kwargs = dict(kwargs, axis=-1 if data_format == "channels_last" else 1)
    elif layer_cls is AddmmDense:  # on 2-D inputs, as RelativeAttention calls it
        if data_format == "channels_first":
            pytest.skip("Dense has no data_format")
        x, y = x.reshape(-1, x.shape[-1]), y.reshape(-1, y.shape[-1])
    else:
        kwargs = dict(kwargs, data_format=data_format)

    def one_step(cls):
        keras.utils.set_random_seed(0)
        inputs = keras.Input(x.shape[1:])
        if x.ndim == 2:
            hidden = keras.layers.Dense(4, dtype=dtype)(inputs)
        else:
            hidden = keras.layers.Conv2D(4, 1, data_format=data_format, dtype=dtype)(inputs)
        model = keras.Model(inputs, cls(**kwargs, dtype=dtype)(hidden))
        model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
        model.fit(x, y, batch_size=2, verbose=0)
        return [ops.convert_to_numpy(w) for w in model.weights], ops.convert_to_numpy(
            ops.cast(model(x, training=False), "float32")
        )

    expected_weights, expected_outputs = one_step(keras_cls)
    weights, outputs = one_step(layer_cls)
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    for want, got in zip(expected_weights + [expected_outputs], weights + [outputs]):
        np.testing.assert_allclose(got, want, atol=tolerance, rtol=tolerance)


def test_keras_files_name_the_weights_after_these_classes(tmp_path):
    # Keras stores a functional model's weights under `layers/<snake_case class name>[_i]`:
    # renaming FastConv2D or FusedBatchNormalization would orphan every saved model's weights.
    tiny_model().save(tmp_path / "model.keras")
    with zipfile.ZipFile(tmp_path / "model.keras") as archive:
        weights_file = io.BytesIO(archive.read("model.weights.h5"))
    with h5py.File(weights_file, "r") as weights:
        groups = list(weights["layers"])
        sizes = {name: len(weights["layers"][name]["vars"]) for name in groups}
    # stem_conv1, stem_conv2, stage1_adjust, stage2_adjust; stem_bn1, stem_bn2.
    assert [name for name in groups if name.startswith("fast_conv2d")] == [
        "fast_conv2d", "fast_conv2d_1", "fast_conv2d_2", "fast_conv2d_3",
    ]  # fmt: skip
    assert [name for name in groups if name.startswith("fused_batch_normalization")] == [
        "fused_batch_normalization", "fused_batch_normalization_1",
    ]  # fmt: skip
    assert sizes["fast_conv2d"] == 1 and sizes["fused_batch_normalization"] == 4
    assert {"stage_block", "stage_block_2", "relative_attention"} <= set(groups)
