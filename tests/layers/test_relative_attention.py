import keras
import numpy as np
import pytest
from keras import ops

from keras_astro.layers import RelativeAttention, StageBlock
from tests.test_case import assert_channels_first_matches_channels_last, run_layer_test


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


def test_channels_first_matches_channels_last():
    assert_channels_first_matches_channels_last(RelativeAttention, {}, output_channels=6)


def test_dynamic_spatial_size():
    inputs = keras.Input((None, None, 4))
    outputs = RelativeAttention()(StageBlock(8)(inputs))
    model = keras.Model(inputs, outputs)
    assert tuple(outputs.shape) == (None, None, None, 8)
    for size in ((3, 5), (6, 2)):
        x = np.zeros((1, *size, 4), "float32")
        assert ops.convert_to_numpy(model(x)).shape == (1, *size, 8)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"num_heads": 0}, "positive int"),
        ({"attention_scale": -1.0}, "positive number"),
        ({"remat": "yes"}, "remat"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RelativeAttention(**kwargs)


def test_heads_must_divide_channels():
    with pytest.raises(ValueError, match="divisible by num_heads=3"):
        RelativeAttention(num_heads=3).build((None, 4, 4, 8))


def test_float16_attention_with_unscaled_large_logits_stays_finite():
    # 255-valued features make q.k^T far beyond float16's range; softmax runs in float32.
    layer = RelativeAttention(attention_scale=1.0, dtype="mixed_float16")
    output = layer(np.full((1, 4, 4, 8), 255.0, "float32"))
    assert np.all(np.isfinite(ops.convert_to_numpy(ops.cast(output, "float32"))))
