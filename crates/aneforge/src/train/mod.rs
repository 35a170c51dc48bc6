//! Training support in the core: compiling a step whose parameters (and
//! optimizer moments) stay resident in the program between runs.
//!
//! The optimizer update itself is written with the ordinary builder (by
//! the Python `af.optim` classes), so it goes through the same passes and
//! backend as any graph; this module only binds each parameter to the
//! output that replaces it.

use crate::backend::sim::SimProgram;
use crate::error::{Error, Result};
use crate::graph::Tensor;
use crate::ops::Op;
use crate::{CompileOptions, Compiled};
use std::collections::HashSet;

/// Compiles `outputs` plus one extra output per `(parameter, new value)`
/// update into one program whose parameters are resident. The update
/// outputs follow the user's outputs.
pub fn compile_resident(outputs: &[Tensor], updates: &[(Tensor, Tensor)], options: CompileOptions) -> Result<Compiled> {
    let mut seen = HashSet::new();
    let mut params = vec![];
    for (p, v) in updates {
        let Op::Param(param) = p.op() else {
            return Err(Error::value("train", format!("only parameters can be updated; got a {} tensor", p.op().name())));
        };
        if !seen.insert(p.key()) {
            return Err(Error::value("train", format!("parameter {:?} is updated twice", p.name())));
        }
        if v.shape() != p.shape() {
            return Err(Error::shape("train", format!("the update of {:?} has shape {:?}, the parameter {:?}", p.name(), v.shape(), p.shape())));
        }
        params.push(param.clone());
    }
    let mut all: Vec<Tensor> = outputs.to_vec();
    for (p, v) in updates {
        // The program stores the update in the parameter's dtype.
        all.push(crate::builder::cast(v, p.dtype())?);
    }
    // The ordinary pipeline (passes, target checks), then a resident plan
    // of the same optimised graph.
    let mut c = crate::compile(&all, options)?;
    let ups: Vec<_> = params.into_iter().enumerate().map(|(k, p)| (p, outputs.len() + k)).collect();
    c.program = SimProgram::new_resident(&c.graph, &c.input_names, &c.output_names, c.program.ctx, &ups)?;
    Ok(c)
}
