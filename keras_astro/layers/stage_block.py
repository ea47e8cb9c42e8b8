"""StageBlock: the full-resolution convolutional block of AstroTransformer's stages."""

import keras
from keras import ops

from keras_astro.layers.arguments import (
    channel_axis,
    check_remat,
    standardize_data_format,
    with_channels,
)
from keras_astro.layers.backend_kernels import (
    BN_EPSILON,
    BN_MOMENTUM,
    DepthwiseConv3x3,
    FastConv2D,
    FusedBatchNormalization,
)
from keras_astro.utils import check_int


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
        self.filters = check_int("filters", filters, owner="StageBlock ")
        self.data_format = standardize_data_format(data_format)
        self.remat = check_remat(remat)

    def build(self, input_shape):
        axis = channel_axis(self.data_format)
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
        return with_channels(input_shape, self.data_format, self.filters)

    def get_config(self):
        config = super().get_config()
        config.update(
            {"filters": self.filters, "data_format": self.data_format, "remat": self.remat}
        )
        return config
