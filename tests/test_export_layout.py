"""The export folder: never the current directory by accident, one format, no stale scratch."""

import importlib.util
import os
import time

import pytest

from keras_astro import export
from keras_astro.export import export_for_serving
from tests.test_case import run_cli_error, tiny_model


def test_an_empty_export_dir_is_refused(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    message = run_cli_error(capsys, "export", "model.keras", "")
    assert "Expected the path of the model's export directory" in message
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("format, other", [("saved_model", "onnx"), ("onnx", "saved_model")])
def test_one_format_per_model_folder(tmp_path, format, other):
    if format == "onnx" and importlib.util.find_spec("tf2onnx") is None:
        pytest.skip("the ONNX export needs tf2onnx")
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / export.FORMAT_FILES[other]).write_bytes(b"")
    with pytest.raises(ValueError, match=f"holds {other} versions .*choose another export directory"):
        export_for_serving(tiny_model(), tmp_path, format=format)
    assert os.listdir(tmp_path) == ["1"]


def test_scratch_folders_of_killed_exports_are_removed_after_an_hour(tmp_path):
    old = tmp_path / f".tmp-1-x8k2p0qa{export.SCRATCH_SUFFIX}"
    fresh = tmp_path / f".tmp-2-m3b7zz1c{export.SCRATCH_SUFFIX}"
    users = tmp_path / ".tmp-notes"  # an old folder of the user's, not the exporter's
    for folder in (old, fresh, users):
        (folder / "export").mkdir(parents=True)
    hours_ago = time.time() - 2 * export.STALE_SCRATCH_SECONDS
    for path in (old / "export", old, users / "export", users):
        os.utime(path, (hours_ago, hours_ago))
    export._remove_stale_scratch(str(tmp_path))
    assert sorted(os.listdir(tmp_path)) == sorted([fresh.name, users.name])
