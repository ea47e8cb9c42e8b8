"""Serving export: TF Serving layout and versions, signatures, the TF1 session path, bad input.

TF Serving cannot run here, so requests are answered the way it answers them: the TF1
SavedModel loader and the C++ session (`saved_model_cli run`, and `SessionServer` below),
with REST bodies turned into tensors by its row-format rules (`rest_predict`).
"""

import argparse
import base64
import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from keras_astro import export
from keras_astro.cli.export import add_arguments, run
from keras_astro.export import export_for_serving
from keras_astro.models import AstroTransformer
from tests.test_case import skip_unless_channels_first_runs

CLASS_NAMES = ["galaxy", "star", "quasar"]
IMAGE_SHAPE = (8, 8, 3)
SAVED_MODEL_CLI = os.path.join(os.path.dirname(sys.executable), "saved_model_cli")
QUIET_TF = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")


@pytest.fixture(scope="module")
def model():
    keras.utils.set_random_seed(0)
    model = AstroTransformer.small(
        input_shape=IMAGE_SHAPE, num_classes=len(CLASS_NAMES), class_names=CLASS_NAMES
    )
    # A larger head spreads the probabilities, so a wrong input pipeline shows up.
    kernel, bias = model.get_layer("predictions").get_weights()
    model.get_layer("predictions").set_weights([kernel * 30, bias])
    return model


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (4, *IMAGE_SHAPE), dtype=np.uint8)


@pytest.fixture(scope="module")
def expected(model, images):
    return model.predict(images.astype("float32"), verbose=0)


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory, model):
    """One export shared by the module: version 1 of `.../astro`."""
    base = tmp_path_factory.mktemp("serving") / "astro"
    assert export_for_serving(model, base) == str(base / "1")
    return base


@pytest.fixture(scope="module")
def server(base_dir):
    return SessionServer(str(base_dir / "1"))


class SessionServer:
    """Loads a SavedModel with the TF1 loader and runs signatures in the C++ session.

    `Session.run` checks feeds against the placeholders in Python; TF Serving does not
    (it checks dtypes, not shapes), so signatures run through a callable made from
    CallableOptions, which goes straight to the C++ session as TF Serving does.
    """

    def __init__(self, path):
        import tensorflow as tf

        self.session = tf.compat.v1.Session(graph=tf.Graph())
        self.meta_graph = tf.compat.v1.saved_model.load(self.session, ["serve"], path)

    def run(self, signature_name, **arrays):
        from tensorflow.core.protobuf import config_pb2

        signature = self.meta_graph.signature_def[signature_name]
        names, keys = sorted(arrays), sorted(signature.outputs)
        options = config_pb2.CallableOptions(
            feed=[signature.inputs[name].name for name in names],
            fetch=[signature.outputs[key].name for key in keys],
        )
        function = self.session._make_callable_from_options(options)
        return dict(zip(keys, function(*(arrays[name] for name in names))))


def _decode_b64(value):
    if isinstance(value, dict):
        return base64.b64decode(value["b64"])
    if isinstance(value, list):
        return [_decode_b64(item) for item in value]
    return value


def rest_predict(server, body):
    """Answers a REST `:predict` body in row format ("instances"), as TF Serving does.

    Each instance is either {input name: value} or, for a one-input signature, the value
    itself; the instances of each input are stacked into one batch; {"b64": ...} is bytes;
    numbers take the signature's dtype. The answer has one {output name: value} per instance.
    """
    import tensorflow as tf

    body = json.loads(json.dumps(body))
    signature_name = body.get("signature_name", "serving_default")
    inputs = server.meta_graph.signature_def[signature_name].inputs
    rows = body["instances"]
    if all(isinstance(row, dict) and "b64" not in row for row in rows):
        columns = {name: [row[name] for row in rows] for name in inputs}
    else:
        assert len(inputs) == 1, "unnamed instances need a one-input signature"
        columns = {next(iter(inputs)): rows}
    arrays = {
        name: np.array(_decode_b64(values), dtype=tf.dtypes.as_dtype(inputs[name].dtype).as_numpy_dtype)
        for name, values in columns.items()
    }
    outputs = server.run(signature_name, **arrays)
    return {
        "predictions": [{key: value[i].tolist() for key, value in outputs.items()} for i in range(len(rows))]
    }


def _b64_png(image):
    import tensorflow as tf

    return {"b64": base64.b64encode(tf.io.encode_png(image).numpy()).decode("ascii")}


def _cli(*args):
    return subprocess.run(
        [SAVED_MODEL_CLI, *args], env=QUIET_TF, capture_output=True, text=True, check=True
    ).stdout


def test_tf_serving_layout_and_labels(base_dir):
    version = base_dir / "1"
    assert sorted(os.listdir(base_dir)) == ["1"]  # no temporary directory left behind
    assert (version / "saved_model.pb").is_file()
    assert (version / "variables" / "variables.index").is_file()
    assert (version / "assets" / "labels.txt").read_text().splitlines() == CLASS_NAMES


def test_saved_model_cli_shows_signatures_and_only_standard_ops(base_dir):
    # `show --all` prints each signature and, like `--list_ops`, the ops of the graph.
    shown = _cli("show", "--dir", str(base_dir / "1"), "--all")
    signatures = {
        block.split("']", 1)[0]: block for block in shown.split("signature_def['")[1:]
    }
    default, encoded = signatures["serving_default"], signatures["predict_encoded"]
    for block in (default, encoded):
        assert "Method name is: tensorflow/serving/predict" in block
        assert "outputs['probabilities'] tensor_info:\n        dtype: DT_FLOAT\n        shape: (-1, 3)" in block
        assert "outputs['classes'] tensor_info:\n        dtype: DT_INT64\n        shape: (-1)" in block
    assert "inputs['images'] tensor_info:\n        dtype: DT_UINT8\n        shape: (-1, 8, 8, 3)" in default
    assert "inputs['images'] tensor_info:\n        dtype: DT_STRING\n        shape: (-1)" in encoded
    listed_ops = shown.split("contains the following ops:", 1)[1].split("\n", 1)[0]
    assert "'Conv2D'" in listed_ops and "XlaCallModule" not in listed_ops
    # The listing does not look inside loop bodies (the decoding loop): every function does.
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel.FromString((base_dir / "1" / "saved_model.pb").read_bytes())
    graph = saved_model.meta_graphs[0].graph_def
    all_ops = {node.op for node in graph.node}
    all_ops |= {node.op for function in graph.library.function for node in function.node_def}
    assert {"Conv2D", "DecodeImage"} <= all_ops and "XlaCallModule" not in all_ops


def test_saved_model_cli_run_matches_model_predict(base_dir, tmp_path, images, expected):
    np.save(tmp_path / "images.npy", images)
    _cli(
        "run", "--dir", str(base_dir / "1"), "--tag_set", "serve",
        "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'images.npy'}",
        "--outdir", str(tmp_path / "outputs"),
    )
    probabilities = np.load(tmp_path / "outputs" / "probabilities.npy")
    np.testing.assert_allclose(probabilities, expected, atol=1e-4)
    np.testing.assert_array_equal(np.load(tmp_path / "outputs" / "classes.npy"), expected.argmax(-1))


def test_rest_instances_and_b64_images_give_the_same_answers(server, model, images, expected):
    constant = np.full((1, *IMAGE_SHAPE), 200, np.uint8)
    bodies = [
        {"instances": images.tolist()},
        {"signature_name": "serving_default", "instances": [{"images": i.tolist()} for i in images]},
        {"signature_name": "predict_encoded", "instances": [_b64_png(i) for i in images]},
        {"signature_name": "predict_encoded", "instances": [{"images": _b64_png(i)} for i in images]},
    ]
    for body in bodies:
        predictions = rest_predict(server, body)["predictions"]
        np.testing.assert_allclose([p["probabilities"] for p in predictions], expected, atol=1e-4)
        assert [p["classes"] for p in predictions] == expected.argmax(-1).tolist()
    # A larger image is resized in the graph: a uniform one stays uniform.
    larger = {"signature_name": "predict_encoded", "instances": [_b64_png(np.full((16, 16, 3), 200, np.uint8))]}
    np.testing.assert_allclose(
        rest_predict(server, larger)["predictions"][0]["probabilities"],
        model.predict(constant.astype("float32"), verbose=0)[0],
        atol=1e-4,
    )


def test_bad_input_names_the_problem_and_the_server_keeps_serving(server, images, expected):
    import tensorflow as tf

    png = base64.b64decode(_b64_png(images[0])["b64"])
    jpeg = tf.io.encode_jpeg(images[0]).numpy()
    bad_requests = [
        ("serving_default", images[0], r"serving_default: `images` must be uint8 of shape \[batch, 8, 8, 3\] with batch >= 1; got shape\] \[8 8 3\]"),
        ("serving_default", images[:, :4], r"must be uint8 of shape \[batch, 8, 8, 3\] with batch >= 1; got shape\] \[4 4 8 3\]"),
        ("serving_default", images[:0], r"with batch >= 1; got shape\] \[0 8 8 3\]"),
        ("serving_default", images.astype("float32"), r"actual float vs\. expect uint8"),
        ("predict_encoded", np.array([png, b"not an image", jpeg], object), r"must be JPEG or PNG bytes.*these batch positions are not:\] \[1\]"),
        ("predict_encoded", np.array([[png, png]], object), r"predict_encoded: `images` must be string of shape \[batch\] with batch >= 1; got shape\] \[1 2\]"),
        ("predict_encoded", np.array([jpeg[:40]], object), r"JPEG"),
    ]
    for signature, array, message in bad_requests:
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            server.run(signature, images=array)
    outputs = server.run("serving_default", images=images)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-4)


def test_existing_version_is_refused(base_dir, model):
    before = (base_dir / "1" / "saved_model.pb").read_bytes()
    with pytest.raises(ValueError, match="Version 1 already exists"):
        export_for_serving(model, base_dir, version=1)
    assert (base_dir / "1" / "saved_model.pb").read_bytes() == before


def _fake_writer(fail):
    """Stands in for the SavedModel writer (in-process or subprocess): writes part of one."""

    def write(source, staging, *args):
        os.makedirs(os.path.join(staging, "variables"))
        with open(os.path.join(staging, "saved_model.pb"), "wb") as file:
            file.write(b"partial")
        if fail:
            raise RuntimeError("export killed")

    return write


def _patch_writer(monkeypatch, fail):
    monkeypatch.setitem(export.WRITERS, "saved_model", _fake_writer(fail))
    monkeypatch.setattr(export, "_write_in_tensorflow_subprocess", _fake_writer(fail))


def test_interrupted_export_leaves_no_version(tmp_path, model, monkeypatch):
    _patch_writer(monkeypatch, fail=True)
    with pytest.raises(RuntimeError, match="export killed"):
        export_for_serving(model, tmp_path / "astro")
    assert os.listdir(tmp_path / "astro") == []


def test_two_exports_in_a_row_are_versions_1_and_2_and_the_cli_says_how_to_serve(
    tmp_path, model, monkeypatch, capsys
):
    _patch_writer(monkeypatch, fail=False)
    model.save(tmp_path / "model.keras")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    base = tmp_path / "astro"
    for version in ("1", "2"):
        run(parser.parse_args([str(tmp_path / "model.keras"), str(base)]))
        printed = capsys.readouterr().out
        assert f"Exported {base / version}\n" in printed
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert "serving_default: images uint8 [batch, 8, 8, 3]" in printed
    assert "predict_encoded: images string [batch]" in printed
    assert "probabilities float32 [batch, 3], classes int64 [batch]" in printed
    assert f"--mount type=bind,source={base},target=/models/astro -e MODEL_NAME=astro -t tensorflow/serving" in printed
    assert "curl -X POST http://localhost:8501/v1/models/astro:predict" in printed
    assert '"signature_name": "predict_encoded"' in printed


def test_next_version_follows_the_highest_numeric_directory(tmp_path, model, monkeypatch):
    _patch_writer(monkeypatch, fail=False)
    for name in ("1", "0007", ".tmp-9-left-by-a-killed-export", "notes"):
        (tmp_path / name).mkdir()
    (tmp_path / "12").write_text("a file, not a version")
    assert export_for_serving(model, tmp_path) == str(tmp_path / "8")
    assert export_for_serving(model, tmp_path, version=3) == str(tmp_path / "3")
    with pytest.raises(ValueError, match=r"Version 7 already exists .*\(0007/\)"):
        export_for_serving(model, tmp_path, version=7)


def _export_and_load(model, export_dir):
    import tensorflow as tf

    return tf.saved_model.load(export_for_serving(model, export_dir)).signatures["serving_default"]


tensorflow_only = pytest.mark.skipif(
    keras.backend.backend() != "tensorflow",
    reason="exports in this process under TensorFlow only; other backends reach the same "
    "code through the subprocess, which the module's export covers",
)


@tensorflow_only
def test_logits_head_is_served_as_probabilities(model, images, expected, tmp_path):
    import tensorflow as tf

    logits = AstroTransformer.from_config({**model.get_config(), "classifier_activation": None})
    logits.set_weights(model.get_weights())
    outputs = _export_and_load(logits, tmp_path)(images=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)


@tensorflow_only
def test_a_calibrated_model_is_served_with_its_temperature(model, images, tmp_path):
    import tensorflow as tf

    from keras_astro.models.calibration import with_temperature

    calibrated = with_temperature(model, 3.0)
    outputs = _export_and_load(calibrated, tmp_path)(images=tf.constant(images))
    expected = calibrated.predict(images.astype("float32"), verbose=0)
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    assert not np.allclose(expected, model.predict(images.astype("float32"), verbose=0), atol=1e-3)


@tensorflow_only
def test_channels_first_model_takes_channels_last_pixels(model, images, expected, tmp_path):
    skip_unless_channels_first_runs()
    import tensorflow as tf

    config = {**model.get_config(), "input_shape": (3, 8, 8), "data_format": "channels_first"}
    channels_first = AstroTransformer.from_config(config)
    channels_first.set_weights(model.get_weights())
    outputs = _export_and_load(channels_first, tmp_path)(images=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)


@tensorflow_only
def test_onnx_export_matches_model_predict(model, images, expected, tmp_path, capsys):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    model.save(tmp_path / "model.keras")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args([str(tmp_path / "model.keras"), str(tmp_path / "astro"), "--format", "onnx"]))
    version = tmp_path / "astro" / "1"
    assert f"Exported {version / 'model.onnx'}\n" in capsys.readouterr().out
    assert sorted(os.listdir(version)) == ["labels.txt", "model.onnx"]
    assert (version / "labels.txt").read_text().splitlines() == CLASS_NAMES
    session = ort.InferenceSession(str(version / "model.onnx"))
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"images": images})))
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-4)
    np.testing.assert_array_equal(outputs["classes"], expected.argmax(-1))


@tensorflow_only
def test_a_model_that_averages_its_views_is_exported_averaging_them(model, images, tmp_path, capsys):
    import tensorflow as tf

    from keras_astro.models.calibration import rebuild

    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    views = rebuild(model, test_time_augmentation="dihedral")
    expected = views.predict(images.astype("float32"), verbose=0)
    assert not np.allclose(expected, model.predict(images.astype("float32"), verbose=0), atol=1e-4)
    outputs = _export_and_load(views, tmp_path / "saved")(images=tf.constant(images))
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
    views.save(tmp_path / "views.keras")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args([str(tmp_path / "views.keras"), str(tmp_path / "onnx"), "--format", "onnx"]))
    session = ort.InferenceSession(str(tmp_path / "onnx" / "1" / "model.onnx"))
    names = [output.name for output in session.get_outputs()]
    outputs = dict(zip(names, session.run(None, {"images": images})))
    np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-4)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"include_top": False}, "include_top=False"),
        ({"include_preprocessing": False}, "include_preprocessing=False"),
        ({"input_shape": (None, None, 3)}, "fixed image size"),
        ({"input_shape": (8, 8, 2)}, "1, 3 or 4 channels"),
    ],
)
def test_unservable_models_are_refused(tmp_path, kwargs, message):
    unservable = AstroTransformer.small(**{"input_shape": IMAGE_SHAPE, "num_classes": 3, **kwargs})
    with pytest.raises(ValueError, match=message):
        export_for_serving(unservable, tmp_path)
    assert os.listdir(tmp_path) == []


def test_bad_arguments_are_refused(tmp_path, model):
    with pytest.raises(ValueError, match="AstroTransformer"):
        export_for_serving(keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)]), tmp_path)
    with pytest.raises(ValueError, match="existing .keras file"):
        export_for_serving(tmp_path / "missing.keras", tmp_path)
    for version in (0, True, "2"):
        with pytest.raises(ValueError, match="positive int"):
            export_for_serving(model, tmp_path, version=version)
    with pytest.raises(ValueError, match="`format` must be one of"):
        export_for_serving(model, tmp_path, format="tflite")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    model.save(tmp_path / "model.keras")
    with pytest.raises(ValueError, match="positive int"):
        run(parser.parse_args([str(tmp_path / "model.keras"), str(tmp_path), "--version", "0"]))


@pytest.fixture(scope="module", params=["image", "dataset"])
def flux_model(request):
    """A flux classifier of 5-band 8x8 inputs cut from the central half of a cutout, each
    image normalized by its own noise or by the training data's statistics."""
    keras.utils.set_random_seed(0)
    flux_model = AstroTransformer.small(
        input_shape=(8, 8, 5), num_classes=3, preprocessing="flux", center_crop=0.5,
        normalization=request.param,
    )
    flux_model.adapt_preprocessing(np.random.default_rng(0).normal(0, 1e-3, (4, 8, 8, 5)).astype("float32"))
    kernel, bias = flux_model.get_layer("predictions").get_weights()
    flux_model.get_layer("predictions").set_weights([kernel * 30, bias])
    return flux_model


def test_the_cli_describes_a_flux_export(tmp_path, flux_model, monkeypatch, capsys):
    _patch_writer(monkeypatch, fail=False)
    flux_model.save(tmp_path / "flux.keras")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args([str(tmp_path / "flux.keras"), str(tmp_path / "astro")]))
    printed = capsys.readouterr().out
    assert "serving_default: images float32 [batch, any, any, 5] (raw flux, NaN allowed)" in printed
    assert "predict_encoded" not in printed and "Query it with flux" in printed


def _serving_default_input(signature):
    spec = signature.structured_input_signature[1]["images"]
    return spec.dtype.name, spec.shape.as_list()


@tensorflow_only
def test_flux_export_takes_raw_cutouts_of_any_size(flux_model, tmp_path):
    import tensorflow as tf

    from keras_astro.data.converter import ImageConverter

    loaded = tf.saved_model.load(export_for_serving(flux_model, tmp_path))
    assert set(loaded.signatures) == {"serving_default"}
    serve = loaded.signatures["serving_default"]
    assert _serving_default_input(serve) == ("float32", [None, None, None, 5])
    for size in (16, 22):  # cropped to 8 (no resize) and to 11, then resized
        cutouts = np.random.default_rng(size).normal(0, 1e-3, (3, size, size, 5)).astype("float32")
        cutouts[0, size // 2, size // 2] = np.nan
        cutouts[1, :, :3] = np.nan
        expected = flux_model.predict(ImageConverter(8, 0.5, "flux")(cutouts), verbose=0)
        outputs = serve(images=tf.constant(cutouts))
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)
        np.testing.assert_array_equal(outputs["classes"], expected.argmax(-1))
    assert expected.max() - expected.min() > 0.1  # the head's spread shows a wrong pipeline



@tensorflow_only
def test_flux_export_refuses_cutouts_with_a_band_of_no_finite_pixel(flux_model, tmp_path):
    import tensorflow as tf

    serve = _export_and_load(flux_model, tmp_path)
    cutouts = np.random.default_rng(0).normal(0, 1e-3, (5, 16, 16, 5)).astype("float32")
    cutouts[1] = np.nan  # no data at all
    cutouts[2, ..., 3] = np.nan  # one blank band
    cutouts[4, 4:12, 4:12] = np.nan  # flux outside the central crop only
    message = (
        r"serving_default: `images` must have a finite pixel in every band of each cutout "
        r"\(in its central 50%\); these batch positions have a band of NaN or infinite pixels "
        r"only:\] \[1 2 4\]"
    )
    with pytest.raises(tf.errors.InvalidArgumentError, match=message):
        serve(images=tf.constant(cutouts))
    outputs = serve(images=tf.constant(cutouts[[0, 3]]))
    assert np.isfinite(outputs["probabilities"]).all()


@tensorflow_only
def test_flux_export_names_the_shape_it_expects_of_a_cutout_of_another_rank(flux_model, tmp_path):
    import tensorflow as tf

    server = SessionServer(export_for_serving(flux_model, tmp_path))
    expected = r"serving_default: `images` must be float32 of shape \[batch, any, any, 5\] with batch >= 1"
    for shape, got in (((16, 16, 5), r"\[16 16 5\]"), ((1, 16, 16, 5, 1), r"\[1 16 16 5 1\]")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=rf"{expected}; got shape\] {got}"):
            server.run("serving_default", images=np.zeros(shape, np.float32))


@tensorflow_only
def test_pixel_export_with_center_crop_takes_any_size(model, tmp_path):
    import tensorflow as tf

    from keras_astro.data.converter import ImageConverter

    cropped = AstroTransformer.from_config({**model.get_config(), "center_crop": 0.5})
    cropped.set_weights(model.get_weights())
    loaded = tf.saved_model.load(export_for_serving(cropped, tmp_path))
    serve = loaded.signatures["serving_default"]
    assert _serving_default_input(serve) == ("uint8", [None, None, None, 3])
    assert "predict_encoded" in loaded.signatures
    for shape in ((2, 16, 16, 3), (1, 30, 20, 3)):
        pixels = np.random.default_rng(1).integers(0, 256, shape, dtype=np.uint8)
        # The graph resizes float pixels (a uint8 pipeline would round them to 0..255).
        prepared = ImageConverter(8, 0.5, "pixels")(tf.constant(pixels, tf.float32))
        expected = cropped.predict(prepared, verbose=0)
        outputs = serve(images=tf.constant(pixels))
        np.testing.assert_allclose(outputs["probabilities"], expected, atol=1e-5)


def _onnx_probabilities(version, images):
    import onnxruntime

    session = onnxruntime.InferenceSession(str(version / "model.onnx"))
    return session.run(["probabilities"], {"images": images})[0]


@tensorflow_only
@pytest.mark.parametrize("kind", ["flux", "pixels with center_crop"])
def test_onnx_export_of_a_resizing_graph_runs_and_resizes_as_the_saved_model(
    kind, model, flux_model, tmp_path
):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    import tensorflow as tf

    if kind == "flux":
        resizing, bands, dtype = flux_model, 5, np.float32
    else:
        resizing = AstroTransformer.from_config({**model.get_config(), "center_crop": 0.5})
        resizing.set_weights(model.get_weights())
        bands, dtype = 3, np.uint8
    serve = tf.saved_model.load(export_for_serving(resizing, tmp_path / "tf")).signatures[
        "serving_default"
    ]
    version = tmp_path / "onnx" / "1"
    assert export_for_serving(resizing, tmp_path / "onnx", format="onnx") == str(version)
    rng = np.random.default_rng(0)
    for shape in ((2, 16, 16, bands), (1, 30, 20, bands), (1, 9, 13, bands)):
        if dtype == np.uint8:
            images = rng.integers(0, 256, shape, dtype=np.uint8)
        else:
            images = rng.normal(0, 1e-3, shape).astype(np.float32)
            images[0, shape[1] // 2, shape[2] // 2] = np.nan  # inside the central crop
        expected = serve(images=tf.constant(images))["probabilities"].numpy()
        np.testing.assert_allclose(_onnx_probabilities(version, images), expected, atol=1e-5)


@tensorflow_only
def test_an_onnx_file_that_onnxruntime_cannot_run_is_refused_and_nothing_is_left(
    flux_model, tmp_path, monkeypatch
):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")

    def keep_the_op(ctx, node, name, args):  # as tf2onnx does with an op it has no handler for
        pass

    monkeypatch.setattr(export, "_resize_as_onnx", keep_the_op)
    with pytest.raises(ValueError, match=r"does not run in onnxruntime \(.*ScaleAndTranslate.*\), so no version was written"):
        export_for_serving(flux_model, tmp_path, format="onnx")
    assert os.listdir(tmp_path) == []


@tensorflow_only
def test_the_cli_run_line_of_a_flux_onnx_export_runs(flux_model, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("tf2onnx")
    flux_model.save(tmp_path / "flux.keras")
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    run(parser.parse_args([str(tmp_path / "flux.keras"), str(tmp_path / "astro"), "--format", "onnx"]))
    printed = capsys.readouterr().out
    assert "input images float32 [batch, any, any, 5] (raw flux, NaN allowed)" in printed
    command = printed.split("Run it:\n")[1].strip()
    assert "np.float32" in command
    result = subprocess.run(command, shell=True, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "array([[" in result.stdout


def test_a_refusal_in_the_tensorflow_subprocess_is_its_one_line(tmp_path):
    # Models of the other backends are exported there; its ValueError is the caller's.
    with pytest.raises(ValueError, match=r"^Expected the path of an existing .keras file"):
        export._write_in_tensorflow_subprocess(str(tmp_path / "missing.keras"), str(tmp_path / "x"), "onnx", False)
