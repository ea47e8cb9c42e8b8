"""`training.calibration`: the scores against NumPy statements of their formulas, the
temperature fit and the selection tables."""

import numpy as np
import pytest

from keras_astro.training import calibration


def sample(n=400, classes=3, seed=0, temperature=1.0):
    """Logits, and labels drawn from softmax(logits / temperature)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 3, (n, classes))
    p = calibration.softmax(logits, temperature)
    labels = np.array([rng.choice(classes, p=row) for row in p])
    return logits, labels


def test_scores_follow_their_formulas():
    logits, labels = sample()
    p = calibration.softmax(logits)
    n = len(labels)
    # ECE, one bin at a time: bin b holds top probabilities in (b/15, (b+1)/15].
    confidence, predicted = p.max(1), p.argmax(1)
    expected = 0.0
    for b in range(15):
        inside = (confidence > b / 15) & (confidence <= (b + 1) / 15)
        if inside.any():
            gap = np.mean(predicted[inside] == labels[inside]) - confidence[inside].mean()
            expected += inside.sum() / n * abs(gap)
    assert calibration.expected_calibration_error(p, labels) == pytest.approx(expected)
    assert calibration.negative_log_likelihood(p, labels) == pytest.approx(
        -np.mean([np.log(p[i, labels[i]]) for i in range(n)])
    )
    assert calibration.brier_score(p, labels) == pytest.approx(
        np.mean([sum((p[i, k] - (k == labels[i])) ** 2 for k in range(3)) for i in range(n)])
    )
    one_hot = np.eye(3)[labels]
    assert calibration.calibration_scores(p, one_hot) == calibration.calibration_scores(p, labels)
    counts, _, _ = calibration.reliability_bins(p, labels)
    assert counts.sum() == n and len(counts) == calibration.CALIBRATION_BINS


def test_a_perfect_and_a_confident_wrong_model():
    labels = np.array([0, 1, 1])
    right = np.eye(2)[labels]
    assert calibration.expected_calibration_error(right, labels) == 0.0
    assert calibration.brier_score(right, labels) == 0.0
    wrong = np.eye(2)[1 - labels]
    assert calibration.expected_calibration_error(wrong, labels) == 1.0
    assert calibration.brier_score(wrong, labels) == 2.0


def test_ece_by_chance_is_the_binomial_spread_of_a_calibrated_model():
    # One bin: every object at p = (0.7, 0.3), so a calibrated model's ECE is |k/n - 0.7|
    # with k ~ Binomial(n, 0.7) right answers.
    from scipy.stats import binom

    n = 40
    p = np.tile([0.7, 0.3], (n, 1))
    labels = np.repeat([0, 1], n // 2)  # 50% right: ECE 0.2
    chance, p_value = calibration.ece_by_chance(p, labels, draws=20000)
    k = np.arange(n + 1)
    spread = np.abs(k / n - 0.7)
    assert chance == pytest.approx(np.sum(binom.pmf(k, n, 0.7) * spread), abs=0.002)
    observed = calibration.expected_calibration_error(p, labels)
    assert observed == pytest.approx(0.2)
    assert p_value == pytest.approx(np.sum(binom.pmf(k, n, 0.7)[spread >= observed - 1e-9]), abs=0.003)
    # Labels drawn from the probabilities themselves: an ECE the noise explains.
    logits, drawn = sample(n=300)
    chance, p_value = calibration.ece_by_chance(calibration.softmax(logits), drawn)
    assert 0.01 < chance < 0.1 and p_value > 0.05
    # Confidently wrong: more than any draw.
    assert calibration.ece_by_chance(np.eye(2)[[1, 0, 0]], [0, 1, 1]) == (0.0, 0.0)
    # Seeded: the same scores twice.
    assert calibration.calibration_scores(p, labels) == calibration.calibration_scores(p, labels)


def test_fit_temperature_recovers_the_temperature_that_made_the_labels():
    logits, labels = sample(n=3000, temperature=2.0)
    temperature = calibration.fit_temperature(logits, labels)
    assert temperature == pytest.approx(2.0, rel=0.15)
    before = calibration.expected_calibration_error(calibration.softmax(logits), labels)
    after = calibration.expected_calibration_error(calibration.softmax(logits, temperature), labels)
    assert after < before / 2
    # Log-probabilities are logits up to a shift per row: the same temperature.
    log_p = np.log(calibration.softmax(logits))
    assert calibration.fit_temperature(log_p, labels) == pytest.approx(temperature, rel=1e-3)


def test_accuracy_coverage_keeps_the_most_confident():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8], [0.45, 0.55]])
    labels = np.array([0, 1, 1, 0])  # the two least confident are wrong
    rows = calibration.accuracy_coverage(p, labels, coverages=(1.0, 0.5, 0.1))
    assert [row["num_objects"] for row in rows] == [4, 2, 1]
    assert [row["accuracy"] for row in rows] == [0.5, 1.0, 1.0]
    assert [row["min_probability"] for row in rows] == [0.55, 0.8, 0.9]
    assert len(calibration.accuracy_coverage(p, labels)) == 10


def test_precision_thresholds_give_the_largest_sample_of_that_purity():
    p1 = np.array([0.95, 0.9, 0.8, 0.7, 0.6, 0.3, 0.2])
    labels = np.array([1, 1, 0, 1, 1, 0, 0])
    p = np.stack([1 - p1, p1], axis=1)
    ring, other = calibration.precision_thresholds(p, labels, precision=0.75)[::-1]
    # Checked by brute force: every threshold, the lowest that reaches 75%.
    reaching = [t for t in p1 if np.mean(labels[p1 >= t] == 1) >= 0.75]
    assert ring["threshold"] == min(reaching) == 0.6
    assert (ring["num_selected"], ring["precision"], ring["recall"]) == (5, 0.8, 1.0)
    assert other["threshold"] == pytest.approx(0.7) and other["num_selected"] == 2
    none = calibration.precision_thresholds(p, np.zeros(7, int), precision=0.9)[1]
    assert none["threshold"] is None


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda: calibration.brier_score(np.ones((2, 2)) / 2, [0]), "2 rows of probabilities but 1"),
        (lambda: calibration.brier_score(np.ones((2, 2)) / 2, [0, 2]), r"class ids in \[0, 2\)"),
        (lambda: calibration.brier_score(np.ones(2), [0, 1]), r"must be \[n, classes\]"),
        (lambda: calibration.precision_thresholds(np.ones((2, 2)) / 2, [0, 1], 0), "`precision`"),
        (lambda: calibration.fit_temperature(np.full((2, 2), np.inf), [0, 1]), "finite"),
    ],
)
def test_bad_input_is_refused(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_a_temperature_the_validation_split_cannot_pin_down_is_not_applied():
    import tensorflow as tf

    from tests.test_case import random_images, tiny_model

    # Every validation image right with a margin: the NLL falls all the way to T -> 0;
    # all wrong, it falls towards the uniform answer at large T. One mistake pins T down.
    logits = np.array([[4.0, 0.0], [0.0, 5.0], [3.0, -1.0]])
    for labels, pinned in (([0, 1, 0], False), ([1, 0, 1], False), ([0, 1, 1], True)):
        temperature = calibration.fit_temperature(logits, labels)
        assert calibration.constrained(logits, labels, temperature) is pinned, labels
    model = tiny_model(num_classes=2)
    images = random_images(4, (8, 8, 3))
    predicted = model.predict(images, verbose=0).argmax(-1)
    validation = tf.data.Dataset.from_tensor_slices((images, np.eye(2)[predicted])).batch(2)
    assert calibration.calibrate_model(model, validation).temperature is None
