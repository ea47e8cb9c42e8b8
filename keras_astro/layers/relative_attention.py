"""RelativeAttention: self-attention over every pixel with a convolutional position term."""

import math
import numbers

import keras
from keras import ops

from keras_astro.layers.arguments import channel_axis, check_remat, standardize_data_format
from keras_astro.layers.backend_kernels import (
    AddmmDense,
    DepthwiseConv3x3,
    attend_image_by_image,
    dot_product_attention,
    remat_attention,
)
from keras_astro.utils import check_int


@keras.saving.register_keras_serializable(package="keras_astro")
class RelativeAttention(keras.layers.Layer):
    """Self-attention over every pixel, with a convolutional relative-position term.

    One Dense layer makes q, k and v from the pixel tokens; a depthwise 3x3 convolution
    of the feature map gives r. The logits q.k^T + q.r^T are computed as one attention
    over keys k + r (the same sum, by linearity), so `keras.ops.dot_product_attention`
    can use each backend's fused kernel and no (H*W) x (H*W) matrix is built here.
    There is no output projection and no residual, as in the reference design.

    Args:
        num_heads: int, number of heads; must divide the channel count.
        attention_scale: float or `None`. Logit multiplier; `None` means
            1/sqrt(head_dim). The reference does not scale: use 1.0 to reproduce it.
        data_format: `"channels_last"`, `"channels_first"` or `None`.
        remat: bool; `True` keeps only the layer's input for the backward pass and
            recomputes the rest there (`keras.remat`), one image's attention at a
            time, so training never holds the whole batch's (H*W) x (H*W) logits
            (on JAX, the whole layer one image at a time; on torch, a quarter of the
            batch at a time).
    """

    def __init__(
        self, num_heads=1, attention_scale=None, data_format=None, remat=False, **kwargs
    ):
        super().__init__(**kwargs)
        check_int("num_heads", num_heads, owner="RelativeAttention ")
        if attention_scale is not None and not (
            isinstance(attention_scale, numbers.Real)
            and not isinstance(attention_scale, bool)
            and math.isfinite(attention_scale)
            and attention_scale > 0
        ):
            raise ValueError(
                "RelativeAttention `attention_scale` must be a finite positive number or None. "
                f"Received: attention_scale={attention_scale!r}"
            )
        self.num_heads = num_heads
        self.attention_scale = None if attention_scale is None else float(attention_scale)
        self.data_format = standardize_data_format(data_format)
        self.remat = check_remat(remat)

    def build(self, input_shape):
        channels = input_shape[channel_axis(self.data_format)]
        if channels is None or channels % self.num_heads:
            raise ValueError(
                f"RelativeAttention needs a known channel count divisible by "
                f"num_heads={self.num_heads}. Received: input_shape={input_shape}"
            )
        self.channels = channels
        self.head_dim = channels // self.num_heads
        self.qkv_dense = AddmmDense(
            3 * channels, name="qkv_dense", dtype=self.dtype_policy
        )
        self.qkv_dense.build((None, None, channels))
        self.relative_conv = DepthwiseConv3x3(
            use_bias=True,
            data_format=self.data_format,
            name="relative_conv",
            dtype=self.dtype_policy,
        )
        self.relative_conv.build(input_shape)

    def _to_tokens(self, x):
        """(B, H, W, C) or (B, C, H, W) -> (B, H*W, heads, head_dim), row-major."""
        if self.data_format == "channels_first":
            x = ops.transpose(x, (0, 2, 3, 1))
        return ops.reshape(x, (ops.shape(x)[0], -1, self.num_heads, self.head_dim))

    def call(self, inputs):
        if not self.remat:
            return self._call(inputs)
        return remat_attention(self._call, inputs)

    def _call(self, inputs, image_by_image=False):
        tokens = self._to_tokens(inputs)
        batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        # As a 2-D matmul: XLA's CPU gradient of the 3-D one is 2x slower.
        qkv = self.qkv_dense(ops.reshape(tokens, (-1, self.channels)))
        qkv = ops.reshape(qkv, (batch, length, 3 * self.channels))
        query, key, value = ops.split(qkv, 3, axis=-1)
        heads = (batch, length, self.num_heads, self.head_dim)
        query = ops.reshape(query, heads)
        value = ops.reshape(value, heads)
        key = ops.reshape(key, heads) + self._to_tokens(self.relative_conv(inputs))
        if self.compute_dtype == "float16":
            # Unscaled logits of the reference overflow float16's 65504, and XLA on
            # CPU has no float16 x float16 -> float32 dot; bfloat16 has float32's range.
            query, key, value = (ops.cast(t, "float32") for t in (query, key, value))
        if image_by_image:
            attended = attend_image_by_image(self._attend, query, key, value)
        else:
            attended = self._attend(query, key, value)
        attended = ops.cast(attended, self.compute_dtype)
        if self.data_format == "channels_first":
            spatial = ops.shape(inputs)[2:]
            attended = ops.reshape(attended, (batch, *spatial, self.channels))
            return ops.transpose(attended, (0, 3, 1, 2))
        return ops.reshape(attended, ops.shape(inputs))

    def _attend(self, query, key, value):
        return dot_product_attention(query, key, value, scale=self.attention_scale)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {
                "num_heads": self.num_heads,
                "attention_scale": self.attention_scale,
                "data_format": self.data_format,
                "remat": self.remat,
            }
        )
        return config
