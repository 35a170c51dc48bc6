//! Latency projection for one compiled program on one target.
//!
//! The core lowers a graph to a list of [`OpCost`]s (what each fused kernel
//! computes and moves) and asks for an [`Estimate`]. This is a projection from
//! published measurements, never a measurement: every estimate says so in
//! `is_projection`, and the calibration report says how wrong it is on the
//! points we know.
//!
//! The model, per op:
//!
//! ```text
//! t_op = overhead + max(compute, weight stream, activation traffic)
//!   compute    = flops / (peak × util(kind, n))
//!   weights    = weight_bytes / weight-stream bandwidth
//!   activation = on-chip:   bytes / (1024 B × clock)        (elementwise-like ops only)
//!                spilled:   bytes / DRAM activation rate    (working set > on-chip buffer)
//! latency = (cuts + 1) × dispatch floor + Σ t_op + program I/O / activation rate
//! ```
//!
//! * `util(kind, n)` separates convolutions, which the engine runs near its
//!   roof inside a chain, from weight matmuls (~3× slower than the same 1×1
//!   conv, research/ane-performance.md §5, and flat with chain length: ViT-B/16
//!   on M5 Pro stays near 10% of peak) and from low-reuse kernels (depthwise
//!   convs, activation × activation matmuls).
//! * For convs, utilisation rises linearly from "a single op reaches ~30% of
//!   peak" to the fitted chain value at 16 compute ops [MX P2][OR].
//! * Weight streaming, compute and activation traffic of one op overlap (the
//!   max); ops follow one another (the sum), each paying a small fixed cost.
//! * The spill cliff: an op whose activations (in + out) exceed the on-chip
//!   buffer (2.3 MB on M1, 4.72 MB on M5) moves them through DRAM.
//! * A fused program pays the dispatch floor once; each graph cut adds one.

use crate::peak::peak_of;
use crate::table::Target;

/// What kind of kernel an op is; decides which roof limits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpKind {
    /// Convolution with baked weights (incl. 1×1 convs used as linear layers).
    Conv,
    /// Depthwise (groups = channels) convolution: little reuse per weight.
    DepthwiseConv,
    /// Matmul with a baked weight (`x @ W`).
    Matmul,
    /// Matmul of two activations (attention scores, `bmm`).
    BatchMatmul,
    /// Elementwise / activation ops not folded into a conv.
    Elementwise,
    /// Reductions (sum, mean, max over an axis).
    Reduce,
    /// Normalisations (layer / group / rms norm).
    Norm,
    /// Softmax.
    Softmax,
    /// Data movement (transpose, reshape with copy, concat, slice, gather).
    Movement,
    /// Pooling.
    Pool,
}

impl OpKind {
    /// Multiply-accumulate kernels, limited by the compute roof.
    pub fn is_mac(self) -> bool {
        matches!(
            self,
            OpKind::Conv | OpKind::DepthwiseConv | OpKind::Matmul | OpKind::BatchMatmul
        )
    }
}

/// What one kernel of a program computes and moves; the core fills this from
/// the lowered graph. Byte counts are of the stored (fp16 / compressed) data.
#[derive(Debug, Clone, PartialEq)]
pub struct OpCost {
    /// Op name for the per-op report (e.g. "layer1.0.conv2").
    pub name: String,
    /// Kernel kind.
    pub kind: OpKind,
    /// Floating-point operations (2 per MAC).
    pub flops: f64,
    /// Baked weight bytes streamed from DRAM.
    pub weight_bytes: f64,
    /// Activation bytes read (all inputs, incl. a fused residual).
    pub act_in_bytes: f64,
    /// Activation bytes written.
    pub act_out_bytes: f64,
}

impl OpCost {
    /// Convenience constructor.
    pub fn new(
        name: impl Into<String>,
        kind: OpKind,
        flops: f64,
        weight_bytes: f64,
        act_in_bytes: f64,
        act_out_bytes: f64,
    ) -> Self {
        OpCost {
            name: name.into(),
            kind,
            flops,
            weight_bytes,
            act_in_bytes,
            act_out_bytes,
        }
    }
}

/// One program as the estimator sees it.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProgramCost {
    /// Kernels in execution order.
    pub ops: Vec<OpCost>,
    /// Bytes of the program's inputs (copied in through DRAM).
    pub input_bytes: f64,
    /// Bytes of the program's outputs.
    pub output_bytes: f64,
    /// Graph cuts (bridge ops, CPU round trips); each costs one more dispatch.
    pub graph_cuts: usize,
}

/// Which limit decided an op's time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Bound {
    /// The MAC arrays.
    Compute,
    /// Weight streaming, activation traffic or a spill to DRAM.
    Bandwidth,
    /// The fixed per-op overhead: the op is too small to matter otherwise.
    Floor,
}

/// The projection for one op.
#[derive(Debug, Clone, PartialEq)]
pub struct OpEstimate {
    /// Op name.
    pub name: String,
    /// Kernel kind.
    pub kind: OpKind,
    /// FLOPs.
    pub flops: f64,
    /// Bytes moved (weights + activations).
    pub bytes: f64,
    /// What limited it.
    pub bound: Bound,
    /// True when its working set exceeded the on-chip buffer.
    pub spilled: bool,
    /// Projected time, microseconds.
    pub time_us: f64,
}

/// A latency projection for one program on one target.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// Total projected latency per call, microseconds.
    pub latency_us: f64,
    /// Part of it that is dispatch floor (once per fused program).
    pub dispatch_us: f64,
    /// Per op.
    pub per_op: Vec<OpEstimate>,
    /// Target name (with the chip, when a chip profile was used).
    pub target: String,
    /// Always true: this is a projection from published measurements, not a
    /// measurement. Anything that shows an estimate shows this.
    pub is_projection: bool,
}

impl Estimate {
    /// A per-op table for the CLI and logs, headed by the projection label.
    pub fn report(&self) -> String {
        let mut s = format!("{}\n", self.label());
        s.push_str(&format!(
            "{:<32} {:<14} {:>12} {:>12} {:<10} {:>10}\n",
            "op", "kind", "GFLOP", "MB", "bound", "us"
        ));
        for o in &self.per_op {
            s.push_str(&format!(
                "{:<32} {:<14} {:>12.4} {:>12.3} {:<10} {:>10.2}\n",
                o.name,
                format!("{:?}", o.kind),
                o.flops / 1e9,
                o.bytes / 1e6,
                format!("{:?}{}", o.bound, if o.spilled { "*" } else { "" }),
                o.time_us
            ));
        }
        s.push_str(&format!(
            "dispatch floor {:.1} us; total {:.1} us (* = spilled past the on-chip buffer)\n",
            self.dispatch_us, self.latency_us
        ));
        s
    }

    /// A one-line label suitable for reports.
    pub fn label(&self) -> String {
        format!(
            "projected {:.3} ms on {} (projection, not a measurement)",
            self.latency_us / 1000.0,
            self.target
        )
    }
}

/// The fitted constants of the model. `calibrated()` holds the values fitted
/// by [`crate::calibration::fit`]; the calibration report shows their error.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EstimatorParams {
    /// Fraction of peak a conv reaches inside a chain of 16+ compute ops (fitted).
    pub util_conv: f64,
    /// Fraction of peak a matmul with a baked weight reaches, any chain (fitted).
    pub util_matmul: f64,
    /// Fraction of peak a depthwise conv or activation × activation matmul
    /// reaches (fitted).
    pub util_low_reuse: f64,
    /// Fixed cost of each op inside a program, microseconds (fitted).
    pub op_overhead_us: f64,
    /// On-chip buffer bytes per engine cycle for elementwise-like ops whose
    /// operands stay on chip (fixed: 64 banks × 16 B interleave [EY]).
    pub onchip_bytes_per_cycle: f64,
    /// Fraction of peak one isolated compute op reaches (fixed, [MX P2][OR]).
    pub single_op_util: f64,
    /// Chain length from which utilisation stops rising (fixed, [MX P2]).
    pub chain_saturation: f64,
    /// Matmuls above this many FLOPs climb above `util_matmul` (fixed).
    pub matmul_ramp_knee_flops: f64,
    /// Exponent of that climb, `(flops / knee)^exp`, capped at `util_conv`
    /// (fixed: single GEMMs reach ~32% of peak at 2048³ on M4 and ~41% at
    /// 4096³ on M1 [MX P2][G], far above whole-network matmul utilisation).
    pub matmul_ramp_exp: f64,
}

impl EstimatorParams {
    /// The calibrated constants (see `calibration_report()` for their error).
    pub const fn calibrated() -> Self {
        EstimatorParams {
            // Fitted by calibration::fit on the 5 non-held-out points (4 held
            // out), rounded. util_conv sits on its physical bound of 1.0:
            // ResNet-18 would like more, which is Winograd on its 3×3 convs.
            util_conv: 1.0,
            util_matmul: 0.138,
            util_low_reuse: 0.0146,
            op_overhead_us: 1.03,
            onchip_bytes_per_cycle: 1024.0,
            single_op_util: 0.30,
            chain_saturation: 16.0,
            matmul_ramp_knee_flops: 1e9,
            matmul_ramp_exp: 0.25,
        }
    }
}

impl Default for EstimatorParams {
    fn default() -> Self {
        Self::calibrated()
    }
}

/// Projects a program's latency on a target with the calibrated constants.
pub fn estimate(target: &Target, program: &ProgramCost) -> Estimate {
    estimate_with(target, program, &EstimatorParams::calibrated())
}

/// Projects with explicit constants (used by the fit and by experiments).
pub fn estimate_with(target: &Target, program: &ProgramCost, p: &EstimatorParams) -> Estimate {
    let peak = peak_of(target).tflops_fp16 * 1e12;
    let weight_bw = target.weight_gbs * 1e9;
    let act_bw = target.act_gbs * 1e9;
    let onchip_bw = p.onchip_bytes_per_cycle * target.fmax_ghz * 1e9;
    let n_mac = program.ops.iter().filter(|o| o.kind.is_mac()).count();
    let chain = chain_factor(n_mac, p);
    let overhead = p.op_overhead_us * 1e-6;

    let mut per_op = Vec::with_capacity(program.ops.len());
    let mut total = 0.0;
    for op in &program.ops {
        // Only convs are measured to climb with chain length; matmuls stay
        // near a third of the same conv even deep in a chain (ViT-B/16 on
        // M5 Pro runs at ~10% of peak), so they get a flat utilisation.
        let util = match op.kind {
            OpKind::Conv => p.util_conv * chain,
            OpKind::Matmul => matmul_util(op.flops, p),
            OpKind::DepthwiseConv | OpKind::BatchMatmul => p.util_low_reuse,
            _ => 1.0,
        };
        let compute = if op.kind.is_mac() && peak > 0.0 {
            op.flops.max(0.0) / (peak * util)
        } else {
            0.0
        };
        let weights = op.weight_bytes.max(0.0) / weight_bw;
        let act_bytes = op.act_in_bytes.max(0.0) + op.act_out_bytes.max(0.0);
        let spilled = act_bytes > target.sram_bytes;
        let act = if spilled {
            act_bytes / act_bw
        } else if op.kind.is_mac() {
            0.0
        } else {
            act_bytes / onchip_bw
        };
        let (work, bound) = if compute >= weights.max(act) {
            (compute, Bound::Compute)
        } else {
            (weights.max(act), Bound::Bandwidth)
        };
        let bound = if overhead > work { Bound::Floor } else { bound };
        let t = overhead + work;
        total += t;
        per_op.push(OpEstimate {
            name: op.name.clone(),
            kind: op.kind,
            flops: op.flops,
            bytes: op.weight_bytes.max(0.0) + act_bytes,
            bound,
            spilled,
            time_us: t * 1e6,
        });
    }
    let io = (program.input_bytes.max(0.0) + program.output_bytes.max(0.0)) / act_bw;
    let dispatch_us = target.floor_us * (program.graph_cuts as f64 + 1.0);
    let latency_us = dispatch_us + (total + io) * 1e6;
    Estimate {
        latency_us,
        dispatch_us,
        per_op,
        target: match &target.chip {
            Some(c) => format!("{} ({c})", target.lower_name()),
            None => target.lower_name(),
        },
        is_projection: true,
    }
}

/// Utilisation of a matmul with a baked weight: flat up to the knee (every
/// matmul in the calibration networks is below it), then rising with size.
fn matmul_util(flops: f64, p: &EstimatorParams) -> f64 {
    let ramp = (flops / p.matmul_ramp_knee_flops)
        .max(1.0)
        .powf(p.matmul_ramp_exp);
    (p.util_matmul * ramp).min(p.util_conv)
}

/// Utilisation multiplier for a program with `n_mac` compute ops: a single op
/// reaches `single_op_util` of peak, a chain of `chain_saturation` or more
/// reaches the full per-kind utilisation; linear in between.
fn chain_factor(n_mac: usize, p: &EstimatorParams) -> f64 {
    let lo = (p.single_op_util / p.util_conv).min(1.0);
    let n = n_mac.max(1) as f64;
    let span = (p.chain_saturation - 1.0).max(1.0);
    let x = ((n - 1.0) / span).min(1.0);
    lo + (1.0 - lo) * x
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::table::lookup;

    fn conv(name: &str, flops: f64, w: f64, a: f64) -> OpCost {
        OpCost::new(name, OpKind::Conv, flops, w, a, a)
    }

    fn prog(ops: Vec<OpCost>) -> ProgramCost {
        ProgramCost {
            ops,
            ..ProgramCost::default()
        }
    }

    #[test]
    fn empty_program_costs_one_dispatch_floor() {
        let t = lookup("h17s").expect("t");
        let e = estimate(t, &prog(vec![]));
        assert!((e.latency_us - t.floor_us).abs() < 1e-9);
        assert!(e.is_projection);
        assert!(e.label().contains("projection"));
        assert!(e.report().contains("projection"));
    }

    #[test]
    fn fused_program_pays_the_floor_once_cuts_pay_again() {
        let t = lookup("h16").expect("t");
        let ops: Vec<OpCost> = (0..10)
            .map(|i| conv(&format!("c{i}"), 1e6, 1e3, 1e3))
            .collect();
        let fused = estimate(t, &prog(ops.clone()));
        assert_eq!(fused.dispatch_us, t.floor_us);
        let cut = estimate(
            t,
            &ProgramCost {
                ops,
                graph_cuts: 2,
                ..ProgramCost::default()
            },
        );
        assert!((cut.latency_us - fused.latency_us - 2.0 * t.floor_us).abs() < 1e-6);
    }

    #[test]
    fn a_single_op_reaches_about_30_percent_and_a_chain_more() {
        let t = lookup("h17s").expect("t");
        let p = EstimatorParams::calibrated();
        let big = 1e11;
        let one = estimate(t, &prog(vec![conv("c", big, 0.0, 0.0)]));
        let work = one.per_op[0].time_us - p.op_overhead_us;
        let achieved = big / (work * 1e-6) / (peak_of(t).tflops_fp16 * 1e12);
        assert!((achieved - 0.30).abs() < 0.01, "{achieved}");
        let chain: Vec<OpCost> = (0..32)
            .map(|i| conv(&format!("c{i}"), big, 0.0, 0.0))
            .collect();
        let e = estimate(t, &prog(chain));
        let work = e.per_op[0].time_us - p.op_overhead_us;
        let achieved = big / (work * 1e-6) / (peak_of(t).tflops_fp16 * 1e12);
        assert!((achieved - p.util_conv).abs() < 0.01, "{achieved}");
        assert_eq!(e.per_op[0].bound, Bound::Compute);
    }

    #[test]
    fn weight_heavy_ops_are_bandwidth_bound_at_the_weight_stream_rate() {
        let t = lookup("h17s").expect("t");
        let e = estimate(
            t,
            &prog(vec![OpCost::new(
                "gemv",
                OpKind::Matmul,
                2e7,
                1e8,
                2e3,
                2e3,
            )]),
        );
        assert_eq!(e.per_op[0].bound, Bound::Bandwidth);
        let expect_us = 1e8 / (t.weight_gbs * 1e9) * 1e6;
        assert!((e.per_op[0].time_us - expect_us).abs() / expect_us < 0.05);
    }

    #[test]
    fn spill_cliff_is_a_cliff() {
        let t = lookup("h13").expect("t"); // 2.3 MB on-chip
        let under = estimate(
            t,
            &prog(vec![OpCost::new(
                "add",
                OpKind::Elementwise,
                0.0,
                0.0,
                1.0e6,
                1.0e6,
            )]),
        );
        let over = estimate(
            t,
            &prog(vec![OpCost::new(
                "add",
                OpKind::Elementwise,
                0.0,
                0.0,
                1.3e6,
                1.3e6,
            )]),
        );
        assert!(!under.per_op[0].spilled && over.per_op[0].spilled);
        // 30% more bytes, but a much bigger jump in time.
        assert!(over.per_op[0].time_us > 2.0 * under.per_op[0].time_us);
        assert_eq!(over.per_op[0].bound, Bound::Bandwidth);
        // the same op fits on a target with a bigger buffer
        let m5 = lookup("h17").expect("t");
        let e = estimate(
            m5,
            &prog(vec![OpCost::new(
                "add",
                OpKind::Elementwise,
                0.0,
                0.0,
                1.3e6,
                1.3e6,
            )]),
        );
        assert!(!e.per_op[0].spilled);
    }

    #[test]
    fn tiny_ops_are_floor_bound() {
        let t = lookup("h16").expect("t");
        let e = estimate(
            t,
            &prog(vec![OpCost::new(
                "relu",
                OpKind::Elementwise,
                0.0,
                0.0,
                64.0,
                64.0,
            )]),
        );
        assert_eq!(e.per_op[0].bound, Bound::Floor);
    }

    #[test]
    fn matmul_is_slower_than_the_same_conv() {
        // "a 1×1 conv is about 3× faster than the same matmul" [MX P2][OR]
        let t = lookup("h16").expect("t");
        let time = |kind| {
            let e = estimate(t, &prog(vec![OpCost::new("x", kind, 5e8, 0.0, 0.0, 0.0)]));
            e.latency_us - e.dispatch_us
        };
        let ratio = time(OpKind::Matmul) / time(OpKind::Conv);
        assert!((1.8..4.0).contains(&ratio), "{ratio}");
    }

    #[test]
    fn negative_inputs_do_not_produce_negative_time() {
        let t = lookup("h16").expect("t");
        let e = estimate(
            t,
            &prog(vec![OpCost::new("x", OpKind::Conv, -1.0, -1.0, -1.0, -1.0)]),
        );
        assert!(e.latency_us >= t.floor_us);
    }

    fn single_matmul_tflops(target: &str, n: f64) -> f64 {
        let t = lookup(target).expect("t");
        let op = OpCost::new(
            "mm",
            OpKind::Matmul,
            2.0 * n * n * n,
            2.0 * n * n,
            2.0 * n * n,
            2.0 * n * n,
        );
        let e = estimate(t, &prog(vec![op]));
        2.0 * n * n * n / ((e.latency_us - e.dispatch_us) * 1e-6) / 1e12
    }

    #[test]
    fn large_single_gemms_match_their_microbenchmarks() {
        // one 2048² matmul on M4: 5.7 TF/s; one 4096² on M1: 4.8 TF/s [MX P2][G]
        let m4 = single_matmul_tflops("h16g", 2048.0);
        assert!((m4 / 5.7 - 1.0).abs() < 0.35, "{m4}");
        let m1 = single_matmul_tflops("h13", 4096.0);
        assert!((m1 / 4.8 - 1.0).abs() < 0.35, "{m1}");
    }
}
