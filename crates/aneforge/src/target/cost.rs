//! Graph → the estimator's [`ProgramCost`]. FLOPs come from each op's own
//! `cost()` (one op's arithmetic lives with the op); bytes come from the
//! facts: constant and parameter inputs are weights streamed from DRAM,
//! everything else is activation traffic, at the stored dtype's size (fp16 =
//! 2 bytes). The whole graph is one fused program, so it pays one dispatch.

use crate::graph::{Graph, Node};
use crate::ops::Op;
use aneforge_target::{estimate, Estimate, OpCost, OpKind, ProgramCost, Target};

fn bytes(f: &crate::fact::Fact) -> f64 {
    f.numel() as f64 * f.dtype.size_bytes() as f64
}

fn is_weight(op: &Op) -> bool {
    matches!(op, Op::Const(_) | Op::Param(_))
}

/// Which roof limits an op (the estimator's kernel kinds).
pub fn op_kind(g: &Graph, n: &Node) -> OpKind {
    match &n.op {
        Op::Conv(c) => {
            let cin = n.inputs.first().map_or(0, |&i| g.nodes[i].fact.shape.get(1).copied().unwrap_or(0));
            if c.groups > 1 && c.groups == cin {
                OpKind::DepthwiseConv
            } else {
                OpKind::Conv
            }
        }
        Op::ConvTranspose(_) => OpKind::Conv,
        // A matmul whose right operand is baked is `x @ W`; two activations
        // (attention scores) get little reuse per byte.
        Op::MatMul(_) => match n.inputs.get(1) {
            Some(&w) if is_weight(&g.nodes[w].op) => OpKind::Matmul,
            _ => OpKind::BatchMatmul,
        },
        Op::Pool(_) => OpKind::Pool,
        Op::Reduce(_) | Op::CumSum(_) => OpKind::Reduce,
        Op::Softmax(_) => OpKind::Softmax,
        Op::Norm(_) => OpKind::Norm,
        op if op.is_movement() => OpKind::Movement,
        Op::Resize(_) => OpKind::Movement,
        // Sources are not kernels; program_cost skips them.
        Op::Input(_) | Op::Const(_) | Op::Param(_) => OpKind::Movement,
        // Elementwise maps, and ops added later (e.g. autograd's backward
        // ops) until they get an arm: bandwidth-bound like an elementwise op.
        _ => OpKind::Elementwise,
    }
}

/// Every kernel of `g` in execution order, as the estimator sees it.
pub fn program_cost(g: &Graph) -> ProgramCost {
    let mut ops = Vec::new();
    let mut input_bytes = 0.0;
    for (i, n) in g.nodes.iter().enumerate() {
        if let Op::Input(_) = n.op {
            input_bytes += bytes(&n.fact);
        }
        if n.op.is_source() {
            continue;
        }
        let ins: Vec<&crate::fact::Fact> = g.facts(n);
        let flops = n.op.cost(&ins, &n.fact).flops;
        let (mut w, mut a) = (0.0, 0.0);
        for &j in &n.inputs {
            if is_weight(&g.nodes[j].op) {
                w += bytes(&g.nodes[j].fact);
            } else {
                a += bytes(&g.nodes[j].fact);
            }
        }
        let name = match (&n.name, &n.origin) {
            (Some(nm), _) => format!("%{i} {} {nm}", n.op.name()),
            (None, Some(o)) => format!("%{i} {} ({o})", n.op.name()),
            (None, None) => format!("%{i} {}", n.op.name()),
        };
        ops.push(OpCost::new(name, op_kind(g, n), flops, w, a, bytes(&n.fact)));
    }
    let output_bytes = g.outputs.iter().map(|&o| bytes(&g.nodes[o].fact)).sum();
    ProgramCost { ops, input_bytes, output_bytes, graph_cuts: 0 }
}

/// Latency projection of `g` compiled as one program for `target`.
pub fn estimate_graph(g: &Graph, target: &Target) -> Estimate {
    estimate(target, &program_cost(g))
}
