//! The `ane` backend: a compiled graph lowered to MIL ([`super::mil`]),
//! handed to the system's Neural Engine compiler through `aneforge-ane`,
//! and run on IOSurfaces laid out by the I/O plan. Off Apple hosts the
//! runtime crate is a stub, so [`AneNet::compile`] returns
//! [`Error::BackendUnavailable`] saying what is needed; no `cfg` here.

use super::mil::{lower_compiled, IoPlan, MilProgram};
use crate::compile::Compiled;
use crate::error::{Error, Result};
use aneforge_ane::{AneError, Model, Surfaces};

/// Whether this host has a Neural Engine ANEForge can drive (the default
/// backend is `ane` there and `sim` elsewhere).
pub fn available() -> bool {
    aneforge_ane::available()
}

/// Why the engine is not available here, and what is needed.
pub fn unavailable_reason() -> String {
    aneforge_ane::unavailable_reason()
}

fn ane_err(e: AneError) -> Error {
    match e {
        AneError::Unavailable(m) => Error::BackendUnavailable(m),
        e @ AneError::BudgetSpent { .. } => Error::Compile(e.to_string()),
        e @ AneError::Compile(_) => Error::Compile(e.to_string()),
        e @ AneError::Eval(_) => Error::Runtime(e.to_string()),
    }
}

/// A program compiled for and loaded on the engine.
pub struct AneNet {
    pub mil: MilProgram,
    model: Model,
}

impl AneNet {
    /// Lowers `c` and compiles it on the engine (or reuses the cached
    /// program with identical text and weights).
    pub fn compile(c: &Compiled) -> Result<AneNet> {
        if !available() {
            return Err(Error::BackendUnavailable(unavailable_reason()));
        }
        let mil = lower_compiled(c)?;
        let plan = &mil.plan;
        let surfaces = Surfaces {
            inputs: plan.inputs.len(),
            input_bytes: plan.input_surface_bytes,
            outputs: plan.outputs.len(),
            output_bytes: plan.output_surface_bytes,
        };
        let text = mil.text()?;
        let weights = mil.weights()?;
        let model = Model::compile(&text, &weights, surfaces).map_err(ane_err)?;
        Ok(AneNet { mil, model })
    }

    pub fn plan(&self) -> &IoPlan {
        &self.mil.plan
    }

    /// Runs once: inputs by graph port name (host values, row-major),
    /// outputs by graph port name, converted back to their host dtype.
    pub fn run(&self, inputs: &[(&str, &[f32])]) -> Result<Vec<(String, Vec<f32>)>> {
        let packed = self.mil.plan.pack_inputs(inputs)?;
        let outs = self.model.eval(&packed).map_err(ane_err)?;
        self.mil.plan.unpack_outputs(&outs)
    }
}
