"""Keras model vs the PyTorch reference in ONE process, alternating steps.

On a shared machine the load changes between the harness' subprocesses, so a ratio of
two subprocess measurements taken a minute apart can be off by 2x. Here each step of
the Keras model (small, batch 32, 32x32) is followed by a step of the reference in the
same process, so both see the same load; the ratio of their median steps is reported.

    KERAS_BACKEND=torch python benchmarks/inprocess_ratio.py float32 train 8
    KERAS_BACKEND=tensorflow FOLD=1 python benchmarks/inprocess_ratio.py mixed_bfloat16 predict

Args: dtype policy, train|predict, timed steps (after 2 untimed). FOLD=1 measures
`keras_astro.models.folding.fold_batch_norm(model)` in predict mode. Denormals are flushed
in torch, as in the harness. The Keras side uses train_on_batch / predict_on_batch.
Not for TensorFlow: next to its thread pools the reference slowed 2-3x here, which
inflates the ratio; measure TensorFlow with the harness' separate subprocesses.
"""

import os
import sys
import time

import numpy as np
import torch

torch.set_flush_denormal(True)

import keras  # noqa: E402

from keras_astro.models import AstroTransformer  # noqa: E402
from keras_astro.models.reference import ReferenceAstroTransformer  # noqa: E402

policy, mode = sys.argv[1], sys.argv[2]
steps = int(sys.argv[3]) if len(sys.argv) > 3 else 8
rng = np.random.default_rng(0)
x = rng.uniform(0, 255, (32, 32, 32, 3)).astype("float32")
y = rng.integers(0, 10, 32)
reference = ReferenceAstroTransformer(2, (1, 1, 1), 10)
x_nchw = torch.from_numpy(x.transpose(0, 3, 1, 2) / 127.5 - 1).float().contiguous()
y_torch = torch.from_numpy(y)
if mode == "train":
    optimizer = torch.optim.Adam(reference.parameters(), 1e-3)
    loss_fn = torch.nn.CrossEntropyLoss()
    reference.train()

    def reference_step():
        optimizer.zero_grad()
        loss = loss_fn(reference(x_nchw), y_torch)
        loss.backward()
        optimizer.step()
        loss.item()
else:
    reference.eval()

    def reference_step():
        with torch.inference_mode():
            reference(x_nchw).softmax(-1).numpy()

keras.config.set_dtype_policy(policy)
model = AstroTransformer.from_name("small", input_shape=(32, 32, 3))
model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
if os.environ.get("FOLD") and mode == "predict":
    from keras_astro.models.folding import fold_batch_norm

    model = fold_batch_norm(model)
if mode == "train":
    def keras_step():
        float(keras.ops.convert_to_numpy(model.train_on_batch(x, y)))
else:
    def keras_step():
        np.asarray(model.predict_on_batch(x))

times = {"reference": [], "keras": []}
for _ in range(steps + 2):
    for name, step in (("reference", reference_step), ("keras", keras_step)):
        start = time.perf_counter()
        step()
        times[name].append(time.perf_counter() - start)
ref, ker = np.array(times["reference"][2:]), np.array(times["keras"][2:])
print(
    f"{keras.backend.backend()} {policy} {mode}{' folded' if os.environ.get('FOLD') else ''}: "
    f"keras {32 / np.median(ker):.1f} img/s (best {32 / ker.min():.1f}), reference "
    f"{32 / np.median(ref):.1f} (best {32 / ref.min():.1f}); ratio {np.median(ref) / np.median(ker):.2f}x "
    f"(best steps {ref.min() / ker.min():.2f}x); load {os.getloadavg()[0]:.2f}"
)
