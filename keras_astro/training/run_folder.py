"""The files of a run folder, and the one place that decides what state a run is in.

`fit` writes the model, history, logs and a backup while it trains; an experiment
(`run_experiment`, the CLI's `train`) adds its configuration first and its metrics
last. A run whose training finished has its history and no backup; an experiment
is finished once its metrics are written. One process at a time writes a run folder
(`lock`).
"""

import contextlib
import json
import os

from keras_astro.utils import write_json

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None
    import msvcrt

CHECKPOINT_FILE = "model.keras"
HISTORY_FILE = "history.csv"
BACKUP_DIR = "backup"
LOGS_DIR = "logs"
CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.json"
LR_FINDER_FILE = "lr_finder.png"
# Locked by the process that writes the folder while it does; holds its pid.
LOCK_FILE = ".keras-astro.lock"
# What a finished experiment's metrics.json always holds (its summary line reads them).
METRICS_KEYS = (
    "model", "dataset", "test_split", "num_test", "test_accuracy", "test_balanced_accuracy",
    "test_loss", "epochs", "backend", "devices", "images_per_second", "wall_time_s",
)

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
    if os.path.isdir(output_dir) and set(os.listdir(output_dir)) - {LR_FINDER_FILE, LOCK_FILE}:
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
        "num_validation": datasets.num_validation,
        "fingerprint": datasets.fingerprint,
        # Since file paths were hashed below their common folder (`data.folders`);
        # records without this key hashed the paths as spelt and are not compared.
        "fingerprint_paths": "relative",
    }


def data_differences(recorded, current):
    """"key <then> then, <now> now" for each way the `data_record` `current` differs
    from `recorded` (`None`: a run written before the record existed, not checked)."""
    if recorded is None:
        return []
    keys = list(current)
    if "fingerprint_paths" not in recorded:
        keys = [key for key in keys if key not in ("fingerprint", "fingerprint_paths")]
    return [
        f"{key} {recorded.get(key)!r} then, {current[key]!r} now"
        for key in keys if recorded.get(key) != current[key]
    ]


def resume(output_dir, datasets):
    """Checks that the run in `output_dir` goes on with the data it started with; says so.

    A renamed class folder, an added or removed file or a changed label would otherwise
    continue training with shifted class ids, silently: refused. A run that finished no
    epoch (its first one failed, on a bad file say) has nothing to lose, so it starts
    over on the current data instead. Runs written before the record existed are not
    checked.
    """
    config_path = os.path.join(output_dir, CONFIG_FILE)
    with open(config_path) as f:
        config = json.load(f)
    current = data_record(datasets)
    differences = data_differences(config.get(DATA_KEY), current)
    if not differences:
        print(f"Resuming the run in {output_dir}")
    elif not _finished_an_epoch(output_dir):
        write_json(config_path, {**config, DATA_KEY: current})
        print(
            f"Starting the run in {output_dir} over: the data changed since it started "
            f"({'; '.join(differences)}) and no epoch had finished."
        )
    else:
        raise ValueError(
            f"The data changed since the run in {output_dir} started ({'; '.join(differences)}). "
            "Resuming would train the saved model on other examples or class ids. Nothing was "
            "changed: restore the data, or train into another --output."
        )


def _finished_an_epoch(output_dir):
    """Whether `fit` left anything to resume: a checkpoint, a backup or a row of history.

    An epoch's end writes its history row first; a first epoch that failed leaves an
    empty history and backup.
    """
    backup = os.path.join(output_dir, BACKUP_DIR)
    if os.path.exists(os.path.join(output_dir, CHECKPOINT_FILE)) or (
        os.path.isdir(backup) and os.listdir(backup)
    ):
        return True
    history = os.path.join(output_dir, HISTORY_FILE)
    if not os.path.exists(history):
        return False
    with open(history) as f:
        return sum(1 for line in f if line.strip()) > 1  # more than the header


def read_metrics(output_dir):
    """A finished experiment's metrics; a `ValueError` naming the file if it is damaged."""
    path = os.path.join(output_dir, METRICS_FILE)
    try:
        with open(path) as f:
            metrics = json.load(f)
        problem = None if isinstance(metrics, dict) else "not a JSON object"
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        problem = f"not JSON: {error}"
    if problem is None:
        missing = [key for key in METRICS_KEYS if metrics.get(key) is None]
        problem = missing and f"no {', '.join(missing)}"
    if problem:
        raise ValueError(
            f"{path} is damaged ({problem}); expected the metrics a finished keras-astro run "
            "writes. Delete that file and run the same command again to evaluate the saved "
            "model anew."
        )
    return metrics


@contextlib.contextmanager
def lock(output_dir):
    """Holds `output_dir` for this process while the block runs; creates the folder if needed.

    Two processes writing one run folder interleave their history rows and backups and
    lose the run, so a second one is refused with a `ValueError` and changes nothing.
    The lock is the operating system's (`flock`; `msvcrt.locking` on Windows) on a file
    that holds the holder's pid, so a killed holder never leaves a stale one. A folder
    made here that is still empty at the end (the data did not load, say) is removed.
    Re-entrant in the process that holds it.
    """
    key = os.path.realpath(output_dir)
    if key in _held:
        yield
        return
    made = not os.path.isdir(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, LOCK_FILE)
    try:
        fd = _take(path, output_dir)
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            _held.add(key)
            yield
        finally:
            _held.discard(key)
            if fcntl is not None:  # Windows cannot remove an open file; the next holder reuses it
                os.remove(path)
            os.close(fd)  # releases the lock
    finally:
        if made:
            with contextlib.suppress(OSError):  # not empty: the run wrote there
                os.rmdir(output_dir)


# The run folders this process holds (`lock`), by real path.
_held = set()


def _take(path, output_dir):
    """Opens and locks `path`, without waiting; returns its descriptor.

    A holder removes the file before it lets go, so a lock taken on a file that is no
    longer at `path` is let go and taken again on the file now there.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            else:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
        except OSError:
            os.close(fd)
            raise ValueError(
                f"{output_dir} is in use by another keras-astro process (pid "
                f"{_read_pid(path)}) that writes that run folder. Nothing was changed: wait "
                "for it to end (or stop it), or choose another --output."
            ) from None
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _read_pid(path):
    try:
        with open(path) as f:
            return int(f.read().strip())
    except (OSError, ValueError):
        return "unknown"
