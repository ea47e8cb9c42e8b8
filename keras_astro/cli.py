"""The `keras-astro` command: train, evaluate, predict, demo, export, benchmark.

Keras is imported only after the arguments are parsed, so `--backend` can set
KERAS_BACKEND before Keras picks its backend.
"""

import argparse
import importlib.util
import json
import math
import os
import sys
import time

BACKENDS = ("tensorflow", "jax", "torch")
# Mirrors of keras_astro.model.CONFIGS and keras_astro.data.AUGMENT_POLICIES (both
# import Keras, which must wait for --backend); tests/test_cli.py checks they agree.
MODEL_NAMES = ("small", "base", "large")
AUGMENT_POLICIES = ("none", "basic", "randaugment", "mixup", "cutmix")
MIN_IMAGE_SIZE = 8
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
ATTENTION_IMAGES = 8
# The demo's recipe: >= 90% test accuracy within 5 minutes on a 2-core CPU.
DEMO_ARGUMENTS = (
    "--model", "small", "--dataset", "digits", "--batch-size", "32",
    "--learning-rate", "2e-3", "--augment", "none",
)  # fmt: skip
DEMO_EPOCHS = 4
DEMO_IMAGE_SIZE = 16
DEMO_PREDICTIONS = 8


def _bounded(kind, minimum, strict=False):
    """An argparse `type` for numbers >= minimum (> minimum when `strict`)."""

    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (strict and value == minimum):
            relation = ">" if strict else ">="
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'} {relation} {minimum}, "
                f"got {text!r}"
            )
        return value

    return parse


_positive_int = _bounded(int, 1)
_positive_float = _bounded(float, 0, strict=True)


def _add_backend_argument(parser):
    parser.add_argument(
        "--backend",
        choices=BACKENDS,
        help="Keras backend; sets KERAS_BACKEND before Keras is imported "
        "(default: $KERAS_BACKEND, else Keras' default, tensorflow)",
    )


def _add_source_arguments(parser):
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--dataset",
        metavar="NAME",
        help="'digits' (scikit-learn's 8x8 digits, offline) or a tensorflow-datasets "
        "image classification name, e.g. cifar10, cifar100, eurosat",
    )
    source.add_argument(
        "--data-dir",
        metavar="DIR",
        help="image folder: DIR/train/<class>/* and DIR/test/<class>/* (or val/); without "
        "either, --validation-fraction of train is held out. jpg, png, bmp, gif",
    )
    parser.add_argument(
        "--tfds-data-dir",
        metavar="DIR",
        help="where tensorflow-datasets keeps datasets (default: its own, $TFDS_DATA_DIR "
        "or ~/tensorflow_datasets)",
    )
    parser.add_argument(
        "--validation-fraction",
        type=_positive_float,
        default=0.1,
        help="fraction of train held out for evaluation when the data has no test or "
        "validation split (default: %(default)s)",
    )


def _add_train_arguments(parser):
    parser.add_argument(
        "--model", choices=MODEL_NAMES, default="small", help="configuration (default: small)"
    )
    _add_source_arguments(parser)
    parser.add_argument("--epochs", type=_positive_int, default=30, help="default: %(default)s")
    parser.add_argument(
        "--batch-size",
        type=_positive_int,
        default=64,
        help="global batch size, split across devices with --distribute (default: %(default)s)",
    )
    parser.add_argument(
        "--image-size",
        type=_bounded(int, MIN_IMAGE_SIZE),
        default=32,
        help=f"side of the square images the model takes, >= {MIN_IMAGE_SIZE}; images are "
        "resized to it (default: %(default)s)",
    )
    parser.add_argument(
        "--learning-rate",
        type=_positive_float,
        default=1e-3,
        help="peak AdamW learning rate, reached after the warmup, then cosine decay to 0 "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--weight-decay", type=_bounded(float, 0), default=0.05, help="AdamW weight decay "
        "(not on biases and BatchNorm; default: %(default)s)"
    )  # fmt: skip
    parser.add_argument(
        "--warmup-epochs",
        type=_bounded(float, 0),
        default=1.0,
        help="linear warmup length in epochs, at most half the run (default: %(default)s)",
    )
    parser.add_argument(
        "--label-smoothing", type=_bounded(float, 0), default=0.1, help="default: %(default)s"
    )
    parser.add_argument(
        "--clipnorm", type=_positive_float, help="clip each gradient to this norm (default: off)"
    )
    parser.add_argument(
        "--augment",
        choices=AUGMENT_POLICIES,
        default="basic",
        help="training augmentation: basic = random 4-pixel shift + horizontal flip; "
        "randaugment, mixup, cutmix add to basic (default: %(default)s)",
    )
    parser.add_argument(
        "--mixed-precision",
        nargs="?",
        const="bfloat16",
        choices=("bfloat16", "float16"),
        help="train with the mixed_bfloat16 (default when given) or mixed_float16 policy",
    )
    parser.add_argument(
        "--remat",
        action="store_true",
        help="rematerialize activations in the backward pass (less memory, more compute)",
    )
    parser.add_argument(
        "--distribute",
        action="store_true",
        help="data-parallel training on all local devices (JAX, TensorFlow)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seeds weights, shuffling, augmentation")
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="run folder (default: runs/<model>-<dataset>); the same command resumes an "
        "interrupted run there, another configuration is refused",
    )
    _add_backend_argument(parser)


def build_parser():
    """The `keras-astro` argument parser, every subcommand included."""
    from keras_astro import benchmark, export

    parser = argparse.ArgumentParser(
        prog="keras-astro",
        description="Train, evaluate, run and serve AstroTransformer image classifiers.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    train = commands.add_parser(
        "train",
        help="train a model on a dataset or an image folder",
        description="Train AstroTransformer with AdamW, warmup + cosine decay and label "
        "smoothing. Writes model.keras (best epoch on the evaluation split), history.csv, "
        "metrics.json, training_curves.png, confusion_matrix.png, attention_maps.png and "
        "TensorBoard logs (logs/) to --output. A killed run resumes from its last finished "
        "epoch when the same command runs again.",
    )
    _add_train_arguments(train)

    evaluate = commands.add_parser(
        "evaluate",
        help="accuracy, loss, per-class accuracy and confusion matrix of a saved model",
        description="Evaluate a saved model on the test split of a dataset or image folder "
        "(the held-out split when there is none). Prints accuracy, loss and per-class "
        "accuracy; writes evaluation.json and confusion_matrix.png to --output.",
    )
    evaluate.add_argument("model", metavar="MODEL.keras", help="a model saved by `train`")
    _add_source_arguments(evaluate)
    evaluate.add_argument("--batch-size", type=_positive_int, default=64, help="default: %(default)s")
    evaluate.add_argument(
        "--output",
        metavar="DIR",
        help="folder for evaluation.json and confusion_matrix.png "
        "(default: evaluation-<dataset> beside the model)",
    )
    _add_backend_argument(evaluate)

    predict = commands.add_parser(
        "predict",
        help="top-k classes of image files",
        description="Print the top-k class names and probabilities for each image. Images "
        "of any size are resized to the model's input size.",
    )
    predict.add_argument("model", metavar="MODEL.keras", help="a saved model")
    predict.add_argument("images", metavar="IMAGE", nargs="+", help="jpg, png, bmp or gif files")
    predict.add_argument(
        "--top-k", type=_positive_int, default=3, help="classes shown per image (default: 3)"
    )
    _add_backend_argument(predict)

    demo = commands.add_parser(
        "demo",
        help="train small on the built-in digits in a few minutes, reload it and predict",
        description="The whole job on data that ships with scikit-learn (no download): "
        "train AstroTransformer small on 16x16 digits for 4 epochs (>= 90%% test accuracy "
        "in under 5 minutes on a 2-core CPU), save it, reload the saved file and predict "
        "a few test images.",
    )
    demo.add_argument(
        "--output", metavar="DIR", default=os.path.join("runs", "demo"), help="default: %(default)s"
    )
    # Smaller runs for the test suite.
    demo.add_argument("--epochs", type=_positive_int, default=DEMO_EPOCHS, help=argparse.SUPPRESS)
    demo.add_argument(
        "--image-size", type=_bounded(int, MIN_IMAGE_SIZE), default=DEMO_IMAGE_SIZE,
        help=argparse.SUPPRESS,
    )  # fmt: skip
    _add_backend_argument(demo)

    export.add_arguments(
        commands.add_parser(
            "export",
            help="write a TensorFlow Serving SavedModel version of a .keras model",
            description=export.__doc__.split("\n\n")[0],
        )
    )
    benchmark.add_arguments(
        commands.add_parser(
            "benchmark",
            help="measure training/inference speed and memory per backend",
            description=benchmark.__doc__.split("\n\n")[0],
        )
    )
    return parser


def _version():
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keras-astro")
    except PackageNotFoundError:
        return "unknown"


def _check_backend(backend):
    """Refuses a KERAS_BACKEND keras-astro does not support or that is not installed."""
    if backend not in BACKENDS:
        raise ValueError(
            f"KERAS_BACKEND={backend!r} is not a backend keras-astro supports; "
            f"expected one of {', '.join(BACKENDS)}."
        )
    if importlib.util.find_spec(backend) is None:
        raise ValueError(
            f"The {backend} backend is not installed: `pip install keras-astro[{backend}]`."
        )


def _switch_backend_process(backend):
    """Runs this command again in a new process with KERAS_BACKEND=backend.

    `import keras_astro` (which the `keras-astro` script does first) imports Keras, and
    Keras reads KERAS_BACKEND once, when it is imported.
    """
    _check_backend(backend)
    environment = {**os.environ, "KERAS_BACKEND": backend}
    os.execve(sys.executable, [sys.executable, "-m", "keras_astro.cli", *sys.argv[1:]], environment)


def _import_keras(backend):
    """Sets KERAS_BACKEND (when given) and imports Keras, which reads it once."""
    requested = backend or os.environ.get("KERAS_BACKEND")
    if requested is not None:
        _check_backend(requested)
    loaded = sys.modules.get("keras")
    if backend and loaded is not None and loaded.backend.backend() != backend:
        raise ValueError(
            f"--backend {backend} was given, but Keras is already imported in this process "
            f"with the {loaded.backend.backend()} backend; run keras-astro in a new process."
        )
    if backend:
        os.environ["KERAS_BACKEND"] = backend
    import keras

    return keras


def _source(args):
    """`load_datasets`' source argument and a short name for it."""
    if args.data_dir is not None:
        path = os.path.abspath(args.data_dir)
        if not os.path.isdir(path):
            raise ValueError(f"--data-dir {args.data_dir!r} is not a directory.")
        return path, os.path.basename(path.rstrip(os.sep))
    return args.dataset, args.dataset


def _write_json(path, data):
    partial = f"{path}.partial"
    with open(partial, "w") as f:
        json.dump(data, f, indent=2)
        f.write("\n")
    os.replace(partial, path)


def _load_model(path):
    import keras

    import keras_astro.model  # noqa: F401  (registers the classes a .keras file names)

    if not os.path.isfile(path):
        raise ValueError(f"No model file at {path!r}.")
    return keras.saving.load_model(path, compile=False)


def _class_names(model):
    return model.class_names or [str(i) for i in range(model.num_classes)]


# === train ===


def _run_config(args, backend):
    """What makes two runs the same: every training argument, and the backend."""
    config = {
        key: value
        for key, value in vars(args).items()
        if key not in ("command", "output", "backend", "data_dir", "dataset")
    }
    config["source"] = _source(args)[0]
    config["backend"] = backend
    return config


def _check_output(output, config):
    """Returns "new", "resume" or "finished"; refuses a folder of another run. Writes nothing."""
    config_path = os.path.join(output, CONFIG_FILE)
    if os.path.exists(config_path):
        with open(config_path) as f:
            previous = json.load(f)
        finished = os.path.exists(os.path.join(output, METRICS_FILE))
        if previous != config:
            differences = "; ".join(
                f"{key} {previous.get(key)!r} there, {config.get(key)!r} now"
                for key in sorted(set(previous) | set(config))
                if previous.get(key) != config.get(key)
            )
            raise ValueError(
                f"{output} holds {'a finished' if finished else 'an unfinished'} run of "
                f"another configuration ({differences}). Nothing was changed: choose "
                "another --output, or delete that folder to start over."
            )
        return "finished" if finished else "resume"
    if os.path.isdir(output) and os.listdir(output):
        raise ValueError(
            f"{output} is not empty and holds no keras-astro run ({CONFIG_FILE} is "
            "missing). Nothing was changed: choose another --output."
        )
    return "new"


def _summary(metrics, output):
    return (
        f"{metrics['model']} on {metrics['dataset']}: test accuracy "
        f"{metrics['test_accuracy']:.2%}, loss {metrics['test_loss']:.4f} "
        f"({metrics['num_test']} {metrics['test_split']} images) after {metrics['epochs']} "
        f"epochs; {metrics['backend']} on {metrics['devices']} device(s), "
        f"{metrics['images_per_second']:.0f} images/s, {metrics['wall_time_s']:.0f} s. "
        f"Files in {output}"
    )


def _train(args, started):
    keras = _import_keras(args.backend)
    from keras_astro import data as data_lib

    source, source_name = _source(args)
    output = args.output or os.path.join("runs", f"{args.model}-{source_name}")
    config = _run_config(args, keras.backend.backend())
    state = _check_output(output, config)
    if state == "finished":
        with open(os.path.join(output, METRICS_FILE)) as f:
            metrics = json.load(f)
        print(f"Already finished (same configuration): {_summary(metrics, output)}")
        return metrics, output

    from keras_astro import plots, training
    from keras_astro.distribute import data_parallel
    from keras_astro.model import AstroTransformer

    if args.mixed_precision:
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    keras.utils.set_random_seed(args.seed)
    datasets = data_lib.load_datasets(
        source,
        image_size=args.image_size,
        batch_size=args.batch_size,
        augment=args.augment,
        seed=args.seed,
        validation_fraction=args.validation_fraction,
        data_dir=args.tfds_data_dir,
    )
    if state == "new":
        os.makedirs(output, exist_ok=True)
        _write_json(os.path.join(output, CONFIG_FILE), config)
    else:
        print(f"Resuming the run in {output}")
    with data_parallel(args.distribute) as devices:
        model = AstroTransformer.from_name(
            args.model,
            input_shape=(args.image_size, args.image_size, 3),
            num_classes=datasets.num_classes,
            class_names=datasets.class_names,
            remat=args.remat,
        )
        training.compile_for_training(
            model,
            epochs=args.epochs,
            steps_per_epoch=math.ceil(datasets.num_train / args.batch_size),
            learning_rate=args.learning_rate,
            weight_decay=args.weight_decay,
            warmup_epochs=args.warmup_epochs,
            label_smoothing=args.label_smoothing,
            clipnorm=args.clipnorm,
        )
        fit_started = time.perf_counter()
        if training.finished(output):  # killed after training, while evaluating
            epochs_run = 0
        else:
            history = training.fit(model, datasets, epochs=args.epochs, output_dir=output)
            epochs_run = len(history.epoch)
        fit_seconds = time.perf_counter() - fit_started

    best = keras.saving.load_model(os.path.join(output, training.CHECKPOINT_FILE), compile=False)
    results = training.evaluate(best, datasets.test)
    full_history = training.load_history(os.path.join(output, training.HISTORY_FILE))
    plots.plot_training_curves(full_history, os.path.join(output, "training_curves.png"))
    plots.plot_confusion_matrix(
        results["confusion_matrix"],
        datasets.class_names,
        os.path.join(output, "confusion_matrix.png"),
        title=f"{source_name} {datasets.test_split}: accuracy {results['accuracy']:.2%}",
    )
    images, labels = next(datasets.test.unbatch().batch(ATTENTION_IMAGES).as_numpy_iterator())
    plots.plot_attention_maps(
        best, images, os.path.join(output, "attention_maps.png"), labels=labels.argmax(-1)
    )
    monitor = "val_accuracy" if "val_accuracy" in full_history[0] else "accuracy"
    best_row = max(full_history, key=lambda row: row[monitor])
    metrics = {
        "model": args.model,
        "dataset": source_name,
        "test_split": datasets.test_split,
        "num_train": datasets.num_train,
        "num_test": results["num_images"],
        "test_accuracy": results["accuracy"],
        "test_loss": results["loss"],
        **({"test_top5_accuracy": results["top5_accuracy"]} if "top5_accuracy" in results else {}),
        "per_class_accuracy": dict(zip(datasets.class_names, results["per_class_accuracy"])),
        "best_epoch": best_row["epoch"] + 1,
        "epochs": args.epochs,
        "epochs_this_run": epochs_run,
        "image_size": args.image_size,
        "batch_size": args.batch_size,
        "num_parameters": best.count_params(),
        "backend": keras.backend.backend(),
        "devices": devices,
        "dtype_policy": keras.config.dtype_policy().name,
        "jit_compile": bool(model.jit_compile),
        "keras_version": keras.__version__,
        "fit_seconds": fit_seconds,
        "images_per_second": datasets.num_train * epochs_run / fit_seconds,
        "wall_time_s": time.perf_counter() - started,
    }
    _write_json(os.path.join(output, METRICS_FILE), metrics)  # last: marks the run finished
    print(_summary(metrics, output))
    return metrics, output


# === evaluate, predict, demo ===


def _evaluate(args):
    _import_keras(args.backend)
    from keras_astro import plots, training
    from keras_astro.data import load_datasets

    model = _load_model(args.model)
    source, source_name = _source(args)
    datasets = load_datasets(
        source,
        image_size=model.image_shape[0],
        batch_size=args.batch_size,
        validation_fraction=args.validation_fraction,
        data_dir=args.tfds_data_dir,
    )
    names = _class_names(model)
    if datasets.class_names != names:
        raise ValueError(
            f"{args.model} was trained on classes {names}, but {source_name} has "
            f"{datasets.class_names}."
        )
    results = training.evaluate(model, datasets.test)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), f"evaluation-{source_name}"
    )
    os.makedirs(output, exist_ok=True)
    width = max(len(name) for name in names)
    print(f"{args.model} on {source_name} ({datasets.test_split}, {results['num_images']} images)")
    for name, accuracy, count in zip(
        names, results["per_class_accuracy"], results["confusion_matrix"].sum(axis=1)
    ):
        shown = "   n/a" if accuracy is None else f"{accuracy:6.2%}"
        print(f"  {name:<{width}}  {shown}  ({count} images)")
    top5 = f", top-5 {results['top5_accuracy']:.2%}" if "top5_accuracy" in results else ""
    print(f"accuracy {results['accuracy']:.2%}{top5}, loss {results['loss']:.4f}")
    report = {
        "model": os.path.abspath(args.model),
        "dataset": source_name,
        "split": datasets.test_split,
        **{k: v for k, v in results.items() if k != "per_class_accuracy"},
        "per_class_accuracy": dict(zip(names, results["per_class_accuracy"])),
        "confusion_matrix": results["confusion_matrix"].tolist(),
    }
    plots.plot_confusion_matrix(
        results["confusion_matrix"],
        names,
        os.path.join(output, "confusion_matrix.png"),
        title=f"{source_name} {datasets.test_split}: accuracy {results['accuracy']:.2%}",
    )
    _write_json(os.path.join(output, "evaluation.json"), report)
    print(f"Wrote {output}/evaluation.json and confusion_matrix.png")


def _read_image(path, size):
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


def _predict(args):
    _import_keras(args.backend)
    import numpy as np

    model = _load_model(args.model)
    images = np.stack([_read_image(path, model.image_shape[:2]) for path in args.images])
    probabilities = model.predict(images, verbose=0)
    names = _class_names(model)
    for path, p in zip(args.images, probabilities):
        best = np.argsort(-p)[: args.top_k]
        print(f"{path}: " + ", ".join(f"{names[i]} {p[i]:.1%}" for i in best))


def _demo(args, started):
    keras = _import_keras(args.backend)
    import numpy as np

    train_args = build_parser().parse_args(
        ["train", *DEMO_ARGUMENTS, "--output", args.output, "--epochs", str(args.epochs),
         "--image-size", str(args.image_size)]
        + (["--backend", args.backend] if args.backend else [])
    )  # fmt: skip
    print(
        f"keras-astro demo: training AstroTransformer small on scikit-learn's handwritten "
        f"digits at {train_args.image_size}x{train_args.image_size} for {train_args.epochs} "
        f"epochs on {keras.backend.backend()}"
    )
    metrics, output = _train(train_args, started)
    from keras_astro.data import load_datasets

    path = os.path.join(output, "model.keras")
    model = _load_model(path)
    print(f"Reloaded {path}: {model.count_params():,} parameters, classes {model.class_names}")
    test = load_datasets("digits", image_size=train_args.image_size, batch_size=DEMO_PREDICTIONS).test
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


def main(argv=None):
    """Entry point of the `keras-astro` console script; `argv=None` reads `sys.argv`."""
    started = time.perf_counter()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        backend = getattr(args, "backend", None)
        keras = sys.modules.get("keras")
        if argv is None and backend and keras and keras.backend.backend() != backend:
            _switch_backend_process(backend)
        if args.command == "train":
            _train(args, started)
        elif args.command == "evaluate":
            _evaluate(args)
        elif args.command == "predict":
            _predict(args)
        elif args.command == "demo":
            _demo(args, started)
        else:
            from keras_astro import benchmark, export

            {"export": export, "benchmark": benchmark}[args.command].run(args)
    except ValueError as error:
        parser.exit(2, f"keras-astro {args.command}: error: {error}\n")


if __name__ == "__main__":
    main()
