"""The scripted kill trial: `keras-astro train` killed at random moments, then rerun.

Each rerun must pick up where the killed one left off, and the run must end with the
history and test metrics of one that was never interrupted. The kill times come from
a seed printed on failure; `KILL_TRIAL_SEED=N` replays a trial.
"""

import json
import os
import random
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from keras_astro import training
from tests.test_case import run_cli

# The FITS folder (flux, NaN blanks) for three epochs of dihedral augmentation and
# dropout: the shuffle order, the augmentation and the dropout draws vary by epoch.
TRIAL = ("--model", "small", "--image-size", "8", "--epochs", "3", "--batch-size", "4",
         "--center-crop", "0.5", "--augment", "dihedral", "--class-weight", "balanced",
         "--dropout", "0.3")
KILLS = 3


def train_process(data_dir, output):
    return subprocess.Popen(
        [sys.executable, "-m", "keras_astro.cli", "train", "--data-dir", str(data_dir), *TRIAL,
         "--output", str(output), "--backend", keras.backend.backend()],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


@pytest.mark.slow
def test_runs_killed_at_random_moments_end_as_the_uninterrupted_run(fits_folder, tmp_path):
    seed = int(os.environ.get("KILL_TRIAL_SEED", random.randrange(10**6)))
    rng = random.Random(seed)
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    started = time.perf_counter()
    run_cli("train", "--data-dir", fits_folder, *TRIAL, "--output", straight)
    # A process also imports the frameworks before it trains: a few seconds more.
    run_seconds = time.perf_counter() - started + 5

    kills = []
    for _ in range(KILLS):
        delay = rng.uniform(0.5, run_seconds)
        process = train_process(fits_folder, killed)
        try:
            process.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            process.send_signal(signal.SIGKILL)
            process.wait()
            kills.append(round(delay, 2))
        stderr = process.stderr.read().decode()
        process.stderr.close()
        if process.returncode == 0:
            break
        assert process.returncode == -signal.SIGKILL, f"seed {seed}, kills {kills}: {stderr}"
    process = train_process(fits_folder, killed)
    _, stderr = process.communicate(timeout=600)
    assert process.returncode == 0, f"seed {seed}, kills {kills}: {stderr.decode()}"

    context = f"KILL_TRIAL_SEED={seed}, killed after {kills} s"
    expected = training.load_history(straight / training.HISTORY_FILE)
    received = training.load_history(killed / training.HISTORY_FILE)
    assert [row["epoch"] for row in received] == [0, 1, 2], context
    for want, got in zip(expected, received):
        for key in want:
            np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f"{key}; {context}")
    want, got = (json.loads((path / "metrics.json").read_text()) for path in (straight, killed))
    for key in ("test_accuracy", "test_balanced_accuracy", "test_loss", "test_accuracy_tta", "best_epoch"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-5, err_msg=f"{key}; {context}")
    assert not (killed / training.BACKUP_DIR).exists(), context
    assert not [name for name in os.listdir(killed) if name.endswith(".partial")], context
