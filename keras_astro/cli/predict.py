"""`keras-astro predict`: the top-k classes of image or FITS files."""

from keras_astro.cli.arguments import add_backend_argument, positive_int

HELP = "top-k classes of image or FITS files"
DESCRIPTION = (
    "Print the top-k class names and probabilities for each file: photos (jpg, png, bmp, "
    "gif) or FITS cutouts, at their original size: they are cropped and resized as the "
    "model's training data was. A file that cannot be read, that is not the kind the model "
    "takes (FITS for a flux model, photos for a pixel model), or that has a band without "
    "a finite pixel, is reported and the others are still predicted (the exit code is then 2)."
)


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.keras", help="a saved model")
    parser.add_argument(
        "images", metavar="FILE", nargs="+", help="jpg, png, bmp, gif or FITS files"
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=3, help="classes shown per image (default: 3)"
    )
    parser.add_argument(
        "--tta",
        action="store_true",
        help="average the probabilities of the 8 symmetries of the square",
    )
    add_backend_argument(parser)


def read_image(path, model, converter):
    """A file prepared as the model's training images were: [size, size, bands] float32.

    Besides the converter's refusals (a file it cannot read, or of the other kind than
    the model's), a `ValueError` names a file of other bands than the model's and a
    band that the model would see as all blanks (flux NaN throughout, which the model
    turns into zeros).
    """
    import numpy as np
    import tensorflow as tf

    image = converter.read_file(path)
    if image.shape[-1] != model.image_shape[-1]:
        raise ValueError(
            f"{path!r} has {image.shape[-1]} band(s), but the model takes {model.image_shape[-1]}."
        )
    image = tf.cast(image, tf.float32).numpy()
    blank = np.flatnonzero(~np.isfinite(image).any(axis=(0, 1)))
    if blank.size:
        where = "" if model.center_crop is None else f" of its central {model.center_crop:.0%}"
        raise ValueError(
            f"{path!r} has no finite pixel in band(s) {blank.tolist()}{where}; expected flux "
            "in every band of what the model sees."
        )
    return image


def run(args):
    import os
    import sys

    import numpy as np
    import tensorflow as tf

    from keras_astro.data.converter import ImageConverter
    from keras_astro.models.saving import load_model
    from keras_astro.training.evaluation import predict_probabilities
    from keras_astro.utils import check_classifier, class_names

    model = load_model(args.model)
    check_classifier(model, "predict")
    converter = ImageConverter.from_model(model)
    images, paths, failures = [], [], []
    for path in args.images:
        try:
            if not os.path.isfile(path):
                raise ValueError(f"No image file at {path!r}.")
            images.append(read_image(path, model, converter))
            paths.append(path)
        except ValueError as error:
            failures.append(str(error))
    if images:
        dataset = tf.data.Dataset.from_tensor_slices(np.stack(images)).batch(32)
        probabilities = predict_probabilities(model, dataset, tta=args.tta)
        names = class_names(model)
        for path, p in zip(paths, probabilities):
            best = np.argsort(-p)[: args.top_k]
            print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.1%}" for i in best))
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        raise ValueError(f"{len(failures)} of {len(args.images)} file(s) could not be predicted.")
