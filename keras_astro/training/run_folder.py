"""The files of a run folder, and the one place that decides what state a run is in.

`fit` writes the model, history, logs and a backup while it trains; an experiment
(`run_experiment`, the CLI's `train`) adds its configuration first and its metrics
last. A run whose training finished has its history and no backup; an experiment
is finished once its metrics are written.
"""

import json
import os

CHECKPOINT_FILE = "model.keras"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LR_FINDER_FILE = "lr_finder.png"

NEW, RESUME, FINISHED = "new", "resume", "finished"
# The key of config.json that describes the data a run started with (`data_record`).
DATA_KEY = "data"


def training_finished(output_dir):
    """Whether `fit` completed in `output_dir`: its history is there and its backup is gone."""
    return os.path.exists(os.path.join(output_dir, HISTORY_FILE)) and not os.path.isdir(
        os.path.join(output_dir, BACKUP_DIR)
    )


def experiment_state(output_dir, config, defaults=None):
    """`NEW`, `RESUME` or `FINISHED` for an experiment of `config` in `output_dir`.

    Refuses, with a `ValueError` that lists the differences, a folder that holds a run
    of another configuration or files of no run. Writes nothing. `defaults` fills keys
    that a configuration written by an older version lacks.
    """
    config_path = os.path.join(output_dir, CONFIG_FILE)
    if os.path.exists(config_path):
        try:
            with open(config_path) as f:
                previous = {**(defaults or {}), **json.load(f)}
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError) as error:
            raise ValueError(
                f"{config_path} is unreadable ({error}); expected the JSON object a "
                "keras-astro run writes. Nothing was changed: choose another --output, or "
                "delete that folder to start over."
            ) from None
        finished = os.path.exists(os.path.join(output_dir, METRICS_FILE))
        previous.pop(DATA_KEY, None)
        if previous != config:
            differences = "; ".join(
                f"{key} {previous.get(key)!r} there, {config.get(key)!r} now"
                for key in sorted(set(previous) | set(config))
                if previous.get(key) != config.get(key)
            )
            raise ValueError(
                f"{output_dir} holds {'a finished' if finished else 'an unfinished'} run of "
                f"another configuration ({differences}). Nothing was changed: choose "
                "another --output, or delete that folder to start over."
            )
        return FINISHED if finished else RESUME
    # A learning-rate range test (`--find-lr`) may have drawn its plot there first.
    if os.path.isdir(output_dir) and set(os.listdir(output_dir)) - {LR_FINDER_FILE}:
        raise ValueError(
            f"{output_dir} is not empty and holds no keras-astro run ({CONFIG_FILE} is "
            "missing). Nothing was changed: choose another --output."
        )
    return NEW


def data_record(datasets):
    """What config.json keeps of the data: enough to tell that it changed."""
    return {
        "class_names": list(datasets.class_names),
        "num_train": datasets.num_train,
        "num_test": datasets.num_test,
        "fingerprint": datasets.fingerprint,
    }


def check_same_data(output_dir, datasets):
    """Refuses to resume a run on data other than the data it started with.

    A renamed class folder, an added or removed file or a changed label would
    otherwise continue training with shifted class ids, silently. Runs written
    before the record existed are not checked.
    """
    with open(os.path.join(output_dir, CONFIG_FILE)) as f:
        recorded = json.load(f).get(DATA_KEY)
    if recorded is None:
        return
    current = data_record(datasets)
    differences = [
        f"{key} {recorded.get(key)!r} then, {current[key]!r} now"
        for key in current
        if recorded.get(key) != current[key]
    ]
    if differences:
        raise ValueError(
            f"The data changed since the run in {output_dir} started ({'; '.join(differences)}). "
            "Resuming would train the saved model on other examples or class ids. Nothing was "
            "changed: restore the data, or train into another --output."
        )


def read_metrics(output_dir):
    with open(os.path.join(output_dir, METRICS_FILE)) as f:
        return json.load(f)
