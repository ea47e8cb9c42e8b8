"""AstroTransformer on one GPU: throughput, attention kernel, memory and FLOP rate per backend.

One command measures the torch and JAX backends (no TensorFlow: the lent H200 machine has
none, and each child process refuses to import it), one subprocess at a time, since
KERAS_BACKEND is process-wide:

- training and inference images/s of `small`, `base` and `large` at batch 256, 32x32x3
  synthetic images, in float32 and mixed_bfloat16;
- the fused attention kernel in use: torch, the SDPA backend read off the profiler's aten
  ops (flash / efficient / cudnn / math); JAX, the compiled step's HLO (a cuDNN fused
  attention custom call, or XLA);
- peak GPU memory of training, with and without `remat=True`;
- achieved TFLOP/s (`keras_astro.models.flops.count_flops`, training = 3x forward) against the
  chip's dense bf16 peak;
- images/s against batch size (small, mixed_bfloat16).

What is timed is Keras' own step on device-resident batches: on torch the function
`Model.fit` calls per step (`model.train_function`, eager `train_step`), on JAX
`jax.jit(model.train_step, donate_argnums=0)` as `fit` compiles it (and `predict_step`
likewise). The host input pipeline is left out. Warm-up steps first, then timed blocks
of steps between two synchronisations (`torch.cuda.synchronize`,
`jax.block_until_ready`); the median block is reported.

    python benchmarks/gpu/run.py                  # on a GPU machine (see README.md here)
    python benchmarks/gpu/run.py --tiny           # a CPU smoke run: small, 8x8, batch 4

Prints one Markdown table last; with --output-dir (default: $OUT when set) also writes
gpu_benchmark.md, gpu_benchmark.json and one log per subprocess there.
"""

import argparse
import datetime
import importlib.machinery
import json
import os
import platform
import signal
import statistics
import subprocess
import sys
import threading
import time

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG_NAMES = ("small", "base", "large")
DTYPES = ("float32", "mixed_bfloat16")
BACKENDS = ("torch", "jax")
# Dense bf16 tensor-core peak of the H100/H200 SXM datasheet (the same chip); KINDS.md
# saw about 790 TFLOP/s on an 8192^3 bf16 matmul of random data on the lent H200.
SPEC_BF16_TFLOPS = 989.0
TRAIN_FLOPS_FACTOR = 3  # forward, gradient with respect to activations, and to weights
RESULT = "KERAS_ASTRO_GPU "
MIB = 2**20


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--configs", nargs="+", choices=CONFIG_NAMES, default=list(CONFIG_NAMES))
    parser.add_argument("--dtypes", nargs="+", choices=DTYPES, default=list(DTYPES),
                        help="Keras dtype policies of the main grid.")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--sweep-batches", type=int, nargs="*", default=[64, 128, 512, 1024],
                        help="Other batch sizes for small in --sweep-dtype (256 is in the grid).")
    parser.add_argument("--sweep-config", choices=CONFIG_NAMES, default="small")
    parser.add_argument("--sweep-dtype", choices=DTYPES, default="mixed_bfloat16")
    parser.add_argument("--remat-configs", nargs="*", choices=CONFIG_NAMES,
                        default=list(CONFIG_NAMES),
                        help="Configs trained again with remat=True (memory rows).")
    parser.add_argument("--remat-dtype", choices=DTYPES, default="mixed_bfloat16")
    parser.add_argument("--warmup", type=int, default=3, help="Untimed steps first.")
    parser.add_argument("--steps", type=int, default=10, help="Steps per timed block.")
    parser.add_argument("--repeats", type=int, default=3, help="Timed blocks; the median is reported.")
    parser.add_argument("--budget", type=float, default=360,
                        help="Seconds for the whole run; measurements that would start "
                        "later are skipped (and listed). Subprocesses are killed 60 s after.")
    parser.add_argument("--output-dir", default=os.environ.get("OUT") or None,
                        help="Folder for gpu_benchmark.md/.json and logs (default: $OUT).")
    parser.add_argument("--tiny", action="store_true",
                        help="Smoke run that a CPU can do: small, 8x8 images, batch 4, "
                        "1 warm-up + 2 steps, sweep batch 2, remat small.")
    parser.add_argument("--allow-cpu", action="store_true",
                        help="Run the full settings without a GPU (implied by --tiny).")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    if "--tiny" in (sys.argv[1:] if argv is None else argv):
        # New defaults: options given explicitly still win.
        parser.set_defaults(configs=["small"], batch_size=4, image_size=8, sweep_batches=[2],
                            remat_configs=["small"], warmup=1, steps=2, repeats=1, budget=240,
                            allow_cpu=True)
    return parser.parse_args(argv)


# ====================================================================================
# Parent: runs one subprocess per backend (JAX: two), collects their JSON lines.
# ====================================================================================


def child_plan(args):
    """(name, backend, parts, share of the budget by the end of this child)."""
    plan = []
    if "torch" in args.backends:
        # torch resets its peak-memory counter per measurement: one process does all.
        plan.append(("torch", "torch", ["grid", "remat", "sweep"]))
    if "jax" in args.backends:
        # JAX's peak_bytes_in_use never goes down: remat runs in a fresh process of its
        # own (configs in growing order), before the grid process.
        if args.remat_configs:
            plan.append(("jax_remat", "jax", ["remat"]))
        plan.append(("jax", "jax", ["grid", "sweep"]))
    weights = {"torch": 0.35, "jax_remat": 0.2, "jax": 0.45}
    total = sum(weights[name] for name, _, _ in plan)
    share, result = 0.0, []
    for name, backend, parts in plan:
        share += weights[name] / total
        result.append((name, backend, parts, share))
    return result


def run_children(args):
    start = time.time()
    records, logs = [], {}
    for name, backend, parts, share in child_plan(args):
        deadline = start + args.budget * share
        spec = dict(vars(args), parts=parts, deadline=deadline, child_name=name, started=time.time())
        spec.pop("child")
        records_before = len(records)
        logs[name], returncode = _run_child(name, backend, spec, deadline + 60, records)
        if len(records) == records_before:
            records.append(dict(kind="error", child=name, backend=backend,
                                error=f"{name}: no result; log tail:\n" + logs[name][-2000:]))
        elif returncode and not any(r["kind"] == "error" for r in records[records_before:]):
            how = ("killed 60 s after its deadline" if returncode == -signal.SIGKILL
                   else f"exited with status {returncode}")
            records.append(dict(kind="error", child=name, backend=backend,
                                error=f"{name} {how}: what it had not printed yet did not run "
                                f"(log_{name}.txt)"))
    return records, logs, time.time() - start


def _run_child(name, backend, spec, kill_at, records):
    env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (REPOSITORY_ROOT, env.get("PYTHONPATH"))))
    command = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(spec)]
    print(f"== {name}: KERAS_BACKEND={backend} parts {' '.join(spec['parts'])}", flush=True)
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, start_new_session=True)
    timer = threading.Timer(max(1.0, kill_at - time.time()), _kill, [process])
    timer.start()
    log = []
    try:
        for line in process.stdout:
            log.append(line)
            if line.startswith(RESULT):
                record = json.loads(line[len(RESULT):])
                record["child"] = name
                records.append(record)
                print(f"   {_progress(record)}", flush=True)
        process.wait()
    finally:
        timer.cancel()
    if process.returncode:
        note = f"{name} exited with status {process.returncode}"
        log.append(note + "\n")
        print(f"   {note}", flush=True)
    return "".join(log), process.returncode


def _kill(process):
    try:
        os.killpg(process.pid, signal.SIGKILL)  # the child's own session: itself only
    except ProcessLookupError:
        pass


def _progress(record):
    if record["kind"] != "measurement":
        return f"{record['kind']}: " + json.dumps(
            {k: v for k, v in record.items() if k not in ("kind", "child")}
        )[:300]
    bits = [f"{record['backend']} {record['config']} {record['dtype']} batch {record['batch_size']}"
            f"{' remat' if record['remat'] else ''}:"]
    for mode in ("train", "predict"):
        result = record.get(mode) or {}
        if "images_per_s" in result:
            bits.append(f"{mode} {result['images_per_s']:.0f} img/s")
        elif "skipped" in result or "error" in result:
            bits.append(f"{mode} {result.get('skipped') or result.get('error')}")
    return " ".join(bits)


# === Table ===


def build_rows(records, args):
    rows = [r for r in records if r["kind"] == "measurement"]
    order = {name: i for i, name in enumerate(CONFIG_NAMES)}
    section = {"grid": 0, "sweep": 1, "remat": 2}
    rows.sort(key=lambda r: (BACKENDS.index(r["backend"]), section[r["part"]],
                             order[r["config"]], DTYPES.index(r["dtype"]), r["batch_size"]))
    return rows


def _tflops(row, mode):
    result = row.get(mode) or {}
    if "images_per_s" not in result:
        return None
    factor = TRAIN_FLOPS_FACTOR if mode == "train" else 1
    return result["images_per_s"] * row["flops_per_image"] * factor / 1e12


def _memory_cell(row):
    memory = (row.get("train") or {}).get("memory") or {}
    if memory.get("peak_bytes") is not None:
        return f"{memory['peak_bytes'] / MIB:,.0f}"
    if memory.get("xla_estimate_bytes") is not None:
        return f"~{memory['xla_estimate_bytes'] / MIB:,.0f} (XLA)"
    return "-"


def _kernel_cell(row):
    train = (row.get("train") or {}).get("attention_kernel")
    predict = (row.get("predict") or {}).get("attention_kernel")
    if train and predict and train != predict:
        return f"{train} / {predict}"
    return train or predict or "-"


HEADER = ("backend", "config", "dtype", "batch", "remat", "train img/s", "infer img/s",
          "train TFLOP/s", "infer TFLOP/s", "train % bf16 peak", "infer % bf16 peak",
          "train peak MiB", "attention kernel (train / infer)")


def format_table(rows):
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "|".join("---" for _ in HEADER) + "|"]
    for row in rows:
        cells = [row["backend"], row["config"], row["dtype"], str(row["batch_size"]),
                 "yes" if row["remat"] else "no"]
        for mode in ("train", "predict"):
            result = row.get(mode)
            if result is None:
                cells.append("-")
            elif "images_per_s" in result:
                cells.append(f"{result['images_per_s']:,.0f}" if result["images_per_s"] >= 100
                             else f"{result['images_per_s']:.1f}")
            else:
                cells.append("skipped" if "skipped" in result else "failed")
        for fmt in ("{:.1f}", "{:.1%}"):
            for mode in ("train", "predict"):
                value = _tflops(row, mode)
                if value is not None and fmt.endswith("%}"):
                    value = value / SPEC_BF16_TFLOPS
                cells.append("-" if value is None else fmt.format(value))
        cells += [_memory_cell(row), _kernel_cell(row)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_notes(records, rows, args, elapsed):
    infos = [r for r in records if r["kind"] == "info"]
    notes = [
        f"{args.image_size}x{args.image_size}x3 synthetic images (uniform 0..255), "
        f"{args.warmup} warm-up steps, then {args.repeats} timed block(s) of {args.steps} steps "
        "between two synchronisations; median block. Timed: Keras' own train/predict step on "
        "device-resident batches (torch: `model.train_function`, eager; JAX: "
        "`jax.jit(model.train_step, donate_argnums=0)`), Adam, sparse categorical cross-entropy.",
        f"TFLOP/s: `keras_astro.models.flops.count_flops` per image x images/s, training counted "
        f"{TRAIN_FLOPS_FACTOR}x the forward pass; % against {SPEC_BF16_TFLOPS:.0f} TFLOP/s "
        "(dense bf16, H100/H200 SXM datasheet), also for float32 rows.",
        "Peak memory: torch `torch.cuda.max_memory_allocated` (reset before each training "
        "measurement: model, optimizer, batches and the step); JAX `memory_stats()"
        "['peak_bytes_in_use']` when the measurement raised the process' peak (remat rows run "
        "in a fresh process, configs in growing order; compilation and autotuning included), "
        "else `~N (XLA)`: the compiled step's arguments + outputs - aliased + temporaries.",
    ]
    flops = sorted({(r["config"], r["flops_per_image"]) for r in rows if r["flops_per_image"]},
                   key=lambda c: CONFIG_NAMES.index(c[0]))
    if flops:
        notes.append("FLOPs per image: " + ", ".join(f"{c} {f / 1e9:.3f} GFLOP" for c, f in flops))
    for info in infos:
        notes.append(f"{info['child']}: " + ", ".join(f"{k} {v}" for k, v in info["environment"].items()))
    for backend in BACKENDS:
        for config in CONFIG_NAMES:
            pair = {}
            for row in rows:
                memory = (row.get("train") or {}).get("memory") or {}
                if (row["backend"], row["config"], row["dtype"], row["batch_size"]) == (
                        backend, config, args.remat_dtype, args.batch_size) and memory.get("peak_bytes"):
                    pair[row["remat"]] = memory["peak_bytes"]
            if len(pair) == 2:
                notes.append(f"remat, {backend} {config} {args.remat_dtype}: peak "
                             f"{pair[False] / MIB:,.0f} -> {pair[True] / MIB:,.0f} MiB "
                             f"({pair[True] / pair[False] - 1:+.0%})")
    skipped = [f"{r['backend']} {r['config']} {r['dtype']} batch {r['batch_size']}"
               f"{' remat' if r['remat'] else ''} {mode}: {r[mode].get('skipped') or r[mode].get('error')}"
               for r in rows for mode in ("train", "predict")
               if r.get(mode) and "images_per_s" not in r[mode]]
    errors = [r["error"] for r in records if r["kind"] == "error"]
    notes.append(f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, "
                 f"{elapsed:.0f} s in all (budget {args.budget:.0f} s); host {platform.node()}, "
                 f"{os.cpu_count()} CPUs, Python {platform.python_version()}. Command: `"
                 + " ".join(["benchmarks/gpu/run.py", *sys.argv[1:]]) + "`")
    text = "\n".join(f"- {note}" for note in notes)
    if skipped or errors:
        text += "\n\nNot measured:\n" + "\n".join(f"- {line}" for line in skipped + errors)
    return text


def main(argv=None):
    args = parse_args(argv)
    if args.child:
        return child_main(json.loads(args.child))
    records, logs, elapsed = run_children(args)
    rows = build_rows(records, args)
    table = format_table(rows)
    document = f"{table}\n\n{format_notes(records, rows, args, elapsed)}\n"
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        with open(os.path.join(args.output_dir, "gpu_benchmark.md"), "w") as f:
            f.write(document)
        with open(os.path.join(args.output_dir, "gpu_benchmark.json"), "w") as f:
            json.dump(dict(settings={k: v for k, v in vars(args).items() if k != "child"},
                           spec_bf16_tflops=SPEC_BF16_TFLOPS, elapsed_s=elapsed,
                           records=records), f, indent=1)
        for name, log in logs.items():
            with open(os.path.join(args.output_dir, f"log_{name}.txt"), "w") as f:
                f.write(log)
    print()
    print(document, flush=True)
    measured = any("images_per_s" in (r.get(m) or {}) for r in rows for m in ("train", "predict"))
    return 0 if measured else 1


# ====================================================================================
# Child: one backend, in a process of its own. Prints one JSON line per result.
# ====================================================================================


class _NoTensorFlow:
    """A meta-path finder under which `import tensorflow` fails, as on the GPU machine.

    `importlib.util.find_spec("tensorflow")` gets a spec without an origin (torch._dynamo
    asks that at import and then leaves TensorFlow alone); importing it raises
    ModuleNotFoundError, as when it is not installed.
    """

    def find_spec(self, name, path=None, target=None):
        if name == "tensorflow" or name.startswith("tensorflow."):
            return importlib.machinery.ModuleSpec(name, self)
        return None

    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (blocked by {__file__})",
                                  name=spec.name)

    def exec_module(self, module):
        raise AssertionError("unreachable")


def emit(kind, **fields):
    print(RESULT + json.dumps(dict(kind=kind, **fields)), flush=True)


def child_main(spec):
    sys.meta_path.insert(0, _NoTensorFlow())
    backend = os.environ["KERAS_BACKEND"]
    runner = TorchRunner(spec) if backend == "torch" else JaxRunner(spec)
    if not runner.on_gpu and not spec["allow_cpu"]:
        emit("error", backend=backend, error=f"{backend} sees no GPU ({runner.device_name}); "
             "--tiny or --allow-cpu runs on the CPU")
        return 1
    environment = runner.environment()
    if spec["parts"] != ["remat"]:  # the remat process measures memory from zero
        environment.update(runner.matmul_peak())
    environment["tensorflow imported"] = "tensorflow" in sys.modules
    environment["seconds to here"] = round(time.time() - spec["started"], 1)
    emit("info", backend=backend, environment=environment)
    for part in spec["parts"]:
        for config, dtype, batch_size, remat, modes in _part_measurements(spec, part):
            record = dict(backend=backend, part=part, config=config, dtype=dtype,
                          batch_size=batch_size, remat=remat, image_size=spec["image_size"])
            left = spec["deadline"] - time.time()
            if left < (0 if spec["tiny"] else 10):
                record.update({mode: dict(skipped="time budget") for mode in modes})
                record["flops_per_image"] = 0
                emit("measurement", **record)
                continue
            started = time.time()
            try:
                record.update(runner.measure(config, dtype, batch_size, remat, modes))
            except Exception as error:  # noqa: BLE001 - reported, and the next one runs
                import traceback

                traceback.print_exc()
                record.setdefault("flops_per_image", 0)
                for mode in modes:
                    record.setdefault(mode, dict(error=f"{type(error).__name__}: {error}"[:300]))
            record["seconds"] = round(time.time() - started, 1)
            record["tensorflow_imported"] = "tensorflow" in sys.modules
            emit("measurement", **record)
            runner.cleanup()
    return 0


def _part_measurements(spec, part):
    """(config, dtype, batch size, remat, modes) in the order they run."""
    batch = spec["batch_size"]
    if part == "grid":
        # mixed_bfloat16 first and configs in growing order, so JAX's monotone peak
        # memory reading is each bf16 training step's own (see the notes).
        dtypes = sorted(spec["dtypes"], key=lambda d: d != "mixed_bfloat16")
        return [(c, d, batch, False, ("predict", "train")) for d in dtypes for c in spec["configs"]]
    if part == "sweep":
        return [(spec["sweep_config"], spec["sweep_dtype"], b, False, ("predict", "train"))
                for b in sorted(spec["sweep_batches"]) if b != batch]
    if part == "remat":
        configs = [c for c in CONFIG_NAMES if c in spec["remat_configs"]]
        return [(c, spec["remat_dtype"], batch, True, ("train",)) for c in configs]
    raise ValueError(part)


class Runner:
    def __init__(self, spec):
        import numpy as np

        self.spec = spec
        self.rng = np.random.default_rng(0)

    def data(self, batch_size):
        """Two distinct batches of images and labels (numpy), used in turn."""
        size = self.spec["image_size"]
        return [(self.rng.uniform(0, 255, (batch_size, size, size, 3)).astype("float32"),
                 self.rng.integers(0, 10, batch_size).astype("int32")) for _ in range(2)]

    def build(self, config, dtype, remat):
        import keras

        from keras_astro.models import AstroTransformer
        from keras_astro.models.flops import count_flops

        keras.config.set_dtype_policy(dtype)
        size = self.spec["image_size"]
        model = AstroTransformer.from_name(config, input_shape=(size, size, 3), remat=remat)
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        return model, count_flops(model)

    def time_steps(self, step, batch_size):
        """Runs `step(i)` for warm-up and timed blocks; returns images/s figures."""
        spec = self.spec
        for i in range(spec["warmup"]):
            step(i)
        self.sync()
        rates = []
        for _ in range(spec["repeats"]):
            start = time.perf_counter()
            for i in range(spec["steps"]):
                step(i)
            self.sync()
            rates.append(batch_size * spec["steps"] / (time.perf_counter() - start))
        return dict(images_per_s=statistics.median(rates), best_images_per_s=max(rates),
                    block_images_per_s=rates)

    def cleanup(self):
        import gc

        import keras

        keras.config.set_dtype_policy("float32")
        keras.backend.clear_session()
        gc.collect()


class TorchRunner(Runner):
    def __init__(self, spec):
        super().__init__(spec)
        import torch

        self.torch = torch
        self.on_gpu = torch.cuda.is_available()
        self.device = "cuda" if self.on_gpu else "cpu"
        self.device_name = torch.cuda.get_device_name(0) if self.on_gpu else "cpu"

    def sync(self):
        if self.on_gpu:
            self.torch.cuda.synchronize()

    def environment(self):
        import keras

        torch = self.torch
        env = {"device": self.device_name, "torch": torch.__version__, "keras": keras.__version__,
               "CUDA": torch.version.cuda, "cuDNN": torch.backends.cudnn.version()}
        if self.on_gpu:
            env.update({
                "matmul allow_tf32": torch.backends.cuda.matmul.allow_tf32,
                "cudnn allow_tf32": torch.backends.cudnn.allow_tf32,
                "SDPA enabled: flash/efficient/cudnn/math": "/".join(str(f()) for f in (
                    torch.backends.cuda.flash_sdp_enabled, torch.backends.cuda.mem_efficient_sdp_enabled,
                    getattr(torch.backends.cuda, "cudnn_sdp_enabled", lambda: "n/a"),
                    torch.backends.cuda.math_sdp_enabled)),
            })
        return env

    def matmul_peak(self):
        if not self.on_gpu:
            return {}
        torch = self.torch
        n = 8192
        a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
        for _ in range(3):
            a @ b
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(10):
            a @ b
        end.record()
        torch.cuda.synchronize()
        tflops = 10 * 2 * n**3 / (start.elapsed_time(end) / 1e3) / 1e12
        del a, b
        torch.cuda.empty_cache()
        return {"bf16 8192^3 matmul TFLOP/s (torch)": round(tflops, 1)}

    def measure(self, config, dtype, batch_size, remat, modes):
        torch = self.torch
        model, flops = self.build(config, dtype, remat)
        batches = [(torch.as_tensor(x, device=self.device), torch.as_tensor(y, device=self.device).long())
                   for x, y in self.data(batch_size)]
        result = dict(flops_per_image=flops)
        for mode in modes:
            if mode == "train":
                model.make_train_function()
                function, data = model.train_function, batches
            else:
                model.make_predict_function()
                function, data = model.predict_function, [(x,) for x, _ in batches]
            step = lambda i: function([data[i % 2]])  # noqa: E731 - Keras passes [batch]
            if self.on_gpu:
                self.sync()
                torch.cuda.reset_peak_memory_stats()
            timing = self.time_steps(step, batch_size)
            if self.on_gpu:
                timing["memory"] = dict(peak_bytes=torch.cuda.max_memory_allocated())
            timing["attention_kernel"], timing["attention_ops"] = self.attention_kernel(step)
            result[mode] = timing
        del model, batches
        return result

    def attention_kernel(self, step):
        """Which SDPA implementation one step runs, from the profiler's aten op names."""
        from torch.profiler import ProfilerActivity, profile

        names = None
        for activities in ([ProfilerActivity.CPU, ProfilerActivity.CUDA], [ProfilerActivity.CPU]):
            if ProfilerActivity.CUDA in activities and not self.on_gpu:
                continue
            try:  # CUDA kernel names too where CUPTI works; the aten ops decide
                with profile(activities=activities) as prof:
                    step(0)
                    self.sync()
                names = sorted({event.name for event in prof.events()})
                break
            except Exception as error:  # noqa: BLE001 - then without CUDA, then unknown
                print(f"profiler with {activities} failed: {error}", flush=True)
        if names is None:
            return "unknown (profiler failed)", []
        kinds = {"_scaled_dot_product_flash_attention": "flash",
                 "_scaled_dot_product_fused_attention_overrideable": "fused (overrideable)",
                 "_scaled_dot_product_efficient_attention": "efficient",
                 "_efficient_attention": "efficient",
                 "_scaled_dot_product_cudnn_attention": "cudnn",
                 "_scaled_dot_product_attention_math": "math"}
        found = []
        for name in names:
            for key, kind in kinds.items():
                if key in name:
                    kind += " (CPU)" if name.endswith("_for_cpu") or "for_cpu_backward" in name else ""
                    if kind not in found:
                        found.append(kind)
        ops = [n for n in names if any(k in n.lower() for k in ("attention", "fmha", "flash", "sdpa"))]
        return "+".join(found) or "none found", ops[:12]

    def cleanup(self):
        super().cleanup()
        if self.on_gpu:
            self.torch.cuda.empty_cache()


class JaxRunner(Runner):
    def __init__(self, spec):
        super().__init__(spec)
        import jax

        self.jax = jax
        self.device_obj = jax.devices()[0]
        self.on_gpu = self.device_obj.platform == "gpu"
        self.device_name = getattr(self.device_obj, "device_kind", self.device_obj.platform)
        self.peak_so_far = self._peak_bytes() or 0

    def _peak_bytes(self):
        stats = self.device_obj.memory_stats() if self.on_gpu else None
        return (stats or {}).get("peak_bytes_in_use")

    def sync(self):
        pass  # each step blocks on its own outputs below (time_steps' last step)

    def environment(self):
        import jaxlib
        import keras

        jax = self.jax
        return {"device": self.device_name, "jax": jax.__version__, "jaxlib": jaxlib.__version__,
                "keras": keras.__version__, "platform": self.device_obj.platform,
                "default matmul precision": jax.config.jax_default_matmul_precision or "default",
                "XLA_PYTHON_CLIENT_PREALLOCATE": os.environ.get("XLA_PYTHON_CLIENT_PREALLOCATE", "unset")}

    def matmul_peak(self):
        if not self.on_gpu:
            return {}
        jax, jnp = self.jax, self.jax.numpy
        n = 8192
        keys = jax.random.split(jax.random.PRNGKey(0), 2)
        a, b = (jax.random.normal(k, (n, n), jnp.bfloat16) for k in keys)
        matmul = jax.jit(lambda a, b: a @ b)
        for _ in range(3):
            matmul(a, b).block_until_ready()
        start = time.perf_counter()
        for _ in range(10):
            output = matmul(a, b)
        output.block_until_ready()  # one stream: the earlier products are done too
        tflops = 10 * 2 * n**3 / (time.perf_counter() - start) / 1e12
        del a, b, output
        return {"bf16 8192^3 matmul TFLOP/s (jax)": round(tflops, 1)}

    def measure(self, config, dtype, batch_size, remat, modes):
        jax, jnp = self.jax, self.jax.numpy
        model, flops = self.build(config, dtype, remat)
        numpy_batches = self.data(batch_size)
        model._symbolic_build(data_batch=numpy_batches[0])  # optimizer, loss tracker: as fit does
        batches = [(jnp.asarray(x), jnp.asarray(y)) for x, y in numpy_batches]
        result = dict(flops_per_image=flops)
        for mode in modes:  # predict first: training donates (deletes) the model's arrays
            if mode == "train":
                state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True,
                                             optimizer_variables=True, metrics_variables=True)
                function = jax.jit(model.train_step, donate_argnums=0)
                data = batches
            else:
                state = model._get_jax_state(trainable_variables=True, non_trainable_variables=True)
                function = jax.jit(model.predict_step)
                data = [(x,) for x, _ in batches]
            started = time.perf_counter()
            lowered = function.lower(state, data[0])
            compiled = lowered.compile()
            compile_s = time.perf_counter() - started
            holder = [state]

            def step(i):
                outputs, new_state = compiled(holder[0], data[i % 2])
                if mode == "train":
                    holder[0] = new_state
                holder.append(outputs)
                del holder[1:-1]

            def sync():
                jax.block_until_ready(holder)

            self.sync = sync
            timing = self.time_steps(step, batch_size)
            timing["compile_s"] = round(compile_s, 2)
            timing["attention_kernel"], timing["attention_ops"] = self.attention_kernel(
                lowered, compiled, dtype)
            if mode == "train":
                timing["memory"] = self.memory(compiled)
            result[mode] = timing
            self.sync = lambda: None
            holder.clear()  # let go of this step's state and outputs
            del state, lowered
        del model, batches
        return result

    def attention_kernel(self, lowered, compiled, dtype):
        """cuDNN fused attention if the step calls it (`__cudnn$fmha...`), else XLA's own.

        Searched in the lowered StableHLO (what JAX asked for: `jax.nn.dot_product_attention`
        with implementation="cudnn" emits that custom call) and in the optimised HLO.
        """
        import re

        from keras_astro.layers.backend_kernels import uses_custom_kernel

        found = set()
        for text in (lowered.as_text(), compiled.as_text() or ""):
            found.update(re.findall(r"__cudnn\$fmha\w*", text))
        if found:
            return "cudnn", sorted(found)
        # On a CPU keras_astro writes float32 attention as einsums around a softmax
        # (layers/backend_kernels.dot_product_attention); elsewhere it is
        # keras.ops.dot_product_attention, which fell back to XLA here.
        einsums = dtype == "float32" and uses_custom_kernel("jax", self.jax.numpy.zeros(()))
        return ("xla (einsums)" if einsums else "xla"), []

    def memory(self, compiled):
        memory = {}
        try:
            analysis = compiled.memory_analysis()
            memory["xla_estimate_bytes"] = (analysis.argument_size_in_bytes + analysis.output_size_in_bytes
                                            - analysis.alias_size_in_bytes + analysis.temp_size_in_bytes)
            memory["xla_temp_bytes"] = analysis.temp_size_in_bytes
        except Exception as error:  # noqa: BLE001 - not every platform reports it
            memory["xla_error"] = str(error)[:200]
        peak = self._peak_bytes()
        if peak is not None:
            memory["process_peak_bytes"] = peak
            if peak > self.peak_so_far:  # this measurement set the process' peak
                memory["peak_bytes"] = peak
            self.peak_so_far = max(self.peak_so_far, peak)
        return memory


if __name__ == "__main__":
    sys.exit(main())
