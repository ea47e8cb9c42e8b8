"""benchmarks/remat_memory.py: each backend's allocator figure with and without remat, tiny."""

import argparse

import keras
import pytest


def _tensorflow_without_onednn():
    """TensorFlow turns oneDNN on by default only on CPUs with AVX-512; its Eigen kernels
    then allocate so that remat saves nothing at this size (60.6 MB against 60.0 MB on an
    AVX2-only AMD EPYC; with TF_ENABLE_ONEDNN_OPTS=1 the same test passes)."""
    if keras.backend.backend() != "tensorflow":
        return False
    try:
        from tensorflow.python.util import _pywrap_util_port
    except ImportError:  # a TensorFlow that moved it: measure
        return False
    return not _pywrap_util_port.IsMklEnabled()


@pytest.mark.slow
def test_remat_lowers_what_the_allocator_counts(load_script):
    if _tensorflow_without_onednn():
        pytest.skip("TensorFlow without oneDNN (a CPU without AVX-512): remat saves no memory at this size")
    remat_memory = load_script("benchmarks/remat_memory.py")
    backend = keras.backend.backend()
    args = argparse.Namespace(batch_size=8, image_size=16, timeout=600)
    plain, remat = (remat_memory.run_child(backend, setting, args) for setting in (False, True))
    assert plain > 0 and remat > 0
    assert remat < 0.8 * plain
    table = remat_memory.table({backend: (plain, remat)}, args)
    assert f"| {backend} |" in table and "small, batch 8, 16x16" in table
