"""benchmarks/serving.py: the SavedModel's images/s against `model.predict`, tiny."""

import keras
import pytest


@pytest.mark.skipif(
    keras.backend.backend() != "tensorflow", reason="the export traces under TensorFlow"
)
def test_prints_the_three_paths_with_their_ratio_to_predict(load_script, capsys):
    serving = load_script("benchmarks/serving.py")
    serving.main(["--image-size", "8", "--batch-size", "4", "--images", "8", "--repeats", "1"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("small, 8x8, batch 4, 8 images, median of 1;")
    rows = [line.strip("|").split("|") for line in lines if line.startswith("| ") and "---" not in line]
    assert [row[0].strip() for row in rows[1:]] == [
        "model.predict (Keras, float32 input)",
        "SavedModel serving_default (uint8)",
        "SavedModel, batch norms folded",
    ]
    assert rows[1][2].strip() == "1.00x" and all(float(row[1]) > 0 for row in rows[1:])


def test_refuses_another_backend(load_script, monkeypatch):
    serving = load_script("benchmarks/serving.py")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(SystemExit):
        serving.main([])
