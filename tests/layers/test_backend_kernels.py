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
    RelativeAttention,
    StageBlock,
    backend_kernels,
)
from keras_astro.layers.backend_kernels import (
    KERNELS_VARIABLE,
    dot_product_attention,
    kernels_mode,
    uses_custom_kernel,
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

    expected = one_sgd_step(lambda: keras_cls(**kwargs, dtype=dtype), x, y, dtype, data_format)
    trained = one_sgd_step(lambda: layer_cls(**kwargs, dtype=dtype), x, y, dtype, data_format)
    tolerance = 1e-5 if dtype == "float32" else 3e-2
    for want, got in zip(expected, trained):
        np.testing.assert_allclose(got, want, atol=tolerance, rtol=tolerance)


def one_sgd_step(make_layer, x, y, dtype="float32", data_format="channels_last"):
    """The weights after one SGD step of a projection then `make_layer()`, then its outputs.

    The projection in front makes the layer's input gradient count too.
    """
    keras.utils.set_random_seed(0)
    inputs = keras.Input(x.shape[1:])
    if x.ndim == 2:
        hidden = keras.layers.Dense(4, dtype=dtype)(inputs)
    else:
        hidden = keras.layers.Conv2D(4, 1, data_format=data_format, dtype=dtype)(inputs)
    model = keras.Model(inputs, make_layer()(hidden))
    model.compile(optimizer=keras.optimizers.SGD(0.5), loss="mse")
    model.fit(x, y, batch_size=2, verbose=0)
    outputs = ops.cast(model(x, training=False), "float32")
    return [ops.convert_to_numpy(w) for w in model.weights] + [ops.convert_to_numpy(outputs)]


# Every layer with a custom kernel, and the output channels from 4 input channels.
CUSTOM_KERNEL_LAYERS = [
    (DepthwiseConv3x3, dict(use_bias=True), 4),
    (FastConv2D, dict(filters=5, kernel_size=1), 5),
    (FastConv2D, dict(filters=5, kernel_size=3, padding="same"), 5),
    (FusedBatchNormalization, dict(), 4),
    (AddmmDense, dict(units=5), 5),
    (StageBlock, dict(filters=5, remat=True), 5),
    (RelativeAttention, dict(num_heads=2), 4),
    (RelativeAttention, dict(num_heads=1, remat=True), 4),
]


@pytest.mark.parametrize("layer_cls, kwargs, channels", CUSTOM_KERNEL_LAYERS)
def test_keras_ops_alone_train_like_the_custom_kernels(layer_cls, kwargs, channels, monkeypatch):
    # KERAS_ASTRO_KERNELS=keras: Keras' ops on every backend, the same numbers.
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 5, 6, 4)).astype("float32")
    y = rng.normal(size=(2, 5, 6, channels)).astype("float32")
    if layer_cls is AddmmDense:  # on 2-D inputs, as RelativeAttention calls it
        x, y = x.reshape(-1, 4), y.reshape(-1, channels)
    custom = one_sgd_step(lambda: layer_cls(**kwargs), x, y)
    monkeypatch.setenv(KERNELS_VARIABLE, "keras")
    keras_only = one_sgd_step(lambda: layer_cls(**kwargs), x, y)
    for want, got in zip(custom, keras_only):
        np.testing.assert_allclose(got, want, atol=1e-5, rtol=1e-5)


def test_the_switch_turns_the_custom_kernels_off(monkeypatch):
    x = ops.ones((1, 3, 3, 2))
    backend = keras.backend.backend()
    assert kernels_mode() == "auto"
    assert uses_custom_kernel(backend, x) == backend_kernels.runs_on_cpu(x)
    assert not uses_custom_kernel("jax" if backend == "torch" else "torch", x)
    monkeypatch.setenv(KERNELS_VARIABLE, "keras")
    assert kernels_mode() == "keras" and not uses_custom_kernel(backend, x)
    monkeypatch.setenv(KERNELS_VARIABLE, "fast")
    with pytest.raises(ValueError, match=KERNELS_VARIABLE):
        FastConv2D(2, 1)(x)


def test_on_a_gpu_the_layers_run_keras_ops(monkeypatch):
    def custom_kernel(*args, **kwargs):
        raise AssertionError("a CPU kernel ran on a GPU")

    attention_calls = []
    keras_attention = ops.dot_product_attention

    def attention(*args, **kwargs):
        attention_calls.append(kwargs)
        return keras_attention(*args, **kwargs)

    monkeypatch.setattr(backend_kernels, "runs_on_cpu", lambda tensor: False)
    monkeypatch.setattr(backend_kernels, "torch_conv2d", custom_kernel)
    monkeypatch.setattr(backend_kernels, "nine_tap_depthwise", custom_kernel)
    monkeypatch.setattr(backend_kernels.ops, "dot_product_attention", attention)
    x = ops.ones((1, 3, 3, 2))
    assert not any(uses_custom_kernel(backend, x) for backend in ("torch", "jax", "tensorflow"))
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    assert tiny_model()(images, training=True).shape == (2, 3)
    assert attention_calls  # no einsums: Keras' attention, fused where the GPU has it
    keras.config.disable_flash_attention()
    try:
        query = ops.ones((1, 4, 1, 2))
        dot_product_attention(query, query, query)
    finally:
        keras.config.enable_flash_attention()
    assert attention_calls[-1]["flash_attention"] is False


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
    ]
    assert [name for name in groups if name.startswith("fused_batch_normalization")] == [
        "fused_batch_normalization", "fused_batch_normalization_1",
    ]
    assert sizes["fast_conv2d"] == 1 and sizes["fused_batch_normalization"] == 4
    assert {"stage_block", "stage_block_2", "relative_attention"} <= set(groups)
