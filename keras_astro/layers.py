"""The two building blocks of AstroTransformer: StageBlock and RelativeAttention.

Both keep the spatial resolution of their input (stride 1 everywhere) and accept any
height and width, in either image data format.
"""

import keras
from keras import ops

# The reference implementation uses PyTorch's BatchNorm defaults; Keras' momentum is
# PyTorch's (1 - momentum), so imported checkpoints keep their statistics' meaning.
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def standardize_data_format(data_format):
    """`None` -> Keras' global image data format; anything else must be a known one."""
    data_format = data_format or keras.config.image_data_format()
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(
            "`data_format` must be 'channels_last', 'channels_first' or None. "
            f"Received: {data_format!r}"
        )
    return data_format


def _channel_axis(data_format):
    return -1 if data_format == "channels_last" else 1


def _check_remat(remat):
    if not isinstance(remat, bool):
        raise ValueError(f"`remat` must be True or False. Received: {remat!r}")
    return remat


def _batch_normalize_with_batch_moments(bn, x):
    """`BatchNormalization(training=True)`'s arithmetic, returning the batch moments.

    The moving-average update is left to the caller, so this can run inside a
    function that `keras.remat` recomputes.
    """
    inputs = ops.cast(x, keras.backend.result_type(x.dtype, "float32"))
    axis = bn.axis % len(inputs.shape)
    mean, variance = ops.moments(
        inputs, axes=[i for i in range(len(inputs.shape)) if i != axis]
    )
    outputs = ops.batch_normalization(
        inputs,
        mean,
        variance,
        axis=bn.axis,
        offset=ops.cast(bn.beta, inputs.dtype),
        scale=ops.cast(bn.gamma, inputs.dtype),
        epsilon=bn.epsilon,
    )
    return ops.cast(outputs, bn.compute_dtype), mean, variance


def _update_moving_statistics(bn, mean, variance):
    """The moving-average update `BatchNormalization(training=True)` applies."""
    for moving, batch in ((bn.moving_mean, mean), (bn.moving_variance, variance)):
        moving.assign(moving * bn.momentum + ops.cast(batch, moving.dtype) * (1.0 - bn.momentum))


class DepthwiseConv3x3(keras.layers.DepthwiseConv2D):
    """A 3x3, stride-1, "same" DepthwiseConv2D that is fast under XLA on CPU too.

    XLA's CPU compiler lowers grouped convolutions to a generic loop: on a 2-core Xeon a
    128-channel 3x3 depthwise convolution at batch 32, 32x32 ran 25x slower forward and
    3.5x slower forward+backward than nine shifted multiply-adds, which XLA fuses. So on
    JAX this computes the same sum that way (same weights; equal up to summation
    order): the small model trains 1.5x faster on JAX. Its gradient is written by
    hand (`_nine_tap_depthwise`) so the backward pass keeps only the padded input,
    not eight shifted copies of it. Other backends call their native kernels
    (oneDNN, cuDNN), which are faster there.
    """

    def __init__(self, **kwargs):
        kwargs.update(kernel_size=3, strides=1, padding="same", dilation_rate=1)
        super().__init__(**kwargs)

    def call(self, inputs):
        if keras.backend.backend() != "jax":
            return super().call(inputs)
        outputs = _nine_tap_depthwise(self.data_format)(inputs, self.kernel)
        if self.use_bias:
            bias_shape = (-1, 1, 1) if self.data_format == "channels_first" else (-1,)
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        return outputs


def _nine_tap_depthwise(data_format):
    """3x3 "same" depthwise correlation as nine shifted multiply-adds, with its gradient.

    Autodiff of the shifted multiply-adds would keep the eight shifted copies of the
    input for the kernel gradient (or, with the shift applied after the product,
    build nine padded copies of the output gradient at once). The hand-written
    gradient keeps only the padded input: the input gradient is the same nine-tap
    sum over the padded output gradient with the kernel flipped, and each tap's
    gradient is one reduction of a shifted input window times the output gradient.
    """
    if data_format == "channels_first":
        spatial, reduce_axes, tap_shape = (2, 3), (0, 2, 3), (3, 3, -1, 1, 1)
    else:
        spatial, reduce_axes, tap_shape = (1, 2), (0, 1, 2), (3, 3, -1)

    def pad(x):
        padding = [(0, 0)] * 4
        for axis in spatial:
            padding[axis] = (1, 1)
        return ops.pad(x, padding)

    def shift(x, i, j):
        """`x` zero-padded to the padded input's size, placed at window (i, j)."""
        padding = [(0, 0)] * 4
        padding[spatial[0]] = (i, 2 - i)
        padding[spatial[1]] = (j, 2 - j)
        return ops.pad(x, padding)

    def window(padded, i, j, height, width):
        index = [slice(None)] * 4
        index[spatial[0]] = slice(i, i + height)
        index[spatial[1]] = slice(j, j + width)
        return padded[tuple(index)]

    def nine_taps(padded, taps, height, width, flip=False):
        return sum(
            window(padded, i, j, height, width) * (taps[2 - i, 2 - j] if flip else taps[i, j])
            for i in range(3)
            for j in range(3)
        )

    @ops.custom_gradient
    def depthwise(inputs, kernel):
        height, width = (ops.shape(inputs)[axis] for axis in spatial)
        taps = ops.reshape(kernel, tap_shape)
        padded = pad(inputs)
        outputs = nine_taps(padded, taps, height, width)

        def grad(*args, upstream=None):
            if upstream is None:
                (upstream,) = args
            upstream = ops.cast(upstream, outputs.dtype)
            inputs_grad = nine_taps(pad(upstream), taps, height, width, flip=True)
            # padded * (upstream shifted into tap (i, j)'s window), summed: the same
            # sum as window(padded, i, j) * upstream, but written so that XLA's CSE
            # cannot merge it with the forward pass's windows (which would then be
            # materialised in the forward pass and kept for this one).
            taps_grad = ops.stack(
                [
                    ops.sum(padded * shift(upstream, i, j), axis=reduce_axes)
                    for i in range(3)
                    for j in range(3)
                ]
            )
            return inputs_grad, ops.reshape(taps_grad, ops.shape(kernel))

        return outputs, grad

    return depthwise


@keras.saving.register_keras_serializable(package="keras_astro")
class StageBlock(keras.layers.Layer):
    """Depthwise 3x3 -> BN -> ReLU -> 1x1 expansion -> BN, plus a skip, then ReLU.

    The skip is a bias-free 1x1 convolution when the channel count changes and the
    identity otherwise.

    Args:
        filters: int, output channels.
        data_format: `"channels_last"`, `"channels_first"` or `None` (Keras' global
            image data format).
        remat: bool; `True` keeps only the block's input for the backward pass and
            recomputes the rest there (`keras.remat`). Keras' own remat cannot take
            this block: recomputing batch norm would apply its moving-average update
            twice. Here the recomputed function returns the batch moments and the
            update runs once, outside it.
    """

    def __init__(self, filters, data_format=None, remat=False, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(filters, int) or isinstance(filters, bool) or filters < 1:
            raise ValueError(
                f"StageBlock `filters` must be a positive int. Received: filters={filters!r}"
            )
        self.filters = filters
        self.data_format = standardize_data_format(data_format)
        self.remat = _check_remat(remat)

    def build(self, input_shape):
        axis = _channel_axis(self.data_format)
        in_channels = input_shape[axis]
        if in_channels is None:
            raise ValueError(
                "StageBlock needs a known channel dimension. "
                f"Received: input_shape={input_shape}"
            )
        conv_args = dict(
            use_bias=False, data_format=self.data_format, dtype=self.dtype_policy
        )
        bn_args = dict(
            axis=axis, momentum=BN_MOMENTUM, epsilon=BN_EPSILON, dtype=self.dtype_policy
        )
        self.depthwise_conv = DepthwiseConv3x3(name="depthwise_conv", **conv_args)
        self.depthwise_bn = keras.layers.BatchNormalization(name="depthwise_bn", **bn_args)
        self.expand_conv = keras.layers.Conv2D(
            self.filters, 1, name="expand_conv", **conv_args
        )
        self.expand_bn = keras.layers.BatchNormalization(name="expand_bn", **bn_args)
        self.depthwise_conv.build(input_shape)
        self.depthwise_bn.build(input_shape)
        self.expand_conv.build(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        self.expand_bn.build(output_shape)
        self.skip_conv = None
        if in_channels != self.filters:
            self.skip_conv = keras.layers.Conv2D(
                self.filters, 1, name="skip_conv", **conv_args
            )
            self.skip_conv.build(input_shape)

    def call(self, inputs, training=None):
        if not (self.remat and training):
            return self._forward(inputs, lambda bn, x: bn(x, training=training))
        outputs, moments = keras.remat(self._forward_with_batch_moments)(inputs)
        updated = [bn for bn in (self.depthwise_bn, self.expand_bn) if bn.trainable]
        for bn, (mean, variance) in zip(updated, moments):
            _update_moving_statistics(bn, mean, variance)
        return outputs

    def _forward(self, inputs, batch_norm):
        x = self.depthwise_conv(inputs)
        x = ops.relu(batch_norm(self.depthwise_bn, x))
        x = self.expand_conv(x)
        x = batch_norm(self.expand_bn, x)
        skip = inputs if self.skip_conv is None else self.skip_conv(inputs)
        return ops.relu(x + skip)

    def _forward_with_batch_moments(self, inputs):
        """The training forward pass, returning the trainable batch norms' batch moments."""
        moments = []

        def batch_norm(bn, x):
            if not bn.trainable:  # frozen: normalises with its moving statistics
                return bn(x, training=True)
            outputs, mean, variance = _batch_normalize_with_batch_moments(bn, x)
            moments.append((mean, variance))
            return outputs

        outputs = self._forward(inputs, batch_norm)
        return outputs, tuple(moments)

    def compute_output_shape(self, input_shape):
        output_shape = list(input_shape)
        output_shape[_channel_axis(self.data_format)] = self.filters
        return tuple(output_shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "data_format": self.data_format, "remat": self.remat}
        )
        return config


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
            time, so training never holds the whole batch's (H*W) x (H*W) logits.
    """

    def __init__(
        self, num_heads=1, attention_scale=None, data_format=None, remat=False, **kwargs
    ):
        super().__init__(**kwargs)
        if not isinstance(num_heads, int) or isinstance(num_heads, bool) or num_heads < 1:
            raise ValueError(
                "RelativeAttention `num_heads` must be a positive int. "
                f"Received: num_heads={num_heads!r}"
            )
        if attention_scale is not None and not attention_scale > 0:
            raise ValueError(
                "RelativeAttention `attention_scale` must be a positive number or None. "
                f"Received: attention_scale={attention_scale!r}"
            )
        self.num_heads = num_heads
        self.attention_scale = None if attention_scale is None else float(attention_scale)
        self.data_format = standardize_data_format(data_format)
        self.remat = _check_remat(remat)

    def build(self, input_shape):
        channels = input_shape[_channel_axis(self.data_format)]
        if channels is None or channels % self.num_heads:
            raise ValueError(
                f"RelativeAttention needs a known channel count divisible by "
                f"num_heads={self.num_heads}. Received: input_shape={input_shape}"
            )
        self.channels = channels
        self.head_dim = channels // self.num_heads
        self.qkv_dense = keras.layers.Dense(
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
        if self.remat:
            return keras.remat(self._call)(inputs)
        return self._call(inputs)

    def _call(self, inputs):
        tokens = self._to_tokens(inputs)
        batch, length = ops.shape(tokens)[0], ops.shape(tokens)[1]
        qkv = self.qkv_dense(ops.reshape(tokens, (batch, length, self.channels)))
        query, key, value = ops.split(qkv, 3, axis=-1)
        heads = (batch, length, self.num_heads, self.head_dim)
        query = ops.reshape(query, heads)
        value = ops.reshape(value, heads)
        key = ops.reshape(key, heads) + self._to_tokens(self.relative_conv(inputs))
        if self.compute_dtype == "float16":
            # Unscaled logits of the reference overflow float16's 65504, and XLA on
            # CPU has no float16 x float16 -> float32 dot; bfloat16 has float32's range.
            query, key, value = (ops.cast(t, "float32") for t in (query, key, value))
        if self.remat:
            attended = self._attend_recomputed(query, key, value)
        else:
            attended = self._attend(query, key, value)
        attended = ops.cast(attended, self.compute_dtype)
        if self.data_format == "channels_first":
            spatial = ops.shape(inputs)[2:]
            attended = ops.reshape(attended, (batch, *spatial, self.channels))
            return ops.transpose(attended, (0, 3, 1, 2))
        return ops.reshape(attended, ops.shape(inputs))

    def _attend(self, query, key, value):
        return ops.dot_product_attention(query, key, value, scale=self.attention_scale)

    def _attend_recomputed(self, query, key, value):
        # One image at a time (`ops.map`: a loop the backward pass runs in reverse),
        # each recomputed, so one image's logits exist at a time. Chunks of queries
        # would not do: autodiff keeps every chunk's full-size key and value
        # gradients until it sums them. Torch's SDPA kernel never stores the logits.
        attend = keras.remat(self._attend)
        if keras.backend.backend() == "torch":
            return attend(query, key, value)

        def attend_one(image):
            return attend(*(ops.expand_dims(t, 0) for t in image))[0]

        return ops.map(attend_one, (query, key, value))

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
