"""Scores of a trained classifier on an evaluation split, in a fixed order."""

import numpy as np


def evaluate(model, dataset):
    """Scores `model` on batches of (images, one-hot labels) in a fixed order.

    Returns a dict with `accuracy`, `loss` (cross-entropy without label smoothing),
    `top5_accuracy` (more than 5 classes only), `per_class_accuracy` (a list; `None`
    for classes absent from the data), `confusion_matrix` (rows: true class,
    columns: predicted) and `num_images`.
    """
    from sklearn.metrics import confusion_matrix

    # The evaluation split comes in a fixed order, so a second pass reads its labels.
    probabilities = model.predict(dataset, verbose=0).astype("float64")
    labels = np.concatenate([one_hot for _, one_hot in dataset.as_numpy_iterator()])
    num_classes = probabilities.shape[-1]
    true = labels.argmax(-1)
    predicted = probabilities.argmax(-1)
    matrix = confusion_matrix(true, predicted, labels=np.arange(num_classes))
    support = matrix.sum(axis=1)
    results = {
        "accuracy": float(np.mean(true == predicted)),
        "loss": float(
            -np.mean(np.sum(labels * np.log(np.clip(probabilities, 1e-7, 1.0)), axis=-1))
        ),
    }
    if num_classes > 5:
        top5 = np.argsort(-probabilities, axis=-1)[:, :5]
        results["top5_accuracy"] = float(np.mean((top5 == true[:, None]).any(axis=-1)))
    results["per_class_accuracy"] = [
        float(matrix[i, i] / support[i]) if support[i] else None for i in range(num_classes)
    ]
    results["confusion_matrix"] = matrix
    results["num_images"] = int(len(true))
    return results
