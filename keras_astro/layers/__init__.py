"""AstroTransformer's layers: the architecture (StageBlock, RelativeAttention), the input
scaling in front of it (`preprocessing`) and the backend kernels they are built from
(`backend_kernels`)."""

from keras_astro.layers.backend_kernels import (
    AddmmDense,
    DepthwiseConv3x3,
    FastConv2D,
    FusedBatchNormalization,
)
from keras_astro.layers.preprocessing import FluxNormalization, ImageNormalization
from keras_astro.layers.relative_attention import RelativeAttention
from keras_astro.layers.stage_block import StageBlock

__all__ = [
    "AddmmDense",
    "DepthwiseConv3x3",
    "FastConv2D",
    "FluxNormalization",
    "FusedBatchNormalization",
    "ImageNormalization",
    "RelativeAttention",
    "StageBlock",
]
