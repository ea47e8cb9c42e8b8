"""`keras-astro evaluate`: scores of a saved model on a dataset's evaluation split."""

import os

from keras_astro.cli.arguments import (
    add_backend_argument,
    add_source_arguments,
    data_options,
    positive_int,
    source,
)

HELP = "accuracy, loss, per-class accuracy and confusion matrix of a saved model"
DESCRIPTION = (
    "Evaluate a saved model on the test split of a dataset or image folder (the held-out "
    "split when there is none). Prints accuracy, loss and per-class accuracy; writes "
    "evaluation.json and confusion_matrix.png to --output."
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
        "--output",
        metavar="DIR",
        help="folder for evaluation.json and confusion_matrix.png "
        "(default: evaluation-<dataset> beside the model)",
    )
    add_backend_argument(parser)


def run(args):
    from keras_astro.data import ImageConverter, load_datasets
    from keras_astro.models.saving import load_model
    from keras_astro.training import plots
    from keras_astro.training.evaluation import evaluate, per_class_report
    from keras_astro.utils import check_classifier, class_names, write_json

    model = load_model(args.model)
    check_classifier(model, "evaluate")
    data_source, source_name = source(args)
    # The data prepared as the model's training data was: its converter's crop, size and
    # preprocessing.
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
    results = evaluate(model, datasets.test, tta=args.tta)
    output = args.output or os.path.join(
        os.path.dirname(os.path.abspath(args.model)), f"evaluation-{source_name}"
    )
    os.makedirs(output, exist_ok=True)
    width = max(len(name) for name in names)
    tta = " with 8-view TTA" if args.tta else ""
    print(
        f"{args.model} on {source_name} ({datasets.test_split}, {results['num_images']} "
        f"images){tta}"
    )
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
    report = {
        "model": os.path.abspath(args.model),
        "dataset": source_name,
        "split": datasets.test_split,
        **{
            k: v
            for k, v in results.items()
            if k not in ("per_class_accuracy", "precision", "recall", "f1")
        },
        **per_class_report(results, names),
        "confusion_matrix": results["confusion_matrix"].tolist(),
    }
    plots.plot_confusion_matrices(
        results, names, output, f"{source_name} {datasets.test_split}"
    )
    write_json(os.path.join(output, "evaluation.json"), report)
    print(f"Wrote {output}/evaluation.json, confusion_matrix.png and confusion_matrix_normalized.png")
