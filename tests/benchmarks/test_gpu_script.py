"""benchmarks/gpu/run.py: the table from given records, and a tiny run on the CPU.

The script is for torch and JAX only (the GPU machine has no TensorFlow): the run is
skipped on the tensorflow pass; the formatting tests need no backend.
"""

import importlib.util
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPOSITORY

SCRIPT = REPOSITORY / "benchmarks" / "gpu" / "run.py"
BACKEND = os.environ.get("KERAS_BACKEND", "tensorflow")


@pytest.fixture(scope="module")
def gpu(load_script):
    return load_script("benchmarks/gpu/run.py")


def _measurement(part, config, dtype, batch, remat, peak_mib=None, train_only=False):
    train = dict(images_per_s=1000.0, attention_kernel="flash")
    if peak_mib is not None:
        train["memory"] = dict(peak_bytes=peak_mib * 2**20)
    record = dict(kind="measurement", child="torch", backend="torch", part=part, config=config,
                  dtype=dtype, batch_size=batch, remat=remat, image_size=32,
                  flops_per_image=int(1.703e9), train=train)
    if not train_only:
        record["predict"] = dict(images_per_s=3000.0, attention_kernel="efficient")
    return record


def test_table_rows_notes_and_skips(gpu):
    args = gpu.parse_args([])
    records = [
        dict(kind="info", child="torch", backend="torch", environment={"device": "NVIDIA H200"}),
        _measurement("remat", "small", "mixed_bfloat16", 256, True, peak_mib=600, train_only=True),
        _measurement("sweep", "small", "mixed_bfloat16", 64, False),
        _measurement("grid", "small", "mixed_bfloat16", 256, False, peak_mib=1000),
        _measurement("grid", "small", "float32", 256, False, peak_mib=2000),
        dict(_measurement("grid", "large", "float32", 256, False),
             train=dict(skipped="time budget"), predict=dict(error="RuntimeError: out of memory")),
        dict(kind="measurement", child="jax", backend="jax", part="grid", config="small",
             dtype="float32", batch_size=256, remat=False, image_size=32,
             flops_per_image=int(1.703e9),
             train=dict(images_per_s=500.0, attention_kernel="xla (einsums)",
                        memory=dict(xla_estimate_bytes=3 * 2**30)),
             predict=dict(images_per_s=1500.0, attention_kernel="xla (einsums)")),
    ]
    rows = gpu.build_rows(records, args)
    table = gpu.format_table(rows)
    lines = table.splitlines()
    assert [c.strip() for c in lines[0].strip("|").split("|")] == list(gpu.HEADER)
    keys = [tuple(c.strip() for c in line.strip("|").split("|")[:5]) for line in lines[2:]]
    # torch first: grid (config, then float32 before bf16), sweep, remat; then JAX.
    assert keys == [
        ("torch", "small", "float32", "256", "no"),
        ("torch", "small", "mixed_bfloat16", "256", "no"),
        ("torch", "large", "float32", "256", "no"),
        ("torch", "small", "mixed_bfloat16", "64", "no"),
        ("torch", "small", "mixed_bfloat16", "256", "yes"),
        ("jax", "small", "float32", "256", "no"),
    ]
    small_bf16 = lines[3].split("|")
    # 1000 img/s x 1.703 GFLOP x 3 = 5.1 TFLOP/s, 0.5% of 989.
    assert [c.strip() for c in small_bf16[6:14]] == [
        "1,000", "3,000", "5.1", "5.1", "0.5%", "0.5%", "1,000", "flash / efficient"]
    assert "| skipped | failed |" in lines[4]
    assert "~3,072 (XLA)" in lines[7]
    notes = gpu.format_notes(records, rows, args, elapsed=12.0)
    assert "remat, torch small mixed_bfloat16: peak 1,000 -> 600 MiB (-40%)" in notes
    assert "torch large float32 batch 256 train: time budget" in notes
    assert "RuntimeError: out of memory" in notes
    assert "FLOPs per image: small 1.703 GFLOP" in notes
    assert "torch: device NVIDIA H200" in notes


def test_tiny_settings(gpu):
    args = gpu.parse_args(["--tiny"])
    assert (args.configs, args.batch_size, args.image_size, args.steps) == (["small"], 4, 8, 2)
    assert args.allow_cpu and args.budget <= 240
    plan = gpu.child_plan(gpu.parse_args(["--tiny", "--remat-configs"]))
    assert [(name, parts) for name, _, parts, _ in plan] == [
        ("torch", ["grid", "remat", "sweep"]), ("jax", ["grid", "sweep"])]
    shares = [share for *_, share in gpu.child_plan(args)]
    assert shares == sorted(shares) and shares[-1] == pytest.approx(1.0)


@pytest.mark.skipif(BACKEND not in ("torch", "jax"),
                    reason="the GPU script measures the torch and JAX backends only")
def test_tiny_run_on_cpu(tmp_path):
    if importlib.util.find_spec(BACKEND) is None:
        pytest.skip(f"{BACKEND} is not installed")
    # One grid row (small, float32, batch 4, 8x8); JAX compiles each step, so the
    # remat process and the sweep are left out here to keep the test short.
    command = [sys.executable, str(SCRIPT), "--tiny", "--backends", BACKEND, "--dtypes", "float32",
               "--remat-configs", "--sweep-batches", "--output-dir", str(tmp_path)]
    env = {key: value for key, value in os.environ.items() if key != "OUT"}
    completed = subprocess.run(command, capture_output=True, text=True, timeout=240,
                               env=dict(env, PYTHONPATH=str(REPOSITORY)))
    assert completed.returncode == 0, completed.stdout[-3000:]
    document = (tmp_path / "gpu_benchmark.md").read_text()
    assert document in completed.stdout  # the table is printed last, and written
    lines = document.splitlines()
    rows = [line.split("|") for line in lines if line.startswith(f"| {BACKEND} |")]
    assert len(rows) == 1
    cells = [cell.strip() for cell in rows[0][1:-1]]
    assert cells[:5] == [BACKEND, "small", "float32", "4", "no"]
    # Train and infer img/s, printed with thousands separators ("1,202") on a fast CPU.
    assert float(cells[5].replace(",", "")) > 0 and float(cells[6].replace(",", "")) > 0
    kernel = cells[-1]
    assert kernel == ("flash (CPU)" if BACKEND == "torch" else "xla (einsums)")
    result = json.loads((tmp_path / "gpu_benchmark.json").read_text())
    measurements = [r for r in result["records"] if r["kind"] == "measurement"]
    assert len(measurements) == 1
    assert measurements[0]["tensorflow_imported"] is False
    assert measurements[0]["flops_per_image"] > 0
    assert "Not measured" not in document
    assert sorted(os.listdir(tmp_path)) == ["gpu_benchmark.json", "gpu_benchmark.md",
                                            f"log_{BACKEND}.txt"]
