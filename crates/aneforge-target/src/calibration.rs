//! Calibration of the estimator against published measurements.
//!
//! The models are written out analytically as the per-kernel cost lists a
//! compiler would produce (BN folded into convs, ReLU / ReLU6 fused, residual
//! adds fused into the conv that precedes them; transformers with explicit
//! per-head attention, which is how Apple's ml-ane-transformers writes it and
//! what we assume for the public ANEForge's decomposed `mha`). The published points live in the data file
//! with a `held_out` flag: [`fit`] never sees held-out points, and
//! [`calibration_report`] shows predicted vs published for every point.

use crate::error::TargetError;
use crate::estimate::{estimate_with, EstimatorParams, OpCost, OpKind, ProgramCost};
use crate::table::{calibration_points, chip_profile, CalibrationPoint};

const FP16: f64 = 2.0;

/// Accumulates kernels of a model while tracking nothing but byte and FLOP
/// counts; each helper documents the lowering it assumes.
struct Builder {
    ops: Vec<OpCost>,
}

impl Builder {
    fn new() -> Self {
        Builder { ops: Vec::new() }
    }

    /// A conv with baked weights and bias ("same" padding). `residual` fuses
    /// the block's skip add into it, which reads one more output-sized tensor.
    #[allow(clippy::too_many_arguments)]
    fn conv(
        &mut self,
        name: &str,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        h: usize,
        w: usize,
        groups: usize,
        residual: bool,
    ) -> (usize, usize) {
        let (ho, wo) = (h.div_ceil(stride), w.div_ceil(stride));
        let out_px = (ho * wo) as f64;
        let cin_g = (cin / groups) as f64;
        let flops = 2.0 * cin_g * (k * k) as f64 * cout as f64 * out_px;
        let weight = (cin_g * (k * k) as f64 * cout as f64 + cout as f64) * FP16;
        let out = cout as f64 * out_px * FP16;
        let input = (cin * h * w) as f64 * FP16 + if residual { out } else { 0.0 };
        let kind = if groups > 1 && groups == cin {
            OpKind::DepthwiseConv
        } else {
            OpKind::Conv
        };
        self.ops
            .push(OpCost::new(name, kind, flops, weight, input, out));
        (ho, wo)
    }

    /// A linear layer over `tokens` rows: a matmul with a baked weight, or a
    /// 1×1 conv when the model is written in the engine's (C, 1, S) layout.
    fn linear(&mut self, name: &str, kind: OpKind, tokens: usize, din: usize, dout: usize) {
        let flops = 2.0 * (tokens * din * dout) as f64;
        let weight = ((din * dout + dout) as f64) * FP16;
        self.ops.push(OpCost::new(
            name,
            kind,
            flops,
            weight,
            (tokens * din) as f64 * FP16,
            (tokens * dout) as f64 * FP16,
        ));
    }

    /// An op that reads `elems_in` and writes `elems_out` fp16 values.
    fn plain(&mut self, name: &str, kind: OpKind, elems_in: usize, elems_out: usize) {
        self.ops.push(OpCost::new(
            name,
            kind,
            0.0,
            0.0,
            elems_in as f64 * FP16,
            elems_out as f64 * FP16,
        ));
    }

    /// One transformer encoder layer, attention lowered per head.
    #[allow(clippy::too_many_arguments)]
    fn encoder_layer(
        &mut self,
        p: &str,
        kind: OpKind,
        seq: usize,
        hidden: usize,
        heads: usize,
        ffn: usize,
        pre_norm: bool,
    ) {
        let dh = hidden / heads;
        let x = seq * hidden;
        if pre_norm {
            self.plain(&format!("{p}.ln1"), OpKind::Norm, x, x);
        }
        for proj in ["q", "k", "v"] {
            self.linear(&format!("{p}.{proj}"), kind, seq, hidden, hidden);
        }
        for h in 0..heads {
            let scores = heads_bmm(seq, seq, dh);
            self.ops.push(OpCost::new(
                format!("{p}.h{h}.scores"),
                OpKind::BatchMatmul,
                scores,
                0.0,
                (2 * seq * dh) as f64 * FP16,
                (seq * seq) as f64 * FP16,
            ));
            self.plain(
                &format!("{p}.h{h}.softmax"),
                OpKind::Softmax,
                seq * seq,
                seq * seq,
            );
            self.ops.push(OpCost::new(
                format!("{p}.h{h}.context"),
                OpKind::BatchMatmul,
                heads_bmm(seq, dh, seq),
                0.0,
                (seq * seq + seq * dh) as f64 * FP16,
                (seq * dh) as f64 * FP16,
            ));
        }
        self.linear(&format!("{p}.o"), kind, seq, hidden, hidden);
        self.plain(&format!("{p}.add1"), OpKind::Elementwise, 2 * x, x);
        if !pre_norm {
            self.plain(&format!("{p}.ln1"), OpKind::Norm, x, x);
        } else {
            self.plain(&format!("{p}.ln2"), OpKind::Norm, x, x);
        }
        self.linear(&format!("{p}.ffn1"), kind, seq, hidden, ffn);
        self.plain(
            &format!("{p}.gelu"),
            OpKind::Elementwise,
            seq * ffn,
            seq * ffn,
        );
        self.linear(&format!("{p}.ffn2"), kind, seq, ffn, hidden);
        self.plain(&format!("{p}.add2"), OpKind::Elementwise, 2 * x, x);
        if !pre_norm {
            self.plain(&format!("{p}.ln2"), OpKind::Norm, x, x);
        }
    }

    fn finish(self, input_elems: usize, output_elems: usize) -> ProgramCost {
        ProgramCost {
            ops: self.ops,
            input_bytes: input_elems as f64 * FP16,
            output_bytes: output_elems as f64 * FP16,
            graph_cuts: 0,
        }
    }
}

/// FLOPs of an (m × k) · (k × n) matmul of two activations.
fn heads_bmm(m: usize, n: usize, k: usize) -> f64 {
    2.0 * (m * n * k) as f64
}

/// torchvision ResNet-18 / ResNet-50 (v1.5: stride on the 3×3) at 224×224.
fn resnet(blocks: [usize; 4], bottleneck: bool) -> ProgramCost {
    let mut b = Builder::new();
    let (h, w) = b.conv("conv1", 3, 64, 7, 2, 224, 224, 1, false);
    b.plain("maxpool", OpKind::Pool, 64 * h * w, 64 * (h / 2) * (w / 2));
    let (mut h, mut w) = (h / 2, w / 2);
    let mut cin = 64;
    for (stage, &n) in blocks.iter().enumerate() {
        let width = 64 << stage;
        let cout = if bottleneck { width * 4 } else { width };
        for i in 0..n {
            let s = if stage > 0 && i == 0 { 2 } else { 1 };
            let p = format!("layer{}.{i}", stage + 1);
            if s != 1 || cin != cout {
                b.conv(&format!("{p}.downsample"), cin, cout, 1, s, h, w, 1, false);
            }
            let (ho, wo) = if bottleneck {
                b.conv(&format!("{p}.conv1"), cin, width, 1, 1, h, w, 1, false);
                let (ho, wo) = b.conv(&format!("{p}.conv2"), width, width, 3, s, h, w, 1, false);
                b.conv(&format!("{p}.conv3"), width, cout, 1, 1, ho, wo, 1, true);
                (ho, wo)
            } else {
                let (ho, wo) = b.conv(&format!("{p}.conv1"), cin, width, 3, s, h, w, 1, false);
                b.conv(&format!("{p}.conv2"), width, cout, 3, 1, ho, wo, 1, true);
                (ho, wo)
            };
            (h, w, cin) = (ho, wo, cout);
        }
    }
    b.plain("avgpool", OpKind::Pool, cin * h * w, cin);
    b.linear("fc", OpKind::Matmul, 1, cin, 1000);
    b.finish(3 * 224 * 224, 1000)
}

/// MobileNetV2 1.0 at 224×224 (inverted residuals; ReLU6 fused).
fn mobilenet_v2() -> ProgramCost {
    const CFG: [(usize, usize, usize, usize); 7] = [
        (1, 16, 1, 1),
        (6, 24, 2, 2),
        (6, 32, 3, 2),
        (6, 64, 4, 2),
        (6, 96, 3, 1),
        (6, 160, 3, 2),
        (6, 320, 1, 1),
    ];
    let mut b = Builder::new();
    let (mut h, mut w) = b.conv("stem", 3, 32, 3, 2, 224, 224, 1, false);
    let mut cin = 32;
    let mut idx = 0;
    for (t, c, n, s) in CFG {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let hidden = cin * t;
            let p = format!("block{idx}");
            if t != 1 {
                b.conv(&format!("{p}.expand"), cin, hidden, 1, 1, h, w, 1, false);
            }
            let (ho, wo) = b.conv(
                &format!("{p}.dw"),
                hidden,
                hidden,
                3,
                stride,
                h,
                w,
                hidden,
                false,
            );
            let residual = stride == 1 && cin == c;
            b.conv(
                &format!("{p}.project"),
                hidden,
                c,
                1,
                1,
                ho,
                wo,
                1,
                residual,
            );
            (h, w, cin) = (ho, wo, c);
            idx += 1;
        }
    }
    b.conv("last", cin, 1280, 1, 1, h, w, 1, false);
    b.plain("avgpool", OpKind::Pool, 1280 * h * w, 1280);
    b.linear("classifier", OpKind::Matmul, 1, 1280, 1000);
    b.finish(3 * 224 * 224, 1000)
}

/// torchvision ViT-B/16 at 224×224: 196 patches + class token, 12 pre-norm
/// layers, hidden 768, 12 heads, MLP 3072; linears as matmuls and the patch
/// embedding as a 16×16 stride-16 conv (space-to-depth + 1×1 conv).
fn vit_b16() -> ProgramCost {
    let (seq, hidden) = (197, 768);
    let mut b = Builder::new();
    b.conv("patch_embed", 3, hidden, 16, 16, 224, 224, 1, false);
    b.plain("cls_concat", OpKind::Movement, 196 * hidden, seq * hidden);
    b.plain(
        "pos_add",
        OpKind::Elementwise,
        2 * seq * hidden,
        seq * hidden,
    );
    for l in 0..12 {
        b.encoder_layer(
            &format!("layer{l}"),
            OpKind::Matmul,
            seq,
            hidden,
            12,
            3072,
            true,
        );
    }
    b.plain("ln", OpKind::Norm, seq * hidden, seq * hidden);
    b.linear("head", OpKind::Matmul, 1, hidden, 1000);
    b.finish(3 * 224 * 224, 1000)
}

/// all-MiniLM-L6-v2 on one sentence. The published run encodes "The Apple
/// Neural Engine is a specialized accelerator for matrix math." — 12 word
/// pieces + [CLS] + [SEP] = 14 tokens; embedding lookup on the host; mean
/// pooling and L2 normalisation on the engine.
fn minilm_l6() -> ProgramCost {
    let (seq, hidden) = (14, 384);
    let mut b = Builder::new();
    b.plain("emb_ln", OpKind::Norm, seq * hidden, seq * hidden);
    for l in 0..6 {
        b.encoder_layer(
            &format!("layer{l}"),
            OpKind::Matmul,
            seq,
            hidden,
            12,
            1536,
            false,
        );
    }
    b.plain("mean_pool", OpKind::Reduce, seq * hidden, hidden);
    b.plain("l2_norm", OpKind::Norm, hidden, hidden);
    b.finish(seq * hidden, hidden)
}

/// DistilBERT (SST-2 head) at sequence 128 as Apple's ml-ane-transformers
/// writes it: linears as 1×1 convs in (B, C, 1, S) layout, per-head
/// attention, embeddings gathered on the engine.
fn distilbert_seq128() -> ProgramCost {
    let (seq, hidden) = (128, 768);
    let mut b = Builder::new();
    b.plain("word_gather", OpKind::Movement, seq * hidden, seq * hidden);
    b.plain(
        "pos_add",
        OpKind::Elementwise,
        2 * seq * hidden,
        seq * hidden,
    );
    b.plain("emb_ln", OpKind::Norm, seq * hidden, seq * hidden);
    for l in 0..6 {
        b.encoder_layer(
            &format!("layer{l}"),
            OpKind::Conv,
            seq,
            hidden,
            12,
            3072,
            false,
        );
    }
    b.linear("pre_classifier", OpKind::Conv, 1, hidden, hidden);
    b.linear("classifier", OpKind::Conv, 1, hidden, 2);
    // token ids in (int32 counted as two fp16 slots), two logits out
    b.finish(2 * seq, 2)
}

/// Model keys understood here (the `model` column of the calibration points).
pub const MODELS: [&str; 6] = [
    "resnet18",
    "resnet50",
    "mobilenet_v2",
    "vit_b16",
    "minilm_l6",
    "distilbert_seq128",
];

/// The analytic kernel list of a calibration model, or None for an unknown key.
pub fn model_ops(model: &str) -> Option<ProgramCost> {
    Some(match model {
        "resnet18" => resnet([2, 2, 2, 2], false),
        "resnet50" => resnet([3, 4, 6, 3], true),
        "mobilenet_v2" => mobilenet_v2(),
        "vit_b16" => vit_b16(),
        "minilm_l6" => minilm_l6(),
        "distilbert_seq128" => distilbert_seq128(),
        _ => return None,
    })
}

/// One line of the calibration report.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationRow {
    /// Model key.
    pub model: String,
    /// Chip the point was measured on.
    pub chip: String,
    /// Target that chip compiles for.
    pub target: String,
    /// Published latency, ms.
    pub published_ms: f64,
    /// Projected latency, ms.
    pub predicted_ms: f64,
    /// (predicted − published) / published × 100.
    pub error_pct: f64,
    /// True when the fit never saw this point.
    pub held_out: bool,
    /// Where the published number comes from.
    pub source: String,
}

fn predict(point: &CalibrationPoint, p: &EstimatorParams) -> Result<(String, f64), TargetError> {
    let target = chip_profile(&point.chip)?;
    // Model keys come from the embedded data file; a test checks each one.
    let ops = model_ops(&point.model).unwrap_or_default();
    let e = estimate_with(&target, &ops, p);
    Ok((target.name.clone(), e.latency_us / 1000.0))
}

/// Predicted vs published for every calibration point with the given constants.
pub fn calibration_report_with(p: &EstimatorParams) -> Result<Vec<CalibrationRow>, TargetError> {
    calibration_points()
        .iter()
        .map(|pt| {
            let (target, predicted_ms) = predict(pt, p)?;
            Ok(CalibrationRow {
                model: pt.model.clone(),
                chip: pt.chip.clone(),
                target,
                published_ms: pt.ms,
                predicted_ms,
                error_pct: (predicted_ms - pt.ms) / pt.ms * 100.0,
                held_out: pt.held_out,
                source: pt.source.clone(),
            })
        })
        .collect()
}

/// Predicted vs published for every point with the shipped constants.
pub fn calibration_report() -> Result<Vec<CalibrationRow>, TargetError> {
    calibration_report_with(&EstimatorParams::calibrated())
}

/// Renders the report as a fixed-width table (for the example and logs).
pub fn format_report(rows: &[CalibrationRow]) -> String {
    let mut s = String::from(
        "PROJECTION vs published (batch 1); fit column: was the point used to fit the constants?\n",
    );
    s.push_str(&format!(
        "{:<18} {:<8} {:<6} {:>10} {:>10} {:>8}  {}\n",
        "model", "chip", "target", "published", "projected", "error", "fit"
    ));
    for r in rows {
        s.push_str(&format!(
            "{:<18} {:<8} {:<6} {:>8.3}ms {:>8.3}ms {:>+7.1}%  {}\n",
            r.model,
            r.chip,
            r.target,
            r.published_ms,
            r.predicted_ms,
            r.error_pct,
            if r.held_out { "held out" } else { "fitted" }
        ));
    }
    s
}

/// Sum of squared log-errors over the points the fit may see, minus the
/// point at index `skip` (for leave-one-out).
fn loss_without(p: &EstimatorParams, skip: Option<usize>) -> f64 {
    calibration_points()
        .iter()
        .enumerate()
        .filter(|(i, pt)| !pt.held_out && Some(*i) != skip)
        .map(|(_, pt)| match predict(pt, p) {
            Ok((_, ms)) => (ms / pt.ms).ln().powi(2),
            Err(_) => f64::INFINITY,
        })
        .sum()
}

#[cfg(test)]
fn loss(p: &EstimatorParams) -> f64 {
    loss_without(p, None)
}

/// Names, getters and bounds of the fitted constants; the rest stay fixed.
type Knob = (&'static str, fn(&mut EstimatorParams) -> &mut f64, f64, f64);
const KNOBS: [Knob; 4] = [
    ("util_conv", |p| &mut p.util_conv, 0.05, 1.0),
    ("util_matmul", |p| &mut p.util_matmul, 0.01, 1.0),
    ("util_low_reuse", |p| &mut p.util_low_reuse, 0.002, 1.0),
    ("op_overhead_us", |p| &mut p.op_overhead_us, 0.0, 30.0),
];

/// Fits the four free constants to the non-held-out points by a pattern
/// search in log space (a handful of parameters; no solver dependency),
/// starting from `start`. Returns the fitted constants and their loss.
pub fn fit(start: EstimatorParams) -> (EstimatorParams, f64) {
    fit_without(start, None)
}

fn fit_without(start: EstimatorParams, skip: Option<usize>) -> (EstimatorParams, f64) {
    let mut best = start;
    let mut best_loss = loss_without(&best, skip);
    let mut step = 0.5_f64;
    while step > 1e-4 {
        let mut improved = false;
        for (_, get, lo, hi) in KNOBS {
            for dir in [1.0 + step, 1.0 / (1.0 + step)] {
                let mut cand = best;
                let v = get(&mut cand);
                // overhead may be zero: move it additively around zero
                let moved = if *v == 0.0 { step * dir } else { *v * dir };
                *v = moved.clamp(lo, hi);
                let l = loss_without(&cand, skip);
                if l < best_loss {
                    best = cand;
                    best_loss = l;
                    improved = true;
                }
            }
        }
        if !improved {
            step /= 2.0;
        }
    }
    (best, best_loss)
}

/// A harsher honesty check than the held-out points: every fitted point is
/// predicted by a fit made without it (leave-one-out); held-out points are
/// predicted by the full fit as in [`calibration_report`].
pub fn leave_one_out_report() -> Result<Vec<CalibrationRow>, TargetError> {
    let mut rows = calibration_report()?;
    for (i, pt) in calibration_points().iter().enumerate() {
        if pt.held_out {
            continue;
        }
        let (p, _) = fit_without(EstimatorParams::calibrated(), Some(i));
        let (_, ms) = predict(pt, &p)?;
        rows[i].predicted_ms = ms;
        rows[i].error_pct = (ms - pt.ms) / pt.ms * 100.0;
        rows[i].held_out = true;
    }
    Ok(rows)
}

/// The names of the fitted constants, in the order [`fit`] moves them.
pub fn fitted_knobs() -> Vec<&'static str> {
    KNOBS.iter().map(|k| k.0).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn total_flops(p: &ProgramCost) -> f64 {
        p.ops.iter().map(|o| o.flops).sum()
    }

    fn total_weights(p: &ProgramCost) -> f64 {
        p.ops.iter().map(|o| o.weight_bytes).sum()
    }

    #[test]
    fn every_point_names_a_known_model_and_chip() {
        for pt in calibration_points() {
            assert!(model_ops(&pt.model).is_some(), "{}", pt.model);
            assert!(chip_profile(&pt.chip).is_ok(), "{}", pt.chip);
        }
        assert!(model_ops("alexnet").is_none());
    }

    #[test]
    fn at_least_two_points_are_held_out() {
        assert!(calibration_points().iter().filter(|p| p.held_out).count() >= 2);
    }

    #[test]
    fn model_sizes_match_their_published_counts() {
        // (model, GFLOPs = 2 × GMACs, parameters in millions) from the model cards.
        let cases = [
            ("resnet18", 3.64, 11.7),
            ("resnet50", 8.2, 25.5),
            ("mobilenet_v2", 0.60, 3.5),
            ("vit_b16", 35.1, 86.4),
        ];
        for (m, gflops, mparams) in cases {
            let p = model_ops(m).expect("model");
            let f = total_flops(&p) / 1e9;
            let w = total_weights(&p) / FP16 / 1e6;
            assert!(
                (f / gflops - 1.0).abs() < 0.06,
                "{m}: {f} GFLOPs vs {gflops}"
            );
            assert!(
                (w / mparams - 1.0).abs() < 0.06,
                "{m}: {w} M params vs {mparams}"
            );
        }
        // Encoder weights without embeddings: MiniLM-L6 ~10.6 M, DistilBERT ~43 M.
        let w = total_weights(&model_ops("minilm_l6").expect("m")) / FP16 / 1e6;
        assert!((w / 10.6 - 1.0).abs() < 0.05, "{w}");
        let w = total_weights(&model_ops("distilbert_seq128").expect("m")) / FP16 / 1e6;
        assert!((w / 43.1 - 1.0).abs() < 0.05, "{w}");
    }

    #[test]
    fn every_point_is_within_30_percent_held_out_included() {
        let rows = calibration_report().expect("report");
        assert_eq!(rows.len(), calibration_points().len());
        for r in &rows {
            assert!(
                r.error_pct.abs() <= 30.0,
                "{} on {}: projected {:.3} ms vs published {:.3} ms ({:+.1}%)",
                r.model,
                r.chip,
                r.predicted_ms,
                r.published_ms,
                r.error_pct
            );
        }
        assert!(format_report(&rows).contains("PROJECTION"));
    }

    #[test]
    fn shipped_constants_are_a_fit_optimum() {
        // Refitting from the shipped constants must not find a much better loss,
        // i.e. the constants in the code are the fit, not hand-tuned numbers.
        let shipped = loss(&EstimatorParams::calibrated());
        let (_, refit) = fit(EstimatorParams::calibrated());
        assert!(
            refit >= shipped * 0.9 - 1e-9,
            "shipped {shipped} refit {refit}"
        );
    }
}
