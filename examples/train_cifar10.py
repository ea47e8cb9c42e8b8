"""Train AstroTransformer on CIFAR-10 with the full recipe (meant for a GPU).

    python examples/train_cifar10.py --output runs/cifar10
    KERAS_BACKEND=jax python examples/train_cifar10.py --mixed-precision --distribute

tensorflow-datasets downloads CIFAR-10 on first use. The recipe: the base model with
dropout 0.1, RandAugment, AdamW (peak 2e-3, weight decay 0.05) with 5 warmup epochs and
cosine decay, label smoothing 0.1, batch 128. Killed runs resume when run again with the
same --output. `keras-astro train --model base --dataset cifar10 --augment randaugment`
is the same recipe from the command line.
"""

import argparse
import math
import os

from keras_astro import data


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cifar10", help="a tensorflow-datasets name")
    parser.add_argument("--tfds-data-dir", help="tensorflow-datasets' data directory")
    parser.add_argument("--model", default="base", choices=("small", "base", "large"))
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=128, help="global batch size")
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=2e-3)
    parser.add_argument("--mixed-precision", action="store_true", help="mixed_bfloat16")
    parser.add_argument("--distribute", action="store_true", help="data-parallel on all devices")
    parser.add_argument("--output", default=os.path.join("runs", "cifar10"))
    args = parser.parse_args(argv)

    import keras

    from keras_astro import AstroTransformer, training
    from keras_astro.distribute import data_parallel

    if args.mixed_precision:
        keras.config.set_dtype_policy("mixed_bfloat16")
    keras.utils.set_random_seed(0)
    datasets = data.load_datasets(
        args.dataset,
        image_size=args.image_size,
        batch_size=args.batch_size,
        augment="randaugment",
        data_dir=args.tfds_data_dir,
    )
    with data_parallel(args.distribute) as devices:
        model = AstroTransformer.from_name(
            args.model,
            input_shape=(args.image_size, args.image_size, 3),
            num_classes=datasets.num_classes,
            class_names=datasets.class_names,
            dropout=0.1,
        )
        training.compile_for_training(
            model,
            epochs=args.epochs,
            steps_per_epoch=math.ceil(datasets.num_train / args.batch_size),
            learning_rate=args.learning_rate,
            weight_decay=0.05,
            warmup_epochs=5,
            label_smoothing=0.1,
        )
        print(f"Training {model.name} on {devices} device(s)")
        training.fit(model, datasets, epochs=args.epochs, output_dir=args.output)

    best = keras.saving.load_model(os.path.join(args.output, training.CHECKPOINT_FILE))
    results = training.evaluate(best, datasets.test)
    print(f"{args.dataset} {datasets.test_split}: accuracy {results['accuracy']:.2%}")
    return results


if __name__ == "__main__":
    main()
