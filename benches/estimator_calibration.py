#!/usr/bin/env python3
"""The latency estimator against every published measurement (issue 3, point 5).

Prints, for every calibration point in the target table (batch 1, measured
on hardware by others): the published latency, ANEForge's *projection*, the
error, and whether the point was used to fit the estimator's constants or
held out of the fit. The goal is within ±30% on every point.

    python benches/estimator_calibration.py           # the table
    python benches/estimator_calibration.py --json out.json
    python benches/estimator_calibration.py --example # also print one model's per-op projection

The models are the analytic kernel lists in crates/aneforge-target (BN folded,
activations fused, attention per head); the numbers are a projection, never
a measurement. The sources are in crates/aneforge-target/data/targets.tsv.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np

import aneforge as af


def table(rows) -> str:
    out = [
        "PROJECTION vs published (batch 1) — the estimator's error on every calibration point",
        f"{'model':<18} {'chip':<8} {'target':<6} {'published':>10} {'projected':>10} {'error':>8}  fit",
    ]
    for r in rows:
        out.append(
            f"{r['model']:<18} {r['chip']:<8} {r['target']:<6} {r['published_ms']:>8.3f}ms "
            f"{r['predicted_ms']:>8.3f}ms {r['error_pct']:>+7.1f}%  {'HELD OUT' if r['held_out'] else 'fitted'}"
        )
    errs = np.array([abs(r["error_pct"]) for r in rows])
    held = np.array([abs(r["error_pct"]) for r in rows if r["held_out"]])
    out.append(
        f"max |error| {errs.max():.1f}% over {len(rows)} points; held-out max {held.max():.1f}% "
        f"over {len(held)}; goal ±30% on every point: {'met' if errs.max() <= 30 else 'NOT met'}"
    )
    return "\n".join(out)


def example() -> str:
    """One graph built with the Python API, projected on three targets."""
    rng = np.random.default_rng(0)
    x = af.input((1, 3, 64, 64))
    h = af.relu(af.conv(x, (rng.standard_normal((32, 3, 3, 3)) * 0.1).astype(np.float32), pad=1))
    h = af.relu(af.conv(h, (rng.standard_normal((64, 32, 3, 3)) * 0.05).astype(np.float32), stride=2, pad=1))
    y = af.mean(h, axes=(2, 3))
    lines = []
    for t in ("h13", "h16g", "h17s"):
        e = af.estimate(y, target=t)
        lines.append(f"{t}: {e.latency_us:.1f} us (projection)")
    lines.append(str(af.estimate(y, target="h17s")))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="also write the rows as JSON here")
    ap.add_argument("--example", action="store_true", help="print a small model's per-op projection")
    args = ap.parse_args(argv)
    rows = af.calibration_report()
    print(table(rows))
    if args.example:
        print()
        print(example())
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"projection": True, "rows": rows}, f, indent=2)
    return 0 if max(abs(r["error_pct"]) for r in rows) <= 30 else 1


if __name__ == "__main__":
    sys.exit(main())
