import numpy as np
import pytest

import keras
from keras import ops

from keras_astro.layers import (
    DepthwiseConv3x3,
    FastConv2D,
    FastDense,
    FusedBatchNormalization,
    RelativeAttention,
    StageBlock,
)
from layer_checks import run_layer_test


@pytest.mark.parametrize("remat", [False, True])
def test_stage_block_changing_channels(remat):
    # depthwise kernel, 2 BN (gamma, beta), expansion kernel, skip kernel; 2x2 BN moments.
    run_layer_test(
        StageBlock,
        {"filters": 8, "data_format": "channels_last", "remat": remat},
        input_shape=(2, 6, 5, 4),
        expected_output_shape=(2, 6, 5, 8),
        expected_num_trainable_weights=7,
        expected_num_non_trainable_weights=4,
    )


def test_stage_block_identity_skip_has_no_skip_conv():
    run_layer_test(
        StageBlock,
        {"filters": 4, "data_format": "channels_last"},
        input_shape=(2, 5, 5, 4),
        expected_output_shape=(2, 5, 5, 4),
        expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=4,
    )


@pytest.mark.parametrize("remat", [False, True])
def test_relative_attention(remat):
    # qkv kernel + bias, depthwise kernel + bias.
    run_layer_test(
        RelativeAttention,
        {"num_heads": 2, "attention_scale": None, "data_format": "channels_last", "remat": remat},
        input_shape=(2, 4, 3, 8),
        expected_output_shape=(2, 4, 3, 8),
        expected_num_trainable_weights=4,
        expected_num_non_trainable_weights=0,
    )


def naive_relative_attention(layer, x, scale):
    """q.k^T + q.r^T written out with an explicit (H*W) x (H*W) matrix, one head."""
    batch, height, width, channels = x.shape
    tokens = x.reshape(batch, height * width, channels)
    kernel, bias = (ops.convert_to_numpy(w) for w in layer.qkv_dense.weights)
    q, k, v = np.split(tokens @ kernel + bias, 3, axis=-1)
    r = ops.convert_to_numpy(layer.relative_conv(x)).reshape(batch, height * width, channels)
    logits = scale * (q @ k.transpose(0, 2, 1) + q @ r.transpose(0, 2, 1))
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return (probs @ v).reshape(x.shape)


@pytest.mark.parametrize("attention_scale", [None, 1.0])
def test_relative_attention_folded_keys_equal_the_two_term_logits(attention_scale):
    x = np.random.default_rng(1).normal(size=(2, 3, 4, 6)).astype("float32")
    layer = RelativeAttention(attention_scale=attention_scale, data_format="channels_last")
    output = ops.convert_to_numpy(layer(x))
    scale = 1 / np.sqrt(6) if attention_scale is None else attention_scale
    np.testing.assert_allclose(output, naive_relative_attention(layer, x, scale), rtol=1e-4, atol=1e-5)


def test_relative_attention_heads_split_channels():
    x = np.random.default_rng(2).normal(size=(1, 3, 3, 8)).astype("float32")
    one_head = RelativeAttention(num_heads=1)
    two_heads = RelativeAttention(num_heads=2)
    one_head.build(x.shape)
    two_heads.build(x.shape)
    two_heads.set_weights(one_head.get_weights())
    assert not np.allclose(ops.convert_to_numpy(one_head(x)), ops.convert_to_numpy(two_heads(x)))


@pytest.mark.parametrize("layer_cls, kwargs", [(StageBlock, {"filters": 6}), (RelativeAttention, {})])
def test_channels_first_matches_channels_last(layer_cls, kwargs):
    x = np.random.default_rng(3).normal(size=(2, 5, 4, 6)).astype("float32")
    last = layer_cls(**kwargs, data_format="channels_last")
    first = layer_cls(**kwargs, data_format="channels_first")
    last.build(x.shape)
    first.build((2, 6, 5, 4))
    first.set_weights(last.get_weights())
    expected = ops.convert_to_numpy(last(x))
    got = ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2))))
    np.testing.assert_allclose(np.transpose(got, (0, 2, 3, 1)), expected, rtol=1e-5, atol=1e-5)
    assert first.compute_output_shape((None, 6, 5, 4)) == (None, kwargs.get("filters", 6), 5, 4)


def test_dynamic_spatial_size():
    inputs = keras.Input((None, None, 4))
    outputs = RelativeAttention()(StageBlock(8)(inputs))
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, None, None, 8)
    for size in ((3, 5), (6, 2)):
        x = np.zeros((1, *size, 4), "float32")
        assert ops.convert_to_numpy(model(x)).shape == (1, *size, 8)


@pytest.mark.parametrize(
    "layer_cls, kwargs, message",
    [
        (StageBlock, {"filters": 0}, "positive int"),
        (StageBlock, {"filters": 8, "data_format": "nhwc"}, "data_format"),
        (RelativeAttention, {"num_heads": 0}, "positive int"),
        (RelativeAttention, {"attention_scale": -1.0}, "positive number"),
        (StageBlock, {"filters": 8, "remat": 1}, "remat"),
        (RelativeAttention, {"remat": "yes"}, "remat"),
    ],
)
def test_bad_arguments(layer_cls, kwargs, message):
    with pytest.raises(ValueError, match=message):
        layer_cls(**kwargs)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible by num_heads=3"):
        RelativeAttention(num_heads=3).build((None, 4, 4, 8))


def test_float16_attention_with_unscaled_large_logits_stays_finite():
    # 255-valued features make q.k^T far beyond float16's range; softmax runs in float32.
    layer = RelativeAttention(attention_scale=1.0, dtype="mixed_float16")
    output = layer(np.full((1, 4, 4, 8), 255.0, "float32"))
    assert np.all(np.isfinite(ops.convert_to_numpy(ops.cast(output, "float32"))))


KERAS_EQUIVALENTS = [
    (DepthwiseConv3x3, keras.layers.DepthwiseConv2D, dict(kernel_size=3, padding="same")),
    (FastConv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=1)),
    (FastConv2D, keras.layers.Conv2D, dict(filters=5, kernel_size=3, padding="same")),
    (FusedBatchNormalization, keras.layers.BatchNormalization, dict(momentum=0.9, epsilon=1e-5)),
    (FastDense, keras.layers.Dense, dict(units=5)),
]


@pytest.mark.parametrize("layer_cls, keras_cls, kwargs", KERAS_EQUIVALENTS)
@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", ["float32", "mixed_bfloat16"])
def test_fast_layers_train_like_their_keras_layers(layer_cls, keras_cls, kwargs, data_format, dtype):
    # Backend-specific kernels (torch and JAX paths) against Keras' own layer: one SGD
    # step, so outputs, the input gradient (through the 1x1 convolution in front), the
    # weight gradients and batch norm's moving statistics all have to agree.
    shape = (2, 5, 6, 4) if data_format == "channels_last" else (2, 4, 5, 6)
    x = np.random.default_rng(0).normal(size=shape).astype("float32")
    if "filters" in kwargs or "units" in kwargs:
        shape = shape[:-1] + (5,) if data_format == "channels_last" else (2, 5) + shape[2:]
    y = np.random.default_rng(1).normal(size=shape).astype("float32")
    if layer_cls is FusedBatchNormalization:
        kwargs = dict(kwargs, axis=-1 if data_format == "channels_last" else 1)
    elif layer_cls is FastDense:  # on 2-D inputs, as RelativeAttention calls it
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
