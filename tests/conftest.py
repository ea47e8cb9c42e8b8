import os
import sys

# The examples are scripts, not a package: make them importable by the tests.
sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "examples"))
