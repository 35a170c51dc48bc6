use crate::error::{current_origin, Error, Result};
use crate::fact::{check_shape, Fact};
use crate::ops::Op;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);

/// A process-wide increasing number (creation order of nodes and inputs).
pub fn fresh_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A lazy value: cheap to clone, immutable, shared.
#[derive(Clone)]
pub struct Tensor(pub(crate) Arc<TensorNode>);

pub struct TensorNode {
    /// Creation order; also the default order of graph inputs.
    pub id: u64,
    pub op: Op,
    pub inputs: Vec<Tensor>,
    pub fact: Fact,
    pub name: Option<String>,
    /// "file.py:12" of the user code that built this node, when known.
    pub origin: Option<String>,
}

impl Tensor {
    /// Builds a node, inferring its fact now so that mistakes are reported
    /// where they were made.
    pub fn build(op: Op, inputs: Vec<Tensor>) -> Result<Tensor> {
        let origin = current_origin();
        let facts: Vec<&Fact> = inputs.iter().map(|t| &t.0.fact).collect();
        let fact = op
            .infer(&facts)
            .and_then(|f| check_shape(&op.name(), &f.shape).map(|_| f))
            .map_err(|e| e.at(origin.as_deref()))?;
        Ok(Tensor(Arc::new(TensorNode {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            inputs,
            fact,
            name: None,
            origin,
        })))
    }

    /// A source node (input, constant, parameter) whose fact is given.
    pub fn source(op: Op, fact: Fact, name: Option<String>) -> Result<Tensor> {
        let origin = current_origin();
        check_shape(&op.name(), &fact.shape).map_err(|e| e.at(origin.as_deref()))?;
        Ok(Tensor(Arc::new(TensorNode {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op,
            inputs: vec![],
            fact,
            name,
            origin,
        })))
    }

    /// The same node under a new name (names only label ports and MIL values).
    pub fn named(&self, name: &str) -> Tensor {
        let n = &self.0;
        Tensor(Arc::new(TensorNode {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            op: n.op.clone(),
            inputs: n.inputs.clone(),
            fact: n.fact.clone(),
            name: Some(name.to_string()),
            origin: n.origin.clone(),
        }))
    }

    pub fn node(&self) -> &TensorNode {
        &self.0
    }
    pub fn op(&self) -> &Op {
        &self.0.op
    }
    pub fn fact(&self) -> &Fact {
        &self.0.fact
    }
    pub fn shape(&self) -> &[usize] {
        &self.0.fact.shape
    }
    pub fn dtype(&self) -> crate::DType {
        self.0.fact.dtype
    }
    pub fn rank(&self) -> usize {
        self.0.fact.shape.len()
    }
    pub fn name(&self) -> Option<&str> {
        self.0.name.as_deref()
    }
    pub fn id(&self) -> u64 {
        self.0.id
    }
    pub fn inputs(&self) -> &[Tensor] {
        &self.0.inputs
    }
    pub fn ptr_eq(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
    pub(crate) fn key(&self) -> usize {
        Arc::as_ptr(&self.0) as usize
    }

    /// Errors about an op applied to this tensor: they point at the user's
    /// line building that op (the current origin), falling back to where
    /// this tensor was built when nothing is being built from user code.
    /// (Pointing at the tensor's own origin sent users to the line that
    /// created `x`, not to the `x.reshape(...)` that failed.)
    pub fn err_here(&self, e: Error) -> Error {
        e.at(current_origin().as_deref().or(self.0.origin.as_deref()))
    }
}

impl std::fmt::Debug for Tensor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tensor({} {})", self.0.op.name(), self.0.fact)
    }
}
