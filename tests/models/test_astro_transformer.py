import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

from keras_astro.models import CONFIGS, AstroTransformer
from tests.test_case import random_images as images
from tests.test_case import run_model_test, skip_unless_channels_first_runs

SIZE = (16, 16, 3)


def test_small_passes_the_model_checks():
    # Every argument differs from its default (expansion and stage_depths are small's),
    # so the config round trip shows each one is kept.
    expansion, stage_depths = CONFIGS["small"]
    run_model_test(
        AstroTransformer,
        {
            "expansion": expansion,
            "stage_depths": stage_depths,
            "num_classes": 3,
            "classifier_activation": None,
            "num_heads": 2,
            "attention_scale": 0.5,
            "dropout": 0.1,
            "class_names": ["spiral", "elliptical", "irregular"],
            "name": "galaxies",
        },
        input_shape=(8, 8, 3),
        expected_output_shape=(2, 3),
    )


def test_forward_gives_probabilities():
    model = AstroTransformer.small(num_classes=4, input_shape=SIZE)
    probs = keras.ops.convert_to_numpy(model(images()))
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert model.predict(images(), verbose=0).shape == (2, 4)


@pytest.mark.slow
def test_file_saved_under_this_backend_loads_under_another(tmp_path):
    backends = ["tensorflow", "jax", "torch"]
    other = backends[(backends.index(keras.backend.backend()) + 1) % 3]
    model = AstroTransformer.small(num_classes=3, input_shape=(8, 8, 3))
    x = images(shape=(8, 8, 3))
    model_path, data_path = tmp_path / "model.keras", tmp_path / "data.npz"
    model.save(model_path)
    np.savez(data_path, x=x, expected=model.predict(x, verbose=0))
    script = textwrap.dedent(
        f"""
        import numpy as np, keras, keras_astro
        assert keras.backend.backend() == {other!r}
        data = np.load({str(data_path)!r})
        model = keras.saving.load_model({str(model_path)!r})
        np.testing.assert_allclose(model.predict(data["x"], verbose=0), data["expected"], rtol=1e-4, atol=1e-6)
        """
    )
    env = dict(os.environ, KERAS_BACKEND=other)
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize(
    "pooling, expected", [(None, (2, 16, 16, 256)), ("avg", (2, 256)), ("max", (2, 256))]
)
def test_feature_extractor_shapes(pooling, expected):
    model = AstroTransformer.small(include_top=False, pooling=pooling, input_shape=SIZE)
    assert tuple(model.output.shape) == (None, *expected[1:])
    assert keras.ops.convert_to_numpy(model(images())).shape == expected
    assert not any(layer.name == "predictions" for layer in model.layers)


def test_features_by_layer_name():
    model = AstroTransformer.small(input_shape=SIZE)
    extractor = keras.Model(model.input, model.get_layer("stage2_add").output)
    assert extractor(images()).shape == (2, 16, 16, 128)


@pytest.fixture
def channels_first():
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format("channels_last")


def test_channels_first_model_reloads_in_a_channels_last_process(tmp_path, channels_first):
    skip_unless_channels_first_runs()
    model = AstroTransformer.small(num_classes=3, input_shape=(3, 8, 8))
    path = str(tmp_path / "first.keras")
    model.save(path)
    keras.config.set_image_data_format("channels_last")
    loaded = keras.saving.load_model(path)
    assert loaded.data_format == "channels_first" and loaded.image_shape == (3, 8, 8)
    x = images(shape=(3, 8, 8))
    np.testing.assert_allclose(
        loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


# An unscaled attention (scale 1.0) can overflow float16; bfloat16 has float32's range.
@pytest.mark.parametrize(
    "policy, attention_scale",
    [("mixed_float16", None), ("mixed_float16", 1.0), ("mixed_bfloat16", None)],
)
def test_mixed_precision_fits_and_returns_finite_float32(policy, attention_scale):
    model = AstroTransformer.small(
        num_classes=3, input_shape=(8, 8, 3), attention_scale=attention_scale, dtype=policy
    )
    assert model.get_layer("stage1_block1").compute_dtype == policy.split("_")[1]
    # Keras' own choice: XLA on JAX, where steps run op by op without it (twice the time).
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile="auto")
    x = np.full((4, 8, 8, 3), 255.0, "float32")
    history = model.fit(x, np.array([0, 1, 2, 0]), batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    probs = model.predict(x, verbose=0)
    assert probs.dtype == np.float32 and np.all(np.isfinite(probs))


def test_wrong_image_shape_names_expected_and_received():
    model = AstroTransformer.small(input_shape=SIZE)
    with pytest.raises(ValueError, match=r"\(batch, 16, 16, 3\).*received shape \(2, 28, 28, 1\)"):
        model.predict(np.zeros((2, 28, 28, 1), "float32"), verbose=0)
    with pytest.raises(ValueError, match=r"received shape \(16, 16, 3\)"):
        model(np.zeros((16, 16, 3), "float32"))
    # The model keeps working (and keeps its weights) after the errors, on every backend.
    assert model.predict(images(), verbose=0).shape == (2, 10)


def test_wrong_dataset_shape_is_reported_before_training():
    import tensorflow as tf

    model = AstroTransformer.small(num_classes=2, input_shape=SIZE)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    data = tf.data.Dataset.from_tensor_slices((np.zeros((2, 8, 8, 3), "float32"), [0, 1])).batch(2)
    for run in (lambda: model.fit(data, verbose=0), lambda: model.evaluate(data, verbose=0)):
        with pytest.raises(ValueError, match=r"received shape \(None, 8, 8, 3\)"):
            run()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"expansion": 0}, "expansion"),
        ({"stage_depths": (1, 1)}, "stage_depths"),
        ({"stage_depths": (1, 0, 1)}, "stage_depths"),
        ({"num_classes": 0}, "num_classes"),
        ({"pooling": "sum", "include_top": False}, "pooling"),
        ({"input_shape": (32, 32)}, "input_shape"),
        ({"input_shape": (32, 32, None)}, "channel dimension"),
        ({"num_classes": 2, "class_names": ["a"]}, "class_names"),
        ({"class_names": [1, 2]}, "list of str"),
        ({"preprocessing": "counts"}, "preprocessing"),
        ({"center_crop": 0}, "center_crop"),
        ({"center_crop": 1.5}, "center_crop"),
        ({"center_crop": "half"}, "center_crop"),
        ({"normalization": "band"}, "normalization"),
        ({"normalization": "image", "clip_sigma": -1.0}, "clip_sigma"),
        ({"normalization": "dataset", "clip_sigma": 3.0}, "needs normalization='image'"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AstroTransformer(**kwargs)


def test_an_unknown_keyword_argument_is_refused_not_dropped():
    with pytest.raises(TypeError, match=r"\['image_size'\].*input_shape="):
        AstroTransformer.small(num_classes=2, image_size=16)


@pytest.mark.parametrize("normalization", ["image", "dataset"])
def test_flux_model_passes_the_model_checks(normalization):
    run_model_test(
        AstroTransformer,
        {"expansion": 1, "stage_depths": (1, 1, 1), "num_classes": 2,
         "preprocessing": "flux", "center_crop": 0.5, "normalization": normalization},
        input_shape=(8, 8, 5),
        expected_output_shape=(2, 2),
    )


def test_flux_model_adapts_predicts_on_blanks_and_reloads(tmp_path):
    model = AstroTransformer.small(
        input_shape=(8, 8, 5), num_classes=3, preprocessing="flux", center_crop=0.5, normalization="dataset"
    )
    assert model.get_layer("flux_normalization").dtype_policy.name == "float32"
    assert not any(layer.name == "rescaling" for layer in model.layers)
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e-3, (4, 8, 8, 5)).astype("float32")
    x[0, :3] = np.nan
    x[1, 4, 4, 2] = np.inf
    model.adapt_preprocessing(x)
    statistics = model.get_layer("flux_normalization").get_weights()
    assert not np.allclose(statistics[0], 1.0)  # the softening follows the data's noise
    probabilities = model.predict(x, verbose=0)
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(-1), 1.0, rtol=1e-5)

    model.save(tmp_path / "flux.keras")
    loaded = keras.saving.load_model(tmp_path / "flux.keras")
    config = loaded.get_config()
    assert (config["preprocessing"], config["center_crop"], config["input_shape"]) == ("flux", 0.5, [8, 8, 5])
    for kept, adapted in zip(loaded.get_layer("flux_normalization").get_weights(), statistics):
        np.testing.assert_array_equal(kept, adapted)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), probabilities, rtol=1e-5, atol=1e-6)

    pixels = AstroTransformer.small(input_shape=(8, 8, 3))
    pixels.adapt_preprocessing(x)  # nothing to adapt: no error, no flux layer
    assert pixels.preprocessing == "pixels" and pixels.center_crop is None


def test_normalization_defaults_per_kind_and_clips_per_image(tmp_path):
    flux = AstroTransformer.small(input_shape=(8, 8, 1), num_classes=2, preprocessing="flux", clip_sigma=3.0)
    assert (flux.normalization, flux.clip_sigma) == ("image", 3.0)
    layer = flux.get_layer("image_normalization")
    assert layer.clip_sigma == 3.0 and layer.dtype_policy.name == "float32"
    assert not {"flux_normalization", "rescaling"} & {each.name for each in flux.layers}
    pixels = AstroTransformer.small(input_shape=(8, 8, 3))
    assert pixels.normalization == "dataset" and pixels.get_layer("rescaling") is not None
    per_image = AstroTransformer.small(input_shape=(8, 8, 3), normalization="image")
    assert per_image.get_layer("image_normalization").clip_sigma is None

    rng = np.random.default_rng(0)
    x = rng.normal(0, 1e-3, (4, 8, 8, 1)).astype("float32")
    x[0, :3] = np.nan
    x[2] = np.nan  # a blank cutout predicts, as a background would
    flux.adapt_preprocessing(x)  # nothing to adapt
    probabilities = flux.predict(x, verbose=0)
    assert np.isfinite(probabilities).all()
    # The scale of each cutout does not matter.
    np.testing.assert_allclose(flux.predict(x * 1e4, verbose=0), probabilities, atol=1e-5)
    flux.save(tmp_path / "image.keras")
    loaded = keras.saving.load_model(tmp_path / "image.keras")
    assert (loaded.normalization, loaded.clip_sigma) == ("image", 3.0)
    np.testing.assert_allclose(loaded.predict(x, verbose=0), probabilities, rtol=1e-5, atol=1e-6)


def test_configs_saved_before_normalization_existed_keep_data_set_statistics():
    model = AstroTransformer.small(input_shape=(8, 8, 2), num_classes=2, preprocessing="flux", normalization="dataset")
    config = model.get_config()
    del config["normalization"], config["clip_sigma"]
    revived = AstroTransformer.from_config(config)
    assert revived.normalization == "dataset"
    assert revived.get_layer("flux_normalization") is not None
