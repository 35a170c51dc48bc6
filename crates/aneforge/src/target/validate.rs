//! Validation of a graph against one target: op availability per family and
//! the shape limits. Every node is visited and every violation collected, so
//! a user fixes a model in one round instead of one error per attempt.

use super::cost::estimate_graph;
use crate::fact::fmt_shape;
use crate::graph::{Graph, ValueId};
use crate::ops::{Op, ResizeMode, Unary};
use aneforge_target::{Capability, Estimate, LimitKind, Target};
use std::fmt;

/// One thing that keeps a graph from compiling for a target.
#[derive(Clone, Debug, PartialEq)]
pub struct Violation {
    /// The node, when the violation belongs to one (None: the whole target).
    pub node: Option<ValueId>,
    /// Op name (`"resize_bilinear"`), or `"program"` for target-wide refusals.
    pub op: String,
    /// The op's input shapes followed by its output shape.
    pub shapes: Vec<Vec<usize>>,
    /// The user's file:line that built the node, when known.
    pub origin: Option<String>,
    /// What is wrong, in words.
    pub problem: String,
    /// The first family that would accept it (`"H16"`), if any does.
    pub first_family: Option<String>,
    /// How to get it to compile here.
    pub hint: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.op)?;
        if let Some((out, ins)) = self.shapes.split_last() {
            let ins: Vec<String> = ins.iter().map(|s| fmt_shape(s)).collect();
            write!(f, "({}) -> {}", ins.join(", "), fmt_shape(out))?;
        }
        if let Some(o) = &self.origin {
            write!(f, " at {o}")?;
        }
        write!(f, ": {}", self.problem)?;
        match &self.first_family {
            Some(fam) => write!(f, "; first supported on {fam}")?,
            None => write!(f, "; no family supports it")?,
        }
        if !self.hint.is_empty() {
            write!(f, "; hint: {}", self.hint)?;
        }
        Ok(())
    }
}

/// The result of checking a graph for a target: also the compile report
/// (`warnings` lists the rewrites made instead of refusals) and the
/// cross-compile check's answer.
#[derive(Clone, Debug, PartialEq)]
pub struct Report {
    /// Lower-case target name (with the chip, for chip profiles).
    pub target: String,
    /// Everything that keeps the graph from compiling, all at once.
    pub violations: Vec<Violation>,
    /// What was rewritten instead of refused, one line each.
    pub warnings: Vec<String>,
    /// Latency projection of the program, when computed.
    pub estimate: Option<Estimate>,
}

impl Report {
    /// True when nothing keeps the graph from compiling.
    pub fn ok(&self) -> bool {
        self.violations.is_empty()
    }

    /// The message of the [`crate::Error::Target`] a refused compile raises.
    pub fn error_message(&self) -> String {
        let mut s = format!(
            "the graph cannot compile for target {}: {} violation(s)",
            self.target,
            self.violations.len()
        );
        for (k, v) in self.violations.iter().enumerate() {
            s.push_str(&format!("\n  {}. {v}", k + 1));
        }
        if !self.warnings.is_empty() {
            s.push_str("\nrewritten instead of refused:");
            for w in &self.warnings {
                s.push_str(&format!("\n  - {w}"));
            }
        }
        s
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.ok() {
            write!(f, "ok for target {}", self.target)?;
            for w in &self.warnings {
                write!(f, "\n  rewritten: {w}")?;
            }
        } else {
            write!(f, "{}", self.error_message())?;
        }
        if let Some(e) = &self.estimate {
            write!(f, "\n{}", e.label())?;
        }
        Ok(())
    }
}

/// The capability gate an op needs, or None when every MIL family runs it.
/// This is the one place the op → family mapping lives (TARGETS.md gates,
/// research/ane-anchors.md §5):
///
/// * `resize_bilinear` / `upsample_nearest` → [`Capability::TextureOps`]:
///   the native MIL resize runs on the texture engine, which arrives with
///   H14 ("H14+: texture engine (crop_resize, resample, affine, native
///   resize)"). Below it [`super::legalize`] rewrites integer-factor nearest
///   upsampling; what remains gets a decomposition hint.
/// * `gather` → [`Capability::TextureOps`]: TARGETS.md lists gather among the
///   texture-engine ops. Our gather has constant indices, so below H14 it is
///   expressible as slices + concat or a one-hot matmul (the hint).
/// * `sin` / `cos` → [`Capability::SinCos`]: native from H15; below it
///   [`super::legalize`] rewrites them as a polynomial, so they only reach
///   the validator when the rewrite was not possible.
/// * Everything else in the op set (elementwise, matmul, conv, pool, norms,
///   softmax, reductions, cumsum as a triangular matmul, movement) is in
///   the op spellings every MIL family accepts; topk/sort, dropout/RNG,
///   global argmax and the weight-streaming formats are gated too, but the
///   core has no such op yet — add its arm here when it gets one.
pub fn required_capability(op: &Op) -> Option<Capability> {
    match op {
        Op::Resize(_) | Op::Gather(_) => Some(Capability::TextureOps),
        Op::Unary(Unary::Sin | Unary::Cos) => Some(Capability::SinCos),
        _ => None,
    }
}

/// Decomposition hint for an op below the family that runs it natively:
/// op-specific where we know a rewrite, else the capability's own hint.
fn capability_hint(op: &Op, cap: Capability) -> String {
    match op {
        Op::Resize(r) => match r.mode {
            ResizeMode::Nearest => {
                "for an integer scale factor write it as reshape + expand (repeat) + reshape; otherwise as \
                 a matmul with a constant 0/1 selection matrix per axis"
                    .into()
            }
            ResizeMode::Bilinear { .. } => {
                "write it as two matmuls with constant interpolation matrices (one for H, one for W)".into()
            }
        },
        Op::Gather(_) => {
            "the indices are constant: write it as slices + concat, or a matmul with a constant one-hot matrix".into()
        }
        _ => cap.decomposition_hint().to_string(),
    }
}

/// Which axis of a tensor the engine treats as channels. Rank-4 and rank-5
/// tensors are the engine's NCHW / NCDHW layout (axis 1). Lower ranks have
/// no declared channel axis, so every axis is checked against the
/// (stricter before H16) spatial / contraction limit: conservative, never
/// letting through what the compiler might refuse.
pub fn channel_axis(rank: usize) -> Option<usize> {
    (rank == 4 || rank == 5).then_some(1)
}

fn to_u64(shape: &[usize]) -> Vec<u64> {
    shape.iter().map(|&d| d as u64).collect()
}

/// Checks `g` against `target` and returns every violation at once.
///
/// What is checked, per node:
/// * the whole target: families without MIL (H11, H12, M9, T0) refuse
///   compilation (one target-wide violation; shape limits are still listed);
/// * op availability through [`required_capability`];
/// * rank ≤ 5, spatial/contraction axes ≤ 16384 (65536 from H16), channels
///   ≤ 65536 on every tensor an op computes: its output, and its graph
///   inputs (program inputs are DRAM buffers the op reads). Constants and
///   parameters are weights the compiler lays out itself. A `slice` reads a
///   window of a longer buffer by DMA, so only its output is checked — that
///   is what makes tiling a too-long axis possible;
/// * conv / conv_transpose kernel width ≤ 13 (15 from H16); a wider
///   patchify conv (stride = kernel) has been rewritten by
///   [`super::legalize`] before it gets here.
///
/// The report's estimate is filled in (the estimator works for every
/// target, with or without MIL).
pub fn validate(g: &Graph, target: &Target) -> Report {
    let mut violations = Vec::new();
    if !target.mil_supported {
        violations.push(Violation {
            node: None,
            op: "program".into(),
            shapes: vec![],
            origin: None,
            problem: format!(
                "target {} ({}) predates MIL programs, so nothing compiles for it (validate and estimate still work)",
                target.lower_name(),
                target.chips.join(", ")
            ),
            first_family: Some(Capability::Mil.first_family()),
            hint: "compile for h13 or later".into(),
        });
    }
    for (i, n) in g.nodes.iter().enumerate() {
        if n.op.is_source() {
            continue;
        }
        let mut shapes: Vec<Vec<usize>> = n.inputs.iter().map(|&j| g.nodes[j].fact.shape.clone()).collect();
        shapes.push(n.fact.shape.clone());
        let name = n.op.name();
        let mut push = |problem: String, first_family: Option<String>, hint: String| {
            violations.push(Violation {
                node: Some(i),
                op: name.clone(),
                shapes: shapes.clone(),
                origin: n.origin.clone(),
                problem,
                first_family,
                hint,
            })
        };
        if target.mil_supported {
            if let Some(cap) = required_capability(&n.op) {
                if !target.supports(cap) {
                    push(
                        format!(
                            "{name} needs {} ({}), which {} ({} family) does not have",
                            cap.key(),
                            cap.description(),
                            target.lower_name(),
                            target.family
                        ),
                        Some(cap.first_family()),
                        capability_hint(&n.op, cap),
                    );
                }
            }
        }
        let kw = match &n.op {
            Op::Conv(c) => Some(c.window.kernel[1]),
            Op::ConvTranspose(c) => Some(c.window.kernel[1]),
            _ => None,
        };
        if let Some(v) = kw.and_then(|kw| target.check_conv_kernel_width(kw as u64)) {
            push(
                format!("kernel width {} is above this target's limit of {}", v.value, v.max),
                v.first_family,
                v.hint,
            );
        }
        // The tensors this op computes on: its output, plus program inputs it
        // reads (other operands are outputs of nodes checked on their own).
        let mut tensors: Vec<(&str, &[usize])> = vec![("output", &n.fact.shape)];
        if !matches!(n.op, Op::Slice(_)) {
            for &j in &n.inputs {
                if let Op::Input(_) = g.nodes[j].op {
                    tensors.push(("input", &g.nodes[j].fact.shape));
                }
            }
        }
        for (what, shape) in tensors {
            for v in target.check_shape(&to_u64(shape), channel_axis(shape.len())) {
                let problem = match v.kind {
                    LimitKind::Rank => format!("{what} {} has rank {} (limit {})", fmt_shape(shape), v.value, v.max),
                    LimitKind::Axis => format!(
                        "{what} {} has axis {} of length {} (spatial/contraction limit {} on this target)",
                        fmt_shape(shape),
                        v.axis.unwrap_or(0),
                        v.value,
                        v.max
                    ),
                    LimitKind::Channels => format!(
                        "{what} {} has {} channels on axis {} (limit {})",
                        fmt_shape(shape),
                        v.value,
                        v.axis.unwrap_or(0),
                        v.max
                    ),
                    LimitKind::ConvKernelWidth => format!("kernel width {} (limit {})", v.value, v.max),
                };
                push(problem, v.first_family, v.hint);
            }
        }
    }
    Report { target: target_label(target), violations, warnings: vec![], estimate: Some(estimate_graph(g, target)) }
}

/// `"h17s"` or `"h17s (M5 Pro)"` for a chip profile.
pub(crate) fn target_label(t: &Target) -> String {
    match &t.chip {
        Some(c) => format!("{} ({c})", t.lower_name()),
        None => t.lower_name(),
    }
}
