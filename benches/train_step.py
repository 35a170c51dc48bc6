"""Training step time of the MNIST CNN (examples/train_mnist.py) on the sim,
next to PyTorch CPU's reference (~17 ms/step, 2 threads, same model and
batch: the figure from issue 7); torch is also timed in the same run when
it is importable. Also prints the host-boundary counters of the resident
program, showing that no parameter or optimizer state crosses per step.

    python benches/train_step.py [--steps 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "examples"))
import aneforge as af  # noqa: E402
from train_mnist import build  # noqa: E402

TORCH_REFERENCE_MS = 17.0


def torch_ms(steps):
    try:
        import torch
        import torch.nn as nn
    except ImportError:
        return None
    torch.set_num_threads(2)
    m = nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 7 * 7, 10),
    )
    opt = torch.optim.Adam(m.parameters(), 1e-3)
    x, y = torch.randn(64, 1, 28, 28), torch.randint(0, 10, (64,))
    ts = []
    for i in range(steps + 5):
        t0 = time.perf_counter()
        opt.zero_grad()
        nn.functional.cross_entropy(m(x), y).backward()
        opt.step()
        if i >= 5:
            ts.append(time.perf_counter() - t0)
    return 1000 * statistics.median(ts)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=50)
    a = ap.parse_args()
    rng = np.random.default_rng(0)
    x, label, logits, loss, params = build()
    tr = af.Trainer(loss, params, af.optim.Adam(1e-3), inputs=[x, label])
    xb = rng.random((64, 1, 28, 28), dtype=np.float32)
    yb = rng.integers(0, 10, 64)
    t0 = time.perf_counter()
    tr.step(xb, yb)
    first = time.perf_counter() - t0
    before = dict(tr.host_transfers)
    ts = []
    for _ in range(a.steps):
        t0 = time.perf_counter()
        tr.step(xb, yb)
        ts.append(time.perf_counter() - t0)
    after = tr.host_transfers
    sim = 1000 * statistics.median(ts)
    print(f"MNIST CNN training step, batch 64 (forward + backward + Adam in one program), {os.cpu_count()} CPUs")
    print(f"  compile + first step      {1000 * first:8.1f} ms")
    print(f"  aneforge sim (fp16)       {sim:8.2f} ms/step   ({a.steps} steps, median; {tr.net.num_steps} kernels)")
    print(f"  PyTorch CPU reference     {TORCH_REFERENCE_MS:8.2f} ms/step   (issue 7, 2 threads)  ratio sim/ref = {sim / TORCH_REFERENCE_MS:.2f}x")
    t = torch_ms(a.steps)
    if t is not None:
        print(f"  PyTorch CPU, this run     {t:8.2f} ms/step   ratio sim/torch = {sim / t:.2f}x")
    else:
        print("  PyTorch CPU, this run         n/a (torch not installed)")
    d = {k: after[k] - before[k] for k in after}
    print(f"  host transfers over {d['calls']} steps: in {d['input_bytes']} B (batch + 4 scalars = {d['input_bytes'] // max(d['calls'], 1)} B/step), "
          f"out {d['output_bytes']} B, parameter/state bytes in {d['param_bytes_in']}, out {d['param_bytes_out']}")
    print(f"  resident parameters + Adam moments: {tr.net.resident_bytes} B, never copied per step")


if __name__ == "__main__":
    main()
