"""`embed`'s pooled features, `similar`'s neighbours and anomaly scores."""

import csv

import keras
import numpy as np
import pytest

from keras_astro.survey import similar
from keras_astro.survey.objects import find_objects
from keras_astro.survey.predict import embed
from tests.survey.test_predict_table import expected_probabilities, survey  # noqa: F401
from tests.test_case import PNG, run_cli


def test_embeddings_are_the_pooled_features_of_the_model(survey, tmp_path):  # noqa: F811
    model_path, model, folder, damaged = survey
    output = str(tmp_path / "emb.npy")
    failed = embed(model, str(model_path), find_objects([folder]), output, dtype="float32",
                   chunk_size=4, progress=False)
    assert failed == 1
    features, table = similar.load_embeddings(output)
    assert list(table) == ["path", "error"] and len(table["path"]) == len(features) == 21
    bad = table["path"].index(str(damaged))
    assert np.isnan(features[bad]).all() and "Cannot read" in table["error"][bad]
    good = [i for i in range(21) if i != bad]
    pooled = keras.Model(model.inputs, model.get_layer("avg_pool").output)
    from keras_astro.data.converter import ImageConverter

    converter = ImageConverter.from_model(model)
    images = np.stack([np.asarray(converter.read_file(table["path"][i]), "float32") for i in good])
    np.testing.assert_allclose(features[good], pooled.predict(images, verbose=0), rtol=1e-4,
                               atol=1e-5)


def test_similar_finds_the_nearest_objects_of_a_constructed_table(tmp_path, capsys):
    # Three tight clusters of directions, and one object far from all of them.
    rng = np.random.default_rng(0)
    centres = np.eye(4)[:3] * 10
    features = np.concatenate(
        [centre + rng.normal(0, 0.1, (5, 4)) for centre in centres] + [[[1, 1, 1, -8.0]]]
    ).astype(np.float16)
    features = np.concatenate([features, np.full((1, 4), np.nan, np.float16)])
    np.save(tmp_path / "emb.npy", features)
    names = [f"obj{i}" for i in range(len(features))]
    with open(tmp_path / "emb.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "error"])
        writer.writerows([name, "" if i < 16 else "damaged"] for i, name in enumerate(names))
    loaded, table = similar.load_embeddings(str(tmp_path / "emb.npy"))
    found, distances = similar.nearest(loaded, [0, 7], k=4)
    assert sorted(found[0]) == [1, 2, 3, 4] and sorted(found[1]) == [5, 6, 8, 9]
    assert (np.diff(distances, axis=1) >= 0).all() and distances.max() < 0.01
    scores = similar.anomaly_scores(loaded, k=3)
    assert np.nanargmax(scores) == 15 and np.isnan(scores[16])

    stdout = run_cli("similar", tmp_path / "emb.npy", "obj10", "--k", "2",
                     "--anomaly", tmp_path / "anomaly.csv")
    assert stdout.splitlines()[0].startswith("obj10: obj1") and "obj15: " in stdout
    with open(tmp_path / "anomaly.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["path", "error", "anomaly"] and rows[16]["anomaly"] == ""


def test_embed_and_similar_from_the_command_line_with_a_grid(survey, tmp_path):  # noqa: F811
    model_path, model, folder, damaged = survey
    output = tmp_path / "emb.npy"
    with pytest.raises(SystemExit):  # the damaged file
        run_cli("embed", model_path, folder, "--output", output, "--chunk-size", "5",
                "--shard", "1/2")
    features, table = similar.load_embeddings(str(output))
    assert np.load(output).dtype == np.float16 and features.shape[0] == 11
    assert table["path"][-1] == str(damaged) and table["error"][-1]
    query = table["path"][3]
    stdout = run_cli("similar", output, query, "--k", "3", "--plot", tmp_path / "grid.png")
    assert stdout.startswith(f"{query}: ") and stdout.count("(") == 3
    assert (tmp_path / "grid.png").read_bytes()[:8] == PNG
