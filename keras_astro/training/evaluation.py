"""Scores of a trained classifier on an evaluation split, in a fixed order.

Galaxy catalogues are imbalanced, so besides accuracy the scores include the balanced
accuracy (mean per-class recall) and per-class precision, recall and F1; since samples
are selected by probability, how well calibrated those are (`training.calibration`);
and since a galaxy has no preferred orientation, test-time augmentation averages the 8
symmetries of the square (`tta=True`).
"""

import numpy as np

from keras_astro.training.calibration import softmax
from keras_astro.utils import check_classifier, returns_logits

DIHEDRAL_VIEWS = 8


def dihedral_view(images, index):
    """View `index` (0..7) of a batch [n, h, w, c]: `index % 4` quarter turns, mirrored
    (rows and columns swapped) for `index >= 4`. TensorFlow ops, for `tf.data`."""
    import tensorflow as tf

    if index >= 4:
        images = tf.transpose(images, [0, 2, 1, 3])
    return tf.image.rot90(images, k=index % 4)


def predict_views(model, dataset, tta=False):
    """float64 probabilities [views, n, classes] of batches of (images, ...): one view
    without `tta`, the 8 dihedral views with it (images must be channels_last and
    square). A logits head's outputs go through a softmax; a model without class scores
    is refused. A model that averages the 8 views itself (`test_time_augmentation`) is
    run one view at a time, so that a batch takes the memory of a one-view model's: with
    `tta` its views, without, their mean (its output, for a softmax head).
    """
    from keras_astro.data.pipeline import without_autotuning

    check_classifier(model, "prediction")
    averages_views = bool(getattr(model, "test_time_augmentation", None))
    if averages_views:
        from keras_astro.models.calibration import rebuild

        model = rebuild(model, test_time_augmentation=None)
    images = without_autotuning(dataset.map(lambda x, *_: x))

    def predict(images):
        outputs = model.predict(images, verbose=0).astype("float64")
        return softmax(outputs) if returns_logits(model) else outputs

    if not (tta or averages_views):
        return predict(images)[None]
    views = np.stack(
        [predict(images.map(lambda x, i=i: dihedral_view(x, i))) for i in range(DIHEDRAL_VIEWS)]
    )
    return views if tta else views.mean(axis=0, keepdims=True)


def predict_probabilities(model, dataset, tta=False):
    """The probabilities of `predict_views`, averaged over the views: [n, classes]."""
    return predict_views(model, dataset, tta=tta).mean(axis=0)


def predictive_entropy(probabilities):
    """Entropy in nats of each row of probabilities [n, classes]: 0 for a certain
    prediction, ln(classes) for a uniform one."""
    p = np.clip(probabilities, 1e-12, 1.0)
    return -np.sum(probabilities * np.log(p), axis=-1)


def view_spread(views):
    """How much the views of `predict_views` disagree: per object, the standard deviation
    across views of the probability of the class their mean predicts (0 with one view)."""
    best = views.mean(axis=0).argmax(axis=-1)
    return views[:, np.arange(views.shape[1]), best].std(axis=0)


def dataset_labels(dataset):
    """The one-hot labels of batches of (images, one-hot labels), in their order: an
    evaluation split comes in a fixed order, so they match `predict_views`' rows."""
    return np.concatenate([one_hot for _, one_hot in dataset.as_numpy_iterator()])


def evaluate(model, dataset, tta=False):
    """Scores `model` on batches of (images, one-hot labels) in a fixed order: `score`
    of its probabilities (`predict_probabilities`) and the labels."""
    return score(predict_probabilities(model, dataset, tta=tta), dataset_labels(dataset), tta)


def score(probabilities, labels, tta=False):
    """The scores of probabilities [n, classes] against one-hot labels [n, classes].

    Returns a dict with `accuracy`, `balanced_accuracy` (mean recall over the classes
    present), `loss` (cross-entropy without label smoothing), `top5_accuracy` (more than
    5 classes only), `ece`, `nll` and `brier` (`training.calibration.calibration_scores`),
    per-class lists `per_class_accuracy` (= recall), `precision`, `recall` and `f1`
    (`None` for a class absent from the data, or never predicted for precision),
    `confusion_matrix` (rows: true class, columns: predicted), `num_images` and `tta`.
    """
    from sklearn.metrics import confusion_matrix

    from keras_astro.training.calibration import calibration_scores

    num_classes = probabilities.shape[-1]
    true = labels.argmax(-1)
    predicted = probabilities.argmax(-1)
    matrix = confusion_matrix(true, predicted, labels=np.arange(num_classes))
    support = matrix.sum(axis=1)
    predicted_count = matrix.sum(axis=0)
    recall = [float(matrix[i, i] / support[i]) if support[i] else None for i in range(num_classes)]
    precision = [
        float(matrix[i, i] / predicted_count[i]) if predicted_count[i] else None
        for i in range(num_classes)
    ]
    f1 = [
        None if r is None else (2 * p * r / (p + r) if p is not None and p + r > 0 else 0.0)
        for p, r in zip(precision, recall)
    ]
    present = [r for r in recall if r is not None]
    results = {
        "accuracy": float(np.mean(true == predicted)),
        "balanced_accuracy": float(np.mean(present)),
        "loss": float(
            -np.mean(np.sum(labels * np.log(np.clip(probabilities, 1e-7, 1.0)), axis=-1))
        ),
    }
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=-1)[:, :5]
        results["top5_accuracy"] = float(np.mean((top5 == true[:, None]).any(axis=-1)))
    results.update(calibration_scores(probabilities, true))
    results["per_class_accuracy"] = recall
    results["precision"] = precision
    results["recall"] = recall
    results["f1"] = f1
    results["confusion_matrix"] = matrix
    results["num_images"] = int(len(true))
    results["tta"] = bool(tta)
    return results


def per_class_report(results, class_names):
    """`evaluate`'s per-class lists as the JSON that `metrics.json` and `evaluation.json` hold."""
    return {
        "per_class_accuracy": dict(zip(class_names, results["per_class_accuracy"])),
        "per_class": {
            name: {"precision": p, "recall": r, "f1": f}
            for name, p, r, f in zip(
                class_names, results["precision"], results["recall"], results["f1"]
            )
        },
    }
