"""`run_folder.lock`: one process at a time writes a run folder; a killed one leaves no lock."""

import contextlib
import os
import signal
import subprocess
import sys

import pytest

import keras_astro
from keras_astro.training import run_folder
from tests.test_case import TINY_TRAIN, folder_contents, run_cli_error

HOLDER = """import sys, time
from keras_astro.training import run_folder
with run_folder.lock(sys.argv[1]):
    print("locked", flush=True)
    time.sleep(600)
"""


@contextlib.contextmanager
def held_by_another_process(folder):
    """Yields the process that holds `folder`'s lock until the block ends (SIGKILLed then)."""
    root = os.path.dirname(os.path.dirname(keras_astro.__file__))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH")))))
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline() == "locked\n"
        yield holder
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
        holder.stdout.close()


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    with held_by_another_process(tmp_path) as holder:
        with pytest.raises(ValueError, match=rf"is in use by another keras-astro process \(pid {holder.pid}\)"):
            with run_folder.lock(str(tmp_path)):
                pass
    with run_folder.lock(str(tmp_path)), run_folder.lock(str(tmp_path)):  # re-entrant
        assert (tmp_path / run_folder.LOCK_FILE).read_text() == f"{os.getpid()}\n"
    assert os.listdir(tmp_path) == []  # let go with the file


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
@pytest.mark.parametrize("find_lr", [False, True])
def test_train_into_a_folder_in_use_is_one_line_and_changes_nothing(
    find_lr, image_folder, tmp_path, capsys
):
    output = tmp_path / "run"
    with held_by_another_process(output) as holder:
        before = folder_contents(output)
        message = run_cli_error(
            capsys, "train", "--data-dir", image_folder, *TINY_TRAIN, "--output", output,
            *(["--find-lr"] if find_lr else []),
        )
        assert folder_contents(output) == before
    assert message.count("\n") == 1
    assert f"{output} is in use by another keras-astro process (pid {holder.pid})" in message


def test_a_data_record_of_paths_hashed_as_spelt_is_compared_without_its_fingerprint():
    current = {"class_names": ["a", "b"], "num_train": 9, "num_test": 6, "num_validation": 3,
               "fingerprint": "new", "fingerprint_paths": "relative"}
    legacy = {key: value for key, value in current.items() if key != "fingerprint_paths"}
    assert run_folder.data_differences({**legacy, "fingerprint": "old"}, current) == []
    assert run_folder.data_differences({**legacy, "num_train": 8}, current) == ["num_train 8 then, 9 now"]
    assert run_folder.data_differences({**current, "fingerprint": "old"}, current) == [
        "fingerprint 'old' then, 'new' now"
    ]
    assert run_folder.data_differences(None, current) == []
