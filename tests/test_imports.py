"""What importing keras_astro loads, a model without TensorFlow, and no import cycles.

Each check runs in a fresh Python: this process has long imported everything.
"""

import importlib.util
import json
import os
import subprocess
import sys
import textwrap

import pytest

import keras_astro


def run_python(script, **env):
    """Runs `script` in a fresh Python; returns the last line it printed, parsed as JSON."""
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(script)],
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", **env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_loads_neither_keras_nor_tensorflow():
    loaded = run_python(
        """
        import json, sys
        import keras_astro
        print(json.dumps(sorted({"keras", "tensorflow"} & set(sys.modules))))
        """
    )
    assert loaded == []


def test_import_does_not_pull_in_torch_or_jax():
    # TensorFlow itself may import jax; keras_astro must not add either.
    added = run_python(
        """
        import json, sys, keras
        before = set(sys.modules)
        import keras_astro
        added = {m.split(".")[0] for m in set(sys.modules) - before}
        print(json.dumps(sorted(added & {"torch", "jax"})))
        """
    )
    assert added == []


def test_layers_are_exported():
    assert keras_astro.layers.StageBlock is keras_astro.StageBlock
    assert keras_astro.layers.RelativeAttention is keras_astro.RelativeAttention


def test_every_public_name_resolves():
    # The lazy table names each module by its path: a module that moves must move there too.
    names = [name for name in keras_astro.__all__ if name != "reference"]
    if importlib.util.find_spec("torch") is not None:  # the PyTorch reference imports torch
        names.append("reference")
    assert all(getattr(keras_astro, name) is not None for name in names)
    assert keras_astro.preprocessing.ImageNormalization is keras_astro.layers.ImageNormalization
    assert keras_astro.distribute is keras_astro.training.distribute


WITHOUT_TENSORFLOW = """
    import importlib.abc, json, sys, tempfile
    import numpy as np
    import keras_astro

    # Build and predict: no TensorFlow, even where it is installed.
    model = keras_astro.AstroTransformer.small(input_shape=(8, 8, 3), num_classes=3)
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    expected = model.predict(images, verbose=0)
    loaded_by_predict = "tensorflow" in sys.modules


    class NoTensorFlow(importlib.abc.MetaPathFinder):
        # A machine without TensorFlow: Keras imports it to save when it is installed.
        def find_spec(self, name, path=None, target=None):
            if name == "tensorflow" or name.startswith("tensorflow."):
                raise ModuleNotFoundError(f"No module named {name!r}", name=name)


    sys.meta_path.insert(0, NoTensorFlow())
    import keras
    from keras_astro.models.reference import ReferenceAstroTransformer

    with tempfile.TemporaryDirectory() as folder:
        model.save(folder + "/model.keras")
        reloaded = keras.saving.load_model(folder + "/model.keras")
    np.testing.assert_allclose(reloaded.predict(images, verbose=0), expected, rtol=1e-5, atol=1e-6)
    reference = ReferenceAstroTransformer(2, (1, 1, 1), 3)
    imported = keras_astro.AstroTransformer.from_torch_checkpoint(reference.state_dict())
    assert imported.num_classes == 3
    print(json.dumps({
        "backend": keras.backend.backend(),
        "loaded_by_predict": loaded_by_predict,
        "loaded_at_the_end": "tensorflow" in sys.modules,
    }))
"""


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_the_model_needs_no_tensorflow(backend):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    if importlib.util.find_spec("torch") is None:
        pytest.skip("the reference checkpoint needs torch")
    assert run_python(WITHOUT_TENSORFLOW, KERAS_BACKEND=backend) == {
        "backend": backend,
        "loaded_by_predict": False,
        "loaded_at_the_end": False,
    }


def test_every_module_imports_first():
    # A module imported before the others exposes an import cycle through it; between
    # imports, keras_astro leaves sys.modules (Keras and TensorFlow stay: it stays fast).
    result = run_python(
        """
        import importlib, json, pkgutil, sys, traceback
        import keras_astro

        names = sorted(
            module.name
            for module in pkgutil.walk_packages(keras_astro.__path__, "keras_astro.")
            if not module.name.endswith("__main__")  # runs the command line
        )
        failures = {}
        for name in ["keras_astro", *names]:
            for loaded in [m for m in sys.modules if m.split(".")[0] == "keras_astro"]:
                del sys.modules[loaded]
            try:
                importlib.import_module(name)
            except ImportError as error:
                if not (error.name or "keras_astro").startswith("keras_astro"):
                    continue  # an optional dependency that is not installed
                failures[name] = traceback.format_exc(limit=-3)
        print(json.dumps({"checked": len(names), "failures": failures}))
        """
    )
    assert result["checked"] >= 30  # the walk found the subpackages
    assert result["failures"] == {}, "\n".join(result["failures"].values())
