"""Pictures of a training run: learning curves, confusion matrix, reliability diagram,
accuracy against coverage, attention maps.

Figures are drawn on `matplotlib.figure.Figure` objects, which need no display and
leave pyplot's global state alone, and are saved as PNG with one rename. Flux images
are shown as astronomers look at them (`display_image`): an arcsinh stretch, grey for
one band, an RGB composite for three or more.
"""

import os

import keras
import numpy as np
from keras import ops
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from keras_astro.utils import class_names as model_class_names
from keras_astro.utils import write_atomically


def save_figure(fig, path):
    """Writes `fig` to `path` as a PNG, atomically (a reader never sees half a picture)."""
    write_atomically(
        path, lambda f: fig.savefig(f, format="png", dpi=100, bbox_inches="tight"), binary=True
    )


def plot_training_curves(history, path):
    """Loss and accuracy per epoch, training and validation, from `load_history` rows."""
    if not history:
        raise ValueError("`history` has no epochs to plot.")
    epochs = [row["epoch"] + 1 for row in history]
    fig = Figure(figsize=(10, 4))
    for ax, metric in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        for prefix, label in (("", "train"), ("val_", "validation")):
            if prefix + metric in history[0]:
                ax.plot(epochs, [row[prefix + metric] for row in history], "o-", label=label)
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    save_figure(fig, path)


def display_image(image, preprocessing="pixels"):
    """An image [h, w, bands] as matplotlib shows it: (array, colormap or None).

    Pixels: 0..255 -> [0, 1]. Flux: non-finite values -> 0, then for one band (or two:
    their mean) an arcsinh stretch between the 0.5 and 99.5 percentiles in grey
    (astropy's `AsinhStretch`, `PercentileInterval`); for three or more bands Lupton et
    al.'s arcsinh RGB composite of the first three (astropy's `make_lupton_rgb`), the
    first as blue and the third as red, as g, r, z map to blue, green, red.
    """
    image = np.asarray(image, dtype="float32")
    if preprocessing == "pixels":
        picture = np.clip(image / 255.0, 0, 1)
        return (picture[..., 0], "gray") if picture.shape[-1] == 1 else (picture, None)
    from astropy.visualization import AsinhStretch, PercentileInterval, make_lupton_rgb

    image = np.where(np.isfinite(image), image, 0.0)
    if image.shape[-1] >= 3:
        blue, green, red = (image[..., i] for i in range(3))
        scale = np.percentile(image[..., :3], 99.5)
        if not scale > 0:  # a negative scale would show negative flux as bright
            scale = 1.0
        rgb = make_lupton_rgb(red / scale, green / scale, blue / scale, stretch=0.5, Q=8)
        return rgb.astype("float32") / 255.0, None  # uint8 -> [0, 1], as the other cases
    grey = image.mean(axis=-1)
    return AsinhStretch()(PercentileInterval(99.0)(grey)), "gray"


def plot_confusion_matrix(matrix, class_names, path, title="Confusion matrix", normalize=False):
    """(true, predicted) class pairs, labelled with the class names.

    `normalize=True` shows each row as fractions of its true class (recall on the
    diagonal), which keeps rare classes readable in an imbalanced catalogue.
    """
    from sklearn.metrics import ConfusionMatrixDisplay

    matrix = np.asarray(matrix)
    if matrix.shape != (len(class_names), len(class_names)):
        raise ValueError(
            f"The confusion matrix has shape {matrix.shape} but there are "
            f"{len(class_names)} class names."
        )
    if normalize:
        support = matrix.sum(axis=1, keepdims=True)
        matrix = np.divide(matrix, support, out=np.zeros(matrix.shape), where=support > 0)
    side = min(4 + 0.45 * len(class_names), 30)
    fig = Figure(figsize=(side, side))
    ax = fig.subplots()
    ConfusionMatrixDisplay(matrix, display_labels=class_names).plot(
        ax=ax,
        cmap="Blues",
        colorbar=False,
        xticks_rotation=45,
        include_values=len(class_names) <= 20,
        values_format=".2f" if normalize else None,
    )
    ax.set_title(title)
    save_figure(fig, path)


def plot_confusion_matrices(results, class_names, output_dir, split_title):
    """`confusion_matrix.png` (counts) and `confusion_matrix_normalized.png` (recall per true
    class) of `evaluate`'s results, titled with `split_title` ("galaxy-rings test")."""
    plot_confusion_matrix(
        results["confusion_matrix"],
        class_names,
        os.path.join(output_dir, "confusion_matrix.png"),
        title=f"{split_title}: accuracy {results['accuracy']:.2%}",
    )
    plot_confusion_matrix(
        results["confusion_matrix"],
        class_names,
        os.path.join(output_dir, "confusion_matrix_normalized.png"),
        title=f"{split_title}: recall per true class",
        normalize=True,
    )


def plot_reliability(curves, labels, path, title="Reliability", bins=None):
    """Reliability diagram: accuracy against mean top probability per equal-width
    confidence bin (`training.calibration.reliability_bins`), one line per entry of
    `curves` ({label: probabilities [n, classes]}), with each curve's ECE; the diagonal
    is a calibrated model. Below it, how many objects each bin holds."""
    from keras_astro.training.calibration import (
        CALIBRATION_BINS,
        expected_calibration_error,
        reliability_bins,
    )

    bins = bins or CALIBRATION_BINS
    fig = Figure(figsize=(5, 6))
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1)})
    top.plot([0, 1], [0, 1], "k:", label="calibrated")
    centres = (np.arange(bins) + 0.5) / bins
    for i, (label, probabilities) in enumerate(curves.items()):
        counts, accuracy, confidence = reliability_bins(probabilities, labels, bins)
        full = counts > 0
        ece = expected_calibration_error(probabilities, labels, bins)
        top.plot(confidence[full], accuracy[full], "o-", label=f"{label}: ECE {ece:.3f}")
        width = 0.8 / bins / len(curves)
        bottom.bar(centres + (i - (len(curves) - 1) / 2) * width, counts, width=width, label=label)
    top.set_ylabel("accuracy")
    top.set_xlim(0, 1)
    top.set_ylim(0, 1)
    top.set_title(f"{title}: reliability ({bins} bins)")
    top.grid(alpha=0.3)
    top.legend(loc="best", fontsize="small")
    bottom.set_xlabel("top probability")
    bottom.set_ylabel("objects")
    save_figure(fig, path)


def plot_coverage(rows, path, title="Accuracy against coverage"):
    """Accuracy of the most confident objects against the fraction kept, from
    `training.calibration.accuracy_coverage` rows."""
    fig = Figure(figsize=(5, 4))
    ax = fig.subplots()
    coverage = [100 * row["coverage"] for row in rows]
    ax.plot(coverage, [100 * row["accuracy"] for row in rows], "o-")
    ax.set_xlabel("most confident objects kept (%)")
    ax.set_ylabel("accuracy (%)")
    ax.set_xlim(105, 0)  # from all objects to the most confident few
    ax.set_title(title)
    ax.grid(alpha=0.3)
    save_figure(fig, path)


def attention_maps(model, images, query=None):
    """Attention weights of the model's "relative_attention" layer, as images.

    Recomputes softmax(scale * q.(k + r)^T) from the layer's own sublayers for a few
    images (the layer itself never materializes this matrix), averages over heads
    and over query pixels, or takes the row of one query pixel.

    Args:
        model: an `AstroTransformer`.
        images: raw images `[n, height, width, 3]` as the model takes them.
        query: `None` (average over all query pixels) or `(row, col)` of one pixel in
            the attention layer's grid (the input resolution).

    Returns:
        numpy float32 `[n, height, width]`; each map sums to 1 over its pixels.
    """
    if getattr(model, "test_time_augmentation", None):
        from keras_astro.models.calibration import rebuild

        model = rebuild(model, test_time_augmentation=None)  # the images as given
    layer = model.get_layer("relative_attention")
    features = keras.Model(model.input, layer.input)(ops.convert_to_tensor(images))
    relative = layer.relative_conv(features)
    if layer.data_format == "channels_first":
        features = ops.transpose(features, (0, 2, 3, 1))
        relative = ops.transpose(relative, (0, 2, 3, 1))
    count, height, width, channels = ops.shape(features)
    if query is not None and not (0 <= query[0] < height and 0 <= query[1] < width):
        raise ValueError(f"`query` must be a pixel of the {height}x{width} grid. Received: {query}")
    heads, head_dim = layer.num_heads, channels // layer.num_heads

    def split_heads(x):  # (n, ..., c) -> (n, heads, h*w, head_dim), float32
        x = ops.reshape(ops.cast(x, "float32"), (count, height * width, heads, head_dim))
        return ops.transpose(x, (0, 2, 1, 3))

    qkv = layer.qkv_dense(ops.reshape(features, (count, height * width, channels)))
    query_tokens, key, _ = ops.split(qkv, 3, axis=-1)
    key = split_heads(key) + split_heads(relative)
    scale = layer.attention_scale or 1.0 / np.sqrt(head_dim)
    logits = scale * ops.einsum("nhqd,nhkd->nhqk", split_heads(query_tokens), key)
    weights = ops.mean(ops.softmax(logits, axis=-1), axis=1)  # (n, queries, keys)
    if query is None:
        weights = ops.mean(weights, axis=1)
    else:
        weights = weights[:, query[0] * width + query[1]]
    return ops.convert_to_numpy(ops.reshape(weights, (count, height, width))).astype("float32")


def plot_attention_maps(model, images, path, labels=None, query=None):
    """Each image beside it with its attention map overlaid: where the model looks.

    Args:
        model: an `AstroTransformer` with class outputs.
        images: raw images `[n, height, width, bands]` as the model takes them, a few.
        path: PNG file to write.
        labels: optional int true classes, shown with the predictions.
        query: as in `attention_maps`.
    """
    images = np.asarray(images, dtype="float32")
    maps = attention_maps(model, images, query=query)
    predicted = ops.convert_to_numpy(model(images, training=False)).argmax(-1)
    names = model_class_names(model)
    preprocessing = model.preprocessing if model.include_preprocessing else "pixels"
    fig = Figure(figsize=(2 * len(images), 4.4))
    axes = fig.subplots(2, len(images), squeeze=False)
    extent = (0, images.shape[2], images.shape[1], 0)
    for i, image in enumerate(images):
        title = f"pred {names[predicted[i]]}"
        if labels is not None:
            title = f"true {names[labels[i]]}\n{title}"
        picture, cmap = display_image(image, preprocessing)
        axes[0, i].imshow(picture, cmap=cmap, extent=extent)
        axes[0, i].set_title(title, fontsize=9)
        axes[1, i].imshow(picture, cmap=cmap, extent=extent)
        axes[1, i].imshow(maps[i], cmap="inferno", alpha=0.6, extent=extent, interpolation="bilinear")
        if query is not None:
            axes[1, i].plot(query[1] + 0.5, query[0] + 0.5, "c+", markersize=10)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    what = "mean over query pixels" if query is None else f"query pixel {tuple(query)}"
    axes[1, 0].set_ylabel(f"attention\n({what})", fontsize=9)
    fig.suptitle("Relative attention: where the model looks", fontsize=11)
    save_figure(fig, path)
