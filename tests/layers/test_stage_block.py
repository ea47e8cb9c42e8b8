import pytest

from keras_astro.layers import StageBlock
from tests.test_case import assert_channels_first_matches_channels_last, run_layer_test


@pytest.mark.parametrize("remat", [False, True])
def test_stage_block_changing_channels(remat):
    # depthwise kernel, 2 BN (gamma, beta), expansion kernel, skip kernel; 2x2 BN moments.
    run_layer_test(
        StageBlock,
        {"filters": 8, "data_format": "channels_last", "remat": remat},
        input_shape=(2, 6, 5, 4),
        expected_output_shape=(2, 6, 5, 8),
        expected_num_trainable_weights=7,
        expected_num_non_trainable_weights=4,
    )


def test_stage_block_identity_skip_has_no_skip_conv():
    run_layer_test(
        StageBlock,
        {"filters": 4, "data_format": "channels_last"},
        input_shape=(2, 5, 5, 4),
        expected_output_shape=(2, 5, 5, 4),
        expected_num_trainable_weights=6,
        expected_num_non_trainable_weights=4,
    )


def test_channels_first_matches_channels_last():
    assert_channels_first_matches_channels_last(StageBlock, {"filters": 6}, output_channels=6)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"filters": 0}, "positive int"),
        ({"filters": 8, "data_format": "nhwc"}, "data_format"),
        ({"filters": 8, "remat": 1}, "remat"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        StageBlock(**kwargs)
