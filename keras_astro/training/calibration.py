"""How far a classifier's probabilities can be trusted, and the temperature that fixes them.

Plain NumPy on probabilities [n, classes] and integer labels [n] (one-hot labels are
accepted too), so they score any backend's predictions the same way:

- calibration: `expected_calibration_error` (with `reliability_bins`, what the
  reliability diagram draws), `negative_log_likelihood`, `brier_score`, and
  `ece_by_chance`: how large an ECE sampling noise alone gives on that many objects;
- `fit_temperature`: the one temperature that minimises the validation NLL;
- selective classification: `accuracy_coverage` (keep the most confident objects) and
  `precision_thresholds` (the probability cut that gives a sample of a wanted purity).
"""

import numpy as np

CALIBRATION_BINS = 15
# Label draws of `ece_by_chance`: its p-value resolves 0.001.
CHANCE_DRAWS = 1000
COVERAGES = (1.0, 0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1)
# log T is searched in [log 1/20, log 20]: wider than any network's miscalibration.
TEMPERATURE_RANGE = (0.05, 20.0)
_TINY = 1e-12
_TINY_FLOAT = np.finfo("float64").tiny


def _labels(labels, num_classes):
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = labels.argmax(-1)
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"`labels` must be class ids [n] or one-hot [n, classes]. Received shape {labels.shape}."
        )
    if len(labels) and not (0 <= labels.min() and labels.max() < num_classes):
        raise ValueError(f"`labels` must be class ids in [0, {num_classes}).")
    return labels


def _inputs(probabilities, labels):
    probabilities = np.asarray(probabilities, dtype="float64")
    if probabilities.ndim != 2 or not len(probabilities):
        raise ValueError(
            "`probabilities` must be [n, classes] with n > 0. "
            f"Received shape {probabilities.shape}."
        )
    labels = _labels(labels, probabilities.shape[1])
    if len(labels) != len(probabilities):
        raise ValueError(
            f"{len(probabilities)} rows of probabilities but {len(labels)} labels."
        )
    return probabilities, labels


def reliability_bins(probabilities, labels, bins=CALIBRATION_BINS):
    """Per equal-width bin of the top probability ((0, 1/bins], ..., up to 1]): the
    number of objects, their accuracy and their mean top probability (NaN when empty)."""
    probabilities, labels = _inputs(probabilities, labels)
    confidence = probabilities.max(-1)
    correct = probabilities.argmax(-1) == labels
    index = _bin_index(confidence, bins)
    counts = np.bincount(index, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        accuracy = np.bincount(index, correct, minlength=bins) / counts
        mean_confidence = np.bincount(index, confidence, minlength=bins) / counts
    return counts, accuracy, mean_confidence


def _bin_index(confidence, bins):
    return np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)


def expected_calibration_error(probabilities, labels, bins=CALIBRATION_BINS):
    """ECE: the gap between accuracy and top probability, averaged over equal-width
    confidence bins weighted by their share of the objects (0 = calibrated)."""
    counts, accuracy, confidence = reliability_bins(probabilities, labels, bins)
    full = counts > 0
    return float(np.sum(counts[full] * np.abs(accuracy[full] - confidence[full])) / counts.sum())


def ece_by_chance(probabilities, labels, bins=CALIBRATION_BINS, draws=CHANCE_DRAWS, seed=0):
    """The ECE that sampling noise alone gives, and whether `labels` show more.

    A perfectly calibrated model with these confidences, scored on as many objects, still
    has an ECE above 0: a few tens of test objects give several hundredths. Labels drawn
    from `probabilities` themselves are such a model's (consistency resampling: Broecker
    & Smith 2007; Vaicenavicius et al. 2019). Returns `(chance, p_value)`: the mean ECE of
    `draws` draws, and the share of draws whose ECE is at least that of `labels` (small:
    miscalibration this many objects resolve; large: an ECE this size is noise).
    Reproducible: the draws are seeded.
    """
    probabilities, labels = _inputs(probabilities, labels)
    observed = expected_calibration_error(probabilities, labels, bins)
    n, classes = probabilities.shape
    predicted = probabilities.argmax(-1)
    in_bin = np.eye(bins)[_bin_index(probabilities.max(-1), bins)]  # [n, bins]
    confidence_sums = probabilities.max(-1) @ in_bin
    # The last cumulative probability may round below 1: a draw past it is the last class.
    cumulative = np.cumsum(probabilities, axis=-1)[:, :-1]
    rng = np.random.default_rng(seed)
    chunk = max(1, 2**22 // (n * classes))
    eces = []
    for start in range(0, draws, chunk):
        uniform = rng.random((min(chunk, draws - start), n, 1))
        drawn = (cumulative < uniform).sum(-1)  # [draws, n]
        # Per bin: |correct - confidence| summed over its objects; / n gives the ECE.
        eces.append(np.abs((drawn == predicted) @ in_bin - confidence_sums).sum(-1) / n)
    eces = np.concatenate(eces)
    return float(eces.mean()), float(np.mean(eces >= observed - 1e-12))


def negative_log_likelihood(probabilities, labels):
    """Mean -ln p(true class), in nats (probabilities clipped at 1e-12)."""
    probabilities, labels = _inputs(probabilities, labels)
    return float(-np.mean(np.log(np.clip(probabilities[np.arange(len(labels)), labels], _TINY, 1))))


def brier_score(probabilities, labels):
    """Mean over objects of the squared distance to the one-hot label, summed over the
    classes (0 to 2)."""
    probabilities, labels = _inputs(probabilities, labels)
    one_hot = np.eye(probabilities.shape[1])[labels]
    return float(np.mean(np.sum((probabilities - one_hot) ** 2, axis=-1)))


def calibration_scores(probabilities, labels, bins=CALIBRATION_BINS):
    """`{"ece", "ece_chance", "ece_p_value", "nll", "brier"}` of probabilities against
    labels (`ece_by_chance` gives the two in the middle)."""
    chance, p_value = ece_by_chance(probabilities, labels, bins)
    return {
        "ece": expected_calibration_error(probabilities, labels, bins),
        "ece_chance": chance,
        "ece_p_value": p_value,
        "nll": negative_log_likelihood(probabilities, labels),
        "brier": brier_score(probabilities, labels),
    }


def softmax(logits, temperature=1.0):
    """softmax(logits / temperature) in float64, row by row."""
    z = np.asarray(logits, dtype="float64") / temperature
    z = np.exp(z - z.max(axis=-1, keepdims=True))
    return z / z.sum(axis=-1, keepdims=True)


def view_nll(logits, labels, temperature=1.0):
    """Mean -ln of the true class's probability averaged over views: `logits` [views, n,
    classes] each through softmax(logits / temperature), as a model with
    `test_time_augmentation` averages them ([n, classes]: one view)."""
    from scipy.special import log_softmax, logsumexp

    logits = np.asarray(logits, dtype="float64")
    if logits.ndim == 2:
        logits = logits[None]
    true = log_softmax(logits / temperature, axis=-1)[:, np.arange(len(labels)), labels]
    return float(np.mean(np.log(len(logits)) - logsumexp(true, axis=0)))


def fit_temperature(logits, labels):
    """The temperature T that minimises the NLL of softmax(logits / T) on `labels`.

    `logits` [n, classes] may also be log-probabilities (softmax ignores a per-row
    shift); [views, n, classes] fits the average of the views' probabilities
    (`view_nll`). Fit on held-out data, never on the test split. A bounded 1-D search
    over log T in `TEMPERATURE_RANGE`; argmax, and so accuracy, is the same at any T
    for one view.
    """
    from scipy.optimize import minimize_scalar

    logits = np.asarray(logits, dtype="float64")
    if logits.ndim == 3:
        _, labels = _inputs(logits[0], labels)
    else:
        logits, labels = _inputs(logits, labels)
    if not np.isfinite(logits).all():
        raise ValueError("`logits` must be finite to fit a temperature.")
    low, high = np.log(TEMPERATURE_RANGE)
    result = minimize_scalar(
        lambda log_t: view_nll(logits, labels, np.exp(log_t)),
        bounds=(low, high), method="bounded", options={"xatol": 1e-4},
    )
    return float(np.exp(result.x))


def accuracy_coverage(probabilities, labels, coverages=COVERAGES):
    """Accuracy of the most confident objects: for each coverage c, the ceil(c * n)
    objects of largest top probability (ties by position). Returns dicts of `coverage`,
    `num_objects`, `accuracy` and `min_probability` (the lowest top probability kept)."""
    probabilities, labels = _inputs(probabilities, labels)
    confidence = probabilities.max(-1)
    order = np.argsort(-confidence, kind="stable")
    correct = (probabilities.argmax(-1) == labels)[order]
    rows = []
    for coverage in coverages:
        if not 0 < coverage <= 1:
            raise ValueError(f"Coverages must be in (0, 1]. Received: {coverage!r}")
        kept = max(1, int(np.ceil(coverage * len(labels) - 1e-9)))
        rows.append(
            {
                "coverage": float(coverage),
                "num_objects": kept,
                "accuracy": float(correct[:kept].mean()),
                "min_probability": float(confidence[order[kept - 1]]),
            }
        )
    return rows


def precision_thresholds(probabilities, labels, precision=0.9):
    """Per class k, the lowest threshold t such that the objects with p_k >= t are at
    least `precision` of class k: the largest sample of that purity.

    Returns one dict per class: `threshold` (None when no threshold reaches the
    precision), the `precision` and `recall` (completeness) of that sample and its
    `num_selected`.
    """
    if not 0 < precision <= 1:
        raise ValueError(f"`precision` must be in (0, 1]. Received: {precision!r}")
    probabilities, labels = _inputs(probabilities, labels)
    results = []
    for k in range(probabilities.shape[1]):
        scores = probabilities[:, k]
        order = np.argsort(-scores, kind="stable")
        scores = scores[order]
        true_positives = np.cumsum(labels[order] == k)
        selected = np.arange(1, len(scores) + 1)
        # A threshold keeps every object tied with the last one it keeps.
        last_of_tie = np.append(scores[1:] != scores[:-1], True)
        reaches = last_of_tie & (true_positives >= precision * selected - 1e-9)
        positives = int(np.sum(labels == k))
        if not reaches.any():
            results.append(
                {"threshold": None, "precision": None, "recall": None, "num_selected": 0}
            )
            continue
        i = np.flatnonzero(reaches)[-1]
        results.append(
            {
                "threshold": float(scores[i]),
                "precision": float(true_positives[i] / selected[i]),
                "recall": float(true_positives[i] / positives) if positives else None,
                "num_selected": int(selected[i]),
            }
        )
    return results


def view_logits(model, dataset, tta=False):
    """The uncalibrated logits [views, n, classes] of `model` on batches of (images, ...):
    of the 8 views when it averages them (`test_time_augmentation`) or with `tta` (view
    0 is the image as given), else of one."""
    from keras_astro.models.calibration import logits_model
    from keras_astro.training.evaluation import predict_views

    tta = tta or bool(getattr(model, "test_time_augmentation", None))
    # softmax of the logits, then log: the logits up to a per-row shift.
    return np.log(np.maximum(predict_views(logits_model(model), dataset, tta=tta), _TINY_FLOAT))


def calibrate_model(model, validation):
    """`model` with the temperature fitted on `validation` (batches of (images, one-hot
    labels), in a fixed order), from its uncalibrated logits (of each view it averages):
    whatever temperature `model` holds is replaced, so fitting again gives the same model.
    Without a temperature (`None`) when the data leave it unconstrained (`constrained`)."""
    from keras_astro.models.calibration import with_temperature
    from keras_astro.training.evaluation import dataset_labels

    logits = view_logits(model, validation)
    labels = dataset_labels(validation)
    temperature = fit_temperature(logits, labels)
    return with_temperature(model, temperature if constrained(logits, labels, temperature) else None)


def constrained(logits, labels, temperature):
    """Whether `fit_temperature`'s T is a true minimum of the NLL on (logits, labels):
    lower than at both ends of `TEMPERATURE_RANGE`.

    When every validation image is right with a margin, the NLL keeps falling as T goes
    to 0 and the "calibrated" model would call everything certain (all wrong: T goes to
    the top); `calibrate_model` then keeps the model as trained.
    """
    labels = _labels(labels, np.shape(logits)[-1])
    best = view_nll(logits, labels, temperature)
    return all(best < view_nll(logits, labels, end) - 1e-6 for end in TEMPERATURE_RANGE)
