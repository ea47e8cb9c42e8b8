import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import keras

import keras_astro
from keras_astro import AstroTransformer
from layer_checks import jit_supported

SIZE = (16, 16, 3)


def images(batch=2, shape=SIZE, seed=0):
    return np.random.default_rng(seed).uniform(0, 255, (batch, *shape)).astype("float32")


def trainable_count(model):
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


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


def test_forward_gives_probabilities():
    model = AstroTransformer.small(num_classes=4, input_shape=SIZE)
    probs = keras.ops.convert_to_numpy(model(images()))
    assert probs.shape == (2, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    assert model.predict(images(), verbose=0).shape == (2, 4)


def test_config_round_trip_keeps_every_argument():
    model = AstroTransformer(
        expansion=1,
        stage_depths=(1, 2, 1),
        num_classes=3,
        input_shape=SIZE,
        classifier_activation=None,
        num_heads=2,
        attention_scale=0.5,
        dropout=0.1,
        class_names=["spiral", "elliptical", "irregular"],
        name="galaxies",
    )
    config = model.get_config()
    assert config["class_names"] == ["spiral", "elliptical", "irregular"]
    revived = AstroTransformer.from_config(config)
    assert revived.get_config() == config
    assert trainable_count(revived) == trainable_count(model)


def test_keras_file_round_trip(tmp_path):
    model = AstroTransformer.small(
        num_classes=3, input_shape=SIZE, class_names=["a", "b", "c"], dropout=0.1
    )
    path = str(tmp_path / "model.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded, AstroTransformer)
    assert loaded.class_names == ["a", "b", "c"]
    np.testing.assert_allclose(
        loaded.predict(images(), verbose=0), model.predict(images(), verbose=0), rtol=1e-5, atol=1e-6
    )


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


def test_any_spatial_size_with_dynamic_input():
    model = AstroTransformer.small(num_classes=2, input_shape=(None, None, 3))
    for shape in ((8, 8, 3), (12, 10, 3)):
        assert keras.ops.convert_to_numpy(model(images(shape=shape))).shape == (2, 2)


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


def test_channels_first_matches_channels_last(channels_first):
    first = AstroTransformer.small(num_classes=3, input_shape=(3, 16, 16))
    keras.config.set_image_data_format("channels_last")
    last = AstroTransformer.small(num_classes=3, input_shape=SIZE)
    last.set_weights(first.get_weights())
    x = images()
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(first(np.transpose(x, (0, 3, 1, 2)))),
        keras.ops.convert_to_numpy(last(x)),
        rtol=1e-4,
        atol=1e-6,
    )


def test_channels_first_model_reloads_in_a_channels_last_process(tmp_path, channels_first):
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


def test_fit_step_with_jit_compile():
    model = AstroTransformer.small(num_classes=3, input_shape=(8, 8, 3))
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_supported()
    )
    history = model.fit(images(4, (8, 8, 3)), np.array([0, 1, 2, 0]), batch_size=4, verbose=0)
    assert np.isfinite(history.history["loss"][0])


@pytest.mark.parametrize("policy", ["mixed_float16", "mixed_bfloat16"])
@pytest.mark.parametrize("attention_scale", [None, 1.0])
def test_mixed_precision_fits_and_returns_finite_float32(policy, attention_scale):
    model = AstroTransformer.small(
        num_classes=3, input_shape=(8, 8, 3), attention_scale=attention_scale, dtype=policy
    )
    assert model.get_layer("stage1_block1").compute_dtype == policy.split("_")[1]
    # XLA compilation is covered above; compiling four mixed models would only cost time.
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=False)
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
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        AstroTransformer(**kwargs)


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(ValueError, match=r"\['base', 'large', 'small'\]"):
        AstroTransformer.from_name("huge")


def test_import_does_not_pull_in_torch_or_jax():
    # TensorFlow itself may import jax; keras_astro must not add either.
    script = textwrap.dedent(
        """
        import sys, keras
        before = set(sys.modules)
        import keras_astro
        added = {m.split(".")[0] for m in set(sys.modules) - before}
        print(sorted(added & {"torch", "jax"}))
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_layers_are_exported():
    assert keras_astro.layers.StageBlock is keras_astro.StageBlock
    assert keras_astro.layers.RelativeAttention is keras_astro.RelativeAttention
