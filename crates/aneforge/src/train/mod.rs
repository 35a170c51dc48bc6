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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder as b;
    use crate::ops::ReduceKind;
    use crate::{DType, Precision};

    /// Two SGD steps of `loss = sum((x·w)²)` with w resident, against the
    /// closed form. Regression: a state slot planned where earlier steps
    /// had freed a slot was overwritten before the parameter was read.
    #[test]
    fn resident_sgd_steps_match_closed_form() {
        let x = b::input(&[3], DType::F16, None).unwrap();
        let w = b::parameter(vec![0.5, -1.0, 0.25], vec![3], Some("w")).unwrap();
        let m = b::state(vec![0.0; 3], vec![3], DType::F32, Some("m")).unwrap();
        let pre = b::mul(&b::exp(&x).unwrap(), &b::scalar_like(1.0, &x).unwrap()).unwrap(); // steps before w is read
        let s = b::reduce(&b::mul(&pre, &w).unwrap(), ReduceKind::Sum, None, false).unwrap();
        let loss = b::mul(&s, &s).unwrap();
        let g = crate::grad(&loss, std::slice::from_ref(&w)).unwrap().remove(0);
        let m_new = b::add(&b::mul_scalar(&m, 0.5).unwrap(), &b::cast(&g, DType::F32).unwrap()).unwrap();
        let w_new = b::sub(&w, &b::mul_scalar(&b::cast(&m_new, DType::F16).unwrap(), 0.01).unwrap()).unwrap();
        let opts = CompileOptions { precision: Precision::Fp32, ..Default::default() };
        let c = compile_resident(&[loss], &[(w.clone(), w_new), (m.clone(), m_new)], opts).unwrap();
        let mut st = c.program.new_state();
        let xv = [0.1f32, -0.2, 0.3];
        let e: Vec<f32> = xv.iter().map(|v| v.exp()).collect();
        let (mut wv, mut mv) = ([0.5f32, -1.0, 0.25], [0.0f32; 3]);
        for _ in 0..2 {
            c.program.input_mut(&mut st, 0).copy_from_slice(&xv);
            c.program.run(&mut st);
            let s: f32 = (0..3).map(|i| e[i] * wv[i]).sum();
            for i in 0..3 {
                mv[i] = 0.5 * mv[i] + 2.0 * s * e[i];
                wv[i] -= 0.01 * mv[i];
            }
        }
        let got = c.program.state(&st, c.program.state.iter().position(|s| s.param.cell.name.as_deref() == Some("w")).unwrap());
        for i in 0..3 {
            assert!((got[i] - wv[i]).abs() < 1e-5, "{got:?} vs {wv:?}");
        }
    }
}
