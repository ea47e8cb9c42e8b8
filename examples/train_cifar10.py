"""Train AstroTransformer on CIFAR-10 with the full recipe (meant for a GPU).

    python examples/train_cifar10.py --output runs/cifar10
    KERAS_BACKEND=jax python examples/train_cifar10.py --mixed-precision --distribute

tensorflow-datasets downloads CIFAR-10 on first use. The recipe: the base model with
dropout 0.1, RandAugment, AdamW (peak 2e-3, weight decay 0.05) with 5 warmup epochs and
cosine decay, label smoothing 0.1, batch 128, 100 epochs. Every `keras-astro train`
option works here too (`--help`); killed runs resume when run again with the same
--output.
"""

import os

from keras_astro.cli.command import hide_native_logs
from keras_astro.cli.train import experiment_config, recipe_parser
from keras_astro.training import run_experiment

RECIPE = dict(
    dataset="cifar10", model="base", epochs=100, batch_size=128, learning_rate=2e-3,
    warmup_epochs=5.0, dropout=0.1, augment="randaugment", output=os.path.join("runs", "cifar10"),
)


def main(argv=None):
    args = recipe_parser(__doc__.splitlines()[0], **RECIPE).parse_args(argv)
    return run_experiment(experiment_config(args), args.output)


if __name__ == "__main__":
    hide_native_logs()
    main()
