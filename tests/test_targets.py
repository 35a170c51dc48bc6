"""Targets, per-family validation, rewrites, the estimator and the compile
breaker, through the public Python API (references: numpy and the target
table's own formulas). No test sleeps: the breaker is observed through its
strict mode and zero backoff, with an injected failing compile."""

import inspect
import os
import sys

import numpy as np
import pytest

import aneforge as af
from aneforge import _aneforge

NAMES = (
    "H11 H12 M9 T0 H13 H13g T1 H14 H14g H14c H15 H15g H15c H16 H16g H16s H16c "
    "H17 H17a H17g H17s H17c H17d H18 M11 U1 U2 U3"
).split()
NO_MIL = ["H11", "H12", "M9", "T0"]
HERE = os.path.basename(__file__)


def line():
    """file:line of the caller, as the builder records it."""
    return f"{__file__}:{inspect.currentframe().f_back.f_lineno}"


@pytest.fixture(autouse=True)
def clean_breaker(monkeypatch):
    for var in ("ANEFORGE_COMPILE_BACKOFF", "ANEFORGE_COMPILE_BREAKER_STRICT",
                "ANEFORGE_DISABLE_COMPILE_BREAKER", "ANEFORGE_TARGET"):
        monkeypatch.delenv(var, raising=False)
    _aneforge._inject_compile_failures(0)
    af.reset_compile_breaker()
    yield
    _aneforge._inject_compile_failures(0)
    af.reset_compile_breaker()


def relu_of(shape):
    return af.relu(af.input(shape))


# ---- the table and names -------------------------------------------------

def test_targets_lists_all_28_with_their_fields():
    ts = af.targets()
    assert [t.name for t in ts] == NAMES
    h16s = af.target("h16s")
    assert (h16s.name, h16s.family, h16s.cores, h16s.max_axis, h16s.max_conv_kernel_width) == ("H16s", "H16", 16, 65536, 15)
    assert h16s.fp16_tflops == pytest.approx(2 * 256 * 16 * h16s.fmax_ghz / 1000, abs=0.011)
    assert h16s.weight_gbs > 0 and h16s.act_gbs > 0 and h16s.floor_us > 0 and h16s.sram_bytes > 0
    assert "w8a8" in h16s.capabilities and h16s.supports("sin_cos") and not h16s.supports("fp8_e4m3")
    assert h16s.source and h16s.chips and h16s.max_rank == 5 and h16s.max_channels == 65536
    assert af.target("h11").mil_supported is False and af.target("h11").capabilities == []
    assert str(h16s).startswith("h16s (H16 family") and repr(h16s).startswith("Target(h16s")


@pytest.mark.parametrize("name", NAMES)
def test_every_target_name_round_trips_in_any_case(name):
    for spelling in (name, name.lower(), name.upper()):
        t = af.target(spelling)
        assert t.name == name and t.lower_name == name.lower()
        r = af.cross_compile_check(relu_of((1, 8, 4, 4)), spelling)
        assert r.target == name.lower()
        assert r.ok == (name not in NO_MIL)
    assert af.estimate(relu_of((1, 8, 4, 4)), target=name.lower()).target == name.lower()


def test_unknown_names_are_refused_with_the_list_and_a_did_you_mean():
    with pytest.raises(af.TargetError) as e:
        af.target("h16x")
    msg = str(e.value)
    assert "did you mean" in msg and all(n.lower() in msg for n in NAMES)
    y = relu_of((1, 4))
    for call in (lambda: af.compile(y, target="h71s"), lambda: af.estimate(y, target="h71s"),
                 lambda: af.cross_compile_check(y, "h71s"), lambda: af.project_peak("h71s")):
        with pytest.raises(af.TargetError, match=r"did you mean \"h17s\""):
            call()
    # chip names are accepted where a target is, as that chip's profile
    assert af.target("M5 Pro").chip == "M5 Pro" and af.target("m5 pro").name == "H17s"
    assert af.compile(y, target="M1").target == "h13"


def test_detect_family_reads_the_environment_override(monkeypatch):
    if sys.platform != "darwin":
        assert af.detect_family() is None
    monkeypatch.setenv("ANEFORGE_TARGET", "H16S")
    assert af.detect_family() == "h16s"
    net = af.compile(relu_of((1, 4)))  # target=None → detect_family()
    assert net.target == "h16s" and net.report is not None
    monkeypatch.setenv("ANEFORGE_TARGET", "h99")
    with pytest.raises(af.TargetError, match="valid targets"):
        af.detect_family()


def test_project_peak_follows_the_formula():
    p = af.project_peak("h17s")
    assert set(p) == {"tflops_fp16", "tops_int8", "cores", "ghz"}
    assert p["tflops_fp16"] == pytest.approx(2 * 256 * 16 * 2.364 / 1000)
    assert p["tops_int8"] == pytest.approx(2 * p["tflops_fp16"])
    assert af.project_peak("H13")["tops_int8"] == pytest.approx(af.project_peak("h13")["tflops_fp16"])


# ---- family boundaries -----------------------------------------------------

@pytest.mark.parametrize("fn,ref", [(af.sin, np.sin), (af.cos, np.cos)])
def test_sin_cos_are_rewritten_below_h15_and_native_from_h15(fn, ref):
    x = af.input((4, 1000))
    y = fn(x)
    xs = np.linspace(-40, 40, 4000).reshape(4, 1000).astype(np.float16)
    want = ref(xs.astype(np.float64))
    for t in ("h13", "h14g"):
        net = af.compile(y, target=t)
        assert len(net.report.warnings) == 1 and "polynomial" in net.report.warnings[0]
        assert HERE in net.report.warnings[0]
        assert "sin" not in net.graph().replace("sign", "") and "cos" not in net.graph()
        got = net(xs).astype(np.float64)
        assert np.abs(got - want).max() < 2.5e-3
    native = af.compile(y, target="h15")
    assert native.report.warnings == [] and fn.__name__ in native.graph()
    assert np.abs(native(xs).astype(np.float64) - want).max() < 2.5e-3


def test_axis_20000_is_refused_on_h15_and_accepted_on_h16():
    x = af.input((1, 4, 1, 20000)); here = line()
    y = af.relu(x); here = line()
    with pytest.raises(af.TargetError) as e:
        af.compile(y, target="h15")
    msg = str(e.value)
    assert "20000" in msg and "H16" in msg and here in msg and "tile" in msg
    net = af.compile(y, target="h16")
    assert net.report.ok and net.report.violations == []


def test_too_long_reduction_is_tiled_instead_of_refused():
    x = af.input((2, 40000))
    y = af.sum(af.square(x), axes=-1)
    m = af.max(x, axes=-1)
    r = af.cross_compile_check([y, m], "h15")
    assert r.ok and len(r.warnings) == 2 and all("tiled" in w for w in r.warnings)
    net = af.compile([y, m], target="h15", numerics="ieee")
    xs = (np.random.default_rng(0).random((2, 40000)) - 0.3).astype(np.float16)
    s, mx = net(xs)
    ref = (xs.astype(np.float64) ** 2).sum(-1)
    np.testing.assert_allclose(s.astype(np.float64), ref, rtol=3e-3)
    np.testing.assert_array_equal(mx, xs.max(-1))


def test_conv_kernel_width_14_is_refused_on_h13_and_accepted_on_h16():
    x = af.input((1, 4, 8, 64))
    w = np.full((4, 4, 1, 14), 0.01, np.float32)
    y = af.conv(x, w)
    r = af.cross_compile_check(y, "h13")
    assert not r.ok and r.violations[0].first_family == "H16" and "kernel width 14" in r.violations[0].problem
    with pytest.raises(af.TargetError, match="kernel width"):
        af.compile(y, target="h13")
    af.compile(y, target="h16")


def test_patch_conv_16x16_stride_16_compiles_for_h16_and_matches_numpy():
    # ViT's stem: wider than every target's kernel limit, so it is rewritten
    # (space-to-depth + 1x1 conv) instead of refused
    rng = np.random.default_rng(3)
    xs = rng.standard_normal((2, 3, 48, 40)).astype(np.float16)  # 40 = 2 patches + 8 ignored columns
    w = (rng.standard_normal((8, 3, 16, 16)) / 28).astype(np.float16)
    b = rng.standard_normal(8).astype(np.float16)
    x = af.input(xs.shape)
    y = af.conv(x, w, b, stride=16); here = line()
    net = af.compile(y, target="h16")
    assert net.report.ok and len(net.report.warnings) == 1
    assert "1x1 conv" in net.report.warnings[0] and here in net.report.warnings[0]
    # reference: the conv as a sum over kernel offsets of strided slices
    xd, wd = xs.astype(np.float64), w.astype(np.float64)
    want = np.broadcast_to(b.astype(np.float64)[None, :, None, None], (2, 8, 3, 2)).copy()
    for i in range(16):
        for j in range(16):
            want += np.einsum("nchw,oc->nohw", xd[:, :, i:48:16, j:32:16], wd[:, :, i, j])
    got = net(xs).astype(np.float64)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_texture_ops_start_at_h14():
    x = af.input((1, 4, 8, 8))
    y = af.resize_bilinear(x, (12, 20))
    r = af.cross_compile_check(y, "h13")
    assert not r.ok and r.violations[0].first_family == "H14" and "matmul" in r.violations[0].hint
    assert af.cross_compile_check(y, "h14").ok


def test_integer_nearest_upsampling_is_rewritten_below_h14():
    x = af.input((1, 4, 8, 8))
    y = af.upsample_nearest(x, 2)
    net = af.compile(y, target="h13")
    assert len(net.report.warnings) == 1 and "upsampl" in net.report.warnings[0]
    xs = np.random.default_rng(2).standard_normal((1, 4, 8, 8)).astype(np.float16)
    np.testing.assert_array_equal(net(xs), xs.repeat(2, axis=2).repeat(2, axis=3))
    assert af.compile(y, target="h14").report.warnings == []


@pytest.mark.parametrize("name", NO_MIL)
def test_families_without_mil_refuse_compile_but_estimate_works(name):
    y = relu_of((1, 16, 8, 8))
    with pytest.raises(af.TargetError, match="predates MIL"):
        af.compile(y, target=name.lower())
    r = af.cross_compile_check(y, name)
    assert not r.ok and r.violations[0].first_family == "H13"
    assert r.estimate.latency_us > 0
    assert af.estimate(y, target=name).latency_us > 0


def test_every_violation_is_reported_at_once_with_file_and_line():
    x = af.input((1, 8, 16, 16))
    up = af.resize_bilinear(x, (32, 32)); l_up = line()
    w = np.full((8, 8, 1, 14), 0.01, np.float32)
    cv = af.conv(up, w); l_cv = line()
    long = af.input((1, 4, 1, 30000))
    r = af.relu(long); l_r = line()
    rep = af.cross_compile_check([cv, r], "h13")
    assert not rep.ok and len(rep.violations) >= 3
    origins = {v.origin for v in rep.violations}
    assert {l_up, l_cv, l_r} <= origins, origins
    for v in rep.violations:
        assert v.op and v.shapes and v.problem and v.hint and str(v) == v.message
    with pytest.raises(af.TargetError) as e:
        af.compile([cv, r], target="h13")
    msg = str(e.value)
    assert all(l in msg for l in (l_up, l_cv, l_r)) and f"{len(rep.violations)} violation(s)" in msg
    # the same graph is fine from H16 on, except nothing: all three limits lift
    assert af.cross_compile_check([cv, r], "h16").ok


# ---- the estimator -----------------------------------------------------------

def mlp(width, depth, tokens=128):
    h = af.input((tokens, width))
    rng = np.random.default_rng(1)
    for _ in range(depth):
        h = af.relu(af.matmul(h, (rng.standard_normal((width, width)) * 0.02).astype(np.float32)))
    return h


def test_estimate_is_a_labelled_projection_with_per_op_bounds():
    e = af.estimate(mlp(512, 4), target="h16")
    assert e.latency_us > 0 and e.is_projection and e.target == "h16"
    assert "projection" in repr(e) and "projection" in str(e)
    assert len(e.per_op) == 4  # each relu fused into its matmul
    for o in e.per_op:
        assert o.bound in {"compute", "bandwidth", "floor"} and o.time_us > 0 and o.bytes > 0
    mm = e.per_op[0]
    assert mm.kind == "Matmul" and mm.flops == 2 * 128 * 512 * 512
    ops_us = sum(o.time_us for o in e.per_op)
    # floor once + every op + program I/O through DRAM
    assert e.dispatch_us + ops_us <= e.latency_us <= (e.dispatch_us + ops_us) * 1.2


def test_fused_program_pays_the_floor_once_and_bigger_models_are_slower():
    floor = af.target("h16").floor_us
    small = af.estimate(mlp(256, 2), target="h16")
    deep = af.estimate(mlp(256, 16), target="h16")
    wide = af.estimate(mlp(2048, 16), target="h16")
    assert small.dispatch_us == deep.dispatch_us == floor
    assert small.latency_us < deep.latency_us < wide.latency_us
    assert any(o.bound == "compute" for o in wide.per_op)
    # a newer, faster target projects a faster program
    assert af.estimate(mlp(2048, 16), target="h17s").latency_us < af.estimate(mlp(2048, 16), target="h13").latency_us


def test_net_estimate_uses_the_compile_target():
    net = af.compile(mlp(256, 2), target="h17s")
    e = net.estimate()
    assert e.target == "h17s" and e.latency_us > 0
    assert net.report.estimate.latency_us == pytest.approx(e.latency_us)
    assert net.estimate("h13").latency_us > e.latency_us
    # without a target (off a Mac) the estimator's default is documented: h16g
    if sys.platform != "darwin":
        assert af.compile(mlp(64, 1)).estimate().target == "h16g"
        assert af.estimate(mlp(64, 1)).target == "h16g"


def test_calibration_report_within_30_percent_with_held_out_points():
    rows = af.calibration_report()
    assert len(rows) >= 9 and sum(r["held_out"] for r in rows) >= 2
    for r in rows:
        assert abs(r["error_pct"]) <= 30.0, r
        assert r["predicted_ms"] == pytest.approx(r["published_ms"] * (1 + r["error_pct"] / 100))


def test_estimate_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib")
    p = tmp_path / "est.png"
    af.estimate(mlp(256, 2), target="h16").plot(p)
    assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_estimate_plot_without_matplotlib_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    with pytest.raises(ImportError, match="pip install matplotlib"):
        af.estimate(mlp(64, 1), target="h16").plot(tmp_path / "x.png")


# ---- the compile breaker ------------------------------------------------------

def test_breaker_strict_mode_raises_after_a_failed_compile(monkeypatch):
    y = relu_of((1, 4))
    monkeypatch.setenv("ANEFORGE_COMPILE_BREAKER_STRICT", "1")
    _aneforge._inject_compile_failures(1)
    with pytest.raises(af.CompileError, match="injected"):
        af.compile(y, target="h16")
    with pytest.raises(af.CompileBackoffError, match="reset_compile_breaker"):
        af.compile(y, target="h16")
    af.reset_compile_breaker()
    af.compile(y, target="h16")  # reset by hand clears it


def test_breaker_zero_backoff_and_disable_switch(monkeypatch):
    y = relu_of((1, 4))
    monkeypatch.setenv("ANEFORGE_COMPILE_BACKOFF", "0")
    _aneforge._inject_compile_failures(1)
    with pytest.raises(af.CompileError):
        af.compile(y, target="h16")
    af.compile(y, target="h16")  # 0 disables the wait; a success clears it
    monkeypatch.setenv("ANEFORGE_COMPILE_BREAKER_STRICT", "1")
    af.compile(y, target="h16")  # cleared by the success: strict mode has nothing to refuse
    monkeypatch.delenv("ANEFORGE_COMPILE_BACKOFF")
    monkeypatch.setenv("ANEFORGE_DISABLE_COMPILE_BREAKER", "1")
    _aneforge._inject_compile_failures(1)
    with pytest.raises(af.CompileError):
        af.compile(y, target="h16")
    af.compile(y, target="h16")  # disabled: strict mode does not refuse either


def test_breaker_ignores_validation_errors_and_bad_env_is_an_error(monkeypatch):
    monkeypatch.setenv("ANEFORGE_COMPILE_BREAKER_STRICT", "1")
    with pytest.raises(af.TargetError):
        af.compile(relu_of((1, 4, 1, 20000)), target="h13")
    af.compile(relu_of((1, 4)), target="h13")  # a refused graph does not trip the breaker
    monkeypatch.setenv("ANEFORGE_COMPILE_BACKOFF", "soon")
    with pytest.raises(ValueError, match="ANEFORGE_COMPILE_BACKOFF"):
        af.compile(relu_of((1, 4)), target="h13")


def test_no_target_off_mac_means_no_validation_and_no_breaker(monkeypatch):
    if sys.platform == "darwin":
        pytest.skip("a Mac detects its own target")
    monkeypatch.setenv("ANEFORGE_COMPILE_BREAKER_STRICT", "1")
    _aneforge._inject_compile_failures(1)
    net = af.compile(relu_of((1, 4, 1, 20000)))  # no target: the sim runs anything
    assert net.target is None and net.report is None
    _aneforge._inject_compile_failures(0)


def test_host_core_round_trip_is_measured_where_two_cpus_are_usable():
    import os

    from aneforge import _aneforge as ext

    t = ext.host_core_round_trip_ns(trips=2000)
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 0
    if usable >= 2:
        # A cache-line round trip between two cores: tens of ns on one die,
        # a few us at worst on a loaded VM; never zero or seconds.
        assert t is not None and 10 < t < 100_000
    else:
        assert t is None
