"""`count_flops` against a hand count and the figures quoted for the small config."""

import pytest

from keras_astro import AstroTransformer, count_flops
from tests.test_case import tiny_model


def test_count_flops_matches_a_hand_count():
    # expansion 1: every stage has 32 channels, so no block has a skip convolution.
    model = tiny_model(num_classes=10)
    tokens, channels = 8 * 8, 32
    per_position = (
        3 * 3 * 3 * 32  # stem_conv1
        + 3 * 3 * 32 * 32  # stem_conv2
        + 3 * (3 * 3 * 32 + 32 * 32)  # three blocks: depthwise 3x3 + 1x1 expansion
        + 2 * 32 * 32  # stage1_adjust, stage2_adjust
        + 32 * 3 * 32  # q, k, v projection
        + 3 * 3 * 32  # relative depthwise conv
    )
    attention = 2 * tokens * tokens * channels  # one T x T x C matmul
    head = 32 * 10
    expected = 2 * (tokens * per_position + head) + 2 * attention
    assert count_flops(model) == expected
    assert count_flops(model, reference=True) == expected + attention


def test_count_flops_of_the_small_config_at_32x32():
    # Issue 5: about 1.7 GFLOP folded and 2.2 GFLOP as the reference computes it.
    model = AstroTransformer.small()
    assert count_flops(model) == pytest.approx(1.70e9, rel=0.01)
    assert count_flops(model, reference=True) == pytest.approx(2.24e9, rel=0.01)


def test_count_flops_needs_a_fixed_size():
    model = tiny_model(input_shape=(None, None, 3))
    with pytest.raises(ValueError, match="fixed input height and width"):
        count_flops(model)
