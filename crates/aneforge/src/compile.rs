//! The pipeline: outputs → Graph → passes → a Program bound to a backend.

use crate::backend::sim::SimProgram;
use crate::error::{Error, Result};
use crate::graph::{Graph, Tensor};
use crate::ops::EvalCtx;
use std::collections::HashSet;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    /// The engine's storage: every value rounded to fp16 between ops.
    Fp16,
    /// f32 storage, a reference mode for debugging.
    Fp32,
}

impl Precision {
    pub fn parse(s: &str) -> Result<Precision> {
        match s.to_ascii_lowercase().as_str() {
            "fp16" | "float16" => Ok(Precision::Fp16),
            "fp32" | "float32" => Ok(Precision::Fp32),
            _ => Err(Error::value("compile", format!("precision {s:?} is not \"fp16\" or \"fp32\""))),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Numerics {
    /// What the engine does (fp16 reduce accumulation, min/max ignore NaN).
    Ane,
    /// IEEE behaviour for debugging.
    Ieee,
}

impl Numerics {
    pub fn parse(s: &str) -> Result<Numerics> {
        match s.to_ascii_lowercase().as_str() {
            "ane" => Ok(Numerics::Ane),
            "ieee" => Ok(Numerics::Ieee),
            _ => Err(Error::value("compile", format!("numerics {s:?} is not \"ane\" or \"ieee\""))),
        }
    }
}

#[derive(Clone, Debug)]
pub struct CompileOptions {
    pub precision: Precision,
    pub numerics: Numerics,
    /// Run the rewrite passes (off only to debug a pass).
    pub optimize: bool,
    /// The engine target to validate for (see `target/`): when given, the
    /// graph is legalized and validated before lowering, and the lowering
    /// runs inside the compile breaker. None: no validation (the sim runs
    /// anything).
    pub target: Option<crate::target::Target>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        CompileOptions { precision: Precision::Fp16, numerics: Numerics::Ane, optimize: true, target: None }
    }
}

/// A compiled program: the optimised graph and its sim plan.
pub struct Compiled {
    pub graph: Graph,
    pub program: SimProgram,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
    pub options: CompileOptions,
    /// The compile report when a target was given: rewrites made instead of
    /// refusals (`warnings`) and the latency projection.
    pub report: Option<crate::target::Report>,
}

/// Port names: the user's, or `input0…`/`output0…`; duplicates are refused.
fn port_names(g: &Graph, ids: &[usize], prefix: &str) -> Result<Vec<String>> {
    let mut seen = HashSet::new();
    let mut out = vec![];
    for (k, &i) in ids.iter().enumerate() {
        let name = g.nodes[i].name.clone().unwrap_or_else(|| format!("{prefix}{k}"));
        if !seen.insert(name.clone()) {
            return Err(Error::value(
                "compile",
                format!("two {prefix}s are both named {name:?}; give each a unique name"),
            ));
        }
        out.push(name);
    }
    Ok(out)
}

/// A compile that stops before the sim plan: the target-checked,
/// optimised graph and its port names, which is all a MIL export lowers.
/// Planning the sim as well copies and fp16-rounds every weight: a sixth
/// of ResNet-18's ONNX-to-package time, for a program nobody runs.
pub struct CompiledGraph {
    pub graph: Graph,
    pub input_names: Vec<String>,
    pub output_names: Vec<String>,
    pub options: CompileOptions,
    /// As [`Compiled::report`].
    pub report: Option<crate::target::Report>,
}

/// [`compile`] up to the sim plan (see [`CompiledGraph`]).
pub fn compile_graph(outputs: &[Tensor], options: CompileOptions) -> Result<CompiledGraph> {
    let g = Graph::from_outputs(outputs)?;
    let inputs = g.inputs();
    let input_names = port_names(&g, &inputs, "input")?;
    let output_names = port_names(&g, &g.outputs, "output")?;
    // Target checks before lowering: every violation at once, rewrites listed.
    let target = options.target.as_ref();
    let (g, mut report) = crate::target::prepare(g, target)?;
    let g = crate::target::run_in_breaker(target, || if options.optimize { crate::passes::optimize(g) } else { Ok(g) })?;
    if let (Some(r), Some(t)) = (report.as_mut(), target) {
        r.estimate = Some(crate::target::estimate_graph(&g, t));
    }
    Ok(CompiledGraph { graph: g, input_names, output_names, options, report })
}

pub fn compile(outputs: &[Tensor], options: CompileOptions) -> Result<Compiled> {
    let CompiledGraph { graph, input_names, output_names, options, report } = compile_graph(outputs, options)?;
    let ctx = EvalCtx { fp16: options.precision == Precision::Fp16, ieee: options.numerics == Numerics::Ieee, weights_cached: false };
    let program = SimProgram::new(&graph, &input_names, &output_names, ctx)?;
    Ok(Compiled { graph, program, input_names, output_names, options, report })
}
