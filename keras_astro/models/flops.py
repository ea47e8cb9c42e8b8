"""FLOPs of AstroTransformer's forward pass, counted from its layer shapes."""

from keras_astro.layers.relative_attention import RelativeAttention


def count_flops(model, reference=False):
    """FLOPs of one image's forward pass, counted from the layer shapes.

    A multiply-add counts as 2 FLOPs. Counted: every convolution and dense kernel
    (2 x kernel size x output positions) and the two attention matmuls, logits
    q.(k + r)^T and probabilities @ v (2 x T^2 x C each, T = H*W tokens). Batch norm,
    activations, softmax and additions are left out (well under 1% here).

    Args:
        model: a built `AstroTransformer` (or any functional model of these layers)
            with a fixed input height and width.
        reference: count the logits as the reference computes them, q.k^T + q.r^T
            (one more T^2 x C matmul), instead of the folded q.(k + r)^T.
    Returns:
        int, FLOPs per image.
    """
    total = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        shape = tuple(layer.output.shape)
        if getattr(layer, "data_format", "channels_last") == "channels_first":
            spatial = shape[2:]
        else:
            spatial = shape[1:-1]
        if any(dim is None for dim in spatial):
            raise ValueError(
                "count_flops needs a fixed input height and width; build the model with "
                f"e.g. input_shape=(32, 32, 3). Layer {layer.name!r} has output shape {shape}."
            )
        positions = 1
        for dim in spatial:
            positions *= dim
        # Every kernel of these layers (their own and their sublayers') runs once per
        # output position: stride 1 and "same" padding throughout.
        total += sum(
            2 * positions * _size(weight.shape)
            for weight in layer.weights
            if weight.name in ("kernel", "depthwise_kernel")
        )
        if isinstance(layer, RelativeAttention):
            matmuls = 3 if reference else 2
            total += matmuls * 2 * positions * positions * layer.channels
    return total


def _size(shape):
    size = 1
    for dim in shape:
        size *= dim
    return size
