"""A character-level transformer (token embedding, 2-head causal attention,
GELU MLP, pre-norm layer norms) trained on the short text in
``examples/data/tiny_text.txt``; every step (forward, backward, AdamW) is
one resident engine program. Prints the loss falling and a greedy sample
from a batch-1 graph compiled after training (it sees the trained weights).

    python examples/train_tiny_transformer.py [--steps 300]
"""

from __future__ import annotations

import argparse
import os

import numpy as np

import aneforge as af

T, D, H, B = 32, 48, 2, 16


def causal_mask(t):
    return af.constant(np.triu(np.full((t, t), -1e4, np.float32), 1))


class Model:
    def __init__(self, vocab, seed=0):
        rng = np.random.default_rng(seed)
        n = lambda *s, scale=0.02: af.parameter(rng.normal(0, scale, s).astype(np.float32))  # noqa: E731
        self.vocab = vocab
        self.emb, self.pos = n(vocab, D, scale=0.1), n(T, D, scale=0.1)
        self.ln1 = (af.parameter(np.ones(D, np.float32)), af.parameter(np.zeros(D, np.float32)))
        self.ln2 = (af.parameter(np.ones(D, np.float32)), af.parameter(np.zeros(D, np.float32)))
        self.lnf = (af.parameter(np.ones(D, np.float32)), af.parameter(np.zeros(D, np.float32)))
        self.wq, self.wk, self.wv, self.wo = (n(D, D, scale=D**-0.5) for _ in range(4))
        self.w1, self.b1 = n(D, 4 * D, scale=D**-0.5), af.parameter(np.zeros(4 * D, np.float32))
        self.w2, self.b2 = n(4 * D, D, scale=(4 * D) ** -0.5), af.parameter(np.zeros(D, np.float32))
        self.out = n(D, vocab, scale=D**-0.5)

    def params(self):
        return [self.emb, self.pos, *self.ln1, *self.ln2, *self.lnf, self.wq, self.wk, self.wv, self.wo,
                self.w1, self.b1, self.w2, self.b2, self.out]

    def logits(self, ids, b, t):
        """ids: [b, t] fp16 token ids → logits [b, t, vocab]."""
        onehot = af.equal(ids.reshape((b, t, 1)), af.constant(np.arange(self.vocab, dtype=np.float32).reshape(1, 1, -1))).cast("fp16")
        x = onehot @ self.emb + self.pos[:t]
        h = af.layer_norm(x, -1, *self.ln1)
        dh = D // H
        split = lambda z: z.reshape((b, t, H, dh)).transpose((0, 2, 1, 3))  # noqa: E731
        q, k, v = split(h @ self.wq), split(h @ self.wk), split(h @ self.wv)
        att = af.softmax(af.matmul(q, k, transpose_b=True) * (dh**-0.5) + causal_mask(t), -1)
        a = (att @ v).transpose((0, 2, 1, 3)).reshape((b, t, D))
        x = x + a @ self.wo
        h = af.layer_norm(x, -1, *self.ln2)
        x = x + af.gelu(h @ self.w1 + self.b1, "tanh") @ self.w2 + self.b2
        return af.layer_norm(x, -1, *self.lnf) @ self.out


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    a = ap.parse_args(argv)
    text = open(os.path.join(os.path.dirname(__file__), "data", "tiny_text.txt")).read().replace("\n", " ")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    data = np.array([stoi[c] for c in text], np.float32)
    model = Model(len(chars))
    ids, targets = af.input((B, T), name="ids"), af.input((B * T,), name="targets")
    logits = model.logits(ids, B, T)
    loss = af.losses.softmax_cross_entropy(logits.reshape((B * T, len(chars))), targets)
    sched = af.optim.Warmup(af.optim.Cosine(3e-3, a.steps), 20)
    tr = af.Trainer(loss, model.params(), af.optim.AdamW(sched, weight_decay=0.01), inputs=[ids, targets])
    rng = np.random.default_rng(0)
    losses = []
    for step in range(a.steps):
        starts = rng.integers(0, len(data) - T - 1, B)
        xb = np.stack([data[s : s + T] for s in starts])
        yb = np.stack([data[s + 1 : s + T + 1] for s in starts]).reshape(-1)
        losses.append(tr.step(xb, yb))
        if step % 50 == 0 or step == a.steps - 1:
            print(f"step {step:4d}  loss {np.mean(losses[-10:]):.3f}  lr {tr.optimizer.lr(step):.2e}  loss scale {tr.scale:g}")
    first, last = np.mean(losses[:10]), np.mean(losses[-10:])
    print(f"loss {first:.3f} -> {last:.3f} (uniform guess would be {np.log(len(chars)):.3f}); skipped steps {tr.skipped}")
    # Greedy sample from a batch-1 graph compiled now, with the trained weights.
    x1 = af.input((1, T), name="ctx")
    net = af.compile(model.logits(x1, 1, T))
    ctx = [stoi[c] for c in "the engine "]
    out = list(ctx)
    for _ in range(80):
        window = (out[-T:] + [0] * T)[:T] if len(out) < T else out[-T:]
        pos = min(len(out), T) - 1
        lg = np.asarray(net(np.array([window], np.float32)), np.float32)[0, pos]
        out.append(int(lg.argmax()))
    print("sample:", "".join(chars[i] for i in out))
    return first, last


if __name__ == "__main__":
    main()
