use crate::error::Result;
use crate::graph::Graph;
use crate::ops::{Binary, Const, Op, Unary};

/// Folds a constant per-channel bias add and a following clamp-like
/// activation into the conv / matmul that feeds them. MIL's conv and
/// linear carry the bias themselves, so the lowering emits the same single
/// op; only activations whose result commutes with fp16 rounding
/// (relu, relu6, clip, threshold) are fused, so numerics do not change.
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
                        Op::Conv(mut cv) if !cv.bias && cv.act.is_none() => {
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
    fn a_bias_that_is_not_per_channel_stays_an_add() {
        let x = b::input(&[1, 3, 4, 4], DType::F16, None).unwrap();
        let w = b::constant(vec![0.1; 2 * 3], vec![2, 3, 1, 1], DType::F16).unwrap();
        let bias = b::constant(vec![0.5; 2 * 16], vec![2, 4, 4], DType::F16).unwrap();
        let y = b::add(&b::conv(&x, &w, None, &b::ConvArgs::default()).unwrap(), &bias).unwrap();
        let g = fuse_epilogues(Graph::from_outputs(&[y]).unwrap()).unwrap();
        assert!(g.nodes.iter().any(|n| matches!(n.op, Op::Binary(Binary::Add))));
    }
}
