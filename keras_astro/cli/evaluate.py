"""`keras-astro evaluate`: scores of a saved model on a dataset's evaluation split."""

import os

from keras_astro.cli.arguments import (
    add_backend_argument,
    add_source_arguments,
    bounded,
    data_options,
    positive_int,
    source,
)

HELP = "accuracy, calibration, accuracy against coverage and confusion matrix of a saved model"
DESCRIPTION = (
    "Evaluate a saved model on the test split of a dataset or image folder (the held-out "
    "split when there is none). Prints accuracy, loss, per-class scores, calibration "
    "(ECE, NLL, Brier), the accuracy of the most confident objects and per class the "
    "probability threshold that gives a sample of --precision; writes evaluation.json, "
    "confusion_matrix.png, reliability.png and coverage.png to --output."
)


def add_arguments(parser):
    parser.add_argument("model", metavar="MODEL.keras", help="a model saved by `train`")
    add_source_arguments(parser)
    parser.add_argument("--batch-size", type=positive_int, default=64, help="default: %(default)s")
    parser.add_argument(
        "--tta",
        action="store_true",
        help="test-time augmentation: average the probabilities of the 8 symmetries of the square",
    )
    parser.add_argument(
        "--precision",
        type=bounded(float, 0, strict=True, maximum=1),
        default=0.9,
        help="per class, report the lowest probability threshold whose selection on the "
        "evaluated split has at least this precision (default: %(default)s)",
    )
    parser.add_argument(
        "--output",
        metavar="DIR",
        help="folder for evaluation.json and the pictures "
        "(default: evaluation-<dataset> beside the model)",
    )
    add_backend_argument(parser)


def run(args):
    from keras_astro.training.calibration import accuracy_coverage, precision_thresholds
    from keras_astro.training.evaluation import dataset_labels, predict_probabilities, score
    from keras_astro.utils import class_names

    model, datasets, source_name = _model_and_data(args)
    # A model that averages its 8 views itself gives the same with or without --tta.
    tta = args.tta or bool(getattr(model, "test_time_augmentation", None))
    probabilities = predict_probabilities(model, datasets.test, tta=args.tta)
    labels = dataset_labels(datasets.test)
    results = score(probabilities, labels, tta=tta)
    selection = (
        accuracy_coverage(probabilities, labels),
        precision_thresholds(probabilities, labels, args.precision),
    )
    names = class_names(model)
    tta = " with 8-view TTA" if tta else ""
    print(
        f"{args.model} on {source_name} ({datasets.test_split}, {results['num_images']} "
        f"images){tta}"
    )
    _print_scores(args, results, names, model.temperature, *selection)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), f"evaluation-{source_name}"
    )
    report = {
        "model": os.path.abspath(args.model),
        "dataset": source_name,
        "split": datasets.test_split,
        **_scores_report(args, results, names, model.temperature, *selection),
    }
    title = f"{source_name} {datasets.test_split}{tta}"
    _write(output, report, results, names, probabilities, labels, title)


def _model_and_data(args):
    """The saved model, the source's splits prepared as its training data was (its
    converter's crop, size and preprocessing) and the source's short name."""
    from keras_astro.data import ImageConverter, load_datasets
    from keras_astro.models.saving import load_model
    from keras_astro.utils import check_classifier, class_names

    model = load_model(args.model)
    check_classifier(model, "evaluate")
    data_source, source_name = source(args)
    converter = ImageConverter.from_model(model)
    datasets = load_datasets(
        data_source,
        image_size=converter.image_size,
        batch_size=args.batch_size,
        center_crop=converter.center_crop,
        preprocessing=converter.preprocessing,
        **data_options(args),
    )
    names = class_names(model)
    if datasets.class_names != names:
        raise ValueError(
            f"{args.model} was trained on classes {names}, but {source_name} has "
            f"{datasets.class_names}."
        )
    return model, datasets, source_name


def _print_scores(args, results, names, temperature, coverage, thresholds):
    """Per-class scores, accuracy, calibration and the selection tables, as a table."""
    from keras_astro.training.calibration import CALIBRATION_BINS

    width = max(len(name) for name in names)
    print(f"  {'class':<{width}}  recall  precision      F1")
    for name, recall, precision, f1, count in zip(
        names, results["recall"], results["precision"], results["f1"],
        results["confusion_matrix"].sum(axis=1),
    ):
        shown = [" n/a" if value is None else f"{value:6.2%}" for value in (recall, precision, f1)]
        print(f"  {name:<{width}}  {shown[0]:>6}  {shown[1]:>9}  {shown[2]:>6}  ({count} images)")
    top5 = f", top-5 {results['top5_accuracy']:.2%}" if "top5_accuracy" in results else ""
    print(
        f"accuracy {results['accuracy']:.2%}, balanced accuracy "
        f"{results['balanced_accuracy']:.2%}{top5}, loss {results['loss']:.4f}"
    )
    print(
        f"calibration: ECE {results['ece']:.4f} ({CALIBRATION_BINS} bins; noise alone gives "
        f"{results['ece_chance']:.4f} on {results['num_images']} objects, p = "
        f"{results['ece_p_value']:.3g}), NLL "
        f"{results['nll']:.4f}, Brier {results['brier']:.4f}; "
        + ("no temperature" if temperature is None else f"temperature {temperature:.4g}")
    )
    print("most confident:  " + "  ".join(f"{row['coverage']:>6.0%}" for row in coverage))
    print("accuracy:        " + "  ".join(f"{row['accuracy']:>6.1%}" for row in coverage))
    print(f"threshold for precision {args.precision:g} on this split (selected, recall):")
    for name, row in zip(names, thresholds):
        if row["threshold"] is None:
            print(f"  {name:<{width}}  none reaches it")
        else:
            print(
                f"  {name:<{width}}  p >= {row['threshold']:.4f}  ({row['num_selected']} "
                f"objects, precision {row['precision']:.2%}, recall {row['recall']:.2%})"
            )


def _scores_report(args, results, names, temperature, coverage, thresholds):
    """evaluation.json's scores: all of `results` but the per-class arrays, named per class."""
    from keras_astro.training.calibration import CALIBRATION_BINS
    from keras_astro.training.evaluation import per_class_report

    return {
        **{
            k: v
            for k, v in results.items()
            if k not in ("per_class_accuracy", "precision", "recall", "f1")
        },
        **per_class_report(results, names),
        "confusion_matrix": results["confusion_matrix"].tolist(),
        "temperature": temperature,
        "calibration_bins": CALIBRATION_BINS,
        "accuracy_coverage": coverage,
        "precision_target": args.precision,
        "precision_thresholds": dict(zip(names, thresholds)),
    }


def _write(output, report, results, names, probabilities, labels, title):
    """evaluation.json and the pictures, in `output`."""
    from keras_astro.training import plots
    from keras_astro.utils import write_json

    os.makedirs(output, exist_ok=True)
    plots.plot_confusion_matrices(results, names, output, title)
    plots.plot_reliability(
        {"model": probabilities}, labels, os.path.join(output, "reliability.png"), title
    )
    plots.plot_coverage(report["accuracy_coverage"], os.path.join(output, "coverage.png"), title)
    write_json(os.path.join(output, "evaluation.json"), report)
    print(
        f"Wrote {output}/evaluation.json, confusion_matrix.png, confusion_matrix_normalized.png, "
        "reliability.png and coverage.png"
    )
