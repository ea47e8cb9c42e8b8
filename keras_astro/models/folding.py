"""Inference models with batch normalization folded into the preceding convolutions.

In inference mode a BatchNormalization after a bias-free convolution is an affine map
per output channel, y = conv(x) * s + (beta - mean * s) with s = gamma / sqrt(var + eps),
so it can live in the convolution's kernel and bias: one elementwise pass over the
activations less per batch norm. `fold_batch_norm(model)` returns such a model for
serving or export; training needs the unfolded model (batch statistics).

The gains measured are in BENCHMARKS.md ("Backend kernels"): mostly TensorFlow in
mixed_bfloat16, whose batch norms compute in float32 between casts.
"""

import keras
import numpy as np
from keras import ops

from keras_astro.layers.arguments import standardize_data_format, with_channels
from keras_astro.layers.backend_kernels import DepthwiseConv3x3, FastConv2D
from keras_astro.layers.stage_block import StageBlock


def _scale_and_shift(bn):
    gamma = ops.convert_to_numpy(bn.gamma) if bn.scale else 1.0
    beta = ops.convert_to_numpy(bn.beta) if bn.center else 0.0
    mean = ops.convert_to_numpy(bn.moving_mean).astype("float64")
    variance = ops.convert_to_numpy(bn.moving_variance).astype("float64")
    scale = np.asarray(gamma, "float64") / np.sqrt(variance + bn.epsilon)
    return scale, np.asarray(beta, "float64") - mean * scale


def _folded_kernel_and_bias(conv, bn, depthwise=False):
    """Kernel and bias of `conv` followed by `bn` (inference mode), in float32."""
    scale, shift = _scale_and_shift(bn)
    kernel = ops.convert_to_numpy(conv.kernel).astype("float64")
    # Output channels: the last axis of a (kh, kw, in, out) kernel, axis 2 of a
    # depthwise (kh, kw, channels, 1) one.
    kernel = kernel * (scale[:, None] if depthwise else scale)
    bias = shift
    if conv.use_bias:
        bias = bias + ops.convert_to_numpy(conv.bias).astype("float64") * scale
    return kernel.astype("float32"), bias.astype("float32")


@keras.saving.register_keras_serializable(package="keras_astro")
class FoldedAway(keras.layers.Layer):
    """Stands in for a batch norm folded into its convolution: returns its input.

    (`keras.layers.Identity` would do, but the graph calls batch norms with `mask`.)
    """

    def call(self, inputs, training=None, mask=None):
        return inputs

    def compute_output_shape(self, input_shape):
        return input_shape


@keras.saving.register_keras_serializable(package="keras_astro")
class FoldedStageBlock(keras.layers.Layer):
    """StageBlock for inference with its two batch norms folded into its convolutions.

    Depthwise 3x3 (+bias) -> ReLU -> 1x1 expansion (+bias), plus the skip, then ReLU.
    Build it with `FoldedStageBlock.from_stage_block(block)`.
    """

    def __init__(self, filters, has_skip_conv, data_format=None, **kwargs):
        super().__init__(**kwargs)
        self.filters = filters
        self.has_skip_conv = has_skip_conv
        self.data_format = standardize_data_format(data_format)

    def build(self, input_shape):
        args = dict(data_format=self.data_format, dtype=self.dtype_policy)
        self.depthwise_conv = DepthwiseConv3x3(use_bias=True, name="depthwise_conv", **args)
        self.expand_conv = FastConv2D(self.filters, 1, use_bias=True, name="expand_conv", **args)
        self.depthwise_conv.build(input_shape)
        self.expand_conv.build(input_shape)
        self.skip_conv = None
        if self.has_skip_conv:
            self.skip_conv = FastConv2D(self.filters, 1, use_bias=False, name="skip_conv", **args)
            self.skip_conv.build(input_shape)

    def call(self, inputs):
        x = self.expand_conv(ops.relu(self.depthwise_conv(inputs)))
        skip = inputs if self.skip_conv is None else self.skip_conv(inputs)
        return ops.relu(x + skip)

    def compute_output_shape(self, input_shape):
        return with_channels(input_shape, self.data_format, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            filters=self.filters, has_skip_conv=self.has_skip_conv, data_format=self.data_format
        )
        return config

    @classmethod
    def from_stage_block(cls, block, input_shape):
        folded = cls(
            block.filters,
            has_skip_conv=block.skip_conv is not None,
            data_format=block.data_format,
            name=block.name,
            dtype=block.dtype_policy,
        )
        folded.build(input_shape)
        folded.depthwise_conv.set_weights(
            _folded_kernel_and_bias(block.depthwise_conv, block.depthwise_bn, depthwise=True)
        )
        folded.expand_conv.set_weights(_folded_kernel_and_bias(block.expand_conv, block.expand_bn))
        if block.skip_conv is not None:
            folded.skip_conv.set_weights(block.skip_conv.get_weights())
        return folded


def fold_batch_norm(model):
    """A copy of `model` for inference, with every batch norm folded into its convolution.

    Folded: each StageBlock's two batch norms, and every BatchNormalization whose only
    input is a bias-free or biased Conv2D/DepthwiseConv2D used nowhere else (the stem).
    Every other layer is shared with `model` (same weights). The result is a plain
    functional `keras.Model` with the same inputs and outputs as `model`; its outputs
    equal `model(x, training=False)` up to float32 rounding.

    Args:
        model: a built functional model, e.g. an `AstroTransformer`.
    Returns:
        A new `keras.Model` for inference (`predict`, export); do not train it.
    """
    folded_convs = {}
    identities = set()
    for layer in model.layers:
        if not isinstance(layer, keras.layers.BatchNormalization):
            continue
        parents = layer._inbound_nodes[0].parent_nodes
        producer = parents[0].operation if len(parents) == 1 else None
        if not isinstance(producer, (keras.layers.Conv2D, keras.layers.DepthwiseConv2D)):
            continue
        channel_axes = (-1, 3) if producer.data_format == "channels_last" else (1,)
        foldable = (
            len(producer._outbound_nodes) == 1
            and len(layer._inbound_nodes) == 1
            and len(producer.output.shape) == 4
            and layer.axis in channel_axes
        )
        if foldable:
            folded_convs[producer.name] = layer
            identities.add(layer.name)

    def clone(layer):
        if isinstance(layer, StageBlock):
            return FoldedStageBlock.from_stage_block(layer, layer.input.shape)
        if layer.name in identities:
            # The policy by name: a policy object cannot be serialized from the constructor.
            return FoldedAway(name=layer.name, dtype=layer.dtype_policy.name)
        if layer.name in folded_convs:
            config = layer.get_config()
            config["use_bias"] = True
            depthwise = isinstance(layer, keras.layers.DepthwiseConv2D)
            new = layer.__class__.from_config(config)
            new.build(layer.input.shape)
            new.set_weights(
                _folded_kernel_and_bias(layer, folded_convs[layer.name], depthwise=depthwise)
            )
            return new
        return layer

    return keras.models.clone_model(model, clone_function=clone)
