"""The shipped preset `frdeep_first_small`: train it (or take a finished run) and package it.

Trains AstroTransformer small on FR-DEEP's FIRST cutouts with exactly the configuration of

    keras-astro train --data-dir ../shared/data/frdeep-first --center-crop 0.5 \\
        --augment dihedral --image-size 32 --learning-rate 0.002 --seed 0 --output RUN_DIR

(the test split held out; a killed run resumes; 0.002 is the shipped weights' peak learning
rate, `train`'s default before it followed the batch size), then writes the run's best model
(`model.keras`) and scores (`metrics.json`) as a preset with its model card:

    python benchmarks/frdeep_preset.py --data-dir ../shared/data/frdeep-first \\
        --run-dir runs/preset-frdeep --preset-dir keras_astro/presets/frdeep_first_small

A run folder that holds metrics.json is packaged as it is, without training, so the
card's test scores are those of the shipped weights.
"""

import argparse
import json
import os

COMMAND = (
    "keras-astro train --data-dir ../shared/data/frdeep-first --center-crop 0.5 "
    "--augment dihedral --image-size 32 --learning-rate 0.002 --seed 0"
)
TRAINING_DATA = {
    "name": "FR-DEEP v2, FIRST images",
    "reference": "Tang, Scaife & Leahy 2019, MNRAS 488, 3358",
    "survey": "FIRST (VLA, 1.4 GHz), about 5 arcsec beam",
    "cutouts": "150x150 pixels at 1.8 arcsec/pixel, Jy/beam, as SkyView serves them",
    "classes": "FRI, FRII (Fanaroff-Riley; labels from the FRICAT and CoNFIG catalogues)",
}
RECIPE_KEYS = (
    "model", "epochs", "learning_rate", "weight_decay", "warmup_fraction", "label_smoothing",
    "augment", "image_size", "center_crop", "seed",
)
METRIC_KEYS = (
    "test_accuracy", "test_balanced_accuracy", "test_loss", "test_accuracy_tta",
    "test_balanced_accuracy_tta", "test_time_augmentation", "test_accuracy_one_view",
    "test_balanced_accuracy_one_view", "temperature", "test_ece", "test_ece_uncalibrated",
    "per_class_accuracy", "num_train", "num_validation",
    "num_test", "best_epoch", "epochs", "batch_size", "backend", "keras_version",
)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-dir", default="../shared/data/frdeep-first")
    parser.add_argument("--run-dir", default="runs/preset-frdeep")
    parser.add_argument(
        "--preset-dir",
        default=os.path.join(os.path.dirname(__file__), "..", "keras_astro", "presets", "frdeep_first_small"),
    )
    args = parser.parse_args(argv)
    if not os.path.exists(os.path.join(args.run_dir, "metrics.json")):
        train(args.data_dir, args.run_dir)
    folder = package(args.run_dir, args.preset_dir)
    size = sum(os.path.getsize(os.path.join(folder, name)) for name in os.listdir(folder))
    print(f"Preset written to {folder} ({size / 1e6:.2f} MB)")


def train(data_dir, run_dir):
    from keras_astro.training import ExperimentConfig, run_experiment

    config = ExperimentConfig(
        source=data_dir, center_crop=0.5, augment="dihedral", image_size=32,
        learning_rate=2e-3, seed=0,
    )  # every other field at `keras-astro train`'s default
    run_experiment(config, run_dir)


def package(run_dir, preset_dir):
    """Writes the run's model and scores as a preset; reads only what every run folder holds."""
    from keras_astro.models.saving import load_model

    with open(os.path.join(run_dir, "metrics.json")) as f:
        metrics = json.load(f)
    with open(os.path.join(run_dir, "config.json")) as f:
        config = json.load(f)
    model = load_model(os.path.join(run_dir, "model.keras"))
    metadata = {
        "training_data": {
            **TRAINING_DATA,
            "split": "the data set's published train/test split; the epoch chosen on a "
            "fixed, stratified 10% of train",
        },
        "recipe": {
            **{key: config[key] for key in RECIPE_KEYS if key in config},
            "batch_size": metrics["batch_size"],
            "command": COMMAND,
        },
        "metrics": {key: metrics[key] for key in METRIC_KEYS if key in metrics},
    }
    return model.save_to_preset(preset_dir, metadata=metadata, card=card(model, metrics, config))


def _finishing(metrics):
    """The card's sentence on what `train` did after training, as its metrics record it."""
    views = metrics.get("test_time_augmentation")
    temperature = metrics.get("temperature")
    parts = ([f"averages each cutout's 8 rotations and reflections ({views})"] if views else []) + (
        [f"divides its logits by the temperature {temperature:.3f} fitted on the validation cutouts"]
        if temperature is not None else []
    )
    return f"The model {' and '.join(parts)}.\n" if parts else ""


def card(model, metrics, config):
    """The preset's README.md: what it is, what it was trained on, how well, what not for."""
    tta = metrics.get("test_accuracy_tta")
    one_view = metrics.get("test_accuracy_one_view")
    views = " (the average of its 8 rotations and reflections)" if one_view is not None else ""
    ece = metrics.get("test_ece")
    scores = (
        f"| test accuracy{views} | {metrics['test_accuracy']:.1%} |\n"
        f"| test balanced accuracy | {metrics['test_balanced_accuracy']:.1%} |\n"
        + (
            f"| test accuracy, one view | {one_view:.1%} |\n" if one_view is not None
            else "" if tta is None else f"| test accuracy, 8-view TTA | {tta:.1%} |\n"
        )
        + f"| test cross-entropy | {metrics['test_loss']:.3f} |\n"
        + (
            "" if ece is None or metrics.get("temperature") is None
            else f"| test ECE, temperature {metrics['temperature']:.2f} (without) | "
            f"{ece:.3f} ({metrics['test_ece_uncalibrated']:.3f}) |\n"
        )
    )
    return f"""# frdeep_first_small

AstroTransformer `small` ({model.count_params():,} parameters) that classifies radio
galaxies in FIRST 1.4 GHz cutouts as Fanaroff-Riley type I or II (classes
{model.class_names}), shipped with keras-astro.

```python
from keras_astro import AstroTransformer
model = AstroTransformer.from_preset("frdeep_first_small")      # offline
probabilities = model.predict(flux)   # flux: (batch, 32, 32, 1) Jy/beam, NaN allowed
```

`keras-astro predict`, `evaluate` and `export` take full 150x150 cutouts (the crop and the
resize are part of the model's settings). To fine-tune on your own radio cutouts:
`keras-astro train --data-dir DIR --init-from frdeep_first_small` (docs/fine_tuning.md).

## Input

- FIRST images (VLA B configuration, 1.4 GHz, about 5 arcsec beam) in Jy/beam, one band.
- The source centred; trained on 150x150 cutouts at 1.8 arcsec/pixel whose central 0.5 of
  each side (75x75, 2.25 arcmin) is resized to 32x32.
- `flux` input: each cutout scaled by its own background and noise (median, MAD), arcsinh
  stretched and standardized inside the model (per-image normalisation).

## Training data

FR-DEEP v2 (Tang, Scaife & Leahy 2019, MNRAS 488, 3358, "Transfer learning for radio
galaxy classification"), FIRST cutouts, labels from the FRICAT and CoNFIG catalogues, its
published train/test split less the 80 sources also in MiraBest:
{metrics['num_train']} training and {metrics['num_validation']} validation cutouts (a fixed,
stratified 10% of train that chose the epoch), {metrics['num_test']} test cutouts (58 FRI,
115 FRII) that chose nothing.

## Recipe

`{COMMAND}`: {metrics['epochs']} epochs, batch {metrics['batch_size']}, AdamW (peak learning rate
{config['learning_rate']:g}, weight decay {config['weight_decay']:g}) with a warmup over
{config['warmup_fraction']:.0%} of the steps and cosine decay, label smoothing
{config['label_smoothing']:g}, the 8 symmetries of the square plus random shifts; the epoch of lowest validation loss (epoch
{metrics['best_epoch']}) is kept. Trained with {metrics['backend']}, Keras {metrics['keras_version']}.
{_finishing(metrics)}`benchmarks/frdeep_preset.py` reruns it.

## Results on the {metrics['num_test']} test cutouts (the shipped weights)

| | |
| --- | --- |
{scores}
One test cutout is {1 / metrics['num_test']:.1%} of the accuracy.

## Not for

- Optical, infrared or other photographs; 8-bit images (`pixels` input).
- Other frequencies, resolutions or surveys (LOFAR, NVSS, VLASS, MeerKAT) without
  fine-tuning: the model learnt FIRST's beam and noise.
- Sources much larger than the crop (over about 2 arcmin) or not centred: the model sees
  the central 75x75 pixels only.
- Classes other than FRI/FRII (compact, bent, hybrid sources): every input gets one of the
  two; fine-tune with your own classes.
- Science claims without checking on your own labelled sources: 173 test cutouts give
  several points of uncertainty.
"""


if __name__ == "__main__":
    main()
