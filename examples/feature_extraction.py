"""Reuse a trained AstroTransformer on new classes: include_top=False plus a new head.

    keras-astro train --dataset cifar10 --output runs/cifar10
    python examples/feature_extraction.py runs/cifar10/model.keras --data-dir DIR

Stage 1 trains only the new head on the frozen backbone's pooled features; stage 2
unfreezes the backbone and fine-tunes everything at a 10x lower learning rate. The
backbone always runs in inference mode (`training=False`), so its BatchNorm statistics
stay those it was trained with.
"""

import argparse
import math
import os

from keras_astro import data
from keras_astro.cli.command import hide_native_logs


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a classifier saved by `keras-astro train` (.keras)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--data-dir", help="image folder of the new classes")
    source.add_argument("--dataset", help="'digits' or a tensorflow-datasets name")
    parser.add_argument("--head-epochs", type=int, default=5)
    parser.add_argument("--fine-tune-epochs", type=int, default=5)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--output", default=os.path.join("runs", "feature-extraction"))
    args = parser.parse_args(argv)

    import keras

    from keras_astro import AstroTransformer, training

    # The same architecture without its classifier, holding the trained weights.
    trained = keras.saving.load_model(args.weights, compile=False)
    config = trained.get_config()
    config.update(include_top=False, pooling="avg", class_names=None, name="backbone")
    backbone = AstroTransformer.from_config(config)
    for layer in backbone.layers:
        if layer.weights:
            layer.set_weights(trained.get_layer(layer.name).get_weights())

    height, width, _ = backbone.image_shape
    datasets = data.load_datasets(
        args.data_dir or args.dataset, image_size=height, batch_size=args.batch_size, augment="basic"
    )
    inputs = keras.Input(backbone.image_shape, name="images")
    features = backbone(inputs, training=False)
    features = keras.layers.Dropout(0.2)(features)
    outputs = keras.layers.Dense(datasets.num_classes, activation="softmax", name="new_head")(features)
    model = keras.Model(inputs, outputs)
    steps = math.ceil(datasets.num_train / args.batch_size)

    stages = (
        ("head", False, args.head_epochs, args.learning_rate),
        ("fine_tune", True, args.fine_tune_epochs, args.learning_rate / 10),
    )
    for name, trainable, epochs, learning_rate in stages:
        backbone.trainable = trainable  # compile after changing it: it takes effect then
        training.compile_for_training(
            model, epochs=epochs, steps_per_epoch=steps, learning_rate=learning_rate
        )
        training.fit(model, datasets, epochs=epochs, output_dir=os.path.join(args.output, name))
        results = training.evaluate(model, datasets.test)
        print(f"after {name}: {datasets.test_split} accuracy {results['accuracy']:.2%} "
              f"({len(model.trainable_weights)} trainable weight tensors)")
    return results


if __name__ == "__main__":
    hide_native_logs()
    main()
