use super::Tensor;
use crate::error::{Error, Result};
use crate::fact::Fact;
use crate::ops::Op;
use std::collections::HashMap;
use std::fmt;

/// Index of a node in a [`Graph`]; every node has exactly one output.
pub type ValueId = usize;

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    pub inputs: Vec<ValueId>,
    pub fact: Fact,
    pub name: Option<String>,
    pub origin: Option<String>,
}

/// A flat, topologically ordered DAG: inputs of node `i` are all `< i`.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    pub nodes: Vec<Node>,
    pub outputs: Vec<ValueId>,
}

impl Graph {
    /// Flattens everything reachable from `outputs` (iteratively: deep
    /// graphs such as unrolled training steps must not blow the stack).
    pub fn from_outputs(outputs: &[Tensor]) -> Result<Graph> {
        if outputs.is_empty() {
            return Err(Error::value("compile", "no outputs given; pass a Tensor or a list of Tensors"));
        }
        let mut index: HashMap<usize, ValueId> = HashMap::new();
        let mut nodes: Vec<Node> = Vec::new();
        let mut stack: Vec<(Tensor, bool)> = outputs.iter().rev().map(|t| (t.clone(), false)).collect();
        while let Some((t, expanded)) = stack.pop() {
            if index.contains_key(&t.key()) {
                continue;
            }
            if expanded {
                let inputs = t.inputs().iter().map(|i| index[&i.key()]).collect();
                let n = t.node();
                nodes.push(Node {
                    op: n.op.clone(),
                    inputs,
                    fact: n.fact.clone(),
                    name: n.name.clone(),
                    origin: n.origin.clone(),
                });
                index.insert(t.key(), nodes.len() - 1);
            } else {
                stack.push((t.clone(), true));
                for i in t.inputs().iter().rev() {
                    if !index.contains_key(&i.key()) {
                        stack.push((i.clone(), false));
                    }
                }
            }
        }
        let outputs = outputs.iter().map(|t| index[&t.key()]).collect();
        Ok(Graph { nodes, outputs })
    }

    /// Graph inputs in the order the user created them.
    pub fn inputs(&self) -> Vec<ValueId> {
        let mut v: Vec<ValueId> =
            (0..self.nodes.len()).filter(|&i| matches!(self.nodes[i].op, Op::Input(_))).collect();
        v.sort_by_key(|&i| match &self.nodes[i].op {
            Op::Input(inp) => inp.order,
            _ => 0,
        });
        v
    }

    /// How many nodes read each value (outputs count as a reader).
    pub fn use_counts(&self) -> Vec<usize> {
        let mut c = vec![0; self.nodes.len()];
        for n in &self.nodes {
            for &i in &n.inputs {
                c[i] += 1;
            }
        }
        for &o in &self.outputs {
            c[o] += 1;
        }
        c
    }

    pub fn facts(&self, node: &Node) -> Vec<&Fact> {
        node.inputs.iter().map(|&i| &self.nodes[i].fact).collect()
    }

    /// Appends a node, inferring its fact.
    pub fn push(&mut self, op: Op, inputs: Vec<ValueId>, origin: Option<String>) -> Result<ValueId> {
        let facts: Vec<&Fact> = inputs.iter().map(|&i| &self.nodes[i].fact).collect();
        let fact = op.infer(&facts)?;
        self.nodes.push(Node { op, inputs, fact, name: None, origin });
        Ok(self.nodes.len() - 1)
    }
}

impl fmt::Display for Graph {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, n) in self.nodes.iter().enumerate() {
            let ins: Vec<String> = n.inputs.iter().map(|i| format!("%{i}")).collect();
            writeln!(f, "%{i} = {}({}) : {}", n.op.name(), ins.join(", "), n.fact)?;
        }
        let outs: Vec<String> = self.outputs.iter().map(|i| format!("%{i}")).collect();
        writeln!(f, "return {}", outs.join(", "))
    }
}
