"""Sim kernels against ONNX Runtime (CPU, 2 intra-op threads), in one run.

Prints the median latency of each op on both and the ratio sim / ORT
(below 1.0 means the sim is faster). ORT runs fp32, its fast CPU path; the
sim runs the fp16 program (fp16 storage, f32 compute).

    python benches/ops_vs_onnxruntime.py [--repeat 50]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

# numpy's OpenBLAS keeps worker threads that spin after a call (1% of the
# CPU in profiles of these runs); neither side's timed work uses them, and
# on a 2-CPU machine they take time from both. Set before numpy loads.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper

import aneforge as af


def median_ms(fn, repeat: int) -> float:
    for _ in range(max(3, repeat // 10)):
        fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(ts)


def paired_ms(sim, peer, repeat: int, rounds: int = 5) -> tuple[float, float]:
    """Medians of the two, measured in alternating blocks so that both see
    the same machine state (a shared VM drifts by 2x within a minute). A
    pause after each ORT block lets its worker threads stop spinning before
    the sim runs."""
    ts, tp = [], []
    block = max(1, repeat // rounds)
    for _ in range(rounds):
        ts.append(median_ms(sim, block))
        tp.append(median_ms(peer, block))
        time.sleep(0.05)
    return statistics.median(ts), statistics.median(tp)


def ort_session(node, inputs, output_shape, initializers=()):
    graph = helper.make_graph(
        [node],
        "bench",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, output_shape)],
        initializer=list(initializers),
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)], ir_version=9)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(model.SerializeToString(), opts, providers=["CPUExecutionProvider"])


def case_conv(c_in, c_out, hw, k):
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((c_out, c_in, k, k)) / np.sqrt(c_in * k * k)).astype(np.float32)
    b = rng.standard_normal(c_out).astype(np.float32)
    x = rng.random((1, c_in, hw, hw), dtype=np.float32)
    pad = k // 2
    sess = ort_session(
        helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[pad] * 4),
        [("x", x.shape)],
        [1, c_out, hw, hw],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    xi = af.input(x.shape)
    net = af.compile(af.conv(xi, w, b, pad=pad))
    return f"conv {k}x{k} {c_in}->{c_out} @{hw}x{hw}", net, sess, x


def case_matmul(m, k, n):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((m, k)).astype(np.float32)
    w = (rng.standard_normal((k, n)) / np.sqrt(k)).astype(np.float32)
    sess = ort_session(helper.make_node("MatMul", ["x", "w"], ["y"]), [("x", a.shape)], [m, n], [numpy_helper.from_array(w, "w")])
    net = af.compile(af.input(a.shape) @ af.constant(w))
    return f"matmul [{m},{k}]x[{k},{n}]", net, sess, a


def case_layer_norm(m, n):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((m, n)).astype(np.float32)
    g = rng.standard_normal(n).astype(np.float32)
    bta = rng.standard_normal(n).astype(np.float32)
    sess = ort_session(
        helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1, epsilon=1e-5),
        [("x", x.shape)],
        [m, n],
        [numpy_helper.from_array(g, "g"), numpy_helper.from_array(bta, "b")],
    )
    net = af.compile(af.layer_norm(af.input(x.shape), gamma=g, beta=bta))
    return f"layer_norm [{m},{n}]", net, sess, x


def case_softmax(m, n):
    x = np.random.default_rng(3).standard_normal((m, n)).astype(np.float32)
    sess = ort_session(helper.make_node("Softmax", ["x"], ["y"], axis=-1), [("x", x.shape)], [m, n])
    net = af.compile(af.softmax(af.input(x.shape), axis=-1))
    return f"softmax [{m},{n}]", net, sess, x


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=50)
    args = p.parse_args()
    cases = [
        case_conv(64, 64, 56, 3),
        case_conv(256, 256, 14, 1),
        case_matmul(197, 768, 768),
        case_layer_norm(197, 768),
        case_softmax(197, 768),
    ]
    print(f"{'op':34s} {'sim ms':>9s} {'ORT ms':>9s} {'sim/ORT':>8s}  {'max|diff|':>9s}  core round trip")
    for name, net, sess, x in cases:
        x16 = x.astype(np.float16)
        trip = af._aneforge.host_core_round_trip_ns()
        t_sim, t_ort = paired_ms(lambda: net(x16), lambda: sess.run(None, {"x": x}), args.repeat)
        diff = float(np.abs(net(x16).astype(np.float32) - sess.run(None, {"x": x16.astype(np.float32)})[0]).max())
        print(f"{name:34s} {t_sim:9.3f} {t_ort:9.3f} {t_sim / t_ort:7.2f}x  {diff:9.3g}  {trip or float('nan'):.0f} ns")
    print("(core round trip: a cache line between the two CPUs and back, just before the op; at ~100-300 ns the vCPUs\n"
          " are close, at ~400-1100 ns the host has placed them far apart and the sim's threaded kernels slow down)")


if __name__ == "__main__":
    main()
