"""Training: optimizers against numpy implementations of their formulas,
resident state, checkpoints, loss scaling, bad input, and a real dataset
(sklearn's digits, shipped in the wheel) to a stated accuracy."""

from __future__ import annotations

import numpy as np
import pytest

import aneforge as af


def _linreg(rng, B=8, D=5, O=3):
    x = af.input((B, D), name="x")
    t = af.input((B, O), name="t")
    W0 = rng.normal(0, 0.5, (O, D)).astype(np.float32)
    W = af.parameter(W0, name="W")
    loss = af.losses.mse(af.linear(x, W), t)
    return x, t, W, W0, loss


def _numpy_grad(W, xv, tv):
    y = xv @ W.T
    return 2 * (y - tv).T @ xv / y.size


def _np_opt(name, W, g, st, t, lr=0.05):
    if name == "sgd":
        return W - lr * g
    if name == "momentum":
        st["b"] = 0.9 * st.get("b", 0) + g
        return W - lr * st["b"]
    if name == "nesterov":
        st["b"] = 0.9 * st.get("b", 0) + g + 0.01 * W
        return W - lr * ((g + 0.01 * W) + 0.9 * st["b"])
    m = st["m"] = 0.9 * st.get("m", 0) + 0.1 * g
    v = st["v"] = 0.999 * st.get("v", 0) + 0.001 * g * g
    mh, vh = m / (1 - 0.9**t), v / (1 - 0.999**t)
    if name == "adamw":
        W = W - lr * 0.1 * W
    # Adam's efficient form: eps is added to sqrt(v) before the bias correction of v.
    return W - lr * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * m / (np.sqrt(v) + 1e-8)


OPTS = {
    "sgd": lambda: af.optim.SGD(0.05),
    "momentum": lambda: af.optim.SGD(0.05, momentum=0.9),
    "nesterov": lambda: af.optim.SGD(0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
    "adam": lambda: af.optim.Adam(0.05),
    "adamw": lambda: af.optim.AdamW(0.05, weight_decay=0.1),
}


@pytest.mark.parametrize("device", [True, False], ids=["device", "host"])
@pytest.mark.parametrize("name", list(OPTS))
def test_optimizer_steps_match_numpy(name, device):
    rng = np.random.default_rng(1)
    x, t, W, W0, loss = _linreg(rng)
    tr = af.Trainer(loss, [W], OPTS[name](), inputs=[x, t], precision="fp32", loss_scale=None, device_optimizer=device)
    Wn, st = W0.astype(np.float64), {}
    for step in range(1, 6):
        xv = rng.normal(size=(8, 5)).astype(np.float32)
        tv = rng.normal(size=(8, 3)).astype(np.float32)
        tr.step(xv, tv)
        Wn = _np_opt(name, Wn, _numpy_grad(Wn, xv, tv), st, step)
    np.testing.assert_allclose(W.numpy(), Wn, rtol=1e-4, atol=1e-5)


def test_resident_training_copies_no_parameters_per_step():
    rng = np.random.default_rng(2)
    x, t, W, W0, loss = _linreg(rng)
    tr = af.Trainer(loss, [W], af.optim.Adam(0.01), inputs=[x, t])
    xv, tv = rng.normal(size=(8, 5)), rng.normal(size=(8, 3))
    for _ in range(10):
        tr.step(xv, tv)
    c = tr.host_transfers
    assert c["calls"] == 10
    assert c["param_bytes_in"] == 0 and c["param_bytes_out"] == 0
    # per step: the batch (8x5 + 8x3 fp16) and 4 scalars in; loss and the finite flag out
    assert c["input_bytes"] == 10 * 2 * (40 + 24 + 4)
    assert c["output_bytes"] == 10 * 2 * 2
    before = W0.copy()
    after = W.numpy()  # pulls the resident values on demand
    assert not np.allclose(before, after)
    # A graph compiled afterwards uses the trained values.
    net = af.compile(af.linear(x, W), precision="fp32")
    np.testing.assert_allclose(net(xv.astype(np.float32)), xv.astype(np.float32) @ after.T, rtol=1e-3, atol=1e-3)


def test_trained_values_survive_the_trainer():
    rng = np.random.default_rng(3)
    x, t, W, W0, loss = _linreg(rng)
    tr = af.Trainer(loss, [W], af.optim.SGD(0.1), inputs=[x, t])
    tr.step(rng.normal(size=(8, 5)), rng.normal(size=(8, 3)))
    trained = W.numpy()
    del tr
    np.testing.assert_array_equal(W.numpy(), trained)


def test_non_resident_device_optimizer_matches_resident():
    rng = np.random.default_rng(4)
    batches = [(rng.normal(size=(8, 5)), rng.normal(size=(8, 3))) for _ in range(4)]
    out = []
    for resident in (True, False):
        x, t, W, W0, loss = _linreg(np.random.default_rng(9))
        tr = af.Trainer(loss, [W], af.optim.Adam(0.05), inputs=[x, t], precision="fp32", loss_scale=None, resident_state=resident)
        for b in batches:
            tr.step(*b)
        out.append((W.numpy(), tr.host_transfers["param_bytes_in"]))
    np.testing.assert_allclose(out[0][0], out[1][0], rtol=1e-6)
    assert out[0][1] == 0 and out[1][1] > 0


def test_checkpoint_round_trip(tmp_path):
    rng = np.random.default_rng(5)
    x, t, W, W0, loss = _linreg(rng)
    tr = af.Trainer(loss, [W], af.optim.Adam(0.05), inputs=[x, t], precision="fp32", loss_scale=None)
    data = [(rng.normal(size=(8, 5)), rng.normal(size=(8, 3))) for _ in range(6)]
    for b in data[:3]:
        tr.step(*b)
    path = tmp_path / "ck.safetensors"
    tr.save(path)
    ck = af.Trainer.load(path)
    assert set(ck) == {"W", "W.m", "W.v"} and ck.metadata["step_count"] == "3"
    for b in data[3:]:
        tr.step(*b)
    expected = W.numpy()
    tr.load(path)  # back to step 3, moments included
    for b in data[3:]:
        tr.step(*b)
    np.testing.assert_allclose(W.numpy(), expected, rtol=1e-6)
    assert open(path, "rb").read(8) != b"\x80\x04\x95"  # not a pickle


def test_dynamic_loss_scale_skips_and_backs_off():
    x = af.input((4, 2), name="x")
    W = af.parameter(np.full((1, 2), 100.0, np.float32), name="W")
    loss = af.mean(af.linear(x, W) * af.linear(x, W))  # gradients ~ 4e4 overflow fp16 once scaled
    tr = af.Trainer(loss, [W], af.optim.SGD(1e-6), inputs=[x])
    xv = np.full((4, 2), 100.0, np.float32)
    tr.step(xv)
    assert tr.skipped == 1 and tr.scale == 512.0
    np.testing.assert_array_equal(W.numpy(), np.full((1, 2), 100.0))  # the step was skipped
    for _ in range(12):
        tr.step(xv)
    assert tr.scale <= 1.0  # backed off until the scaled gradients are finite


def test_schedules():
    o = af.optim
    assert o.StepLR(1.0, 10, 0.5)(25) == 0.25
    c = o.Cosine(1.0, 100, 0.1)
    assert c(0) == 1.0 and abs(c(100) - 0.1) < 1e-12 and abs(c(50) - 0.55) < 1e-12
    w = o.Warmup(o.Cosine(1.0, 100), 10)
    assert w(0) == pytest.approx(0.1) and w(9) == pytest.approx(1.0) and w(10) == 1.0


def test_lr_schedule_is_fed_not_recompiled():
    rng = np.random.default_rng(6)
    x, t, W, W0, loss = _linreg(rng)
    tr = af.Trainer(loss, [W], af.optim.SGD(af.optim.StepLR(0.1, 1, 0.0)), inputs=[x, t], precision="fp32", loss_scale=None)
    b = (rng.normal(size=(8, 5)), rng.normal(size=(8, 3)))
    tr.step(*b)
    w1 = W.numpy()
    tr.step(*b)  # lr is now 0: no change
    np.testing.assert_array_equal(W.numpy(), w1)


# --- bad input: each a clear error before any compile ---------------------------------------


def test_loss_that_is_not_a_scalar():
    x = af.input((4, 3))
    W = af.parameter(np.ones((2, 3), np.float32))
    with pytest.raises(af.ShapeError, match="scalar"):
        af.Trainer(af.linear(x, W), [W], af.optim.SGD(0.1), inputs=[x])
    with pytest.raises(af.ShapeError, match="scalar"):
        af.grad(af.linear(x, W), [W])


def test_parameter_that_does_not_reach_the_loss():
    x = af.input((4, 3))
    W = af.parameter(np.ones((2, 3), np.float32), name="W")
    V = af.parameter(np.ones((2, 3), np.float32), name="unused")
    with pytest.raises(ValueError, match="unused.*does not reach the loss"):
        af.Trainer(af.mean(af.linear(x, W)), [W, V], af.optim.SGD(0.1), inputs=[x])


def test_batch_of_the_wrong_shape():
    x = af.input((4, 3))
    W = af.parameter(np.ones((2, 3), np.float32))
    tr = af.Trainer(af.mean(af.linear(x, W)), [W], af.optim.SGD(0.1), inputs=[x])
    with pytest.raises(af.ShapeError, match=r"\(5, 3\).*\(4, 3\)"):
        tr.step(np.ones((5, 3), np.float32))
    assert tr._net is None  # refused before compiling


def test_optimizer_given_no_parameters():
    x = af.input((4, 3))
    W = af.parameter(np.ones((2, 3), np.float32))
    with pytest.raises(ValueError, match="no parameters"):
        af.optim.Adam(1e-3, params=[])
    with pytest.raises(ValueError, match="no parameters"):
        af.Trainer(af.mean(af.linear(x, W)), [], af.optim.SGD(0.1), inputs=[x])


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    rng = np.random.default_rng(7)
    x, t, W, W0, loss = _linreg(rng)
    tr = af.Trainer(loss, [W], af.optim.SGD(0.05), inputs=[x, t])
    tr.fit(rng.normal(size=(32, 5)), rng.normal(size=(32, 3)), epochs=2, progress=False)
    p = tr.plot(tmp_path / "curve.png")
    assert open(p, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


# --- real data ---------------------------------------------------------------------------------


def test_digits_mlp_reaches_97_percent():
    datasets = pytest.importorskip("sklearn.datasets")
    d = datasets.load_digits()
    X = (d.data / 16.0).astype(np.float32)
    y = d.target
    idx = np.random.default_rng(0).permutation(len(X))
    tr_i, te_i = idx[:1400], idx[1400:]
    rng = np.random.default_rng(1)
    B = 64
    x = af.input((B, 64), name="x")
    lab = af.input((B,), name="label")
    W1 = af.parameter(rng.normal(0, (2 / 64) ** 0.5, (128, 64)).astype(np.float32), "W1")
    b1 = af.parameter(np.zeros(128, np.float32), "b1")
    W2 = af.parameter(rng.normal(0, (2 / 128) ** 0.5, (10, 128)).astype(np.float32), "W2")
    b2 = af.parameter(np.zeros(10, np.float32), "b2")
    logits = af.linear(af.relu(af.linear(x, W1, b1)), W2, b2)
    loss = af.losses.softmax_cross_entropy(logits, lab)
    tr = af.Trainer(loss, [W1, b1, W2, b2], af.optim.Adam(1e-2), inputs=[x, lab], predict=logits)
    hist = tr.fit(X[tr_i], y[tr_i], epochs=15, validation=(X[te_i], y[te_i]), progress=False)
    assert hist["metric"][-1] >= 0.97, hist["metric"]
    assert hist["loss"][-1] < hist["loss"][0]
    assert sum(hist["skipped"]) <= 2
