use crate::error::Result;
use crate::graph::Graph;
use crate::ops::{Const, EvalCtx, Op, View};

/// Largest folded result (elements); bigger constant subgraphs stay as ops
/// rather than bloating the weights.
const MAX_FOLD: usize = 1 << 24;

/// Evaluates nodes whose inputs are all constants, in f32; the program
/// rounds the result to its storage dtype like any other constant.
pub fn fold_constants(mut g: Graph) -> Result<Graph> {
    let ctx = EvalCtx { fp16: false, ieee: false, weights_cached: false };
    for i in 0..g.nodes.len() {
        let node = &g.nodes[i];
        if node.op.is_source()
            || node.fact.numel() > MAX_FOLD
            || !node.inputs.iter().all(|&j| matches!(g.nodes[j].op, Op::Const(_)))
        {
            continue;
        }
        let consts: Vec<&Const> = node.inputs.iter().filter_map(|&j| g.nodes[j].op.as_const()).collect();
        let views: Vec<View> = consts.iter().map(|c| View { data: &c.data, shape: &c.fact.shape }).collect();
        let facts: Vec<_> = consts.iter().map(|c| &c.fact).collect();
        let mut scratch = vec![0.0; node.op.scratch_len(&facts, &node.fact)];
        let mut out = vec![0.0; node.fact.numel()];
        node.op.eval(&views, &mut out, &node.fact.shape, &mut scratch, &ctx);
        let fact = node.fact.clone();
        let n = &mut g.nodes[i];
        n.op = Op::Const(Const::new(out, fact.shape, fact.dtype));
        n.inputs.clear();
    }
    Ok(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder as b;

    #[test]
    fn constant_subgraphs_become_one_constant() {
        let c = b::constant(vec![1.0, 2.0], vec![2], crate::DType::F16).unwrap();
        let d = b::mul(&b::add_scalar(&c, 1.0).unwrap(), &c).unwrap();
        let x = b::input(&[2], crate::DType::F16, None).unwrap();
        let y = b::add(&x, &d).unwrap();
        let g = fold_constants(Graph::from_outputs(&[y]).unwrap()).unwrap();
        let g = crate::passes::eliminate_dead_code(g).unwrap();
        assert_eq!(g.nodes.len(), 3, "{g}");
        let folded = g.nodes.iter().find_map(|n| n.op.as_const()).unwrap();
        assert_eq!(*folded.data, vec![2.0, 6.0]);
    }
}
