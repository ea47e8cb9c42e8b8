import json
import os
import signal
import subprocess
import sys
import time

import keras
import pytest

from keras_astro.cli.arguments import BACKENDS
from tests.test_case import run_cli


@pytest.mark.slow
def test_demo_killed_midway_resumes_after_its_last_finished_epoch(tmp_path):
    """The demo (reduced: 8x8 digits, 2 epochs) killed with SIGKILL, then run again."""
    backend = keras.backend.backend()
    demo = ["demo", "--output", str(tmp_path), "--epochs", "2", "--image-size", "8"]
    # --backend must win over KERAS_BACKEND, which Keras reads when it is imported.
    other = next(name for name in BACKENDS if name != backend)
    process = subprocess.Popen(
        [sys.executable, "-m", "keras_astro.cli", *demo, "--backend", backend],
        env={**os.environ, "KERAS_BACKEND": other},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    first_epoch_backed_up = tmp_path / "backup" / "epoch-00001"
    while not first_epoch_backed_up.exists():
        if process.poll() is not None:
            pytest.fail(f"the demo stopped before its first epoch: {process.stderr.read().decode()}")
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    process.stderr.close()
    assert not (tmp_path / "metrics.json").exists()
    keras.saving.load_model(tmp_path / "model.keras")  # whole, whenever the kill came

    stdout = run_cli(*demo)
    assert stdout.startswith(f"keras-astro demo: resuming the run in {tmp_path}:")
    assert "Resuming" in stdout and "Epoch 1/2" not in stdout and "Epoch 2/2" in stdout
    assert "Reloaded" in stdout and "test image 7:" in stdout and "Demo done" in stdout
    with open(tmp_path / "history.csv") as f:
        assert [line.split(",")[0] for line in f.read().split()] == ["epoch", "0", "1"]
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert (metrics["dataset"], metrics["num_train"], metrics["num_test"]) == ("digits", 1293, 360)
    assert metrics["num_validation"] == 144
    assert metrics["backend"] == backend and metrics["epochs_this_run"] == 1
    # Run again: it says first that it reads the finished run, and trains nothing.
    stdout = run_cli(*demo)
    assert stdout.startswith(f"keras-astro demo: reading the finished run in {tmp_path}")
    assert "Epoch" not in stdout and "Demo done" in stdout


def test_each_backend_has_its_own_default_demo_folder(tmp_path, monkeypatch):
    """`demo --backend torch` after the default demo is a run of its own, not a refused folder."""
    import argparse

    from keras_astro.cli import demo
    from keras_astro.training import experiment

    class Stop(Exception):
        pass

    def stop(config, output_dir):
        raise Stop(output_dir)

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(experiment, "run_experiment", stop)
    parser = argparse.ArgumentParser()
    demo.add_arguments(parser)
    with pytest.raises(Stop) as stopped:
        demo.run(parser.parse_args([]))
    assert str(stopped.value) == os.path.join("runs", f"demo-{keras.backend.backend()}")
