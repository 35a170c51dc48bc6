#!/usr/bin/env python3
"""ANEForge sim vs ONNX Runtime on the reference models (issue 5, point 5).

Prints, in one run, for ResNet-18 and ViT-B/16 at batch 1:

* median latency of ONNX Runtime (CPU, 2 intra-op threads) and of the
  ANEForge sim, and their ratio (sim / ORT; goals: ResNet-18 <= 1.0,
  ViT-B/16 <= 1.2);
* ANEForge import+compile time: ONNX file -> Net, and ONNX file -> MIL text
  + weight blob written (goal: ResNet-18 under 100 ms).

    python benches/onnx_models.py                 # both models, 20 timed runs each
    python benches/onnx_models.py --runs 50 --models resnet18
    python benches/onnx_models.py --json out.json
    python benches/onnx_models.py --rust-sim      # sim columns from the Rust importer (no Python binding needed)

Models are materialized (weights refilled by shared/models/materialize.py)
into a temp dir first; that time is not measured. Needs numpy, onnx and
onnxruntime; the ANEForge columns read "n/a" until the hook below is filled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

# numpy's OpenBLAS keeps worker threads that spin after a call (1% of the
# CPU in profiles of these runs); neither side's timed work uses them, and
# on a 2-CPU machine they take time from both. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

# Same model location, ORT configuration, inputs and timing loop as the
# fidelity tests, so both speak of the same reference.
from onnx_models import (  # noqa: E402
    MODEL_NAMES,
    ORT_THREADS,
    fixed_inputs,
    materialize,
    median_latency,
    ort_run,
    ort_session,
)

#: sim / ORT latency the issue asks for, per model.
RATIO_GOALS = {"resnet18": 1.0, "vit_b_16": 1.2}
#: ONNX -> MIL + blob budget in seconds, per model (issue 5 sets one for ResNet-18).
COMPILE_GOALS = {"resnet18": 0.100}


# ============================================================================
# HOOK: ANEForge sim timing.  Fill this in once `af.load_onnx` exists.
#
# Return None while ANEForge cannot import ONNX (the report then says "n/a"),
# otherwise a dict with any of these keys, all in seconds:
#   "import_s"      ONNX file -> compiled Net (af.load_onnx), median of a few
#   "compile_mil_s" ONNX file -> MIL text + weight blob written to a temp dir,
#                   median of a few
#   "median_s"      median latency of one sim call on `feed`
#   "samples_s"     the raw latency samples (optional)
# Keep the model, the feed and the run/warmup counts exactly as given so the
# numbers are comparable with the ORT column.
# ============================================================================
def paired_latency(sim, peer, runs: int, warmup: int, rounds: int = 5):
    """Medians (and samples) of ``sim`` and ``peer``, timed in alternating
    blocks so both see the same machine: a shared VM's speed drifts by tens
    of percent within a minute, which back-to-back blocks read as a ratio.
    A pause after each block lets ONNX Runtime's spinning threads stop, and
    each block starts with an untimed call: the other runtime's block has
    pushed this one's weights out of the cache, and the steady state (a
    model called in a loop) is what is compared."""
    for _ in range(warmup):
        sim()
        peer()
    ts, tp = [], []
    block = max(1, runs // rounds)
    for _ in range(rounds):
        for fn, out in ((sim, ts), (peer, tp)):
            fn()
            for _ in range(block):
                t0 = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t0)
            time.sleep(0.05)
    return statistics.median(ts), ts, statistics.median(tp), tp


def aneforge_timings(path: Path, feed: dict, runs: int, warmup: int, peer=None):
    try:
        import aneforge as af
    except ImportError:
        return None
    if not hasattr(af, "load_onnx"):
        return None
    # Median of three of each: one run on a shared VM is off by a third
    # either way (the first touch of fresh pages, a neighbour's burst).
    imports, exports = [], []
    for _ in range(3):
        t0 = time.perf_counter()
        net = af.load_onnx(str(path))
        imports.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            _, outs = af.onnx_graph(str(path))
            af.export(outs, Path(d) / "model.mlpackage", target="h16")
            exports.append(time.perf_counter() - t0)
    out = {"import_s": statistics.median(imports), "compile_mil_s": statistics.median(exports)}
    if peer is None:
        out["median_s"], out["samples_s"] = median_latency(lambda: net(**feed), runs, warmup)
    else:
        out["median_s"], out["samples_s"], out["peer_median_s"], out["peer_samples_s"] = paired_latency(lambda: net(**feed), peer, runs, warmup)
    net.release()
    return out


def build_rust_sim_timing() -> Path:
    """Builds the Rust timing example once (release) and returns its binary."""
    subprocess.run(
        ["cargo", "build", "--release", "-q", "-p", "aneforge-onnx", "--example", "sim_timing"],
        cwd=ROOT, check=True,
    )
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    return target / "release" / "examples" / "sim_timing"


def rust_sim_timings(binary: Path, path: Path, feed: dict, runs: int, warmup: int, workdir: Path):
    """ANEForge sim numbers via crates/aneforge-onnx/examples/sim_timing.rs:
    the same importer and sim the Python binding will wrap, minus Python."""
    if len(feed) != 1:
        raise SystemExit("--rust-sim feeds one input; %s has %d" % (path.name, len(feed)))
    x = next(iter(feed.values()))
    inp = Path(workdir) / (path.stem + ".input.bin")
    x.astype("<f4").tofile(inp)
    out = subprocess.run([str(binary), str(path), str(runs), str(warmup), str(inp)],
                         check=True, capture_output=True, text=True).stdout
    t = json.loads(out.strip().splitlines()[-1])
    # "import" in the report means ONNX file -> runnable Net, i.e. compile_s.
    return {"import_s": t["compile_s"], "median_s": t["median_s"], "samples_s": t["samples_s"]}


def bench_model(name: str, workdir: Path, runs: int, warmup: int, threads: int, rust_sim=None) -> dict:
    path = materialize(name, workdir)
    session = ort_session(path, threads=threads)
    feed = fixed_inputs(session, count=1, seed=0)[0]
    ort = lambda: ort_run(session, feed)  # noqa: E731
    row = {"model": name, "ort_threads": threads, "runs": runs}
    if rust_sim is not None:
        sim = rust_sim_timings(rust_sim, path, feed, runs, warmup, workdir)
    else:
        # The sim in blocks alternating with ORT's (see paired_latency).
        sim = aneforge_timings(path, feed, runs, warmup, peer=ort)
    if sim and "peer_median_s" in sim:
        row["ort_median_s"], row["ort_samples_s"] = sim.pop("peer_median_s"), sim.pop("peer_samples_s")
    else:
        row["ort_median_s"], row["ort_samples_s"] = median_latency(ort, runs, warmup)
    if sim:
        row.update({"sim_" + k: v for k, v in sim.items()})
        if sim.get("median_s"):
            row["ratio"] = sim["median_s"] / row["ort_median_s"]
    return row


def fmt_ms(seconds) -> str:
    return "n/a" if seconds is None else "%.2f ms" % (seconds * 1e3)


def report(rows) -> str:
    head = ("model", "ORT median", "sim median", "sim/ORT", "goal", "import->Net", "->MIL+blob")
    lines = [head]
    for r in rows:
        ratio = r.get("ratio")
        goal = RATIO_GOALS.get(r["model"])
        verdict = "" if ratio is None or goal is None else (" ok" if ratio <= goal else " MISS")
        compile_goal = COMPILE_GOALS.get(r["model"])
        mil = r.get("sim_compile_mil_s")
        mil_txt = fmt_ms(mil)
        if mil is not None and compile_goal is not None:
            mil_txt += " (goal <%d ms%s)" % (compile_goal * 1e3, "" if mil < compile_goal else ", MISS")
        lines.append((
            r["model"],
            fmt_ms(r["ort_median_s"]),
            fmt_ms(r.get("sim_median_s")),
            "n/a" if ratio is None else "%.2fx%s" % (ratio, verdict),
            "-" if goal is None else "<= %.1fx" % goal,
            fmt_ms(r.get("sim_import_s")),
            mil_txt,
        ))
    widths = [max(len(str(line[i])) for line in lines) for i in range(len(head))]
    out = ["  ".join(str(c).ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def core_round_trip_ns():
    """The host's cache-line round trip between its first two CPUs (see
    aneforge._aneforge.host_core_round_trip_ns), or None."""
    try:
        import aneforge._aneforge as ext
    except ImportError:
        return None
    return ext.host_core_round_trip_ns()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default=",".join(MODEL_NAMES), help="comma-separated: %s" % ", ".join(MODEL_NAMES))
    ap.add_argument("--runs", type=int, default=20, help="timed runs per model (median reported)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed runs first")
    ap.add_argument("--threads", type=int, default=ORT_THREADS, help="ONNX Runtime intra-op threads")
    ap.add_argument("--json", metavar="FILE", help="also write the raw numbers as JSON")
    ap.add_argument("--rust-sim", action="store_true",
                    help="time the sim through the Rust importer (cargo example sim_timing) instead of the Python hook")
    args = ap.parse_args(argv)

    names = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = [n for n in names if n not in MODEL_NAMES]
    if unknown:
        ap.error("unknown model(s): %s" % ", ".join(unknown))

    rust_sim = build_rust_sim_timing() if args.rust_sim else None
    rows = []
    with tempfile.TemporaryDirectory(prefix="aneforge-bench-") as tmp:
        for name in names:
            t0 = time.perf_counter()
            before = core_round_trip_ns()
            rows.append(bench_model(name, Path(tmp), args.runs, args.warmup, args.threads, rust_sim))
            rows[-1]["core_round_trip_ns"] = [before, core_round_trip_ns()]
            print("%s done in %.1f s" % (name, time.perf_counter() - t0), file=sys.stderr)

    print("batch 1, ONNX Runtime CPU with %d intra-op threads, median of %d runs (in blocks alternating with the sim's); sim via %s; %d CPUs"
          % (args.threads, args.runs, "Rust example" if rust_sim else "aneforge_timings() hook", os.cpu_count() or 0))
    print(report(rows))
    for r in rows:
        print("%s: host core round trip %s ns before, %s ns after" % (r["model"], *("%.0f" % t if t else "n/a" for t in r["core_round_trip_ns"])))
    print("(a cache line between the two CPUs and back; at ~100-300 ns the vCPUs are close, at ~400-1100 ns the host has\n"
          " placed them far apart, and the sim's multi-threaded kernels run a fifth to a third slower while ONNX Runtime barely changes)")
    if not any("sim_median_s" in r for r in rows):
        print("(ANEForge columns are n/a until aneforge_timings() in this file is filled in)")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
