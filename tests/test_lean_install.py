"""The core install (keras and numpy): the model and `.keras` files work without the extras,
and what needs an extra says which one to install.

Each check runs in a fresh Python whose imports of the extras' packages fail, as on a
machine where `pip install keras-astro` installed the core only.
"""

import importlib.metadata

import keras
import pytest

import keras_astro
from tests.test_imports import run_python

# Top-level modules of the extras' packages, blocked before keras and keras_astro load.
BLOCK_EXTRAS = """
    import importlib, importlib.abc, json, os, sys

    # The backend's library first: torch._dynamo probes optional packages with find_spec,
    # which answers None for a missing one but would raise on this blocker.
    importlib.import_module({"torch": "torch._dynamo"}.get(os.environ["KERAS_BACKEND"], "jax"))

    EXTRAS = {
        "tensorflow", "tensorflow_datasets", "astropy", "sklearn", "matplotlib", "PIL",
        "tensorboard",
    }


    class NoExtras(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in EXTRAS:
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)


    sys.meta_path.insert(0, NoExtras())
"""

needs_another_backend = pytest.mark.skipif(
    keras.backend.backend() == "tensorflow", reason="the TensorFlow backend needs TensorFlow"
)


def test_version_is_the_installed_one():
    assert keras_astro.__version__ == importlib.metadata.version("keras-astro")


@needs_another_backend
def test_model_and_keras_files_need_no_extra():
    result = run_python(
        BLOCK_EXTRAS
        + """
    import tempfile
    import keras
    import numpy as np
    import keras_astro

    model = keras_astro.AstroTransformer.small(num_classes=10, input_shape=(16, 16, 3))
    images = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    expected = keras.ops.convert_to_numpy(model(images))
    with tempfile.TemporaryDirectory() as folder:
        model.save(folder + "/model.keras")
        reloaded = keras.saving.load_model(folder + "/model.keras")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(reloaded(images)), expected, rtol=1e-5, atol=1e-6
    )
    loaded = {name.split(".")[0] for name in sys.modules}
    print(json.dumps({"class": type(reloaded).__name__, "extras": sorted(EXTRAS & loaded)}))
    """,
        KERAS_BACKEND=keras.backend.backend(),
    )
    assert result == {"class": "AstroTransformer", "extras": []}


@needs_another_backend
def test_features_of_an_extra_name_it():
    result = run_python(
        BLOCK_EXTRAS
        + """
    import contextlib, io
    import keras_astro
    from keras_astro.cli import main

    errors = {}
    try:
        keras_astro.data.load_datasets
    except ImportError as error:
        errors["data"] = str(error)
    try:
        keras_astro.export_for_serving(None, "unused")
    except ImportError as error:
        errors["export"] = str(error)
    for argv in (["--help"], ["train", "--dataset", "digits"]):
        stderr = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(stderr):
            try:
                main(argv)
            except SystemExit as exit:
                errors[argv[0]] = [exit.code, stderr.getvalue().strip()]
    print(json.dumps(errors))
    """,
        KERAS_BACKEND=keras.backend.backend(),
    )
    assert result == {
        "data": 'keras_astro.data needs tensorflow: pip install "keras-astro[data]"',
        "export": 'The export needs tensorflow: pip install "keras-astro[onnx]"',
        "--help": [0, ""],
        "train": [
            1,
            "keras-astro train: error: keras-astro train needs tensorflow, sklearn, matplotlib, "
            'tensorboard: pip install "keras-astro[train]"',
        ],
    }
