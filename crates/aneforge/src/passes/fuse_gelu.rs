use crate::error::Result;
use crate::graph::Graph;
use crate::ops::elementwise::GeluMode;
use crate::ops::{Binary, Op, Unary};

/// Rewrites exact GELU spelled out in elementwise ops, as PyTorch's ONNX
/// export writes it, `x * (erf(x / √2) + 1) * 0.5` (the three factors in
/// any order and grouping, `/ √2` or `* (1/√2)`), into one `gelu` op.
/// Five ops and five fp16 roundings become one of each: the sim makes one
/// pass over the tensor instead of ten (ViT-B/16 spent 4% of its time in
/// them), and the MIL program carries MIL's own `gelu`, as coremltools'
/// converter makes it. The one rounding is closer to exact GELU than five.
pub fn fuse_gelu(mut g: Graph) -> Result<Graph> {
    let uses = g.use_counts();
    let mut changed = false;
    for i in 0..g.nodes.len() {
        if !matches!(g.nodes[i].op, Op::Binary(Binary::Mul)) {
            continue;
        }
        let mut factors = vec![];
        collect_factors(&g, &uses, i, 2, &mut factors);
        let Some(x) = gelu_input(&g, &uses, &factors) else { continue };
        let (out, input) = (&g.nodes[i].fact, &g.nodes[x].fact);
        if out.shape != input.shape || out.dtype != input.dtype {
            continue;
        }
        g.nodes[i].op = Op::Unary(Unary::Gelu(GeluMode::Exact));
        g.nodes[i].inputs = vec![x];
        changed = true;
    }
    if !changed {
        return Ok(g);
    }
    crate::passes::eliminate_dead_code(g)
}

/// The factors of the product at `n`: through nested multiplies that
/// nothing else reads, at most `depth` levels down.
fn collect_factors(g: &Graph, uses: &[usize], n: usize, depth: usize, out: &mut Vec<usize>) {
    for &j in &g.nodes[n].inputs {
        if depth > 0 && uses[j] == 1 && matches!(g.nodes[j].op, Op::Binary(Binary::Mul)) {
            collect_factors(g, uses, j, depth - 1, out);
        } else {
            out.push(j);
        }
    }
}

/// `x` when `factors` are exactly {x, erf(x/√2) + 1, 0.5}.
fn gelu_input(g: &Graph, uses: &[usize], factors: &[usize]) -> Option<usize> {
    if factors.len() != 3 {
        return None;
    }
    let half = factors.iter().position(|&f| splat(g, f) == Some(0.5))?;
    let rest: Vec<usize> = factors.iter().enumerate().filter(|&(k, _)| k != half).map(|(_, &f)| f).collect();
    for (x, term) in [(rest[0], rest[1]), (rest[1], rest[0])] {
        if erf_term(g, uses, term) == Some(x) {
            return Some(x);
        }
    }
    None
}

/// The x of `erf(x / √2) + 1` (or `erf(x · (1/√2)) + 1`), when no other op
/// reads its inner values.
fn erf_term(g: &Graph, uses: &[usize], n: usize) -> Option<usize> {
    let node = &g.nodes[n];
    if uses[n] != 1 || !matches!(node.op, Op::Binary(Binary::Add)) {
        return None;
    }
    let e = *node.inputs.iter().find(|&&j| splat(g, j) != Some(1.0))?;
    if node.inputs.iter().all(|&j| j == e) || uses[e] != 1 || !matches!(g.nodes[e].op, Op::Unary(Unary::Erf)) {
        return None;
    }
    let d = g.nodes[e].inputs[0];
    let dn = &g.nodes[d];
    if uses[d] != 1 {
        return None;
    }
    let near = |v: Option<f32>, want: f32| v.is_some_and(|v| (v - want).abs() <= 1e-3 * want);
    match dn.op {
        Op::Binary(Binary::Div) if near(splat(g, dn.inputs[1]), std::f32::consts::SQRT_2) => Some(dn.inputs[0]),
        Op::Binary(Binary::Mul) => {
            let [a, b] = [dn.inputs[0], dn.inputs[1]];
            if near(splat(g, b), std::f32::consts::FRAC_1_SQRT_2) {
                Some(a)
            } else if near(splat(g, a), std::f32::consts::FRAC_1_SQRT_2) {
                Some(b)
            } else {
                None
            }
        }
        _ => None,
    }
}

/// The value of a constant whose elements are all equal.
fn splat(g: &Graph, n: usize) -> Option<f32> {
    g.nodes[n].op.as_const()?.splat()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder as b;
    use crate::graph::Tensor;
    use crate::DType;

    fn x() -> Tensor {
        b::input(&[2, 5], DType::F16, None).unwrap()
    }
    fn s(v: f32) -> Tensor {
        b::constant(vec![v], vec![], DType::F16).unwrap()
    }
    fn erf_plus_one(x: &Tensor, by_mul: bool) -> Tensor {
        let d = if by_mul { b::mul(&s(std::f32::consts::FRAC_1_SQRT_2), x) } else { b::div(x, &s(std::f32::consts::SQRT_2)) }.unwrap();
        b::add(&s(1.0), &b::erf(&d).unwrap()).unwrap()
    }
    fn gelus(g: &Graph) -> usize {
        g.nodes.iter().filter(|n| matches!(n.op, Op::Unary(Unary::Gelu(GeluMode::Exact)))).count()
    }

    #[test]
    fn every_grouping_of_the_three_factors_becomes_one_gelu() {
        let forms: [fn(&Tensor) -> Tensor; 4] = [
            // PyTorch's export: (x * (erf(x / √2) + 1)) * 0.5
            |x| b::mul(&b::mul(x, &erf_plus_one(x, false)).unwrap(), &s(0.5)).unwrap(),
            |x| b::mul(&b::mul(&s(0.5), x).unwrap(), &erf_plus_one(x, true)).unwrap(),
            |x| b::mul(&s(0.5), &b::mul(&erf_plus_one(x, false), x).unwrap()).unwrap(),
            |x| b::mul(&erf_plus_one(x, true), &b::mul(x, &s(0.5)).unwrap()).unwrap(),
        ];
        for (k, form) in forms.iter().enumerate() {
            let x = x();
            let g = fuse_gelu(Graph::from_outputs(&[form(&x)]).unwrap()).unwrap();
            assert_eq!(gelus(&g), 1, "form {k}:\n{g}");
            assert_eq!(g.nodes.len(), 2, "form {k}: only the input and the gelu remain:\n{g}");
        }
    }

    #[test]
    fn near_misses_stay_as_they_are() {
        let x = x();
        let other = b::input(&[2, 5], DType::F16, None).unwrap();
        let cases = [
            // 0.6 is not a half; y * erf(x/√2 + 1) multiplies the wrong tensor;
            // x / 2 is not x / √2.
            b::mul(&b::mul(&x, &erf_plus_one(&x, false)).unwrap(), &s(0.6)).unwrap(),
            b::mul(&b::mul(&other, &erf_plus_one(&x, false)).unwrap(), &s(0.5)).unwrap(),
            b::mul(&b::mul(&x, &b::add(&b::erf(&b::div(&x, &s(2.0)).unwrap()).unwrap(), &s(1.0)).unwrap()).unwrap(), &s(0.5)).unwrap(),
        ];
        for (k, y) in cases.iter().enumerate() {
            let g = fuse_gelu(Graph::from_outputs(std::slice::from_ref(y)).unwrap()).unwrap();
            assert_eq!(gelus(&g), 0, "case {k}:\n{g}");
        }
    }

    #[test]
    fn an_inner_value_read_elsewhere_keeps_the_pattern() {
        // erf(x/√2) is also an output: fusing would have to compute it twice.
        let x = x();
        let t = erf_plus_one(&x, false);
        let y = b::mul(&b::mul(&x, &t).unwrap(), &s(0.5)).unwrap();
        let g = fuse_gelu(Graph::from_outputs(&[y, t]).unwrap()).unwrap();
        assert_eq!(gelus(&g), 0, "{g}");
    }
}
