"""Backend kernels: Keras layers with a faster path on the backend where Keras' generic
one is slow for this model's shapes.

Each class keeps the weights, config and results of the Keras layer it subclasses and
runs Keras' own code everywhere else, and each is tested to train one step exactly like
that layer (tests/layers/test_backend_kernels.py). The measured gains are in
BENCHMARKS.md ("Backend kernels"). The architecture layers (StageBlock,
RelativeAttention) and the model build on these.

The custom kernels (torch and JAX; TensorFlow has none) were measured on CPUs and run
only when the computation runs on one (`uses_custom_kernel`): on torch, when the tensor
is on the CPU; on JAX, when the default backend is the CPU (a traced value has no
device). On a GPU every layer runs Keras' own ops, among them `ops.dot_product_attention`
with its fused kernels (cuDNN's, flash attention) as `keras.config.is_flash_attention_enabled()`
allows.

`KERAS_ASTRO_KERNELS=keras` in the environment turns every custom kernel off on every
device, and the per-backend remat plans of `remat_attention` with them; `auto`, the
default, is the rule above. It is read each time a layer is called or traced (set it
before a model's first compiled step); `kernels_mode()` returns it.

`FastConv2D` and `FusedBatchNormalization` sit directly in AstroTransformer's layer
list, and Keras names a functional model's weights in a `.keras` file after the
classes of that list (`layers/fast_conv2d_1/...`): their names are part of the saved
format, and renaming them would orphan the weights of every saved model.
"""

import functools
import os

import keras
from keras import ops

KERNELS_VARIABLE = "KERAS_ASTRO_KERNELS"
KERNELS_MODES = ("auto", "keras")

# Batch norm's moving statistics average about the last two training batches. With the
# reference's 0.9 (PyTorch's default), an average over ten batches lagged so far behind
# weights that change quickly in a small data set's first epochs (5-7 steps an epoch)
# that inference-mode predictions stayed at one class for six epochs while batch-statistic
# predictions reached 85% (FR-DEEP, BENCHMARKS.md "Accuracy on astronomy data"). A batch
# of 64 32x32 images gives each channel's statistics 65k positions, so two batches
# estimate them well. Imported checkpoints keep their statistics: momentum only acts
# in training (Keras' momentum is PyTorch's 1 - momentum).
BN_MOMENTUM = 0.5
BN_EPSILON = 1e-5


def kernels_mode():
    """`KERAS_ASTRO_KERNELS`: "auto" (the default: custom kernels on CPUs) or "keras"."""
    mode = os.environ.get(KERNELS_VARIABLE) or "auto"
    if mode not in KERNELS_MODES:
        raise ValueError(f"`{KERNELS_VARIABLE}` must be one of {KERNELS_MODES}. Received: {mode!r}")
    return mode


def runs_on_cpu(tensor):
    """Whether the op on `tensor` computes on a CPU.

    torch: the tensor's device. JAX: the default backend, where jitted steps run (a
    traced value has no device). TensorFlow: whether it has no GPU to place ops on.
    """
    backend = keras.backend.backend()
    if backend == "torch":
        return ops.convert_to_tensor(tensor).device.type == "cpu"
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    import tensorflow as tf

    return not tf.config.list_logical_devices("GPU")


def uses_custom_kernel(backend, tensor):
    """Whether `backend`'s custom kernel computes the op on `tensor`, rather than Keras' ops.

    Only on that backend, on a CPU where they were measured, unless `KERAS_ASTRO_KERNELS`
    is "keras".
    """
    return kernels_mode() == "auto" and keras.backend.backend() == backend and runs_on_cpu(tensor)


def torch_conv2d(inputs, kernel, data_format, groups=1, bias=None):
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
    """Keras' Conv2D, run by each backend's fastest kernel for stride-1 convolutions.

    Same weights and results as `keras.layers.Conv2D`. On torch on a CPU, stride-1
    convolutions with odd square kernels ("same" padding or 1x1) call `torch_conv2d`,
    which leaves out Keras' layout copies. On JAX on a CPU, channels_last 1x1
    convolutions run as a 2-D matmul: XLA's CPU gradient of a 1x1 convolution with
    respect to its kernel is a generic convolution, far slower than the same sum as a
    matmul. Everything else is Keras'.
    """

    def _torch_fast_path(self, inputs):
        kernel_size = self.kernel_size[0]
        return (
            tuple(self.strides) == (1, 1)
            and tuple(self.dilation_rate) == (1, 1)
            and self.kernel_size == (kernel_size, kernel_size)
            and kernel_size % 2 == 1
            and (self.padding == "same" or kernel_size == 1)
            and self.groups == 1
            and uses_custom_kernel("torch", inputs)
        )

    def _jax_pointwise(self, inputs):
        return (
            self.kernel_size == (1, 1)
            and tuple(self.strides) == (1, 1)
            and self.groups == 1
            and self.data_format == "channels_last"
            and uses_custom_kernel("jax", inputs)
        )

    def convolution_op(self, inputs, kernel):
        if self._torch_fast_path(inputs):
            return torch_conv2d(inputs, kernel, self.data_format)
        if self._jax_pointwise(inputs):
            in_channels, filters = kernel.shape[-2], kernel.shape[-1]
            outputs = ops.matmul(
                ops.reshape(inputs, (-1, in_channels)), ops.reshape(kernel, (in_channels, filters))
            )
            return ops.reshape(outputs, (*ops.shape(inputs)[:-1], filters))
        return super().convolution_op(inputs, kernel)


@keras.saving.register_keras_serializable(package="keras_astro")
class AddmmDense(keras.layers.Dense):
    """Keras' Dense; on torch on a CPU, 2-D inputs take `torch.addmm` (bias added in the matmul).

    Keras adds the bias as a separate pass over the output, which is large for the
    attention's qkv projection (every pixel of the batch). Elsewhere: Keras' Dense.
    """

    def call(self, inputs, training=None):
        if (
            len(inputs.shape) == 2
            and self.bias is not None
            and self.quantization_mode is None
            and uses_custom_kernel("torch", inputs)
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
    """Keras' BatchNormalization whose normalization and moving-average update are separate.

    `normalize(inputs, training)` returns `(outputs, batch_moments)` without touching the
    moving statistics, and `update_moving_statistics(mean, variance)` applies them, so a
    gradient-checkpointed (recomputed) function can normalize while the update runs
    once, outside it (`StageBlock(remat=True)`). `call` does both, as Keras' layer does.

    Same variables and semantics as Keras' layer (Keras' momentum, the biased batch
    variance in the moving statistics, float32 statistics under mixed precision). On
    torch on a CPU, where Keras computes it as several separate elementwise passes, the
    forward is `torch.native_batch_norm` (channels_last kernels on a permuted view) and
    the backward torch's fused one. Other backends and devices, masks, renorm and
    synchronized statistics use Keras' own code.
    """

    def _torch_fast_path(self, inputs, mask=None):
        channel_axis = 3 if self.axis in (-1, 3) else self.axis
        return (
            mask is None
            and not self.renorm
            and not self.synchronized
            and self.center
            and self.scale
            and len(inputs.shape) == 4
            and channel_axis in (1, 3)
            and uses_custom_kernel("torch", inputs)
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


@keras.saving.register_keras_serializable(package="keras_astro")
class DepthwiseConv3x3(keras.layers.DepthwiseConv2D):
    """A 3x3, stride-1, "same" DepthwiseConv2D that is fast under XLA on CPU too.

    XLA's CPU compiler lowers grouped convolutions to a generic loop, much slower than
    nine shifted multiply-adds, which XLA fuses. So on JAX on a CPU this computes the
    same sum that way (same weights; equal up to summation order), with a hand-written
    gradient (`nine_tap_depthwise`) so the backward pass keeps only the padded input,
    not eight shifted copies of it. On torch on a CPU it calls `torch_conv2d` (no layout
    copies, the bias added inside the kernel). TensorFlow and GPUs run Keras' own layer
    (oneDNN, cuDNN).
    """

    def __init__(self, **kwargs):
        kwargs.update(kernel_size=3, strides=1, padding="same", dilation_rate=1)
        super().__init__(**kwargs)

    def call(self, inputs):
        if self.depth_multiplier == 1 and uses_custom_kernel("torch", inputs):
            # No layout copies, and the bias added inside the kernel (`torch_conv2d`).
            return torch_conv2d(
                inputs,
                self.kernel,
                self.data_format,
                groups=self.kernel.shape[2],
                bias=self.bias if self.use_bias else None,
            )
        if not uses_custom_kernel("jax", inputs):
            return super().call(inputs)
        outputs = nine_tap_depthwise(self.data_format)(inputs, self.kernel)
        if self.use_bias:
            bias_shape = (-1, 1, 1) if self.data_format == "channels_first" else (-1,)
            outputs = outputs + ops.reshape(self.bias, bias_shape)
        return outputs


def nine_tap_depthwise(data_format):
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

    On JAX on a CPU in float32 it is written out as two einsums around a softmax,
    without the head axis when there is one head: XLA on CPU runs
    `jax.nn.dot_product_attention`'s 4-D einsums with layout copies. Everything else
    takes `ops.dot_product_attention`, whose fused kernels a GPU runs (cuDNN's, flash
    attention) unless `keras.config.disable_flash_attention()` was called.
    """
    float32 = keras.backend.standardize_dtype(query.dtype) == "float32"
    if not (float32 and uses_custom_kernel("jax", query)):
        flash_attention = keras.config.is_flash_attention_enabled()
        return ops.dot_product_attention(
            query, key, value, scale=scale, flash_attention=flash_attention
        )
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


def remat_attention(call, inputs):
    """`call(inputs)`, RelativeAttention's computation, recomputed in the backward pass.

    Each backend's plan keeps one part of the batch's attention at a time: on torch a
    quarter of the batch (`remat_image_groups`), on JAX the whole layer one image at a
    time (`remat_image_by_image`). These are plans per backend, whatever the device,
    unless `KERAS_ASTRO_KERNELS=keras`; then, and on TensorFlow, Keras' remat of the
    layer with the attention one image at a time (`call(inputs, image_by_image=True)`).
    """
    if kernels_mode() == "auto":
        if keras.backend.backend() == "torch":
            return remat_image_groups(call, inputs)
        if keras.backend.backend() == "jax":
            return remat_image_by_image(call, inputs)
    return keras.remat(functools.partial(call, image_by_image=True))(inputs)


def attend_image_by_image(attend, query, key, value):
    """`attend(query, key, value)` recomputed in the backward pass, one image at a time.

    With `ops.map` (a loop the backward pass runs in reverse) and `keras.remat` per
    image, one image's logits exist at a time. Chunks of queries would not do: autodiff
    keeps every chunk's full-size key and value gradients until it sums them. (On torch,
    `remat_image_groups` recomputes the whole layer instead.)
    """
    attend = keras.remat(attend)

    def attend_one(image):
        return attend(*(ops.expand_dims(t, 0) for t in image))[0]

    return ops.map(attend_one, (query, key, value))


def remat_image_by_image(function, inputs):
    """`function(inputs)` recomputed in the backward pass, one image at a time (JAX).

    XLA's CPU compiler drops `jax.checkpoint`'s barriers after its first CSE pass and
    merges the recomputation back into the forward pass, so remat of the whole layer
    kept the batch's qkv projection. Inside `ops.map` (a `lax.map` loop) each image's
    q, k, v and logits exist one at a time in both passes, which no pass can merge:
    XLA's temp buffer for a batch of 128 at 32x32 fell 3025 -> 1473 MiB (3282 without
    remat). On TensorFlow, `recompute_grad` inside `map_fn` cannot capture the layer's
    variables, so it keeps `attend_image_by_image`.
    """
    # Under data parallelism each step takes one image from every device's part of the
    # batch, so the loop runs on the devices' shards instead of gathering the batch.
    shards = _batch_shards()
    batch = inputs.shape[0]
    if batch is None or batch % shards:
        shards = 1
    steps = ops.swapaxes(ops.reshape(inputs, (shards, batch // shards, *inputs.shape[1:])), 0, 1)
    outputs = ops.swapaxes(ops.map(keras.remat(function), steps), 0, 1)
    return ops.reshape(outputs, (batch, *outputs.shape[2:]))


def _batch_shards():
    """How many devices the global `keras.distribution` splits each batch across."""
    distribution = keras.distribution.distribution()
    if distribution is None:
        return 1
    mesh = distribution.device_mesh
    return mesh.shape[mesh.axis_names.index(distribution.batch_dim_name)]


def remat_image_groups(function, inputs, groups=4):
    """`function(inputs)` recomputed in the backward pass, a quarter batch at a time (torch).

    Each group's `keras.remat` keeps only its slice of `inputs` (a view), so neither pass
    holds more than one group's q, k, v and attention: the batch's qkv projection was
    the training step's peak. At a quarter of the batch the attention stays under the
    StageBlocks' recomputation peak; smaller groups lower nothing more and fragment the
    C heap (batch 128: same allocator peak, RSS 1648 MiB at 32 groups, 1223 MiB at 4).
    `torch.chunk` and `torch.cat`, not Keras' `ops.map`: its x[i] slicing allocates a
    full-size zero gradient per image in the backward pass.
    """
    import torch

    remat_function = keras.remat(function)
    return torch.cat([remat_function(group) for group in torch.chunk(inputs, groups)])
