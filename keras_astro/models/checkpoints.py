"""Import of checkpoints written by the reference PyTorch implementation (NCHW)."""

import os
import pickle
import re

import numpy as np

from keras_astro.models.presets import STEM_FILTERS

BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var")


def _read_state_dict(checkpoint):
    """Returns {name: numpy array} from a path or a mapping."""
    if isinstance(checkpoint, (str, os.PathLike)):
        try:
            import torch
        except ImportError as error:
            raise ImportError(
                "Reading a .pt checkpoint needs PyTorch: pip install 'keras-astro[torch]', "
                "or pass a state_dict of numpy arrays."
            ) from error
        path = os.fspath(checkpoint)
        # A text or other non-pickle file fails inside the unpickler, as a LookupError.
        try:
            checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        except (EOFError, RuntimeError, LookupError, pickle.UnpicklingError) as error:
            raise ValueError(
                f"{path!r} is not a readable PyTorch checkpoint: expected a file written by "
                f"torch.save (a state_dict); it is empty, truncated or of another format "
                f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else 'no data'})."
            ) from None
    if not hasattr(checkpoint, "items"):
        raise ValueError(
            "Expected a PyTorch state_dict (a mapping of parameter names to tensors). "
            f"Received an object of type {type(checkpoint).__name__}."
        )
    for wrapper in ("state_dict", "model_state_dict"):
        if wrapper in checkpoint and hasattr(checkpoint[wrapper], "items"):
            checkpoint = checkpoint[wrapper]
            break
    state = {}
    not_tensors = []
    for name, value in checkpoint.items():
        if hasattr(value, "detach"):
            value = value.detach().cpu().float().numpy()
        value = np.asarray(value)
        if value.dtype.kind not in "biuf":
            not_tensors.append(name)
            continue
        state[name] = value
    if not_tensors:
        raise ValueError(
            f"Expected a state_dict of tensors; these entries are not tensors: {sorted(not_tensors)}"
        )
    return state


def _infer_architecture(state):
    """Expansion, stage depths and class count from tensor names and shapes."""
    required = ("stem.0.weight", "relative_attention.proj_qkv.weight", "fc.weight")
    missing = [key for key in required if key not in state]
    if missing:
        raise ValueError(
            f"Not a reference AstroTransformer state_dict: missing keys {missing}. "
            f"First keys found: {sorted(state)[:8]}"
        )
    depths = []
    for stage in ("s1", "s2", "s3"):
        blocks = {int(m.group(1)) for k in state if (m := re.match(rf"{stage}\.(\d+)\.", k))}
        if not blocks:
            raise ValueError(f"Checkpoint has no blocks for stage {stage!r} (keys '{stage}.<i>.*').")
        depths.append(max(blocks) + 1)
    first_block = state.get("s1.0.e_conv.weight")
    if first_block is None:
        raise ValueError("Checkpoint is missing keys ['s1.0.e_conv.weight'].")
    s1_channels = first_block.shape[0]
    if s1_channels % STEM_FILTERS:
        raise ValueError(
            f"s1.0.e_conv.weight has {s1_channels} output channels; expected a multiple of {STEM_FILTERS}."
        )
    num_classes = state["fc.weight"].shape[0]
    return s1_channels // STEM_FILTERS, tuple(depths), num_classes


def _conv(w):
    return np.transpose(w, (2, 3, 1, 0))  # [out, in, kh, kw] -> [kh, kw, in, out]


def _depthwise(w):
    return np.transpose(w, (2, 3, 0, 1))  # [C, 1, kh, kw] -> [kh, kw, C, 1]


def _expected_weights(model):
    """{torch name: (keras variable, converter)} for every tensor the model holds."""
    mapping = {}

    def batch_norm(prefix, layer):
        gamma, beta, mean, variance = layer.weights
        for suffix, variable in zip(BN_SUFFIXES, (gamma, beta, mean, variance)):
            mapping[f"{prefix}.{suffix}"] = (variable, None)

    for i, (conv_index, bn_index) in enumerate(((0, 1), (3, 4)), 1):
        mapping[f"stem.{conv_index}.weight"] = (model.get_layer(f"stem_conv{i}").kernel, _conv)
        batch_norm(f"stem.{bn_index}", model.get_layer(f"stem_bn{i}"))
    for stage, depth in enumerate(model.stage_depths, 1):
        for block_index in range(depth):
            block = model.get_layer(f"stage{stage}_block{block_index + 1}")
            prefix = f"s{stage}.{block_index}"
            mapping[f"{prefix}.d_conv.weight"] = (block.depthwise_conv.kernel, _depthwise)
            batch_norm(f"{prefix}.bn1", block.depthwise_bn)
            mapping[f"{prefix}.e_conv.weight"] = (block.expand_conv.kernel, _conv)
            batch_norm(f"{prefix}.bn2", block.expand_bn)
            if block.skip_conv is not None:
                mapping[f"{prefix}.skip.weight"] = (block.skip_conv.kernel, _conv)
    mapping["adjust_s0_to_s1.weight"] = (model.get_layer("stage1_adjust").kernel, _conv)
    mapping["adjust_s1_to_s2.weight"] = (model.get_layer("stage2_adjust").kernel, _conv)
    attention = model.get_layer("relative_attention")
    mapping["relative_attention.proj_qkv.weight"] = (attention.qkv_dense.kernel, np.transpose)
    mapping["relative_attention.proj_qkv.bias"] = (attention.qkv_dense.bias, None)
    mapping["relative_attention.depthwise_conv.weight"] = (attention.relative_conv.kernel, _depthwise)
    mapping["relative_attention.depthwise_conv.bias"] = (attention.relative_conv.bias, None)
    head = model.get_layer("predictions")
    mapping["fc.weight"] = (head.kernel, np.transpose)
    mapping["fc.bias"] = (head.bias, None)
    return mapping


def load_torch_checkpoint(model_class, checkpoint, **kwargs):
    state = _read_state_dict(checkpoint)
    # BatchNorm's step counters have no Keras counterpart and do not affect outputs.
    state = {k: v for k, v in state.items() if not k.endswith(".num_batches_tracked")}
    expansion, stage_depths, num_classes = _infer_architecture(state)
    for fixed in ("expansion", "stage_depths", "num_classes", "include_top"):
        if fixed in kwargs:
            raise ValueError(
                f"`{fixed}` is read from the checkpoint and cannot be passed to from_torch_checkpoint."
            )
    kwargs.setdefault("include_preprocessing", False)
    kwargs.setdefault("attention_scale", 1.0)
    model = model_class(
        expansion=expansion, stage_depths=stage_depths, num_classes=num_classes, **kwargs
    )
    mapping = _expected_weights(model)
    missing = sorted(set(mapping) - set(state))
    unexpected = sorted(set(state) - set(mapping))
    if missing or unexpected:
        raise ValueError(
            "Checkpoint does not match the reference AstroTransformer layout "
            f"(expansion={expansion}, stage_depths={stage_depths}). "
            f"Missing keys: {missing}. Unexpected keys: {unexpected}."
        )
    converted = {}
    wrong_shapes = []
    for name, (variable, convert) in mapping.items():
        value = state[name] if convert is None else convert(state[name])
        if tuple(value.shape) != tuple(variable.shape):
            wrong_shapes.append(
                f"{name}: got {tuple(state[name].shape)}, which gives {tuple(value.shape)} "
                f"where the model needs {tuple(variable.shape)}"
            )
        converted[name] = value
    if wrong_shapes:
        raise ValueError(
            f"Checkpoint tensors with unexpected shapes for this architecture: {wrong_shapes}"
        )
    for name, (variable, _) in mapping.items():
        variable.assign(converted[name])
    return model
