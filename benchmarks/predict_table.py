"""Images/s of `predict --output` from files to a table, against `model.predict` on the
same images already in memory, and the peak memory of each.

    python benchmarks/predict_table.py --num-images 2000 20000

Writes N random 32x32 PNG cutouts to a temporary folder and saves the small model
(10 classes, untrained: the speed does not depend on the weights). Each measurement
runs in a fresh Python, so its peak resident memory (`ru_maxrss`) is its own: the
file->table run (`predict_table`: parallel decoding, chunks of 1024 written and joined)
and the in-memory run (`model.predict` on the decoded images, decoding not timed). Both
run one untimed warm-up first (the model's compilation). With `--repeats R` the two
modes alternate R times and each keeps its fastest run (its slowest in brackets): on a
shared 2-core machine one run of each mode compares luck, not code. Prints a Markdown
table; the target is a file->table rate of at least 80% of the in-memory one, with a
memory that does not grow with N.
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir))

from benchmarks.harness import cpu_name  # noqa: E402

SIDE = 32
BATCH_SIZE = 64


def write_images(folder, count):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    os.makedirs(folder, exist_ok=True)
    for i in range(count):
        pixels = rng.integers(0, 255, (SIDE, SIDE, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(os.path.join(folder, f"{i:07d}.png"))


def measure(mode, model_path, folder, work):
    """{"rate": images/s, "peak_mib": peak resident memory} of one mode, in this process."""
    import numpy as np

    from keras_astro.models.saving import load_model
    from keras_astro.survey.objects import find_objects
    from keras_astro.survey.predict import predict_table

    model = load_model(model_path)
    objects = find_objects([folder])
    warm = objects.select(0, 2 * BATCH_SIZE)
    if mode == "file":
        predict_table(model, model_path, warm, os.path.join(work, "warm.csv"), progress=False,
                      batch_size=BATCH_SIZE)
        started = time.perf_counter()
        predict_table(model, model_path, objects, os.path.join(work, "table.csv"),
                      progress=False, batch_size=BATCH_SIZE)
    else:
        from keras_astro.data.converter import ImageConverter

        converter = ImageConverter.from_model(model)
        images = np.stack([np.asarray(converter.read_file(path), np.float32)
                           for path in objects.identifiers])
        model.predict(images[: 2 * BATCH_SIZE], batch_size=BATCH_SIZE, verbose=0)
        started = time.perf_counter()
        model.predict(images, batch_size=BATCH_SIZE, verbose=0)
    rate = len(objects) / (time.perf_counter() - started)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    return {"rate": rate, "peak_mib": peak_mib}


def run_child(mode, model_path, folder, work):
    result = subprocess.run(
        [sys.executable, __file__, "--measure", mode, model_path, folder, work],
        capture_output=True, text=True, check=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def _rate(best, slowest, repeats):
    return f"{best['rate']:.0f}" + (f" ({slowest:.0f})" if repeats > 1 else "")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-images", type=int, nargs="+", default=[2000, 20000])
    parser.add_argument("--repeats", type=int, default=1,
                        help="runs of each mode, alternating; the fastest counts (default 1)")
    parser.add_argument("--measure", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return

    import keras

    from keras_astro import AstroTransformer

    rows = []
    with tempfile.TemporaryDirectory() as work:
        model_path = os.path.join(work, "model.keras")
        AstroTransformer.small(input_shape=(SIDE, SIDE, 3), num_classes=10).save(model_path)
        for count in args.num_images:
            folder = os.path.join(work, f"images{count}")
            write_images(folder, count)
            runs = {"file": [], "memory": []}
            for _ in range(args.repeats):  # alternating, so both modes see the same machine
                for mode, results in runs.items():
                    results.append(run_child(mode, model_path, folder, work))
            file, memory = (max(results, key=lambda r: r["rate"]) for results in runs.values())
            slowest = {mode: min(r["rate"] for r in results) for mode, results in runs.items()}
            rows.append(
                f"| {count} | {_rate(file, slowest['file'], args.repeats)} | "
                f"{_rate(memory, slowest['memory'], args.repeats)} | "
                f"{file['rate'] / memory['rate']:.0%} | {file['peak_mib']:.0f} | "
                f"{memory['peak_mib']:.0f} |"
            )
    print(f"small model, {SIDE}x{SIDE} PNG, batch {BATCH_SIZE}, {keras.backend.backend()}, "
          f"{cpu_name()}, {os.cpu_count()} cores, fastest of {args.repeats} run(s) per mode\n")
    print("| images | file->table images/s | in-memory images/s | ratio | file->table peak MiB "
          "| in-memory peak MiB |")
    print("|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
