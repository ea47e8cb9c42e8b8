import os
import shutil
import sys
import types

import keras
import numpy as np
import pytest

import keras_astro
from keras_astro.models import CONFIGS, AstroTransformer, preset_files
from keras_astro.models.presets import STEM_FILTERS, stage_channels
from tests.test_case import random_images, tiny_model, trainable_count

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


# === preset folders (keras_astro.models.preset_files) ===


@pytest.fixture(scope="module")
def preset(tmp_path_factory):
    """A tiny flux model with a centre crop, saved as a preset: (model, folder)."""
    keras.utils.set_random_seed(0)
    model = tiny_model(class_names=["a", "b", "c"], preprocessing="flux", center_crop=0.5)
    folder = tmp_path_factory.mktemp("presets") / "tiny"
    model.save_to_preset(folder, metadata={"trained_on": "nothing"})
    return model, folder


def test_a_preset_holds_keras_hubs_files_and_predicts_as_the_model(preset):
    model, folder = preset
    assert sorted(os.listdir(folder)) == ["README.md", "config.json", "metadata.json", "model.weights.h5"]
    metadata = preset_files.read_metadata(str(folder))
    assert metadata["class_names"] == ["a", "b", "c"] and metadata["trained_on"] == "nothing"
    assert (metadata["preprocessing"], metadata["center_crop"]) == ("flux", 0.5)
    assert metadata["keras_astro_version"] == keras_astro.__version__
    loaded = AstroTransformer.from_preset(str(folder))
    assert loaded.get_config() == model.get_config()
    images = random_images(shape=(8, 8, 3))
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), atol=1e-6)


def copy_preset(folder, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(folder, copy)
    return copy


def test_missing_or_damaged_preset_files_are_named(preset, tmp_path):
    _, folder = preset
    copy = copy_preset(folder, tmp_path)
    (copy / "model.weights.h5").unlink()
    with pytest.raises(ValueError, match="lacks model.weights.h5"):
        AstroTransformer.from_preset(str(copy))
    shutil.rmtree(copy)
    copy = copy_preset(folder, tmp_path)
    (copy / "model.weights.h5").write_bytes(b"not hdf5")
    with pytest.raises(ValueError, match="model.weights.h5 is damaged"):
        AstroTransformer.from_preset(str(copy))
    (copy / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="config.json is damaged"):
        AstroTransformer.from_preset(str(copy))
    (copy / "config.json").write_text('{"class_name": "Nothing", "config": {}}')
    with pytest.raises(ValueError, match="config.json is damaged"):
        AstroTransformer.from_preset(str(copy))
    with pytest.raises(ValueError, match="shipped preset"):
        AstroTransformer.from_preset("no_such_preset")


def test_hub_handles_download_with_their_client(preset, monkeypatch):
    _, folder = preset
    calls = []
    hub = types.ModuleType("huggingface_hub")
    hub.snapshot_download = lambda repo_id: calls.append(repo_id) or str(folder)
    monkeypatch.setitem(sys.modules, "huggingface_hub", hub)
    model = AstroTransformer.from_preset("hf://someone/tiny")
    assert calls == ["someone/tiny"] and model.class_names == ["a", "b", "c"]
    monkeypatch.setitem(sys.modules, "kagglehub", None)  # not installed
    with pytest.raises(ValueError, match="pip install kagglehub"):
        AstroTransformer.from_preset("kaggle://someone/tiny/keras/v1")


def test_from_preset_with_new_classes_starts_a_fine_tuning_model(preset):
    model, folder = preset
    tuned = AstroTransformer.from_preset(str(folder), class_names=["x", "y"], center_crop=None)
    assert tuned.num_classes == 2 and tuned.center_crop is None
    for name in ("stem_conv1", "relative_attention"):
        for a, b in zip(tuned.get_layer(name).get_weights(), model.get_layer(name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_the_shipped_preset_classifies_first_cutouts():
    assert "frdeep_first_small" in preset_files.shipped_presets()
    model = AstroTransformer.from_preset("frdeep_first_small")
    assert model.class_names == ["FRI", "FRII"] and model.preprocessing == "flux"
    assert model.image_shape == (32, 32, 1) and model.center_crop == 0.5
    flux = np.random.default_rng(0).normal(0, 1e-4, (2, 32, 32, 1)).astype("float32")
    probabilities = model.predict(flux, verbose=0)
    assert probabilities.shape == (2, 2)
    np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)
    metadata = preset_files.read_metadata("frdeep_first_small")
    assert 0.5 < metadata["metrics"]["test_accuracy"] <= 1 and metadata["metrics"]["num_test"] == 173
