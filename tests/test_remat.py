"""remat=True: same model, same numbers, activations recomputed in the backward pass."""

import numpy as np
import pytest

import keras

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
