use crate::error::Result;
use crate::graph::Graph;

/// Drops nodes no output depends on, keeping graph inputs (they are ports
/// the user will pass even if unused) and the topological order.
pub fn eliminate_dead_code(g: Graph) -> Result<Graph> {
    let n = g.nodes.len();
    let mut live = vec![false; n];
    for &o in &g.outputs {
        live[o] = true;
    }
    for i in (0..n).rev() {
        if live[i] {
            for &j in &g.nodes[i].inputs {
                live[j] = true;
            }
        }
        if matches!(g.nodes[i].op, crate::ops::Op::Input(_)) {
            live[i] = true;
        }
    }
    if live.iter().all(|&l| l) {
        return Ok(g);
    }
    let mut map = vec![usize::MAX; n];
    let mut nodes = Vec::with_capacity(n);
    for (i, mut node) in g.nodes.into_iter().enumerate() {
        if live[i] {
            node.inputs.iter_mut().for_each(|j| *j = map[*j]);
            map[i] = nodes.len();
            nodes.push(node);
        }
    }
    Ok(Graph { nodes, outputs: g.outputs.iter().map(|&o| map[o]).collect() })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder as b;

    #[test]
    fn unused_branches_disappear() {
        let x = b::input(&[2, 3], crate::DType::F16, None).unwrap();
        let _unused = b::relu(&x).unwrap();
        let y = b::exp(&x).unwrap();
        let mut g = Graph::from_outputs(&[y]).unwrap();
        // Splice a dead node in by hand.
        g.push(crate::ops::Op::Unary(crate::ops::Unary::Neg), vec![0], None).unwrap();
        let g = eliminate_dead_code(g).unwrap();
        assert_eq!(g.nodes.len(), 2);
    }
}
