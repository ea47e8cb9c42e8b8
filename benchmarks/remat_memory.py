"""Training memory with and without `remat=True`, as each backend's own allocator counts it.

The harness' "train RSS added" is what the process took from the operating system; this
is what the framework itself allocated for one training step of the small model:
- torch: the profiler's memory timeline (`profile_memory=True`, every tensor allocation
  and free) over one step, its peak less the total when the step began;
- jax: the compiled training step's `memory_analysis()` temp buffer (XLA's plan for the
  activations and gradients, without the weights and optimizer state it takes in);
- tensorflow: the BFC allocator's peak during one step less its use before it
  (`TF_CPU_ALLOCATOR_USE_BFC=true`, `tf.config.experimental.get_memory_info`).
Each backend and setting runs in its own subprocess (the backend and the allocator are
chosen before import), after one warm-up step (compilation, optimizer variables).

    python benchmarks/remat_memory.py --batch-size 128
"""

import argparse
import json
import os
import subprocess
import sys

REPOSITORY_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BACKENDS = ("tensorflow", "jax", "torch")
MIB = 2**20
_RESULT_PREFIX = "REMAT_MEMORY_RESULT "


def _model_and_batch(remat, batch_size, image_size):
    import keras
    import numpy as np

    from keras_astro import AstroTransformer

    keras.utils.set_random_seed(0)
    model = AstroTransformer.small(
        input_shape=(image_size, image_size, 3), num_classes=10, remat=remat
    )
    model.compile(optimizer=keras.optimizers.AdamW(1e-3), loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (batch_size, image_size, image_size, 3)).astype("float32")
    return model, images, np.arange(batch_size) % 10


def _torch_step_bytes(model, images, labels):
    import tempfile
    import warnings

    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.set_flush_denormal(True)  # as in the harness: no denormal slow paths
    model.train_on_batch(images, labels)
    options = dict(profile_memory=True, record_shapes=True, with_stack=True)  # the timeline's needs
    with profile(activities=[ProfilerActivity.CPU], **options) as profiler:
        model.train_on_batch(images, labels)
    with tempfile.TemporaryDirectory() as folder, warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # its CUDA-only successor cannot see CPU
        path = os.path.join(folder, "timeline.json")
        profiler.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)
    totals = [sum(by_category) for by_category in sizes]
    return max(totals) - totals[0]


def _jax_step_bytes(model, images, labels):
    import jax

    model._symbolic_build(data_batch=(images, labels))  # optimizer and metrics, as fit does
    state = model._get_jax_state(
        trainable_variables=True, non_trainable_variables=True,
        optimizer_variables=True, metrics_variables=True,
    )
    step = jax.jit(model.train_step, donate_argnums=0)
    compiled = step.lower(state, (images, labels)).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def _tensorflow_step_bytes(model, images, labels):
    import tensorflow as tf

    model.train_on_batch(images, labels)
    tf.config.experimental.reset_memory_stats("CPU:0")
    before = tf.config.experimental.get_memory_info("CPU:0")["current"]
    model.train_on_batch(images, labels)
    return tf.config.experimental.get_memory_info("CPU:0")["peak"] - before


def measure(args):
    """In the child: one backend, one remat setting; prints the result line."""
    model, images, labels = _model_and_batch(args.remat, args.batch_size, args.image_size)
    step_bytes = {
        "torch": _torch_step_bytes, "jax": _jax_step_bytes, "tensorflow": _tensorflow_step_bytes,
    }[os.environ["KERAS_BACKEND"]](model, images, labels)
    print(_RESULT_PREFIX + json.dumps({"bytes": int(step_bytes)}), flush=True)


def run_child(backend, remat, args):
    command = [
        sys.executable, os.path.abspath(__file__), "--child", "--batch-size", str(args.batch_size),
        "--image-size", str(args.image_size),
    ] + (["--remat"] if remat else [])
    environment = dict(
        os.environ, KERAS_BACKEND=backend, TF_CPU_ALLOCATOR_USE_BFC="true",
        PYTHONPATH=os.pathsep.join(filter(None, [REPOSITORY_ROOT, os.environ.get("PYTHONPATH")])),
    )
    completed = subprocess.run(
        command, env=environment, capture_output=True, text=True, timeout=args.timeout
    )
    for line in completed.stdout.splitlines():
        if line.startswith(_RESULT_PREFIX):
            return json.loads(line[len(_RESULT_PREFIX):])["bytes"]
    raise RuntimeError(
        f"{backend} (remat={remat}) printed no result (exit {completed.returncode}):\n"
        + completed.stderr[-2000:]
    )


def table(results, args):
    lines = [
        f"small, batch {args.batch_size}, {args.image_size}x{args.image_size}, float32: memory "
        "one training step allocates, by the backend's own allocator",
        "",
        "| backend | allocator figure | without remat | `remat=True` | change |",
        "|---|---|---|---|---|",
    ]
    figure = {
        "torch": "profiler, peak live tensors", "jax": "XLA temp buffer (memory_analysis)",
        "tensorflow": "BFC allocator peak",
    }
    for backend, (plain, remat) in results.items():
        lines.append(
            f"| {backend} | {figure[backend]} | {plain / MIB:.0f} MiB | {remat / MIB:.0f} MiB "
            f"| {(remat - plain) / plain:+.0%} |"
        )
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS))
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per measurement")
    parser.add_argument("--remat", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        return measure(args)
    results = {
        backend: tuple(run_child(backend, remat, args) for remat in (False, True))
        for backend in args.backends
    }
    print(table(results, args))


if __name__ == "__main__":
    sys.exit(main())
