"""`keras-astro benchmark`: runs the benchmark harness of a clone (benchmarks/harness.py).

The harness is a script of the repository, not part of the installed package; this
subcommand finds it beside the package in a clone (or an editable install).
"""

import importlib.util
import os

HELP = "measure training/inference speed and memory per backend"
DESCRIPTION = (
    "Measure training and inference images/s and memory of AstroTransformer per Keras "
    "backend, against the eager PyTorch reference (each in its own subprocess). Runs "
    "benchmarks/harness.py of a clone of keras-astro."
)
HARNESS = os.path.join(
    os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    "benchmarks",
    "harness.py",
)


def _harness():
    if not os.path.isfile(HARNESS):
        raise ValueError(
            f"The benchmark harness is not here ({HARNESS}): it ships with the repository, "
            "not the installed package. Run `keras-astro benchmark` from a clone installed "
            "with `pip install -e .`, or `python benchmarks/run_benchmark.py` there."
        )
    spec = importlib.util.spec_from_file_location("keras_astro_benchmark_harness", HARNESS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def add_arguments(parser):
    if os.path.isfile(HARNESS):
        _harness().add_arguments(parser)


def run(args):
    _harness().run(args)
