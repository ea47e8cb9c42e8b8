"""Train AstroTransformer on CIFAR-10 with the full recipe (meant for a GPU).

    python examples/train_cifar10.py --output runs/cifar10
    KERAS_BACKEND=jax python examples/train_cifar10.py --mixed-precision --distribute

tensorflow-datasets downloads CIFAR-10 on first use. The recipe: the base model with
dropout 0.1, RandAugment, AdamW (peak 2e-3, weight decay 0.05) with 5 warmup epochs and
cosine decay, label smoothing 0.1, batch 128. Killed runs resume when run again with the
same --output. `keras-astro train --model base --dataset cifar10 --augment randaugment
--warmup-epochs 5 --dropout 0.1 --batch-size 128 --learning-rate 2e-3 --epochs 100` is
the same experiment from the command line.
"""

import argparse
import os

from keras_astro.training import ExperimentConfig, run_experiment


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

    config = ExperimentConfig(
        source=args.dataset,
        tfds_data_dir=args.tfds_data_dir,
        model=args.model,
        epochs=args.epochs,
        batch_size=args.batch_size,
        image_size=args.image_size,
        learning_rate=args.learning_rate,
        warmup_epochs=5,
        dropout=0.1,
        augment="randaugment",
        mixed_precision="bfloat16" if args.mixed_precision else None,
        distribute=args.distribute,
    )
    return run_experiment(config, args.output)


if __name__ == "__main__":
    main()
