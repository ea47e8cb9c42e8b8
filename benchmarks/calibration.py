"""Calibration of finished `keras-astro train` runs: before and after temperature scaling.

For each run folder (model.keras and config.json), rebuilds the run's data exactly as
`keras-astro train` did (its config, seed and validation split; the data record in
config.json must match), fits the temperature on the validation split with the function
that training uses, and scores the test split with and without it:

    python benchmarks/calibration.py runs/frdeep-s0 runs/frdeep-s1 runs/rings-s0

Prints one markdown row per run: test size, temperature, accuracy, ECE (15 equal-width
bins), NLL and Brier score before and after, the ECE that noise alone gives a calibrated
model on that test set and the p-values of the ECE before and after against it
(`training.calibration.ece_by_chance`), the ECE with the temperature fitted on the test
split itself (not a method: what temperature scaling gives when its fit is perfect), and the
accuracy of the most confident 50% of the test objects after calibration. Writes nothing.
"""

import argparse
import dataclasses
import json
import os

HEADER = (
    "| run | test | T | accuracy before / after | ECE before / after | ECE by noise alone (p before / after) "
    "| ECE, T fitted on test | NLL before / after | Brier before / after | accuracy, most confident 50% |\n"
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
)


def run_config(run_dir):
    """The `ExperimentConfig` that trained `run_dir`, and its config.json."""
    from keras_astro.training import run_folder
    from keras_astro.training.experiment import LEGACY_VALUES, ExperimentConfig

    path = os.path.join(run_dir, run_folder.CONFIG_FILE)
    if not os.path.isfile(os.path.join(run_dir, run_folder.CHECKPOINT_FILE)) or not os.path.isfile(path):
        raise ValueError(f"{run_dir} is not a keras-astro train run folder (model.keras, config.json).")
    with open(path) as f:
        saved = json.load(f)
    fields = {field.name for field in dataclasses.fields(ExperimentConfig)}
    values = {k: v for k, v in {**LEGACY_VALUES, **saved}.items() if k in fields}
    if values.get("class_names") is not None:
        values["class_names"] = tuple(values["class_names"])
    return ExperimentConfig(**values), saved


def score_run(run_dir):
    """The markdown row of one run folder."""
    from keras_astro.models.calibration import with_temperature
    from keras_astro.models.saving import load_model
    from keras_astro.training import run_folder
    from keras_astro.training.calibration import (
        accuracy_coverage,
        calibrate_model,
        calibration_scores,
        expected_calibration_error,
    )
    from keras_astro.training.evaluation import dataset_labels, predict_probabilities
    from keras_astro.training.experiment import _seeded_datasets

    config, saved = run_config(run_dir)
    datasets = _seeded_datasets(config)
    recorded = saved.get(run_folder.DATA_KEY)
    if run_folder.data_differences(recorded, run_folder.data_record(datasets)):
        raise ValueError(f"The data of {run_dir} changed since it trained: cannot rebuild its splits.")
    uncalibrated = with_temperature(load_model(os.path.join(run_dir, run_folder.CHECKPOINT_FILE)), None)
    calibrated = calibrate_model(uncalibrated, datasets.validation)
    bound = calibrate_model(uncalibrated, datasets.test)
    labels = dataset_labels(datasets.test).argmax(-1)
    before, after, best = (
        predict_probabilities(m, datasets.test) for m in (uncalibrated, calibrated, bound)
    )
    scores = [calibration_scores(p, labels) for p in (before, after)]
    accuracy = [float((p.argmax(-1) == labels).mean()) for p in (before, after)]
    half = accuracy_coverage(after, labels, coverages=(0.5,))[0]["accuracy"]

    def pair(key, form):
        return f"{scores[0][key]:{form}} / {scores[1][key]:{form}}"

    return (
        f"| {os.path.basename(os.path.normpath(run_dir))} | {len(labels)} | "
        f"{'-' if calibrated.temperature is None else f'{calibrated.temperature:.3f}'} | "
        f"{accuracy[0]:.2%} / {accuracy[1]:.2%} | "
        f"{pair('ece', '.3f')} | {scores[1]['ece_chance']:.3f} ({pair('ece_p_value', '.2f')}) | "
        f"{expected_calibration_error(best, labels):.3f} | "
        f"{pair('nll', '.3f')} | {pair('brier', '.3f')} | {half:.2%} |"
    )


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="finished train runs")
    args = parser.parse_args(argv)
    rows = [score_run(run_dir) for run_dir in args.run_dirs]
    print(HEADER)
    print("\n".join(rows))


if __name__ == "__main__":
    main()
