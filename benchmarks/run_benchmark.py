"""Runs the AstroTransformer benchmark from a clone: `python benchmarks/run_benchmark.py --help`.

Same options as `keras-astro benchmark` and `python -m keras_astro.benchmark`; each
backend is measured in its own subprocess, so no KERAS_BACKEND is needed here.
"""

import os
import sys

# From a fresh clone the package may not be installed yet: use the checkout's copy.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from keras_astro.benchmark import main  # noqa: E402

if __name__ == "__main__":
    main()
