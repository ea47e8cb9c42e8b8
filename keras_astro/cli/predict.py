"""`keras-astro predict`: the top-k classes of image files."""

from keras_astro.cli.arguments import add_backend_argument, positive_int

HELP = "top-k classes of image files"
DESCRIPTION = (
    "Print the top-k class names and probabilities for each image. Images of any size are "
    "resized to the model's input size."
)


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.keras", help="a saved model")
    parser.add_argument("images", metavar="IMAGE", nargs="+", help="jpg, png, bmp or gif files")
    parser.add_argument(
        "--top-k", type=positive_int, default=3, help="classes shown per image (default: 3)"
    )
    add_backend_argument(parser)


def read_image(path, size):
    """An RGB image file resized to `size`, as float32 pixels 0..255."""
    import keras

    try:
        image = keras.utils.load_img(
            path, color_mode="rgb", target_size=size, interpolation="bilinear"
        )
    except FileNotFoundError:
        raise ValueError(f"No image file at {path!r}.") from None
    except Exception as error:  # PIL raises several types for undecodable files
        raise ValueError(f"Cannot decode {path!r} as an image: {error}") from error
    return keras.utils.img_to_array(image, data_format="channels_last")


def run(args):
    import numpy as np

    from keras_astro.utils import class_names, load_model

    model = load_model(args.model)
    images = np.stack([read_image(path, model.image_shape[:2]) for path in args.images])
    probabilities = model.predict(images, verbose=0)
    names = class_names(model)
    for path, p in zip(args.images, probabilities):
        best = np.argsort(-p)[: args.top_k]
        print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.1%}" for i in best))
