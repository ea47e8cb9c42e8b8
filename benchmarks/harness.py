"""Training/inference throughput, memory and FLOPs of AstroTransformer per Keras backend.

Every measurement runs in its own Python subprocess: KERAS_BACKEND is set there before
keras is imported, and the process' RSS high-water mark is that measurement's peak
memory. The plain eager PyTorch reference (`keras_astro.models.reference`) is measured in the
same run, so every figure is also a ratio against it. Steps are timed by a callback
inside one `fit`/`predict` after warm-up steps, so compilation is not counted. The
memory a run adds is that peak less the RSS just before `fit`/`predict` (the framework,
the built model and the data), which is what remat can lower.

Run it from a clone: `python benchmarks/run_benchmark.py` or `keras-astro benchmark`.
Importing this module does not import keras, so the CLI can choose the backend.
"""

import argparse
import datetime
import itertools
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import time

# A clone's root: the children import the keras_astro found there, installed or not.
REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPOSITORY_ROOT)

from keras_astro.cli.arguments import positive_int  # noqa: E402
from keras_astro.utils import write_atomically  # noqa: E402

BACKENDS = ("tensorflow", "jax", "torch")
CONFIG_NAMES = ("small", "base", "large")
MODES = ("train", "predict")
_RESULT_PREFIX = "KERAS_ASTRO_BENCHMARK_RESULT "
# Training costs about three forward passes: the forward, and the gradients with
# respect to activations and to weights.
TRAIN_FLOPS_FACTOR = 3


def add_arguments(parser):
    """Adds the benchmark's options to an `argparse` parser."""
    parser.add_argument(
        "--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
        help="Keras backends to measure (each measurement in its own subprocess).",
    )
    parser.add_argument(
        "--configs", nargs="+", choices=CONFIG_NAMES, default=["small"],
        help="Model configurations.",
    )
    parser.add_argument("--batch-size", type=positive_int, default=32, help="Global batch size.")
    parser.add_argument("--image-size", type=positive_int, default=32, help="Square input size.")
    parser.add_argument(
        "--steps", type=positive_int, default=20, help="Timed steps after the warm-up."
    )
    parser.add_argument(
        "--warmup", type=positive_int, default=3,
        help="Untimed steps first (compilation, allocator warm-up).",
    )
    parser.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES),
        help="train: model.fit steps; predict: model.predict steps.",
    )
    parser.add_argument(
        "--jit-compile", nargs="+", choices=("auto", "true", "false"), default=["auto"],
        help="model.compile(jit_compile=...): XLA on tensorflow/jax, torch.compile on "
        "torch. 'auto' is Keras' default: XLA on jax, and on tensorflow only with a GPU; "
        "eager torch. Several values measure each.",
    )
    parser.add_argument(
        "--dtype-policies", nargs="+", default=["float32"],
        choices=("float32", "mixed_bfloat16", "mixed_float16", "bfloat16"),
        help="Keras dtype policies to measure.",
    )
    parser.add_argument(
        "--data-formats", nargs="+", choices=("channels_last", "channels_first"),
        default=["channels_last"], help="Image data formats to measure.",
    )
    parser.add_argument(
        "--remat", action="store_true",
        help="Build the models with remat=True (gradient checkpointing).",
    )
    parser.add_argument(
        "--input-pipeline", choices=("numpy", "tf.data"), default="numpy",
        help="Feed fit/predict numpy arrays, or a prefetching tf.data pipeline.",
    )
    parser.add_argument(
        "--no-reference", dest="reference", action="store_false",
        help="Skip the PyTorch eager reference (ratios are then left out).",
    )
    parser.add_argument(
        "--timeout", type=positive_int, default=1800,
        help="Seconds allowed for each measurement subprocess.",
    )
    parser.add_argument(
        "--output", default="benchmark_results.md",
        help="Markdown file the table is written to (atomically).",
    )
    parser.add_argument(
        "--json-output", default=None, help="Optional JSON file with every raw measurement."
    )


def run(args):
    """Runs every measurement of `args` (from `add_arguments`); returns the table text."""
    load_before = os.getloadavg()
    peak = measure_matmul_peak()
    print(f"fp32 matmul peak: {peak / 1e9:.0f} GFLOP/s", flush=True)
    rows = []
    for config in args.configs:
        reference = {}
        if args.reference:
            for mode in args.modes:
                reference[mode] = _measure_in_subprocess(
                    _spec(args, config, mode, kind="reference"), "torch", args.timeout
                )
            rows.append(_row("reference (torch eager)", config, {}, reference, reference))
            _print_row(rows[-1])
        grid = itertools.product(args.backends, args.jit_compile, args.dtype_policies, args.data_formats)
        for backend, jit_compile, dtype_policy, data_format in grid:
            options = dict(jit_compile=jit_compile, dtype_policy=dtype_policy, data_format=data_format)
            results = {
                mode: _measure_in_subprocess(
                    _spec(args, config, mode, kind="keras", **options), backend, args.timeout
                )
                for mode in args.modes
            }
            rows.append(_row(backend, config, options, results, reference))
            _print_row(rows[-1])
    # Other processes lower a single reading; the best of two is closer to the peak.
    peak = max(peak, measure_matmul_peak())
    rows = [_with_peak_fraction(row, peak) for row in rows]
    table = format_markdown(rows, args, peak, load_before)
    print(table)
    _write_text(args.output, table)
    if args.json_output:
        _write_text(args.json_output, json.dumps({"matmul_peak": peak, "rows": rows}, indent=2))
    return table


def _spec(args, config, mode, kind, jit_compile="auto", dtype_policy="float32",
          data_format="channels_last"):
    return dict(
        kind=kind, config=config, mode=mode, batch_size=args.batch_size,
        image_size=args.image_size, steps=args.steps, warmup=args.warmup,
        jit_compile=jit_compile, dtype_policy=dtype_policy, data_format=data_format,
        remat=args.remat, input_pipeline=args.input_pipeline,
    )


def _measure_in_subprocess(spec, backend, timeout):
    # The child runs this file and imports this same copy of keras_astro, installed or not.
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (REPOSITORY_ROOT, env.get("PYTHONPATH"))))
    command = [sys.executable, os.path.abspath(__file__), "--measure", json.dumps(spec)]
    try:
        completed = subprocess.run(
            command, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    for line in reversed(completed.stdout.splitlines()):
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])
    error = (completed.stderr.strip().splitlines() or ["no output"])[-1]
    return {"error": f"{backend} {spec['mode']} failed (exit {completed.returncode}): {error}"}


def measure_matmul_peak(size=2048, repeats=10):
    """The machine's fp32 matmul rate in FLOP/s: best of `repeats` numpy matmuls."""
    import numpy as np

    rng = np.random.default_rng(0)
    a = rng.random((size, size), dtype=np.float32)
    b = rng.random((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _with_peak_fraction(row, peak):
    fractions = {
        f"{mode}_peak_fraction": row[f"{mode}_gflops"] * 1e9 / peak
        for mode in MODES
        if f"{mode}_gflops" in row
    }
    return dict(row, **fractions)


def _row(name, config, options, results, reference):
    row = dict(name=name, config=config, **options)
    for mode in MODES:
        result = results.get(mode)
        if result is None:
            continue
        if "error" in result:
            row[f"{mode}_error"] = result["error"]
            continue
        factor = TRAIN_FLOPS_FACTOR if mode == "train" else 1
        flops = result["flops"]
        row.update({
            f"{mode}_images_per_s": result["images_per_s"],
            f"{mode}_best_images_per_s": result["best_images_per_s"],
            f"{mode}_gflops": result["images_per_s"] * flops * factor / 1e9,
            f"{mode}_peak_rss_mib": result["peak_rss_mib"],
            f"{mode}_added_rss_mib": result["peak_rss_mib"] - result["rss_before_mib"],
        })
        row["flops"] = result["flops"]
        row["reference_flops"] = result["reference_flops"]
        row["compiler"] = result["compiler"]
        ref = reference.get(mode, {})
        if "images_per_s" in ref:
            row[f"{mode}_speedup"] = result["images_per_s"] / ref["images_per_s"]
    return row


_COLUMNS = (
    ("backend", lambda r: r["name"]),
    ("config", lambda r: r["config"]),
    ("jit_compile", lambda r: f"{r.get('jit_compile', '-')} ({r.get('compiler', '-')})"),
    ("dtype", lambda r: r.get("dtype_policy", "float32")),
    ("layout", lambda r: r.get("data_format", "channels_first (NCHW)")),
)
_METRICS = (
    ("train img/s", "train_images_per_s", "{:.1f}"),
    ("train x ref", "train_speedup", "{:.2f}x"),
    ("train GFLOP/s", "train_gflops", "{:.0f}"),
    ("train % peak", "train_peak_fraction", "{:.0%}"),
    ("train peak RSS MiB", "train_peak_rss_mib", "{:.0f}"),
    ("train RSS added MiB", "train_added_rss_mib", "{:.0f}"),
    ("infer img/s", "predict_images_per_s", "{:.1f}"),
    ("infer x ref", "predict_speedup", "{:.2f}x"),
    ("infer GFLOP/s", "predict_gflops", "{:.0f}"),
    ("infer % peak", "predict_peak_fraction", "{:.0%}"),
    ("infer peak RSS MiB", "predict_peak_rss_mib", "{:.0f}"),
)


def format_markdown(rows, args, peak, load_before):
    """The results as a markdown document: settings, then one table row per measurement."""
    header = [name for name, _ in _COLUMNS] + [name for name, _, _ in _METRICS]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join("---" for _ in header) + "|",
    ]
    errors = []
    for row in rows:
        cells = [str(get(row)) for _, get in _COLUMNS]
        for _, key, fmt in _METRICS:
            cells.append(fmt.format(row[key]) if key in row else "-")
        lines.append("| " + " | ".join(cells) + " |")
        errors += [f"- {row['name']} {row['config']}: {row[k]}" for k in row if k.endswith("_error")]
    flops = sorted(
        {(r["config"], r["flops"], r["reference_flops"]) for r in rows if "compiler" in r
         and not r["name"].startswith("reference")}
    )
    notes = [
        f"Batch {args.batch_size}, {args.image_size}x{args.image_size} images, "
        f"{args.warmup} warm-up + {args.steps} timed steps (median step time), "
        f"input pipeline: {args.input_pipeline}, remat: {args.remat}. torch processes "
        "(the reference and the torch backend) flush denormals to zero, as TensorFlow "
        "and XLA do.",
        f"fp32 matmul peak (numpy 2048x2048, best of 10, before and after): "
        f"{peak / 1e9:.0f} GFLOP/s; training counts {TRAIN_FLOPS_FACTOR}x the forward FLOPs.",
    ]
    notes += [
        f"FLOPs per image, {config}: {f / 1e9:.3f} GFLOP folded q.(k+r)^T "
        f"({rf / 1e9:.3f} GFLOP as the reference computes q.k^T + q.r^T, which its GFLOP/s use)."
        for config, f, rf in flops
    ]
    notes.append(
        f"Machine: {cpu_name()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; load average "
        f"{_load(load_before)} before, {_load(os.getloadavg())} after."
    )
    notes.append("Command: `" + shlex.join([os.path.basename(sys.argv[0])] + sys.argv[1:]) + "`")
    text = "\n".join(lines) + "\n\n" + "\n".join(f"- {note}" for note in notes) + "\n"
    if errors:
        text += "\nFailed measurements:\n" + "\n".join(errors) + "\n"
    return text


def _load(averages):
    return " ".join(f"{value:.2f}" for value in averages)


def _print_row(row):
    summary = ", ".join(
        f"{label} {fmt.format(row[key])}" for label, key, fmt in _METRICS if key in row
    )
    errors = "; ".join(row[k] for k in row if k.endswith("_error"))
    print(f"{row['name']} {row['config']} {row.get('jit_compile', '')} {row.get('compiler', '')} "
          f"{row.get('dtype_policy', '')} {row.get('data_format', '')}: {summary} {errors}",
          flush=True)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _write_text(path, text):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    write_atomically(path, lambda f: f.write(text))


# === Inside a measurement subprocess ===


def _peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _rss_mib():
    with open("/proc/self/statm") as statm:
        resident_pages = int(statm.read().split()[1])
    return resident_pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def _throughput(times, warmup, batch_size):
    """Images/s from the intervals between step-end timestamps after the warm-up.

    The median is the figure reported; the fastest step ("best") is kept in the JSON
    output, as the figure other processes on a shared machine disturb least.
    """
    intervals = [b - a for a, b in zip(times[warmup - 1:], times[warmup:])]
    return dict(
        images_per_s=batch_size / statistics.median(intervals),
        best_images_per_s=batch_size / min(intervals),
    )


def _synthetic_data(spec, channels_first):
    import numpy as np

    rng = np.random.default_rng(0)
    count = spec["batch_size"] * (spec["warmup"] + spec["steps"])
    size = spec["image_size"]
    shape = (count, 3, size, size) if channels_first else (count, size, size, 3)
    images = rng.uniform(0, 255, shape).astype("float32")
    labels = rng.integers(0, 10, count)
    return images, labels


def _measure_keras(spec):
    import keras
    import numpy as np

    from keras_astro.models import AstroTransformer
    from keras_astro.models.flops import count_flops

    keras.config.set_dtype_policy(spec["dtype_policy"])
    size = spec["image_size"]
    channels_first = spec["data_format"] == "channels_first"
    model = AstroTransformer.from_name(
        spec["config"],
        input_shape=(3, size, size) if channels_first else (size, size, 3),
        data_format=spec["data_format"],
        remat=spec["remat"],
    )
    jit_compile = {"auto": "auto", "true": True, "false": False}[spec["jit_compile"]]
    model.compile(
        optimizer="adam", loss="sparse_categorical_crossentropy", jit_compile=jit_compile
    )
    compiler = "torch.compile" if keras.backend.backend() == "torch" else "XLA"
    images, labels = _synthetic_data(spec, channels_first)
    times = []

    def stamp(batch, logs=None):
        # Wait for the step's results so asynchronous dispatch is not mistaken for speed.
        for value in keras.tree.flatten(logs or {}):
            np.asarray(keras.ops.convert_to_numpy(value))
        times.append(time.perf_counter())

    timer = keras.callbacks.LambdaCallback(on_train_batch_end=stamp)
    timer.on_predict_batch_end = stamp
    batch_size = spec["batch_size"]
    if spec["input_pipeline"] == "tf.data":
        import tensorflow as tf

        data = tf.data.Dataset.from_tensor_slices((images, labels))
        data = data.batch(batch_size).prefetch(tf.data.AUTOTUNE)
        inputs = dict(x=data) if spec["mode"] == "train" else dict(x=data.map(lambda x, y: x))
    else:
        inputs = dict(x=images, y=labels, batch_size=batch_size)
        if spec["mode"] == "predict":
            del inputs["y"]
    rss_before = _rss_mib()
    if spec["mode"] == "train":
        model.fit(**inputs, epochs=1, callbacks=[timer], verbose=0)
    else:
        model.predict(**inputs, callbacks=[timer], verbose=0)
    return dict(
        **_throughput(times, spec["warmup"], batch_size),
        flops=count_flops(model),
        reference_flops=count_flops(model, reference=True),
        peak_rss_mib=_peak_rss_mib(),
        rss_before_mib=rss_before,
        compiler=compiler if model.jit_compile else "none",
    )


def _measure_reference(spec):
    import torch

    from keras_astro.models import CONFIGS, AstroTransformer
    from keras_astro.models.flops import count_flops
    from keras_astro.models.reference import ReferenceAstroTransformer

    expansion, stage_depths = CONFIGS[spec["config"]]
    model = ReferenceAstroTransformer(expansion, stage_depths, num_classes=10)
    images, labels = _synthetic_data(spec, channels_first=True)
    batch_size = spec["batch_size"]
    batches = [
        (torch.from_numpy(images[i:i + batch_size] / 127.5 - 1.0).float(),
         torch.from_numpy(labels[i:i + batch_size]))
        for i in range(0, len(images), batch_size)
    ]
    times = []
    rss_before = _rss_mib()
    if spec["mode"] == "train":
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
        loss_fn = torch.nn.CrossEntropyLoss()
        for x, y in batches:
            optimizer.zero_grad()
            loss = loss_fn(model(x), y)
            loss.backward()
            optimizer.step()
            loss.item()
            times.append(time.perf_counter())
    else:
        model.eval()
        with torch.inference_mode():
            for x, _ in batches:
                model(x).softmax(-1).numpy()
                times.append(time.perf_counter())
    size = spec["image_size"]
    flops_model = AstroTransformer.from_name(spec["config"], input_shape=(size, size, 3))
    return dict(
        **_throughput(times, spec["warmup"], batch_size),
        # The reference's GFLOP/s count what it computes: q.k^T + q.r^T.
        flops=count_flops(flops_model, reference=True),
        reference_flops=count_flops(flops_model, reference=True),
        peak_rss_mib=_peak_rss_mib(),
        rss_before_mib=rss_before,
        compiler="none",
    )


def _flush_denormals_in_torch():
    """Flush denormal floats to zero in torch, as TensorFlow and XLA do on CPU already.

    Without it the reference's unscaled attention logits underflow to denormals as
    training goes on, and its steps slowed from 1.2 s to 40 s here: a measurement of
    the CPU's denormal path, not of the model.
    """
    import torch

    torch.set_flush_denormal(True)


def _measure(spec):
    if spec["kind"] == "reference" or os.environ.get("KERAS_BACKEND") == "torch":
        _flush_denormals_in_torch()
    result = _measure_reference(spec) if spec["kind"] == "reference" else _measure_keras(spec)
    print(_RESULT_PREFIX + json.dumps(result), flush=True)


def main(argv=None):
    """`python benchmarks/harness.py [options]`; `--measure SPEC` is the subprocess side."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        _measure(json.loads(args.measure))
    else:
        run(args)


if __name__ == "__main__":
    main()
