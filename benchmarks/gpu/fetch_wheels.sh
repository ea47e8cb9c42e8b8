#!/usr/bin/env bash
# Downloads, into .whl/ at the repository root, the wheels that benchmarks/gpu/run.py
# needs on the lent H200 machine and that its image lacks (Python 3.12, x86-64, no
# network there). Run it here, from anywhere in the repository; see README.md beside it.
#
# keras 3.15.1 needs (its METADATA's Requires-Dist): absl-py, numpy, rich, namex, h5py,
# optree, ml-dtypes, packaging. The image already has absl-py, numpy, rich, h5py,
# ml-dtypes and packaging (KINDS.md's package list), and optree's one need,
# typing-extensions; namex and optree (a compiled cp312 wheel) travel. keras_astro's
# model code needs nothing else there (no TensorFlow, no astropy). About 2.9 MB.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
exclude="$(git rev-parse --git-common-dir)/info/exclude"
mkdir -p "$(dirname "$exclude")"
grep -qxF '/.whl/' "$exclude" 2>/dev/null || echo '/.whl/' >> "$exclude"
mkdir -p .whl
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    -d .whl keras==3.15.1 namex==0.1.0 optree==0.20.0
# One version of each: two would stop the install there.
for name in keras namex optree; do
    count=$(ls .whl | grep -ci "^${name}-" || true)
    if [ "$count" -ne 1 ]; then echo "expected one ${name} wheel in .whl, found ${count}" >&2; exit 1; fi
done
echo "Requires-Dist of keras (all but namex and optree are on the GPU image):"
unzip -p .whl/keras-*.whl '*/METADATA' | grep ^Requires-Dist
du -sh .whl
git status --short --ignored .whl
