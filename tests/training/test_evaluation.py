import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_astro import training
from keras_astro.training.evaluation import (
    dihedral_view,
    predict_probabilities,
    predictive_entropy,
    view_spread,
)
from tests.test_case import CLASSES, random_images, tiny_model


def test_evaluate_counts_every_image(tiny_datasets):
    model = tiny_model()
    results = training.evaluate(model, tiny_datasets.test)
    probabilities = model.predict(tiny_datasets.test, verbose=0)
    labels = np.arange(16, 24) % len(CLASSES)
    assert results["num_images"] == 8
    assert results["accuracy"] == pytest.approx(np.mean(probabilities.argmax(-1) == labels))
    expected_loss = -np.mean(np.log(probabilities[np.arange(8), labels]))
    assert results["loss"] == pytest.approx(expected_loss, rel=1e-4)
    matrix = results["confusion_matrix"]
    assert matrix.sum() == 8 and list(matrix.sum(axis=1)) == [2, 3, 3]
    assert "top5_accuracy" not in results


@pytest.mark.filterwarnings("ignore:y_pred contains classes not in y_true")
def test_imbalance_scores_match_scikit_learn():
    from sklearn.metrics import balanced_accuracy_score, precision_recall_fscore_support

    # 4 classes: class 2 is never predicted (no precision), class 3 never occurs (no recall).
    true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 2, 2])
    predicted = np.array([0, 0, 0, 0, 1, 3, 1, 0, 1, 0])
    probabilities = np.eye(4, dtype="float32")[predicted] * 0.7 + 0.075
    dataset = tf.data.Dataset.from_tensor_slices((probabilities, np.eye(4, dtype="float32")[true]))
    identity = keras.Sequential([keras.Input((4,)), keras.layers.Identity()])
    results = training.evaluate(identity, dataset.batch(4))
    precision, recall, f1, _ = precision_recall_fscore_support(
        true, predicted, labels=range(4), zero_division=np.nan
    )
    assert results["accuracy"] == pytest.approx(0.5)
    assert results["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(true, predicted))
    assert results["balanced_accuracy"] == pytest.approx((4 / 6 + 1 / 2 + 0) / 3)
    assert results["per_class_accuracy"] == results["recall"]
    for ours, theirs in ((results["precision"], precision), (results["recall"], recall)):
        assert [None if np.isnan(t) else pytest.approx(t) for t in theirs] == ours
    assert results["precision"][2] is None and results["recall"][3] is None
    assert results["f1"][:3] == pytest.approx(list(f1[:3])) and results["f1"][3] is None
    assert results["tta"] is False


def _numpy_dihedral_views(images):
    transposed = np.transpose(images, (0, 2, 1, 3))
    return [np.rot90(x, k, axes=(1, 2)) for x in (images, transposed) for k in range(4)]


def test_dihedral_views_are_the_8_symmetries():
    image = np.arange(4 * 4 * 2, dtype="float32").reshape(1, 4, 4, 2)  # no symmetry at all
    views = [dihedral_view(tf.constant(image), i).numpy() for i in range(8)]
    np.testing.assert_array_equal(views[0], image)
    assert len({view.tobytes() for view in views}) == 8
    expected = {view.tobytes() for view in _numpy_dihedral_views(image)}
    assert {view.tobytes() for view in views} == expected


def test_tta_averages_the_8_views():
    # A model that sees orientation (and is cheap to run 8 times on every backend).
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((8, 8, 3)), keras.layers.Rescaling(1 / 255), keras.layers.Conv2D(4, 3),
        keras.layers.Flatten(), keras.layers.Dense(3, activation="softmax"),
    ])
    images = random_images(6, (8, 8, 3), seed=4)
    labels = np.eye(3, dtype="float32")[np.arange(6) % 3]
    dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(3)  # one batch shape
    views = _numpy_dihedral_views(images)
    expected = np.mean([model.predict(view, batch_size=3, verbose=0) for view in views], axis=0)
    tta = predict_probabilities(model, dataset, tta=True)
    np.testing.assert_allclose(tta, expected, rtol=1e-4, atol=1e-6)
    assert not np.allclose(tta, predict_probabilities(model, dataset), atol=1e-4)
    results = training.evaluate(model, dataset, tta=True)
    assert results["tta"] is True
    assert results["accuracy"] == pytest.approx(np.mean(expected.argmax(-1) == np.arange(6) % 3))


def test_predictions_run_without_tf_data_autotuning(monkeypatch):
    # See test_every_split_runs_without_tf_data_autotuning: here the cost is per predict.
    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Flatten(),
                              keras.layers.Dense(2, activation="softmax")])
    autotuned = []

    def predict(x, **kwargs):
        autotuned.append(x.options().autotune.enabled)
        return np.full((4, 2), 0.5, "float32")

    monkeypatch.setattr(model, "predict", predict)
    dataset = tf.data.Dataset.from_tensor_slices(random_images(4, (8, 8, 3))).batch(4)
    predict_probabilities(model, dataset, tta=True)
    assert autotuned == [False] * 8


def test_predictive_entropy_and_view_spread_match_their_formulas():
    probabilities = np.array([[1.0, 0.0], [0.5, 0.5], [0.9, 0.1]])
    expected = [0.0, np.log(2), -(0.9 * np.log(0.9) + 0.1 * np.log(0.1))]
    np.testing.assert_allclose(predictive_entropy(probabilities), expected, atol=1e-9)
    views = np.array([[[0.8, 0.2], [0.3, 0.7]], [[0.6, 0.4], [0.1, 0.9]]])
    # Mean predicts class 0 for the first object (0.7), class 1 for the second (0.8).
    np.testing.assert_allclose(view_spread(views), [np.std([0.8, 0.6]), np.std([0.7, 0.9])])
    np.testing.assert_allclose(view_spread(views[:1]), [0.0, 0.0])
