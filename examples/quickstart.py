"""Build AstroTransformer, look at it, predict, save and load it again.

    python examples/quickstart.py [--output DIR]
"""

import argparse
import os
import tempfile

import numpy as np

import keras_astro
from keras_astro.cli.command import hide_native_logs


def main(argv=None):
    import keras  # here, so that running the script hides TensorFlow's native logs first

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", help="folder for model.keras (default: a temporary folder)")
    parser.add_argument("--image-size", type=int, default=32, help="height and width of the inputs")
    args = parser.parse_args(argv)

    model = keras_astro.AstroTransformer.small(
        num_classes=3,
        input_shape=(args.image_size, args.image_size, 3),
        class_names=["spiral", "elliptical", "irregular"],
    )
    model.summary()

    # Raw pixels 0..255: the model scales them itself.
    images = np.random.default_rng(0).uniform(0, 255, (4, args.image_size, args.image_size, 3))
    probabilities = model.predict(images.astype("float32"), verbose=0)
    for row in probabilities:
        print(f"{model.class_names[int(row.argmax())]:>10}  p={row.max():.3f}")

    output = args.output or tempfile.mkdtemp()
    os.makedirs(output, exist_ok=True)
    path = os.path.join(output, "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    same = np.allclose(reloaded.predict(images.astype("float32"), verbose=0), probabilities, atol=1e-6)
    print(f"saved {path}; reloaded on {keras.backend.backend()}: predictions identical = {same}")
    return same


if __name__ == "__main__":
    hide_native_logs()
    raise SystemExit(0 if main() else 1)
