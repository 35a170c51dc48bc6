use crate::error::Result;
use crate::graph::Graph;
use crate::ops::{Binary, Const, Op, Unary};

/// Folds a constant per-channel bias add and a following clamp-like
/// activation into the conv / matmul that feeds them. MIL's conv and
/// linear carry the bias themselves, so the lowering emits the same single
/// op; only activations whose result commutes with fp16 rounding
/// (relu, relu6, clip, threshold) are fused, so numerics do not change.
///
/// A conv's sum with another tensor of its shape (a residual connection)
/// is folded in too, before the activation: the kernels add it to the
/// finished tile, rounding as the separate add would, instead of a pass
/// of its own over both tensors (the MIL lowering emits the add again).
pub fn fuse_epilogues(mut g: Graph) -> Result<Graph> {
    let uses = g.use_counts();
    let outputs: Vec<usize> = g.outputs.clone();
    for i in 0..g.nodes.len() {
        match g.nodes[i].op.clone() {
            Op::Binary(Binary::Add) => {
                let ins = g.nodes[i].inputs.clone();
                for (a, c) in [(ins[0], ins[1]), (ins[1], ins[0])] {
                    if uses[a] != 1 || uses[c] != 1 || outputs.contains(&a) {
                        continue;
                    }
                    let Some(cst) = g.nodes[c].op.as_const().cloned() else { continue };
                    let out_shape = g.nodes[i].fact.shape.clone();
                    if out_shape != g.nodes[a].fact.shape {
                        continue;
                    }
                    let fused = match g.nodes[a].op.clone() {
                        Op::Conv(mut cv) if !cv.bias && !cv.residual && cv.act.is_none() => {
                            let o = out_shape[1];
                            if !is_channel_vector(&cst.fact.shape, o, 1, out_shape.len()) {
                                continue;
                            }
                            cv.bias = true;
                            Op::Conv(cv)
                        }
                        Op::MatMul(mut mm) if !mm.bias && mm.act.is_none() => {
                            let r = out_shape.len();
                            if !is_channel_vector(&cst.fact.shape, out_shape[r - 1], r - 1, r) {
                                continue;
                            }
                            mm.bias = true;
                            Op::MatMul(mm)
                        }
                        _ => continue,
                    };
                    let n = match &fused {
                        Op::Conv(_) => out_shape[1],
                        _ => out_shape[out_shape.len() - 1],
                    };
                    let bias = Const::new((*cst.data).clone(), vec![n], cst.fact.dtype);
                    g.nodes[c].fact = bias.fact.clone();
                    g.nodes[c].op = Op::Const(bias);
                    let mut inputs = g.nodes[a].inputs.clone();
                    inputs.push(c);
                    g.nodes[i].op = fused;
                    g.nodes[i].inputs = inputs;
                    break;
                }
                if matches!(g.nodes[i].op, Op::Binary(Binary::Add)) {
                    fuse_residual(&mut g, i, &uses, &outputs);
                }
            }
            Op::Unary(u @ (Unary::Relu | Unary::Relu6 | Unary::Clip { .. } | Unary::Threshold(_))) => {
                let a = g.nodes[i].inputs[0];
                if uses[a] != 1 || outputs.contains(&a) {
                    continue;
                }
                let fused = match g.nodes[a].op.clone() {
                    Op::Conv(mut cv) if cv.act.is_none() => {
                        cv.act = Some(u);
                        Op::Conv(cv)
                    }
                    Op::MatMul(mut mm) if mm.act.is_none() => {
                        mm.act = Some(u);
                        Op::MatMul(mm)
                    }
                    _ => continue,
                };
                g.nodes[i].inputs = g.nodes[a].inputs.clone();
                g.nodes[i].op = fused;
            }
            _ => {}
        }
    }
    crate::passes::eliminate_dead_code(g)
}

/// Add node `i` as a conv with a residual, when one operand is a conv
/// (used only here, no activation yet) and the other has its shape.
fn fuse_residual(g: &mut Graph, i: usize, uses: &[usize], outputs: &[usize]) {
    let ins = g.nodes[i].inputs.clone();
    for (a, r) in [(ins[0], ins[1]), (ins[1], ins[0])] {
        if a == r || uses[a] != 1 || outputs.contains(&a) {
            continue;
        }
        let Op::Conv(mut cv) = g.nodes[a].op.clone() else { continue };
        let (fa, fr) = (&g.nodes[a].fact, &g.nodes[r].fact);
        if cv.residual || cv.act.is_some() || fa.shape != fr.shape || fa.dtype != fr.dtype || g.nodes[i].fact.shape != fa.shape {
            continue;
        }
        cv.residual = true;
        let mut inputs = g.nodes[a].inputs.clone();
        inputs.push(r);
        g.nodes[i].op = Op::Conv(cv);
        g.nodes[i].inputs = inputs;
        return;
    }
}

/// A constant holding one value per channel on `axis` of a rank-`rank` output.
fn is_channel_vector(shape: &[usize], n: usize, axis: usize, rank: usize) -> bool {
    let numel: usize = shape.iter().product();
    if numel != n || shape.len() > rank {
        return false;
    }
    // Right-align against the output and require the only non-1 axis be `axis`.
    let off = rank - shape.len();
    shape.iter().enumerate().all(|(k, &d)| d == 1 || k + off == axis)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder as b;
    use crate::DType;

    #[test]
    fn conv_bias_relu_becomes_one_op() {
        let x = b::input(&[1, 3, 8, 8], DType::F16, None).unwrap();
        let w = b::constant(vec![0.1; 4 * 3 * 9], vec![4, 3, 3, 3], DType::F16).unwrap();
        let bias = b::constant(vec![0.5; 4], vec![4, 1, 1], DType::F16).unwrap();
        let y = b::relu(&b::add(&b::conv(&x, &w, None, &b::ConvArgs::default()).unwrap(), &bias).unwrap()).unwrap();
        let g = fuse_epilogues(Graph::from_outputs(&[y]).unwrap()).unwrap();
        let convs: Vec<_> = g.nodes.iter().filter(|n| matches!(n.op, Op::Conv(_))).collect();
        assert_eq!(convs.len(), 1);
        assert_eq!(g.nodes.len(), 4, "{g}");
        match &convs[0].op {
            Op::Conv(c) => assert!(c.bias && c.act == Some(Unary::Relu)),
            _ => unreachable!(),
        }
    }

    #[test]
    fn residual_add_and_relu_join_the_conv() {
        let x = b::input(&[1, 4, 8, 8], DType::F16, None).unwrap();
        let skip = b::input(&[1, 4, 8, 8], DType::F16, None).unwrap();
        let w = b::constant(vec![0.1; 4 * 4 * 9], vec![4, 4, 3, 3], DType::F16).unwrap();
        let bias = b::constant(vec![0.5; 4], vec![4, 1, 1], DType::F16).unwrap();
        let conv = b::add(&b::conv(&x, &w, None, &b::ConvArgs { pad: b::PadSpec::Explicit([1; 4]), ..Default::default() }).unwrap(), &bias).unwrap();
        let y = b::relu(&b::add(&skip, &conv).unwrap()).unwrap();
        let g = fuse_epilogues(Graph::from_outputs(&[y]).unwrap()).unwrap();
        let g = fuse_epilogues(g).unwrap();
        assert!(!g.nodes.iter().any(|n| matches!(n.op, Op::Binary(_) | Op::Unary(_))), "{g}");
        let conv = g.nodes.iter().find(|n| matches!(n.op, Op::Conv(_))).unwrap();
        match &conv.op {
            Op::Conv(c) => assert!(c.bias && c.residual && c.act == Some(Unary::Relu)),
            _ => unreachable!(),
        }
        // x, weight, bias, then the residual.
        assert_eq!(conv.inputs.len(), 4);
        assert!(matches!(g.nodes[conv.inputs[3]].op, Op::Input(_)));
    }

    #[test]
    fn a_residual_that_broadcasts_stays_an_add() {
        let x = b::input(&[1, 4, 8, 8], DType::F16, None).unwrap();
        let skip = b::input(&[1, 4, 1, 8], DType::F16, None).unwrap();
        let w = b::constant(vec![0.1; 16], vec![4, 4, 1, 1], DType::F16).unwrap();
        let y = b::add(&b::conv(&x, &w, None, &b::ConvArgs::default()).unwrap(), &skip).unwrap();
        let g = fuse_epilogues(Graph::from_outputs(&[y]).unwrap()).unwrap();
        assert!(g.nodes.iter().any(|n| matches!(n.op, Op::Binary(Binary::Add))));
    }

    #[test]
    fn a_bias_that_is_not_per_channel_stays_an_add() {
        let x = b::input(&[1, 3, 4, 4], DType::F16, None).unwrap();
        let w = b::constant(vec![0.1; 2 * 3], vec![2, 3, 1, 1], DType::F16).unwrap();
        let bias = b::constant(vec![0.5; 2 * 16], vec![2, 4, 4], DType::F16).unwrap();
        let y = b::add(&b::conv(&x, &w, None, &b::ConvArgs::default()).unwrap(), &bias).unwrap();
        let g = fuse_epilogues(Graph::from_outputs(&[y]).unwrap()).unwrap();
        assert!(g.nodes.iter().any(|n| matches!(n.op, Op::Binary(Binary::Add))));
    }
}
