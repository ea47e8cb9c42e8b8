"""remat=True: same model, same numbers, activations recomputed in the backward pass."""

import keras
import numpy as np
import pytest

from keras_astro import AstroTransformer

TINY = dict(expansion=1, stage_depths=(1, 1, 1), input_shape=(8, 8, 3), num_heads=2)


def _data():
    rng = np.random.default_rng(0)
    return rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32"), rng.integers(0, 10, 8)


def _outputs(model, images):
    # A direct call, not predict(): no second compilation, same inference-mode numbers.
    return keras.ops.convert_to_numpy(model(images, training=False))


def _trained(remat, frozen_batch_norm=False):
    """Builds with a fixed seed and fits one step; returns the model and its loss."""
    keras.utils.set_random_seed(0)
    model = AstroTransformer(remat=remat, **TINY)
    if frozen_batch_norm:
        model.get_layer("stage2_block1").expand_bn.trainable = False
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    images, labels = _data()
    history = model.fit(images, labels, batch_size=8, epochs=1, verbose=0)
    return model, history.history["loss"][0]


@pytest.mark.parametrize("frozen_batch_norm", [False, True])
def test_remat_trains_to_the_same_weights_and_outputs(frozen_batch_norm):
    plain, plain_loss = _trained(remat=False, frozen_batch_norm=frozen_batch_norm)
    remat, remat_loss = _trained(remat=True, frozen_batch_norm=frozen_batch_norm)
    assert remat.get_layer("relative_attention").remat
    assert remat.get_layer("stage3_block1").remat
    assert not plain.get_layer("stage3_block1").remat
    np.testing.assert_allclose(remat_loss, plain_loss, rtol=1e-6)
    # The gradients through the recomputed blocks and attention equal the stored
    # ones, and batch norm updated its moving statistics once, as without remat
    # (a frozen one not at all).
    for a, b in zip(plain.weights, remat.weights):
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(b), keras.ops.convert_to_numpy(a), atol=1e-5, err_msg=a.path
        )
    images, _ = _data()
    np.testing.assert_allclose(_outputs(remat, images), _outputs(plain, images), atol=1e-5)


def test_remat_config_round_trip_and_keras_file(tmp_path):
    model = AstroTransformer.small(remat=True, input_shape=(8, 8, 3))
    assert model.get_config()["remat"] is True
    assert AstroTransformer.from_config(model.get_config()).remat is True
    assert AstroTransformer(**TINY).get_config()["remat"] is False

    path = tmp_path / "remat.keras"
    model.save(path)
    restored = keras.saving.load_model(path)
    assert restored.remat is True
    assert restored.get_layer("relative_attention").remat
    assert restored.get_layer("stage1_block1").remat
    images, _ = _data()
    np.testing.assert_allclose(_outputs(restored, images), _outputs(model, images), atol=1e-6)


def test_remat_must_be_a_bool():
    with pytest.raises(ValueError, match="remat"):
        AstroTransformer(remat="yes", **TINY)


_DATA_PARALLEL_ATTENTION = """
import jax, keras, numpy as np
from keras_astro.layers import RelativeAttention

distribution = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
keras.distribution.set_distribution(distribution)
images = np.random.default_rng(0).normal(size=(8, 8, 8, 16)).astype("float32")
sharded = jax.device_put(images, jax.sharding.NamedSharding(
    distribution.device_mesh.backend_mesh, jax.sharding.PartitionSpec("batch")))
results = []
for remat in (False, True):
    layer = RelativeAttention(num_heads=2, remat=remat)
    layer.build(images.shape)
    for variable, value in zip(layer.weights, results[0][2] if results else ()):
        variable.assign(value)

    def loss(weights, inputs):
        outputs, _ = layer.stateless_call(weights, [], inputs)
        return (outputs**2).sum(), outputs

    weights = [v.value for v in layer.trainable_variables]
    step = jax.jit(jax.value_and_grad(loss, has_aux=True)).lower(weights, sharded).compile()
    (_, outputs), gradients = step(weights, sharded)
    results.append((outputs, gradients, [np.asarray(w) for w in layer.weights], step.as_text()))
np.testing.assert_allclose(results[1][0], results[0][0], atol=1e-5)
for remat_gradient, gradient in zip(results[1][1], results[0][1]):
    np.testing.assert_allclose(remat_gradient, gradient, rtol=1e-4, atol=1e-4)
# Each device loops over its own part of the batch: nothing gathers the whole batch.
assert "all-gather" not in results[1][3], "remat gathers the batch on every device"
print("OK")
"""


@pytest.mark.skipif(keras.backend.backend() != "jax", reason="JAX's per-image remat loop")
def test_jax_remat_attention_loops_over_each_devices_part_of_the_batch():
    import os
    import subprocess
    import sys

    completed = subprocess.run(
        [sys.executable, "-c", _DATA_PARALLEL_ATTENTION],
        env=dict(os.environ, KERAS_BACKEND="jax",
                 XLA_FLAGS="--xla_force_host_platform_device_count=2"),
        capture_output=True, text=True, timeout=300,
    )
    assert completed.stdout.strip().endswith("OK"), completed.stderr[-3000:]
