//! Sources: graph inputs, baked constants and trainable parameters.

use super::{Cost, EvalCtx, OpDef, View};
use crate::dtype::DType;
use crate::error::Result;
use crate::fact::Fact;
use std::sync::{Arc, RwLock, Weak};

/// Reads a parameter's current value from wherever it lives while a
/// resident training program owns it (its buffers), or `None` if that
/// program no longer holds it.
pub type ResidentReader = dyn Fn() -> Option<Vec<f32>> + Send + Sync;

/// A runtime input port.
#[derive(Clone, Debug, PartialEq)]
pub struct Input {
    pub fact: Fact,
    /// Creation order, the default positional order of `net(...)` arguments.
    pub order: u64,
}

/// Constant data baked into the program. Values are held as f32 (exact for
/// every fp16 and 16-bit integer value); the declared dtype says how the
/// engine stores them.
#[derive(Clone, Debug)]
pub struct Const {
    pub data: Arc<Vec<f32>>,
    pub fact: Fact,
}

impl PartialEq for Const {
    fn eq(&self, o: &Self) -> bool {
        self.fact == o.fact && (Arc::ptr_eq(&self.data, &o.data) || self.data == o.data)
    }
}

impl Const {
    pub fn new(data: Vec<f32>, shape: Vec<usize>, dtype: DType) -> Const {
        Const { data: Arc::new(data), fact: Fact::new(shape, dtype) }
    }
    pub fn scalar(v: f32, dtype: DType) -> Const {
        Const::new(vec![v], vec![], dtype)
    }
    /// The single value if every element is equal (used by folding rules).
    pub fn splat(&self) -> Option<f32> {
        let first = *self.data.first()?;
        self.data.iter().all(|&v| v.to_bits() == first.to_bits()).then_some(first)
    }
}

/// A trainable tensor. The values live in a shared cell so that training
/// updates are seen by every graph built from the parameter afterwards.
#[derive(Clone, Debug)]
pub struct Param {
    pub cell: Arc<ParamCell>,
}

pub struct ParamCell {
    pub fact: Fact,
    pub values: RwLock<Vec<f32>>,
    pub name: Option<String>,
    /// Set while a resident program holds the live values: reading the
    /// parameter then asks it, so `p.numpy()` and later compiles see the
    /// trained weights without copying them to the host after every step.
    pub resident: RwLock<Option<Weak<ResidentReader>>>,
}

impl std::fmt::Debug for ParamCell {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ParamCell({:?} {})", self.name, self.fact)
    }
}

impl PartialEq for Param {
    fn eq(&self, o: &Self) -> bool {
        Arc::ptr_eq(&self.cell, &o.cell)
    }
}

impl Param {
    pub fn new(values: Vec<f32>, shape: Vec<usize>, name: Option<String>) -> Param {
        Param::with_dtype(values, shape, DType::F16, name)
    }
    /// A parameter stored as `dtype`: fp16 for weights; fp32 for optimizer
    /// moments, whose squared gradients underflow fp16.
    pub fn with_dtype(values: Vec<f32>, shape: Vec<usize>, dtype: DType, name: Option<String>) -> Param {
        Param {
            cell: Arc::new(ParamCell { fact: Fact::new(shape, dtype), values: RwLock::new(values), name, resident: RwLock::new(None) }),
        }
    }
    /// Attaches (or with `None` detaches) the resident program holding the
    /// live values.
    pub fn set_resident(&self, r: Option<Weak<ResidentReader>>) {
        match self.cell.resident.write() {
            Ok(mut g) => *g = r,
            Err(p) => *p.into_inner() = r,
        }
    }
    /// The current values: from the resident program holding them, if any,
    /// else the host copy (a poisoned lock still holds valid data).
    pub fn values(&self) -> Vec<f32> {
        let reader = match self.cell.resident.read() {
            Ok(g) => g.as_ref().and_then(Weak::upgrade),
            Err(p) => p.into_inner().as_ref().and_then(Weak::upgrade),
        };
        if let Some(v) = reader.and_then(|r| r()) {
            return v;
        }
        self.host_values()
    }
    /// The host copy only, never asking a resident program.
    pub fn host_values(&self) -> Vec<f32> {
        match self.cell.values.read() {
            Ok(v) => v.clone(),
            Err(p) => p.into_inner().clone(),
        }
    }
    pub fn set_values(&self, v: Vec<f32>) {
        match self.cell.values.write() {
            Ok(mut g) => *g = v,
            Err(p) => *p.into_inner() = v,
        }
    }
}

macro_rules! source_def {
    ($t:ty, $name:expr, $fact:ident) => {
        impl OpDef for $t {
            fn name(&self) -> String {
                $name.into()
            }
            fn infer(&self, _inputs: &[&Fact]) -> Result<Fact> {
                Ok(self.$fact().clone())
            }
            fn eval(&self, _: &[View], _: &mut [f32], _: &[usize], _: &mut [f32], _: &EvalCtx) {}
            fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
                Cost::default()
            }
        }
    };
}

impl Input {
    fn fact_ref(&self) -> &Fact {
        &self.fact
    }
}
impl Const {
    fn fact_ref(&self) -> &Fact {
        &self.fact
    }
}
impl Param {
    fn fact_ref(&self) -> &Fact {
        &self.cell.fact
    }
}

source_def!(Input, "input", fact_ref);
source_def!(Const, "const", fact_ref);
source_def!(Param, "parameter", fact_ref);
