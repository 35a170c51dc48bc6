//! Validation, rewrites, the cost mapping and the breaker, through the core's
//! own builder and compile (references: `std` sin/cos and plain sums in f64).

use super::*;
use crate::builder::{self as b, ConvArgs};
use crate::error::with_origin;
use crate::ops::{Conv, Op, ReduceKind, ResizeMode, Unary};
use crate::{compile, CompileOptions, DType, Tensor};
use aneforge_target::breaker::{Clock, Sleeper};
use aneforge_target::{Bound, BreakerConfig, CompileBreaker};
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn t(name: &str) -> Target {
    resolve(name).expect("known target")
}

fn graph(outs: &[Tensor]) -> Graph {
    Graph::from_outputs(outs).expect("graph")
}

fn at<T>(line: &str, f: impl FnOnce() -> T) -> T {
    with_origin(Some(line.to_string()), f)
}

fn run(outs: &[Tensor], target: Option<&str>, x: &[f32]) -> Result<Vec<f32>> {
    let opts = CompileOptions { target: target.map(t), ..Default::default() };
    let c = compile(outs, opts)?;
    let mut st = c.program.new_state();
    c.program.input_mut(&mut st, 0).copy_from_slice(x);
    c.program.run(&mut st);
    Ok(c.program.output(&st, 0).to_vec())
}

fn fp16(v: f64) -> f32 {
    half::f16::from_f64(v).to_f32()
}

#[test]
fn sin_cos_are_rewritten_below_h15_and_native_from_h15() {
    let x = b::input(&[1, 2001], DType::F16, None).expect("x");
    let s = b::unary(&x, Unary::Sin).expect("sin");
    let c = b::unary(&x, Unary::Cos).expect("cos");
    let (g14, rw) = legalize(graph(&[s.clone(), c.clone()]), &t("h14")).expect("legalize");
    assert_eq!(rw.len(), 2);
    assert!(!g14.nodes.iter().any(|n| required_capability(&n.op).is_some()));
    assert!(validate(&g14, &t("h14")).ok());
    let (g15, rw) = legalize(graph(&[s.clone(), c.clone()]), &t("h15")).expect("legalize");
    assert!(rw.is_empty());
    assert!(g15.nodes.iter().any(|n| matches!(n.op, Op::Unary(Unary::Sin))));
    // the unrewritten graph is refused on h14 by the validator itself
    let v = validate(&graph(std::slice::from_ref(&s)), &t("h14"));
    assert_eq!(v.violations.len(), 1);
    assert_eq!(v.violations[0].first_family.as_deref(), Some("H15"));

    // numbers: the polynomial on the fp16 sim against f64 sin/cos
    let xs: Vec<f32> = (0..2001).map(|i| fp16(-50.0 + 0.05 * i as f64)).collect();
    for (out, f) in [(&s, f64::sin as fn(f64) -> f64), (&c, f64::cos)] {
        let y = run(std::slice::from_ref(out), Some("h13"), &xs).expect("runs");
        let worst = xs.iter().zip(&y).map(|(&x, &y)| (f(x as f64) - y as f64).abs()).fold(0.0, f64::max);
        assert!(worst < 2.5e-3, "worst abs error {worst}");
    }
}

#[test]
fn long_reductions_are_tiled_and_match_the_untiled_sum() {
    let n = 40_000;
    let x = b::input(&[1, 4, n], DType::F16, None).expect("x");
    let sq = b::binary(&x, &x, crate::ops::Binary::Mul).expect("sq");
    let outs = [
        b::reduce(&sq, ReduceKind::Sum, Some(&[-1]), false).expect("sum"),
        b::reduce(&x, ReduceKind::Max, Some(&[-1]), true).expect("max"),
        b::reduce(&x, ReduceKind::Mean, Some(&[-1]), false).expect("mean"),
    ];
    let h15 = t("h15");
    assert!(!validate(&graph(&outs), &h15).ok(), "the long reduce is refused as written");
    let (g, rw) = legalize(graph(&outs), &h15).expect("legalize");
    assert_eq!(rw.len(), 3, "{rw:?}");
    assert!(rw[0].to_string().contains("tiled into 3 pieces"), "{}", rw[0]);
    let rep = validate(&g, &h15);
    assert!(rep.ok(), "{}", rep.error_message());
    // h16 takes the long axis as it is
    assert!(legalize(graph(&outs), &t("h16")).expect("l").1.is_empty());

    let xs: Vec<f32> = (0..4 * n).map(|i| fp16(((i * 7919) % 1000) as f64 / 1000.0 - 0.3)).collect();
    let opts = CompileOptions { target: Some(h15), numerics: crate::Numerics::Ieee, ..Default::default() };
    let c = compile(&outs, opts).expect("compiles on h15 after tiling");
    assert_eq!(c.report.as_ref().map(|r| r.warnings.len()), Some(3));
    let mut st = c.program.new_state();
    c.program.input_mut(&mut st, 0).copy_from_slice(&xs);
    c.program.run(&mut st);
    for row in 0..4 {
        let r = &xs[row * n..(row + 1) * n];
        let sum: f64 = r.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let max = r.iter().copied().fold(f32::MIN, f32::max);
        let mean: f64 = r.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let got = [c.program.output(&st, 0)[row], c.program.output(&st, 1)[row], c.program.output(&st, 2)[row]];
        assert!((got[0] as f64 - sum).abs() / sum < 2e-3, "sum {} vs {sum}", got[0]);
        assert_eq!(got[1], max);
        assert!((got[2] as f64 - mean).abs() < 2e-3, "mean {} vs {mean}", got[2]);
    }
}

#[test]
fn every_violation_is_reported_at_once_with_its_line() {
    let x = at("model.py:3", || b::input(&[1, 8, 32, 32], DType::F16, None)).expect("x");
    let up = at("model.py:4", || b::upsample_nearest(&x, [2, 2])).expect("up");
    let w = b::constant(vec![0.01; 8 * 8 * 14], vec![8, 8, 1, 14], DType::F16).expect("w");
    let args = ConvArgs::default();
    let cv = at("model.py:5", || b::conv(&up, &w, None, &args)).expect("conv");
    let long = at("model.py:6", || b::input(&[1, 4, 1, 20_000], DType::F16, None)).expect("long");
    let r = at("model.py:7", || b::unary(&long, Unary::Relu)).expect("relu");
    let rep = validate(&graph(&[cv, r]), &t("h13"));
    let lines: Vec<&str> = rep.violations.iter().filter_map(|v| v.origin.as_deref()).collect();
    assert!(lines.contains(&"model.py:4"), "{rep}"); // resize needs the texture engine (H14)
    assert!(lines.contains(&"model.py:5"), "{rep}"); // kernel width 14 > 13 (H16)
    assert!(lines.contains(&"model.py:7"), "{rep}"); // axis 20000 > 16384 (H16)
    let fams: Vec<Option<&str>> = rep.violations.iter().map(|v| v.first_family.as_deref()).collect();
    assert!(fams.contains(&Some("H14")) && fams.contains(&Some("H16")), "{fams:?}");
    assert!(rep.violations.iter().all(|v| !v.hint.is_empty()));
    let msg = rep.error_message();
    assert!(msg.contains("model.py:5") && msg.contains("[1, 4, 1, 20000]"), "{msg}");
    // and compile refuses with all of them in one Error::Target
    let e = compile(&[b::unary(&long, Unary::Relu).expect("r")], CompileOptions { target: Some(t("h13")), ..Default::default() });
    assert!(matches!(e, Err(Error::Target(_))));
}

#[test]
fn family_boundaries_for_shapes_and_kernels() {
    let long = b::input(&[1, 4, 1, 20_000], DType::F16, None).expect("x");
    let r = graph(&[b::unary(&long, Unary::Relu).expect("relu")]);
    assert!(!validate(&r, &t("h15")).ok());
    assert!(validate(&r, &t("h16")).ok());
    let x = b::input(&[1, 8, 4, 64], DType::F16, None).expect("x");
    let w = b::constant(vec![0.0; 8 * 8 * 14], vec![8, 8, 1, 14], DType::F16).expect("w");
    let cv = graph(&[b::conv(&x, &w, None, &ConvArgs::default()).expect("conv")]);
    assert!(!validate(&cv, &t("h13")).ok());
    assert!(validate(&cv, &t("h16")).ok());
    let rz = graph(&[b::resize(&x, [8, 128], ResizeMode::Bilinear { align_corners: false }).expect("rz")]);
    assert!(!validate(&rz, &t("h13g")).ok());
    assert!(validate(&rz, &t("h14")).ok());
    let six = b::input(&[1, 2, 2, 2, 2, 2], DType::F16, None).expect("x6");
    let rep = validate(&graph(&[b::unary(&six, Unary::Relu).expect("r")]), &t("h18"));
    assert!(rep.violations.iter().any(|v| v.problem.contains("rank 6")), "{rep}");
}

#[test]
fn families_without_mil_refuse_compile_but_validate_and_estimate() {
    let x = b::input(&[1, 16, 8, 8], DType::F16, None).expect("x");
    let y = b::unary(&x, Unary::Relu).expect("y");
    for name in ["h11", "h12", "m9", "t0"] {
        let rep = validate(&graph(std::slice::from_ref(&y)), &t(name));
        assert_eq!(rep.violations.len(), 1, "{name}: {rep}");
        assert_eq!(rep.violations[0].first_family.as_deref(), Some("H13"));
        assert!(rep.estimate.as_ref().is_some_and(|e| e.latency_us > 0.0 && e.is_projection));
        let e = compile(std::slice::from_ref(&y), CompileOptions { target: Some(t(name)), ..Default::default() });
        assert!(matches!(&e, Err(Error::Target(m)) if m.contains("predates MIL")), "{name}");
    }
}

fn mlp(width: usize, depth: usize) -> Tensor {
    let mut h = b::input(&[64, width], DType::F16, None).expect("x");
    for _ in 0..depth {
        let w = b::constant(vec![0.01; width * width], vec![width, width], DType::F16).expect("w");
        h = b::unary(&b::matmul(&h, &w).expect("mm"), Unary::Relu).expect("relu");
    }
    h
}

#[test]
fn graph_costs_and_estimates() {
    let g = graph(&[mlp(256, 2)]);
    let pc = program_cost(&g);
    assert_eq!(pc.ops.len(), 4);
    assert_eq!(pc.ops[0].kind, aneforge_target::OpKind::Matmul);
    assert_eq!(pc.ops[0].flops, 2.0 * 64.0 * 256.0 * 256.0);
    assert_eq!(pc.ops[0].weight_bytes, 256.0 * 256.0 * 2.0);
    assert_eq!(pc.ops[0].act_in_bytes, 64.0 * 256.0 * 2.0);
    assert_eq!(pc.input_bytes, 64.0 * 256.0 * 2.0);
    let h16 = t("h16");
    let e = estimate_graph(&g, &h16);
    assert!(e.latency_us > 0.0 && e.is_projection);
    // one fused program pays the floor once, however many ops it has
    assert_eq!(e.dispatch_us, h16.floor_us);
    let deep = estimate_graph(&graph(&[mlp(256, 8)]), &h16);
    assert_eq!(deep.dispatch_us, h16.floor_us);
    assert!(deep.latency_us > e.latency_us);
    let big = estimate_graph(&graph(&[mlp(2048, 8)]), &h16);
    assert!(big.latency_us > deep.latency_us);
    assert!(big.per_op.iter().any(|o| o.bound != Bound::Floor));
    assert!(e.per_op.iter().all(|o| o.time_us > 0.0));
    // two activations multiplied: low-reuse kind
    let a = b::input(&[64, 64], DType::F16, None).expect("a");
    let bm = b::matmul(&a, &a).expect("bmm");
    assert_eq!(program_cost(&graph(&[bm])).ops[0].kind, aneforge_target::OpKind::BatchMatmul);
}

#[test]
fn check_reports_rewrites_as_warnings_and_an_estimate() {
    let x = b::input(&[1, 64], DType::F16, None).expect("x");
    let y = b::unary(&x, Unary::Sin).expect("sin");
    let (_, rep) = check(graph(&[y]), &t("h13")).expect("check");
    assert!(rep.ok());
    assert_eq!(rep.warnings.len(), 1);
    assert!(rep.warnings[0].contains("polynomial"));
    assert!(rep.estimate.is_some());
    assert!(rep.to_string().contains("projection"));
}

#[test]
fn unknown_target_names_are_refused_with_a_suggestion() {
    let e = resolve("h16x").unwrap_err();
    assert!(matches!(&e, Error::Target(m) if m.contains("did you mean") && m.contains("h17s")), "{e}");
    assert_eq!(t("M5 Pro").chip.as_deref(), Some("M5 Pro"));
    assert_eq!(t("H16S").name, "H16s");
}

#[derive(Clone, Default)]
struct FakeClock(Arc<Mutex<Duration>>);
impl Clock for FakeClock {
    fn now(&self) -> Duration {
        *self.0.lock().expect("clock")
    }
}
#[derive(Clone, Default)]
struct FakeSleeper(FakeClock, Arc<Mutex<Vec<Duration>>>);
impl Sleeper for FakeSleeper {
    fn sleep(&self, d: Duration) {
        self.1.lock().expect("s").push(d);
        *self.0 .0.lock().expect("clock") += d;
    }
}

#[test]
fn breaker_waits_after_a_failed_compile_and_strict_mode_raises() {
    let clock = FakeClock::default();
    let sleeper = FakeSleeper(clock.clone(), Arc::default());
    let br = CompileBreaker::new(clock.clone(), sleeper.clone());
    let cfg = BreakerConfig::default();
    let x = b::input(&[1, 4], DType::F16, None).expect("x");
    let y = b::unary(&x, Unary::Relu).expect("y");
    let failing = || -> Result<()> { Err(Error::Compile("aned refused".into())) };
    assert!(matches!(run_in(&br, &cfg, failing), Err(Error::Compile(_))));
    let strict = BreakerConfig { strict: true, ..cfg };
    let ok = || compile(std::slice::from_ref(&y), CompileOptions::default()).map(|_| ());
    assert!(matches!(run_in(&br, &strict, ok), Err(Error::CompileBackoff(_))));
    assert!(sleeper.1.lock().expect("s").is_empty(), "strict mode never sleeps");
    run_in(&br, &cfg, ok).expect("waits, then compiles");
    assert_eq!(*sleeper.1.lock().expect("s"), vec![Duration::from_secs(15)]);
    // success cleared it
    run_in(&br, &strict, ok).expect("no wait after a success");
    let off = BreakerConfig { disabled: true, strict: true, ..cfg };
    assert!(run_in(&br, &off, failing).is_err());
    run_in(&br, &off, ok).expect("disabled breaker never gates");
}

#[test]
fn validation_errors_do_not_trip_the_breaker() {
    // A refused graph is a user error retried at once; it must not cost a backoff.
    reset_compile_breaker();
    let long = b::input(&[1, 4, 1, 20_000], DType::F16, None).expect("x");
    let r = b::unary(&long, Unary::Relu).expect("relu");
    let e = compile(std::slice::from_ref(&r), CompileOptions { target: Some(t("h13")), ..Default::default() });
    assert!(matches!(e, Err(Error::Target(_))));
    assert!(!aneforge_target::breaker::global().is_tripped());
}

#[test]
fn integer_nearest_upsampling_is_rewritten_below_h14_and_exact() {
    let x = b::input(&[1, 3, 4, 5], DType::F16, None).expect("x");
    let up = b::upsample_nearest(&x, [2, 3]).expect("up");
    let (g, rw) = legalize(graph(std::slice::from_ref(&up)), &t("h13")).expect("legalize");
    assert_eq!(rw.len(), 1, "{rw:?}");
    assert!(validate(&g, &t("h13")).ok());
    assert!(legalize(graph(std::slice::from_ref(&up)), &t("h14")).expect("l").1.is_empty());
    let xs: Vec<f32> = (0..60).map(|i| i as f32).collect();
    let native = run(std::slice::from_ref(&up), None, &xs).expect("native");
    let rewritten = run(std::slice::from_ref(&up), Some("h13"), &xs).expect("rewritten");
    assert_eq!(native, rewritten);
    // a non-integer scale is still refused, with a hint
    let odd = b::resize(&x, [6, 7], ResizeMode::Nearest).expect("odd");
    let rep = validate(&legalize(graph(&[odd]), &t("h13")).expect("l").0, &t("h13"));
    assert_eq!(rep.violations.len(), 1);
    assert_eq!(rep.violations[0].first_family.as_deref(), Some("H14"));
}

/// Valid-padding conv with stride = kernel, straight from the definition, in
/// f64 over the (fp16) operands: the reference the rewritten graph must match.
fn patch_conv_reference(x: &[f32], [n, c, h, w]: [usize; 4], wt: &[f32], [o, cg, kh, kw]: [usize; 4], bias: &[f32], groups: usize) -> Vec<f64> {
    let (oh, ow) = (h / kh, w / kw);
    let og = o / groups;
    let mut y = vec![0.0f64; n * o * oh * ow];
    for b in 0..n {
        for oc in 0..o {
            let g = oc / og;
            for oy in 0..oh {
                for ox in 0..ow {
                    let mut acc = bias[oc] as f64;
                    for ci in 0..cg {
                        let ic = g * cg + ci;
                        for ki in 0..kh {
                            for kj in 0..kw {
                                let xv = x[((b * c + ic) * h + oy * kh + ki) * w + ox * kw + kj] as f64;
                                acc += xv * wt[((oc * cg + ci) * kh + ki) * kw + kj] as f64;
                            }
                        }
                    }
                    y[((b * o + oc) * oh + oy) * ow + ox] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn too_wide_patchify_convs_become_space_to_depth_and_a_1x1_conv() {
    // (target, x shape, weight shape, groups): ViT's 16x16/s16 stem on h16
    // (limit 15, with a width that does not divide, so the tail is cropped)
    // and a grouped 14x14/s14 on h13 (limit 13)
    let cases = [("h16", [2, 3, 32, 37], [5, 3, 16, 16], 1), ("h13", [1, 4, 28, 30], [6, 2, 14, 14], 2)];
    for (name, xs, ws, groups) in cases {
        let target = t(name);
        let x = b::input(&xs, DType::F16, None).expect("x");
        let wv: Vec<f32> = (0..ws.iter().product::<usize>()).map(|i| fp16((((i * 37) % 101) as f64 - 50.0) / 900.0)).collect();
        let bv: Vec<f32> = (0..ws[0]).map(|i| fp16(0.1 * i as f64 - 0.2)).collect();
        let w = b::constant(wv.clone(), ws.to_vec(), DType::F16).expect("w");
        let bias = b::constant(bv.clone(), vec![ws[0]], DType::F16).expect("b");
        let args = ConvArgs { stride: [ws[2], ws[3]], groups, ..ConvArgs::default() };
        let y = at("vit.py:12", || b::conv(&x, &w, Some(&bias), &args)).expect("conv");

        assert!(!validate(&graph(std::slice::from_ref(&y)), &target).ok(), "{name}: refused as written");
        let (g, rw) = legalize(graph(std::slice::from_ref(&y)), &target).expect("legalize");
        assert_eq!(rw.len(), 1, "{rw:?}");
        let msg = rw[0].to_string();
        assert!(msg.starts_with("conv at vit.py:12") && msg.contains("1x1 conv"), "{msg}");
        let rep = validate(&g, &target);
        assert!(rep.ok(), "{}", rep.error_message());
        let convs: Vec<&Conv> = g.nodes.iter().filter_map(|n| if let Op::Conv(c) = &n.op { Some(c) } else { None }).collect();
        assert!(convs.len() == 1 && convs[0].window.kernel == [1, 1] && convs[0].groups == groups, "{g}");

        let xv: Vec<f32> = (0..xs.iter().product::<usize>()).map(|i| fp16((((i * 7919) % 1000) as f64 - 500.0) / 500.0)).collect();
        let want = patch_conv_reference(&xv, xs, &wv, ws, &bv, groups);
        let rewritten = run(std::slice::from_ref(&y), Some(name), &xv).expect("compiles for the target");
        let original = run(std::slice::from_ref(&y), None, &xv).expect("the conv as written, on the sim");
        assert_eq!(rewritten.len(), want.len());
        for (k, (&got, &r)) in rewritten.iter().zip(&want).enumerate() {
            // one fp16 rounding of the output, plus f32 accumulation
            let tol = 1e-3 * r.abs().max(1.0);
            assert!((got as f64 - r).abs() <= tol, "{name} [{k}]: {got} vs reference {r}");
            assert!((got - original[k]).abs() as f64 <= tol, "{name} [{k}]: {got} vs the conv as written {}", original[k]);
        }
    }
}

#[test]
fn patchify_rewrite_leaves_other_convs_alone() {
    let h16 = t("h16");
    let x = b::input(&[1, 2, 32, 32], DType::F16, None).expect("x");
    let w16 = b::constant(vec![0.01; 2 * 2 * 16 * 16], vec![2, 2, 16, 16], DType::F16).expect("w");
    // overlapping windows (stride 8) or padding: not space-to-depth, still refused
    for args in [ConvArgs { stride: [8, 8], ..ConvArgs::default() }, ConvArgs { stride: [16, 16], pad: b::PadSpec::Explicit([1; 4]), ..ConvArgs::default() }] {
        let y = b::conv(&x, &w16, None, &args).expect("conv");
        let (g, rw) = legalize(graph(&[y]), &h16).expect("legalize");
        assert!(rw.is_empty(), "{rw:?}");
        assert!(!validate(&g, &h16).ok());
    }
    // within the limit: left as it is
    let w4 = b::constant(vec![0.01; 2 * 2 * 4 * 4], vec![2, 2, 4, 4], DType::F16).expect("w");
    let y = b::conv(&x, &w4, None, &ConvArgs { stride: [4, 4], ..ConvArgs::default() }).expect("conv");
    assert!(legalize(graph(&[y]), &h16).expect("legalize").1.is_empty());
    // a trainable weight is reshaped in the graph instead of re-declared
    let p = b::parameter(vec![0.01; 2 * 2 * 16 * 16], vec![2, 2, 16, 16], None).expect("p");
    let y = b::conv(&x, &p, None, &ConvArgs { stride: [16, 16], ..ConvArgs::default() }).expect("conv");
    let (g, rw) = legalize(graph(&[y]), &h16).expect("legalize");
    assert_eq!(rw.len(), 1);
    assert!(validate(&g, &h16).ok());
    assert!(g.nodes.iter().any(|n| matches!(&n.op, Op::Reshape(r) if r.shape == [2, 512, 1, 1])), "{g}");
}
