"""`predict --output`: one row per object, in order, in chunks that a killed run resumes."""

import csv
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from keras_astro.survey import chunks
from keras_astro.survey.objects import find_objects, shard
from keras_astro.survey.predict import predict_table
from tests.test_case import (
    CLASSES,
    PNG,
    run_cli,
    run_cli_error,
    skip_unless_channels_first_runs,
    tiny_model,
    write_hdf5,
)


class Killed(Exception):
    """What kills a run in these tests, between two chunks."""


COLUMNS = ["path", "class", *(f"p_{name}" for name in CLASSES), "entropy", "error"]


@pytest.fixture(scope="module")
def survey(tmp_path_factory):
    """(model path, model, folder of 21 photos in two sub-folders, the damaged one)."""
    root = tmp_path_factory.mktemp("survey")
    model = tiny_model(class_names=CLASSES)
    model.save(root / "model.keras")
    rng = np.random.default_rng(0)
    for i in range(20):
        folder = root / "images" / ("b" if i % 3 else "a")
        folder.mkdir(parents=True, exist_ok=True)
        pixels = rng.integers(0, 255, (8 + i % 5, 9, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    damaged = root / "images" / "b" / "damaged.png"
    damaged.write_bytes(PNG + b"not really")
    return root / "model.keras", model, root / "images", damaged


def read_table(path):
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def assert_same_rows(rows, expected):
    """Equal rows, but for the last digits of the numbers: another batching rounds otherwise."""
    assert [row.keys() for row in rows] == [row.keys() for row in expected]
    for row, other in zip(rows, expected):
        for key, value in row.items():
            if key.startswith("p_") or key in ("entropy", "tta_spread"):
                assert float(value or "nan") == pytest.approx(float(other[key] or "nan"),
                                                              abs=1e-5, nan_ok=True)
            else:
                assert value == other[key]


def expected_probabilities(model, paths):
    from keras_astro.data.converter import ImageConverter

    converter = ImageConverter.from_model(model)
    images = np.stack([np.asarray(converter.read_file(str(path)), "float32") for path in paths])
    return model.predict(images, verbose=0)


def test_a_folder_gives_one_row_per_file_in_sorted_order(survey, tmp_path, capsys):
    model_path, model, folder, damaged = survey
    output = tmp_path / "table.csv"
    with pytest.raises(SystemExit) as exit_info:
        run_cli("predict", model_path, folder, "--output", output, "--chunk-size", "4")
    assert exit_info.value.code == 2
    assert "1 of 21 file(s) could not be predicted (their error column in" in capsys.readouterr().err
    columns, rows = read_table(output)
    assert columns == COLUMNS
    paths = [row["path"] for row in rows]
    assert paths == sorted(str(path) for path in folder.rglob("*.png"))
    bad = rows[paths.index(str(damaged))]
    assert "Cannot read or decode image file" in bad["error"] and bad["class"] == bad["p_a"] == ""
    good = [row for row in rows if not row["error"]]
    probabilities = np.array([[float(row[f"p_{name}"]) for name in CLASSES] for row in good])
    np.testing.assert_allclose(
        probabilities, expected_probabilities(model, [row["path"] for row in good]), atol=1e-5
    )
    assert [row["class"] for row in good] == [CLASSES[i] for i in probabilities.argmax(-1)]
    entropy = -np.sum(probabilities * np.log(probabilities), axis=-1)
    np.testing.assert_allclose([float(row["entropy"]) for row in good], entropy, rtol=1e-5)
    assert not os.path.exists(f"{output}.parts")


@pytest.mark.parametrize("kill_after", [0, 1, 3])
def test_a_killed_run_resumes_without_a_row_lost_or_repeated(survey, tmp_path, monkeypatch,
                                                              kill_after):
    model_path, model, folder, _ = survey
    objects = find_objects([folder])
    whole = tmp_path / "whole.csv"
    predict_table(model, str(model_path), objects, str(whole), chunk_size=3, progress=False)
    output = str(tmp_path / "resumed.csv")
    write = chunks.CsvTable.write
    written = []

    def killed(self, path, table, arrays=None):
        if len(written) == kill_after:
            raise Killed
        written.append(path)
        write(self, path, table, arrays)

    with monkeypatch.context() as patch:
        patch.setattr(chunks.CsvTable, "write", killed)
        with pytest.raises(Killed):
            predict_table(model, str(model_path), objects, output, chunk_size=3, progress=False)
    assert sorted(os.listdir(f"{output}.parts")) == sorted(
        [chunks.RECORD_FILE] + [os.path.basename(path) for path in written]
    )
    predict_table(model, str(model_path), objects, output, chunk_size=3, progress=False)
    assert read_table(output) == read_table(whole)
    # Another run's rows never mix into an unfinished output.
    written.clear()
    other = str(tmp_path / "other.csv")
    with monkeypatch.context() as patch:
        patch.setattr(chunks.CsvTable, "write", killed)
        with pytest.raises(Killed):
            predict_table(model, str(model_path), objects, other, chunk_size=3, progress=False)
    with pytest.raises(ValueError, match=r"another run \(tta False there, True now\)"):
        predict_table(model, str(model_path), objects, other, tta=True, chunk_size=3,
                      progress=False)


def test_shards_concatenated_are_the_whole(survey, tmp_path):
    model_path, model, folder, _ = survey
    objects = find_objects([folder])
    whole = tmp_path / "whole.csv"
    predict_table(model, str(model_path), objects, str(whole), chunk_size=4, progress=False)
    rows = []
    for i in range(3):
        part = str(tmp_path / f"shard{i}.csv")
        predict_table(model, str(model_path), objects, part, shard=(i, 3), chunk_size=4,
                      progress=False)
        rows += read_table(part)[1]
    assert_same_rows(rows, read_table(whole)[1])
    assert [len(shard(objects, i, 3)) for i in range(3)] == [7, 7, 7]


def test_a_second_process_on_the_same_output_is_refused(survey, tmp_path):
    model_path, model, folder, _ = survey
    output = str(tmp_path / "table.csv")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom keras_astro.training.run_folder import lock"
         "\nwith lock(sys.argv[1]):\n    print('held', flush=True)\n    time.sleep(60)",
         output + chunks.PARTS_SUFFIX],
        stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(pathlib.Path(chunks.__file__).parents[2])},
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(ValueError, match=r"table.csv.parts is in use by another keras-astro"):
            predict_table(model, str(model_path), find_objects([folder]), output, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not os.path.exists(output)


def test_a_catalogue_keeps_its_columns_and_tta_adds_the_spread(survey, tmp_path):
    model_path, model, folder, damaged = survey
    files = sorted(folder.rglob("*.png"))[:5]
    catalog = tmp_path / "catalog.csv"
    with open(catalog, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["ra", "file_loc", "dec"])
        writer.writerows([str(10 + i), os.path.relpath(path, tmp_path), str(-i)]
                         for i, path in enumerate(files))
    output = tmp_path / "table.csv"
    run_cli("predict", model_path, "--catalog", catalog, "--output", output, "--tta")
    columns, rows = read_table(output)
    assert columns == ["ra", "file_loc", "dec", *COLUMNS[1:-1], "tta_spread", "error"]
    assert [row["ra"] for row in rows] == ["10", "11", "12", "13", "14"]
    assert all(float(row["tta_spread"]) >= 0 and not row["error"] for row in rows)


def test_an_hdf5_file_is_predicted_by_row(survey, tmp_path):
    model_path, model, *_ = survey
    images = np.random.default_rng(1).integers(0, 255, (7, 8, 8, 3), dtype=np.uint8)
    write_hdf5(tmp_path / "images.h5", {"images": images})
    output = tmp_path / "table.csv"
    run_cli("predict", model_path, "--data-file", tmp_path / "images.h5", "--output", output,
            "--chunk-size", "3")
    columns, rows = read_table(output)
    assert columns[0] == "row" and [row["row"] for row in rows] == [str(i) for i in range(7)]
    probabilities = np.array([[float(row[f"p_{name}"]) for name in CLASSES] for row in rows])
    np.testing.assert_allclose(probabilities, model.predict(images.astype("float32"), verbose=0),
                               atol=1e-5)


def test_parquet_output(survey, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    model_path, model, folder, _ = survey
    objects = find_objects([folder])
    predict_table(model, str(model_path), objects, str(tmp_path / "t.csv"), chunk_size=8,
                  progress=False)
    predict_table(model, str(model_path), objects, str(tmp_path / "t.parquet"), chunk_size=8,
                  progress=False)
    table = pq.read_table(tmp_path / "t.parquet").to_pydict()
    _, rows = read_table(tmp_path / "t.csv")
    assert list(table) == COLUMNS and table["path"] == [row["path"] for row in rows]
    np.testing.assert_allclose(table["p_b"], [float(row["p_b"] or "nan") for row in rows],
                               rtol=1e-6)


def test_a_channels_first_model_predicts_files_as_channels_last_does(survey, tmp_path):
    import keras

    skip_unless_channels_first_runs()
    model_path, model, folder, _ = survey
    keras.config.set_image_data_format("channels_first")
    try:
        first = tiny_model(input_shape=(3, 8, 8), class_names=CLASSES)
    finally:
        keras.config.set_image_data_format("channels_last")
    first.set_weights(model.get_weights())
    first.save(tmp_path / "first.keras")
    objects = find_objects([folder])
    predict_table(model, str(model_path), objects, str(tmp_path / "last.csv"), tta=True,
                  progress=False)
    predict_table(first, str(tmp_path / "first.keras"), objects, str(tmp_path / "first.csv"),
                  tta=True, progress=False)
    _, last_rows = read_table(tmp_path / "last.csv")
    _, first_rows = read_table(tmp_path / "first.csv")
    for a, b in zip(last_rows, first_rows):
        assert a["class"] == b["class"] and a["error"] == b["error"]
        if not a["error"]:
            np.testing.assert_allclose(float(a["p_a"]), float(b["p_a"]), rtol=1e-4)


@pytest.mark.slow
def test_a_run_killed_by_a_signal_resumes(survey, tmp_path):
    model_path, model, folder, _ = survey
    whole, output = tmp_path / "whole.csv", tmp_path / "table.csv"
    predict_table(model, str(model_path), find_objects([folder]), str(whole), chunk_size=1,
                  progress=False)
    command = [sys.executable, "-m", "keras_astro.cli", "predict", str(model_path), str(folder),
               "--output", str(output), "--chunk-size", "1"]
    env = {**os.environ, "PYTHONPATH": str(pathlib.Path(chunks.__file__).parents[2])}
    run = subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL)
    parts = f"{output}{chunks.PARTS_SUFFIX}"
    while run.poll() is None and not any(name.endswith(".csv") for name in
                                         (os.listdir(parts) if os.path.isdir(parts) else [])):
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait()
    assert not output.exists()
    assert subprocess.run(command, env=env, stderr=subprocess.DEVNULL).returncode == 2  # damaged
    assert_same_rows(read_table(output)[1], read_table(whole)[1])
    assert not os.path.exists(parts)


@pytest.mark.parametrize("command", ["predict", "embed", "similar"])
def test_help_of_the_survey_commands(command, capsys):
    from keras_astro import cli

    with pytest.raises(SystemExit):
        cli.main([command, "--help"])
    text = capsys.readouterr().out
    assert "%(" not in text and ("--output" in text or "--anomaly" in text)


def test_a_text_list_and_a_missing_file(survey, tmp_path, capsys):
    model_path, model, folder, _ = survey
    files = sorted(folder.rglob("*.png"))[:3]
    listed = tmp_path / "files.txt"
    listed.write_text("# cutouts\n" + "".join(f"{os.path.relpath(path, tmp_path)}\n" for path in files)
                      + "\nmissing.png\n")
    output = tmp_path / "table.csv"
    with pytest.raises(SystemExit):
        run_cli("predict", model_path, listed, "--output", output)
    _, rows = read_table(output)
    assert [row["path"] for row in rows] == [*map(str, files), str(tmp_path / "missing.png")]
    assert rows[-1]["error"] == f"No image file at {str(tmp_path / 'missing.png')!r}."
    message = run_cli_error(capsys, "predict", model_path, listed, "--shard", "3/3")
    assert "--shard '3/3': expected I/N with 0 <= I < N" in message


def test_a_folder_names_the_files_it_leaves_out(tmp_path):
    (tmp_path / "cutouts").mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "cutouts" / "a.png")
    (tmp_path / "cutouts" / "catalogue.csv").write_text("a,b\n1,2\n")
    with pytest.warns(UserWarning, match=r"Left out 1 file\(s\) below .*catalogue\.csv"):
        objects = find_objects([tmp_path / "cutouts"])
    assert objects.identifiers == [str(tmp_path / "cutouts" / "a.png")]
