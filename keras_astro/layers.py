"""The two building blocks of AstroTransformer: StageBlock and RelativeAttention.

Both keep the spatial resolution of their input (stride 1 everywhere) and accept any
height and width, in either image data format. They are built from Keras layers with a
faster path on one backend where Keras' generic one was measured slow on it (FastConv2D,
FastDense, FusedBatchNormalization, DepthwiseConv3x3, dot_product_attention); each has
Keras' weights and results, and every other backend runs Keras' own code.
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


def _torch_conv2d(inputs, kernel, data_format, groups=1, bias=None):
    """Stride-1 "same" convolution on the torch backend without layout copies.

    Keras' torch `ops.conv` turns a channels_last batch into a contiguous NCHW copy and
    then into a channels_last copy again before calling oneDNN, and back. A permuted
    view of an NHWC tensor already is an NCHW tensor in torch's channels_last memory
    format, which oneDNN takes as is and whose output permutes back to NHWC for free.
    `kernel` is Keras' (kh, kw, in, out) kernel, or (kh, kw, channels, 1) with
    `groups` = channels for a depthwise one; the kernel size must be odd.
    """
    import torch.nn.functional as F

    inputs = ops.convert_to_tensor(inputs)
    kernel = ops.convert_to_tensor(kernel)
    if groups == 1:
        kernel = kernel.permute(3, 2, 0, 1)
    else:
        kernel = kernel.permute(2, 3, 0, 1)
    if bias is not None:
        bias = ops.convert_to_tensor(bias)
    if data_format == "channels_last":
        inputs = inputs.permute(0, 3, 1, 2)
    outputs = F.conv2d(inputs, kernel, bias, padding=kernel.shape[-1] // 2, groups=groups)
    if data_format == "channels_last":
        outputs = outputs.permute(0, 2, 3, 1)
    return outputs


@keras.saving.register_keras_serializable(package="keras_astro")
class FastConv2D(keras.layers.Conv2D):
    """Keras' Conv2D, with `_torch_conv2d` for stride-1 convolutions on torch.

    Same weights and results as `keras.layers.Conv2D`. Only the torch backend takes
    another path, and only for what the model uses (stride 1, no dilation, odd square
    kernels, "same" padding or 1x1): measured on the 2-core Xeon at batch 32, 32x32,
    forward+backward of a 128 -> 256 1x1 convolution 116 -> 89 ms and of the 3 -> 32
    stem convolution 46 -> 34 ms, from the layout copies left out.
    """

    def _torch_fast_path(self):
        kernel_size = self.kernel_size[0]
        return (
            keras.backend.backend() == "torch"
            and tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.kernel_size == (kernel_size, kernel_size)
            and kernel_size % 2 == 1
            and (self.padding == "same" or kernel_size == 1)
            and self.groups == 1
        )

    def _jax_pointwise(self):
        return (
            keras.backend.backend() == "jax"
            and self.kernel_size == (1, 1)
            and tuple(self.strides) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
        )

    def convolution_op(self, inputs, kernel):
        if self._torch_fast_path():
            return _torch_conv2d(inputs, kernel, self.data_format)
        if self._jax_pointwise():
            # XLA's CPU gradient of a 1x1 convolution with respect to its kernel runs
            # as a generic convolution, 8x slower than the same sum as a matmul.
            in_channels, filters = kernel.shape[-2], kernel.shape[-1]
            outputs = ops.matmul(
                ops.reshape(inputs, (-1, in_channels)), ops.reshape(kernel, (in_channels, filters))
            )
            return ops.reshape(outputs, (*ops.shape(inputs)[:-1], filters))
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_astro")
class FastDense(keras.layers.Dense):
    """Keras' Dense; on torch, 2-D inputs take `torch.addmm` (bias added in the matmul).

    Keras adds the bias as a separate pass over the output: for the attention's qkv
    projection (32768 x 768 outputs at batch 32, 32x32) addmm made its forward+backward
    with the attention 8% faster (622 -> 576 ms). Other backends: Keras' Dense.
    """

    def call(self, inputs, training=None):
        if (
            keras.backend.backend() == "torch"
            and len(inputs.shape) == 2
            and self.bias is not None
            and self.quantization_mode is None
        ):
            import torch

            x = torch.addmm(
                ops.convert_to_tensor(self.bias),
                ops.convert_to_tensor(inputs),
                ops.convert_to_tensor(self.kernel),
            )
            return x if self.activation is None else self.activation(x)
        return super().call(inputs, training=training)


@keras.saving.register_keras_serializable(package="keras_astro")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """Keras' BatchNormalization, run as torch's fused batch-norm kernel on torch.

    Same variables, same semantics as Keras' layer (Keras' momentum, the biased batch
    variance in the moving statistics, float32 statistics under mixed precision). On
    the torch backend Keras computes it as 5+ separate elementwise passes forward and
    more backward; here the forward is `torch.native_batch_norm` (2 passes, channels_last
    kernels on a permuted view) and its backward is torch's fused one. Other backends,
    masks, renorm and synchronized statistics use Keras' own code.

    `normalize(inputs, training)` returns `(outputs, batch_statistics)` without touching
    the moving statistics, and `update_moving_statistics(mean, variance)` applies
    them, so the update can sit outside a recomputed (gradient-checkpointed) function.
    """

    def _torch_fast_path(self, inputs, mask=None):
        channel_axis = 3 if self.axis in (-1, 3) else self.axis
        return (
            keras.backend.backend() == "torch"
            and mask is None
            and not self.renorm
            and not self.synchronized
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and channel_axis in (1, 3)
        )

    def normalize(self, inputs, training=None):
        """(outputs, (batch mean, biased batch variance) or None); no variable changes.

        The batch moments come back only in training mode with a trainable layer, which
        is when `call` would update the moving statistics with them.
        """
        if self._torch_fast_path(inputs):
            return self._torch_normalize(inputs, training)
        if not (training and self.trainable):
            return super().call(inputs, training=False), None
        x = ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = self.axis % len(x.shape)
        mean, variance = ops.moments(x, axes=[i for i in range(len(x.shape)) if i != axis])
        outputs = ops.batch_normalization(
            x,
            mean,
            variance,
            axis=self.axis,
            offset=ops.cast(self.beta, x.dtype),
            scale=ops.cast(self.gamma, x.dtype),
            epsilon=self.epsilon,
        )
        return ops.cast(outputs, self.compute_dtype), (mean, variance)

    def _torch_normalize(self, inputs, training):
        import torch

        x = ops.convert_to_tensor(inputs)
        if x.dtype not in (torch.float32, torch.bfloat16):
            # float16 and float64 go through float32 as in Keras' layer.
            x = x.float()
        channels_last = self.axis in (-1, 3)
        if channels_last:
            x = x.permute(0, 3, 1, 2)
        gamma = ops.convert_to_tensor(self.gamma)
        beta = ops.convert_to_tensor(self.beta)
        if training and self.trainable:
            outputs, mean, inv_std = torch.native_batch_norm(
                x, gamma, beta, None, None, True, 0.0, self.epsilon
            )
            inv_std = inv_std.detach()
            statistics = (mean.detach(), (inv_std * inv_std).reciprocal() - self.epsilon)
        else:
            outputs = torch.nn.functional.batch_norm(
                x,
                ops.convert_to_tensor(self.moving_mean),
                ops.convert_to_tensor(self.moving_variance),
                gamma,
                beta,
                training=False,
                eps=self.epsilon,
            )
            statistics = None
        if channels_last:
            outputs = outputs.permute(0, 2, 3, 1)
        return ops.cast(outputs, self.compute_dtype), statistics

    def update_moving_statistics(self, mean, variance):
        """The moving-average update of Keras' layer in training mode."""
        for moving, batch in ((self.moving_mean, mean), (self.moving_variance, variance)):
            moving.assign(
                moving * self.momentum + ops.cast(batch, moving.dtype) * (1.0 - self.momentum)
            )

    def call(self, inputs, training=None, mask=None):
        if not self._torch_fast_path(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        outputs, statistics = self._torch_normalize(inputs, training)
        if statistics is not None:
            self.update_moving_statistics(*statistics)
        return outputs


class DepthwiseConv3x3(keras.layers.DepthwiseConv2D):
    """A 3x3, stride-1, "same" DepthwiseConv2D that is fast under XLA on CPU too.

    XLA's CPU compiler lowers grouped convolutions to a generic loop: on a 2-core Xeon a
    128-channel 3x3 depthwise convolution at batch 32, 32x32 ran 25x slower forward and
    3.5x slower forward+backward than nine shifted multiply-adds, which XLA fuses. So on
    JAX this computes the same sum that way (same weights; equal up to summation
    order): the small model trains 1.5x faster on JAX. Its gradient is written by
    hand (`_nine_tap_depthwise`) so the backward pass keeps only the padded input,
    not eight shifted copies of it. Other backends call their native kernels
    (oneDNN, cuDNN), which are faster there; on torch without Keras' layout copies
    (`_torch_conv2d`: forward+backward of the 256-channel one at batch 32, 32x32,
    193 -> 121 ms).
    """

    def __init__(self, **kwargs):
        kwargs.update(kernel_size=3, strides=1, padding="same", dilation_rate=1)
        super().__init__(**kwargs)

    def call(self, inputs):
        if keras.backend.backend() == "torch" and self.depth_multiplier == 1:
            # No layout copies, and the bias added inside the kernel (`_torch_conv2d`).
            return _torch_conv2d(
                inputs,
                self.kernel,
                self.data_format,
                groups=self.kernel.shape[2],
                bias=self.bias if self.use_bias else None,
            )
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


def dot_product_attention(query, key, value, scale=None):
    """`ops.dot_product_attention` on (batch, length, heads, head_dim) tensors.

    On JAX in float32 it is written out as two einsums around a softmax, without the
    head axis when there is one head: XLA on CPU runs `jax.nn.dot_product_attention`'s
    4-D einsums with layout copies, and this form made the attention's forward+backward
    about 20% faster at batch 32, 1024 tokens, 256 channels (2-core Xeon). Other
    backends and dtypes use `ops.dot_product_attention` (fused kernels where there are).
    """
    if keras.backend.backend() != "jax" or keras.backend.standardize_dtype(query.dtype) != "float32":
        return ops.dot_product_attention(query, key, value, scale=scale)
    if scale is None:
        scale = 1.0 / float(query.shape[-1]) ** 0.5
    if scale != 1.0:
        query = query * scale
    if query.shape[2] == 1:
        query, key, value = (t[:, :, 0] for t in (query, key, value))
        probabilities = ops.softmax(ops.einsum("btc,bsc->bts", query, key), axis=-1)
        return ops.einsum("bts,bsc->btc", probabilities, value)[:, :, None]
    probabilities = ops.softmax(ops.einsum("btnh,bsnh->bnts", query, key), axis=-1)
    return ops.einsum("bnts,bsnh->btnh", probabilities, value)


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
        self.depthwise_bn = FusedBatchNormalization(name="depthwise_bn", **bn_args)
        self.expand_conv = FastConv2D(
            self.filters, 1, name="expand_conv", **conv_args
        )
        self.expand_bn = FusedBatchNormalization(name="expand_bn", **bn_args)
        self.depthwise_conv.build(input_shape)
        self.depthwise_bn.build(input_shape)
        self.expand_conv.build(input_shape)
        output_shape = self.compute_output_shape(input_shape)
        self.expand_bn.build(output_shape)
        self.skip_conv = None
        if in_channels != self.filters:
            self.skip_conv = FastConv2D(
                self.filters, 1, name="skip_conv", **conv_args
            )
            self.skip_conv.build(input_shape)

    def call(self, inputs, training=None):
        if not (self.remat and training):
            return self._forward(inputs, lambda bn, x: bn(x, training=training))
        outputs, moments = keras.remat(self._forward_with_batch_moments)(inputs)
        updated = [bn for bn in (self.depthwise_bn, self.expand_bn) if bn.trainable]
        for bn, (mean, variance) in zip(updated, moments):
            bn.update_moving_statistics(mean, variance)
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
            outputs, batch_moments = bn.normalize(x, training=True)
            if batch_moments is not None:  # None: a frozen layer, moving statistics
                moments.append(batch_moments)
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
        self.qkv_dense = FastDense(
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
        return dot_product_attention(query, key, value, scale=self.attention_scale)

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
