import keras
import numpy as np
import pytest

from keras_astro.models import CONFIGS, AstroTransformer

torch = pytest.importorskip("torch", reason="the PyTorch reference needs torch")
from keras_astro.models.reference import ReferenceAstroTransformer  # noqa: E402


def reference_model(expansion, stage_depths, num_classes=10, seed=0):
    """Random weights with non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = ReferenceAstroTransformer(expansion, stage_depths, num_classes)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
                module.num_batches_tracked.fill_(100)
        # Spread the logits so the probabilities are far from uniform.
        model.fc.weight.mul_(20.0)
    return model.eval()


def reference_outputs(model, x_nhwc):
    with torch.no_grad():
        logits = model(torch.from_numpy(x_nhwc).permute(0, 3, 1, 2))
    return logits.numpy(), logits.softmax(-1).numpy()


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_imported_checkpoint_matches_the_reference(config):
    reference = reference_model(*CONFIGS[config])
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 3)).astype("float32")
    logits, probs = reference_outputs(reference, x)
    assert probs.max() > 0.3  # not two near-uniform outputs (uniform is 0.1)
    model = AstroTransformer.from_torch_checkpoint(reference.state_dict(), input_shape=(None, None, 3))
    assert (model.expansion, model.stage_depths, model.num_classes) == (*CONFIGS[config], 10)
    assert model.attention_scale == 1.0 and not model.include_preprocessing
    np.testing.assert_allclose(model.predict(x, verbose=0), probs, rtol=1e-4, atol=1e-7)
    head = AstroTransformer.from_torch_checkpoint(
        reference.state_dict(), input_shape=(8, 8, 3), classifier_activation=None
    )
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(head(x)), logits, rtol=1e-4, atol=1e-4 * np.abs(logits).max()
    )


@pytest.mark.parametrize("wrapper", [None, "state_dict", "model_state_dict"])
def test_reads_torch_save_files(tmp_path, wrapper):
    reference = reference_model(1, (1, 1, 1), num_classes=3)
    state = reference.state_dict()
    path = tmp_path / "reference.pt"
    torch.save(state if wrapper is None else {wrapper: state, "epoch": 7}, path)
    x = np.random.default_rng(1).normal(size=(1, 8, 8, 3)).astype("float32")
    model = AstroTransformer.from_torch_checkpoint(str(path), input_shape=(8, 8, 3))
    np.testing.assert_allclose(
        model.predict(x, verbose=0), reference_outputs(reference, x)[1], rtol=1e-4, atol=1e-7
    )


def test_numpy_state_dict_is_accepted():
    state = {k: v.numpy() for k, v in reference_model(1, (1, 1, 1), 3).state_dict().items()}
    model = AstroTransformer.from_torch_checkpoint(state, input_shape=(8, 8, 3))
    assert model.num_classes == 3


def small_state():
    return dict(reference_model(1, (1, 1, 1), num_classes=3).state_dict())


def test_missing_and_unexpected_keys_are_listed():
    state = small_state()
    del state["s2.0.bn1.running_var"]
    state["s2.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError, match=r"Missing keys: \['s2.0.bn1.running_var'\]") as error:
        AstroTransformer.from_torch_checkpoint(state, input_shape=(8, 8, 3))
    assert "Unexpected keys: ['s2.0.extra.weight']" in str(error.value)


def test_wrong_shapes_are_listed():
    state = small_state()
    state["relative_attention.depthwise_conv.bias"] = torch.zeros(5)
    with pytest.raises(ValueError, match=r"relative_attention.depthwise_conv.bias: got \(5,\)"):
        AstroTransformer.from_torch_checkpoint(state, input_shape=(8, 8, 3))


@pytest.mark.parametrize(
    "checkpoint, message",
    [
        ([1, 2, 3], "Expected a PyTorch state_dict"),
        ({"weights": torch.zeros(2)}, "missing keys"),
        ({**small_state(), "note": "hello"}, r"not tensors: \['note'\]"),
    ],
)
def test_not_a_state_dict(checkpoint, message):
    with pytest.raises(ValueError, match=message):
        AstroTransformer.from_torch_checkpoint(checkpoint)


def test_architecture_arguments_come_from_the_checkpoint():
    with pytest.raises(ValueError, match="read from the checkpoint"):
        AstroTransformer.from_torch_checkpoint(small_state(), num_classes=4)
