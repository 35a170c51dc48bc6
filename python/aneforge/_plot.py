"""Plots of a latency projection (``Estimate.plot``). matplotlib is an
optional dependency: it is imported only here, only when asked for."""

from __future__ import annotations

import os

_COLORS = {"compute": "tab:blue", "bandwidth": "tab:orange", "floor": "tab:gray"}


def plot_estimate(est, path) -> None:
    """Writes a two-panel PNG: time per op coloured by what bounds it, and a
    roofline (achieved GFLOP/s vs arithmetic intensity) against the target's
    peak. Titled as a projection, because it is one."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "Estimate.plot needs matplotlib (an optional dependency): pip install matplotlib"
        ) from e
    from . import _aneforge

    ops = list(est.per_op)
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, max(4.0, 0.22 * len(ops) + 1.5)))
    names = [o.name for o in ops]
    ax1.barh(range(len(ops)), [o.time_us for o in ops], color=[_COLORS.get(o.bound, "k") for o in ops])
    ax1.set_yticks(range(len(ops)))
    ax1.set_yticklabels(names, fontsize=7)
    ax1.invert_yaxis()
    ax1.set_xlabel("projected time per op (µs)")
    for bound, c in _COLORS.items():
        ax1.bar(0, 0, color=c, label=f"{bound}-bound")
    ax1.legend(loc="lower right", fontsize=8)

    pts = [(o.flops / o.bytes, o.flops / (o.time_us * 1e3)) for o in ops if o.flops > 0 and o.bytes > 0 and o.time_us > 0]
    target = est.target.split()[0]
    try:
        peak_gflops = _aneforge.project_peak(target)["tflops_fp16"] * 1e3
    except Exception:  # a chip label we cannot parse: plot without the roof
        peak_gflops = None
    if pts:
        ax2.scatter([p[0] for p in pts], [p[1] for p in pts], s=12)
        ax2.set_xscale("log")
        ax2.set_yscale("log")
    if peak_gflops:
        ax2.axhline(peak_gflops, color="tab:red", linestyle="--", label=f"fp16 peak {peak_gflops / 1e3:.1f} TFLOP/s")
        ax2.legend(fontsize=8)
    ax2.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax2.set_ylabel("projected GFLOP/s")
    fig.suptitle(f"{est.target}: {est.latency_us / 1e3:.3f} ms — projection, not a measurement")
    fig.tight_layout()
    fig.savefig(os.fspath(path), dpi=110)
    plt.close(fig)
