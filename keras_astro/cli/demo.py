"""`keras-astro demo`: the whole job on data that ships with scikit-learn, in minutes."""

import argparse
import os
import time

from keras_astro.cli.arguments import add_backend_argument, image_size, positive_int
from keras_astro.training.experiment import ExperimentConfig

HELP = "train small on the built-in digits in a few minutes, reload it and predict"
DESCRIPTION = (
    "The whole job on data that ships with scikit-learn (no download): train "
    "AstroTransformer small on 16x16 digits for 4 epochs (>= 90% test accuracy in about "
    "a minute on an idle 2-core CPU, a few minutes under load or while JAX compiles), "
    "save it, reload the saved file and predict a few test images."
)
# The demo's recipe: >= 90% test accuracy within 5 minutes on a 2-core CPU. Its warmup
# stays one epoch (as measured in the README), so earlier demo folders still read as finished.
DEMO_CONFIG = ExperimentConfig(
    source="digits", model="small", epochs=4, image_size=16, batch_size=32,
    learning_rate=2e-3, warmup_epochs=1.0, augment="none",
)
DEMO_PREDICTIONS = 8


def add_arguments(parser):
    parser.add_argument(
        "--output", metavar="DIR",
        help="default: runs/demo-BACKEND (each backend its own run, so one does not refuse another)",
    )
    # Smaller runs for the test suite.
    parser.add_argument(
        "--epochs", type=positive_int, default=DEMO_CONFIG.epochs, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--image-size", type=image_size, default=DEMO_CONFIG.image_size,
        help=argparse.SUPPRESS,
    )
    add_backend_argument(parser)


def run(args):
    import dataclasses

    import keras
    import numpy as np

    from keras_astro.data import load_datasets
    from keras_astro.models.saving import load_model
    from keras_astro.training import run_folder
    from keras_astro.training.experiment import experiment_state, run_experiment

    started = time.perf_counter()
    config = dataclasses.replace(DEMO_CONFIG, epochs=args.epochs, image_size=args.image_size)
    args.output = args.output or os.path.join("runs", f"demo-{keras.backend.backend()}")
    state = experiment_state(config, args.output)
    what = {
        run_folder.NEW: "training",
        run_folder.RESUME: f"resuming the run in {args.output}:",
        run_folder.FINISHED: f"reading the finished run in {args.output} (same configuration) of",
    }[state]
    print(
        f"keras-astro demo: {what} AstroTransformer small on scikit-learn's handwritten "
        f"digits at {config.image_size}x{config.image_size} for {config.epochs} "
        f"epochs on {keras.backend.backend()}"
    )
    metrics = run_experiment(config, args.output)
    path = os.path.join(args.output, run_folder.CHECKPOINT_FILE)
    model = load_model(path)
    print(f"Reloaded {path}: {model.count_params():,} parameters, classes {model.class_names}")
    test = load_datasets("digits", image_size=config.image_size, batch_size=DEMO_PREDICTIONS).test
    images, labels = next(test.as_numpy_iterator())
    probabilities = model.predict(images, verbose=0)
    for i, (p, label) in enumerate(zip(probabilities, labels.argmax(-1))):
        guess = int(np.argmax(p))
        mark = "ok" if guess == label else "WRONG"
        print(f"  test image {i}: true {label}, predicted {guess} ({p[guess]:.1%}) {mark}")
    print(
        f"Demo done in {time.perf_counter() - started:.0f} s: test accuracy "
        f"{metrics['test_accuracy']:.2%}. Try: keras-astro predict {path} IMAGE.png"
    )
