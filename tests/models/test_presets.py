import pytest

from keras_astro.models import CONFIGS, AstroTransformer
from keras_astro.models.presets import STEM_FILTERS, stage_channels
from tests.test_case import trainable_count

SIZE = (16, 16, 3)


@pytest.mark.parametrize(
    "config, expected", [("small", 312_330), ("base", 404_170), ("large", 4_565_770)]
)
def test_parameter_counts_fixed_by_the_design(config, expected):
    model = AstroTransformer.from_name(config, num_classes=10)
    assert trainable_count(model) == expected


def test_presets_and_constructor_agree():
    small = AstroTransformer.small(num_classes=3, input_shape=SIZE)
    assert (small.expansion, small.stage_depths) == (2, (1, 1, 1))
    assert AstroTransformer.large(input_shape=SIZE).stage_depths == (2, 3, 3)
    assert small.get_layer("relative_attention").output.shape == (None, 16, 16, 256)


def test_stage_channels_multiply_the_stem_by_the_expansion():
    assert STEM_FILTERS == 32
    assert stage_channels(2) == (64, 128, 256) and stage_channels(3) == (96, 288, 864)
    assert sorted(CONFIGS) == ["base", "large", "small"]


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"\['base', 'large', 'small'\]"):
        AstroTransformer.from_name("huge")
