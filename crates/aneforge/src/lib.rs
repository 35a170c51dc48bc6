//! ANEForge core: a tensor-graph compiler for the Apple Neural Engine and
//! an fp16-faithful CPU simulator of it.
//!
//! Pipeline: [`builder`] functions make a lazy DAG of [`Tensor`]s →
//! [`compile`] flattens it into a [`Graph`], runs the [`passes`], and plans a
//! [`backend::sim::SimProgram`]. No Python here: the binding crate only
//! converts arguments and maps [`Error`]s to exceptions.

mod aligned;
pub mod autograd;
pub mod backend;
pub mod builder;
pub mod compile;
pub mod dtype;
pub mod error;
pub mod fact;
pub mod graph;
pub mod numerics;
pub mod ops;
mod parallel;
pub mod passes;
mod sgemm;
pub mod train;
pub mod target;

pub use autograd::{grad, grad_with_seed};
pub use compile::{compile, compile_graph, CompileOptions, Compiled, CompiledGraph, Numerics, Precision};
pub use dtype::DType;
pub use error::{Error, Result};
pub use fact::Fact;
pub use graph::{Graph, Tensor};
