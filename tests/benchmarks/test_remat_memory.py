"""benchmarks/remat_memory.py: each backend's allocator figure with and without remat, tiny."""

import argparse

import keras
import pytest


@pytest.mark.slow
def test_remat_lowers_what_the_allocator_counts(load_script):
    remat_memory = load_script("benchmarks/remat_memory.py")
    backend = keras.backend.backend()
    args = argparse.Namespace(batch_size=8, image_size=16, timeout=600)
    plain, remat = (remat_memory.run_child(backend, setting, args) for setting in (False, True))
    assert plain > 0 and remat > 0
    assert remat < 0.8 * plain
    table = remat_memory.table({backend: (plain, remat)}, args)
    assert f"| {backend} |" in table and "small, batch 8, 16x16" in table
