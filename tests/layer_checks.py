"""Checks every keras_astro layer must pass, in the spirit of keras-hub's run_layer_test."""

import numpy as np

import keras


def jit_supported():
    """XLA compilation in fit: TensorFlow and JAX; the torch backend runs eagerly."""
    return keras.backend.backend() in ("tensorflow", "jax")


def run_layer_test(
    layer_cls,
    init_kwargs,
    input_shape,
    expected_output_shape,
    expected_num_trainable_weights,
    expected_num_non_trainable_weights,
):
    # Config round trip: get_config holds exactly what from_config needs.
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    for key, value in init_kwargs.items():
        assert config[key] == value, key
    revived = layer_cls.from_config(config)
    assert revived.get_config() == config
    revived = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(layer))
    assert revived.get_config() == config

    # Symbolic shapes, and build() creates every weight.
    symbolic_layer = layer_cls(**init_kwargs)
    symbolic_output = symbolic_layer(keras.KerasTensor((None, *input_shape[1:])))
    assert tuple(symbolic_output.shape) == (None, *expected_output_shape[1:])
    assert tuple(symbolic_layer.compute_output_shape(input_shape)) == expected_output_shape
    assert len(symbolic_layer.trainable_weights) == expected_num_trainable_weights
    assert len(symbolic_layer.non_trainable_weights) == expected_num_non_trainable_weights

    # Eager shapes.
    x = np.random.default_rng(0).normal(size=input_shape).astype("float32")
    eager_layer = layer_cls(**init_kwargs)
    output = keras.ops.convert_to_numpy(eager_layer(x))
    assert output.shape == expected_output_shape
    assert np.all(np.isfinite(output))

    # One jit-compiled fit step changes the trainable weights.
    inputs = keras.Input(input_shape[1:])
    model = keras.Model(inputs, layer_cls(**init_kwargs)(inputs))
    model.compile(optimizer="sgd", loss="mse", jit_compile=jit_supported())
    before = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    model.fit(x, np.ones(expected_output_shape, "float32"), batch_size=input_shape[0], verbose=0)
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert any(not np.allclose(a, b) for a, b in zip(before, after))

    # Mixed precision: float16/bfloat16 compute, float32 variables, finite outputs.
    for policy in ("mixed_float16", "mixed_bfloat16"):
        mixed = layer_cls(**init_kwargs, dtype=policy)
        output = mixed(x)
        assert keras.backend.standardize_dtype(output.dtype) == policy.split("_")[1]
        assert all(w.dtype == "float32" for w in mixed.weights)
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(keras.ops.cast(output, "float32"))))
