"""Runs the AstroTransformer benchmark from a clone: `python benchmarks/run_benchmark.py --help`.

Same options as `keras-astro benchmark`; each backend is measured in its own subprocess,
so no KERAS_BACKEND is needed here.
"""

from harness import main

if __name__ == "__main__":
    main()
