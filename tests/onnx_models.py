"""Shared helpers for tests (and the benchmark) that use the reference ONNX models.

Not a test module: pytest collects nothing here. It holds what every
fidelity test against ONNX Runtime needs, so they all agree on it:

* where the structure-only models live (``shared/models`` beside the repo,
  or ``$ANEFORGE_MODELS_DIR``) and how to refill their weights
  (``materialize.py``), done once per test session into a temp dir;
* the ONNX Runtime configuration used as the fp32 reference (CPU provider,
  2 intra-op threads, sequential execution) -- the same one the benchmark
  times, so "faster than ONNX Runtime" and "matches ONNX Runtime" mean the
  same Runtime;
* fixed, seeded random inputs and the comparisons the issue asks for
  (cosine similarity, top-1).

Use from a test module::

    from onnx_models import materialized, ort_reference, cosine, top1  # noqa: F401 (fixtures)

    def test_resnet18_matches_onnxruntime(materialized, ort_reference):
        path = materialized("resnet18")
        feeds, expected = ort_reference("resnet18")
        ...

The fixtures skip (saying why) when numpy, onnx or onnxruntime are missing.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple

import pytest

ROOT = Path(__file__).resolve().parent.parent

#: The models shipped in shared/models, by the name materialize.py takes.
MODEL_NAMES = ("resnet18", "vit_b_16")

#: Intra-op threads for the ONNX Runtime reference and baseline (issue 5).
ORT_THREADS = 2


def models_dir() -> Path:
    """``shared/models``: beside the checkout, or ``$ANEFORGE_MODELS_DIR``."""
    env = os.environ.get("ANEFORGE_MODELS_DIR")
    return Path(env) if env else ROOT.parent / "shared" / "models"


def _materialize_module():
    """Imports ``materialize.py`` from the models folder (it is not a package)."""
    script = models_dir() / "materialize.py"
    if not script.exists():
        raise FileNotFoundError("reference models not found: %s" % script)
    spec = importlib.util.spec_from_file_location("aneforge_shared_materialize", script)
    if spec is None or spec.loader is None:
        raise ImportError("cannot import %s" % script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def materialize(name: str, out_dir: Path) -> Path:
    """Writes the full model ``name`` (weights refilled, deterministic) into
    ``out_dir`` and returns its path; reuses the file if already there."""
    out = Path(out_dir) / ("%s.onnx" % name)
    if not out.exists():
        tmp = out.with_suffix(".onnx.partial")
        _materialize_module().materialize(str(models_dir() / ("%s.onnx" % name)), str(tmp))
        tmp.replace(out)  # never leave a half-written model behind for the next caller
    return out


def ort_session(path, threads: int = ORT_THREADS):
    """An ONNX Runtime CPU session configured as the reference: fp32, fixed
    thread count, sequential execution, full graph optimisation."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


_ORT_TO_NUMPY = {
    "tensor(float)": "float32",
    "tensor(float16)": "float16",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(int8)": "int8",
    "tensor(uint8)": "uint8",
    "tensor(bool)": "bool",
}


def fixed_inputs(session, count: int = 4, seed: int = 0) -> List[Dict[str, "object"]]:
    """``count`` feeds for ``session``, each a dict name → array, drawn from a
    seeded generator so every run and every machine sees the same batch.
    Floats are standard normal; integers are small non-negative values.
    Symbolic dims are taken as 1 (batch 1, as the issue's bar is set)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        feed = {}
        for inp in session.get_inputs():
            shape = [d if isinstance(d, int) and d > 0 else 1 for d in inp.shape]
            dtype = _ORT_TO_NUMPY.get(inp.type)
            if dtype is None:
                raise TypeError("input %s has unsupported type %s" % (inp.name, inp.type))
            if dtype.startswith("float"):
                feed[inp.name] = rng.standard_normal(shape).astype(dtype)
            elif dtype == "bool":
                feed[inp.name] = rng.integers(0, 2, shape).astype(bool)
            else:
                feed[inp.name] = rng.integers(0, 100, shape).astype(dtype)
        feeds.append(feed)
    return feeds


def ort_run(session, feed) -> List["object"]:
    """All outputs of one ONNX Runtime run, in the model's output order."""
    return session.run(None, feed)


def cosine(a, b) -> float:
    """Cosine similarity of two arrays flattened, computed in float64."""
    import numpy as np

    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    denom = np.linalg.norm(a) * np.linalg.norm(b)
    return float(a @ b / denom) if denom else float(np.array_equal(a, b))


def top1(logits) -> "object":
    """Index of the largest logit along the last axis."""
    import numpy as np

    return np.argmax(np.asarray(logits), axis=-1)


def median_latency(run: Callable[[], object], runs: int, warmup: int) -> Tuple[float, List[float]]:
    """Median wall time (seconds) of ``run`` over ``runs`` calls after ``warmup``
    untimed ones, plus the raw samples."""
    for _ in range(warmup):
        run()
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples), samples


def _require(*modules: str) -> None:
    for m in modules:
        pytest.importorskip(m, reason="%s is needed for the ONNX reference models" % m)


@pytest.fixture(scope="session")
def onnx_models_dir(tmp_path_factory) -> Path:
    """One temp dir per session holding the materialized models."""
    return tmp_path_factory.mktemp("onnx_models")


@pytest.fixture(scope="session")
def materialized(onnx_models_dir) -> Callable[[str], Path]:
    """``materialized("resnet18")`` → path of the full model, built on first use
    in this session and reused afterwards."""
    _require("numpy", "onnx")
    if not (models_dir() / "materialize.py").exists():
        pytest.skip("reference models not found in %s" % models_dir())

    def get(name: str) -> Path:
        if name not in MODEL_NAMES:
            raise ValueError("unknown reference model %r; have %s" % (name, ", ".join(MODEL_NAMES)))
        return materialize(name, onnx_models_dir)

    return get


@pytest.fixture(scope="session")
def ort_reference(materialized) -> Callable[..., Tuple[List[dict], List[List["object"]]]]:
    """``ort_reference("resnet18", count=4, seed=0)`` → ``(feeds, outputs)``:
    the fixed inputs and ONNX Runtime's outputs for each, computed once per
    session for each (name, count, seed)."""
    _require("onnxruntime")
    cache: Dict[Tuple[str, int, int], Tuple[List[dict], List[List[object]]]] = {}

    def get(name: str, count: int = 4, seed: int = 0):
        key = (name, count, seed)
        if key not in cache:
            session = ort_session(materialized(name))
            feeds = fixed_inputs(session, count=count, seed=seed)
            cache[key] = (feeds, [ort_run(session, f) for f in feeds])
        return cache[key]

    return get


__all__: Sequence[str] = (
    "MODEL_NAMES",
    "ORT_THREADS",
    "cosine",
    "fixed_inputs",
    "materialize",
    "materialized",
    "median_latency",
    "models_dir",
    "onnx_models_dir",
    "ort_reference",
    "ort_run",
    "ort_session",
    "top1",
)
