"""Train AstroTransformer on a folder of your own images and look at the results.

    python examples/train_image_folder.py ../shared/data/cifar10-subset --epochs 20

The folder holds DIR/train/<class>/*.jpg (png, bmp, gif) and DIR/test/<class>/* (or
val/); without either, 10% of train is held out. Writes model.keras, history.csv,
training_curves.png, confusion_matrix.png and attention_maps.png to --output.
"""

import argparse
import math
import os

from keras_astro import data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data_dir", help="image folder: DIR/train/<class>/*, DIR/test/<class>/*")
    parser.add_argument("--model", default="small", choices=("small", "base", "large"))
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--output", default=os.path.join("runs", "image-folder"))
    args = parser.parse_args(argv)

    import keras

    from keras_astro import AstroTransformer, plots, training

    keras.utils.set_random_seed(0)
    datasets = data.load_datasets(
        args.data_dir, image_size=args.image_size, batch_size=args.batch_size, augment="basic"
    )
    print(f"{datasets.num_train} training images, {datasets.num_test} {datasets.test_split} "
          f"images, classes {datasets.class_names}")  # fmt: skip
    model = AstroTransformer.from_name(
        args.model,
        input_shape=(args.image_size, args.image_size, 3),
        num_classes=datasets.num_classes,
        class_names=datasets.class_names,
    )
    training.compile_for_training(
        model, epochs=args.epochs, steps_per_epoch=math.ceil(datasets.num_train / args.batch_size)
    )
    training.fit(model, datasets, epochs=args.epochs, output_dir=args.output)

    best = keras.saving.load_model(os.path.join(args.output, training.CHECKPOINT_FILE))
    results = training.evaluate(best, datasets.test)
    history = training.load_history(os.path.join(args.output, training.HISTORY_FILE))
    plots.plot_training_curves(history, os.path.join(args.output, "training_curves.png"))
    plots.plot_confusion_matrix(
        results["confusion_matrix"],
        datasets.class_names,
        os.path.join(args.output, "confusion_matrix.png"),
    )
    images, labels = next(datasets.test.unbatch().batch(6).as_numpy_iterator())
    plots.plot_attention_maps(
        best, images, os.path.join(args.output, "attention_maps.png"), labels=labels.argmax(-1)
    )
    for name, accuracy in zip(datasets.class_names, results["per_class_accuracy"]):
        print(f"  {name}: {accuracy:.2%}")
    print(f"accuracy {results['accuracy']:.2%}; pictures in {args.output}")
    return results


if __name__ == "__main__":
    main()
