//! ANEForge's MIL layer: an in-memory MIL program and the three forms it is
//! written in.
//!
//! * MIL text ([`to_mil_text`]) in the concise (`program(1.3)`, iOS18) or
//!   verbose (`program(1.0)`, iOS16) dialect — what the ANE compiler reads.
//! * Weight blob files ([`write_weights`], [`BlobWriter`]) in coremltools'
//!   storage format v2 — byte-identical to coremltools' own writer.
//! * An `.mlpackage` ([`write_mlpackage`]) holding the protobuf ML Program —
//!   what coremltools can load and check on Linux, and Core ML on macOS.
//!
//! All three are written from one [`Program`], so a weight's `BLOBFILE`
//! offset in the text, its `BlobFileValue` in the proto and its place in the
//! weight file cannot disagree. This crate knows nothing of ANEForge's graph;
//! the lowering from graph to [`Program`] lives with the ops.
//!
//! ```
//! use aneforge_mil::*;
//!
//! let mut f = Function::new();
//! let x = f.input("x", TensorType::new(DType::Fp16, [1, 4]));
//! f.op("relu", [("x", Argument::name(&x))], NamedType::new("y", TensorType::new(DType::Fp16, [1, 4])));
//! f.output("y");
//! let p = Program::with_main(Opset::Ios18, f);
//! let text = to_mil_text(&p, Dialect::Concise, WeightLayout::SingleFile).unwrap();
//! assert!(text.contains("tensor<fp16, [1, 4]> y = relu(x = x)[name = string(\"y\")];"));
//! ```

pub mod blob;
pub mod error;
pub mod ir;
pub mod package;
pub mod text;
pub mod types;

/// prost bindings generated from coremltools' `mlmodel/format/*.proto` by
/// `gen/` (committed; regenerate with
/// `cargo run --manifest-path crates/aneforge-mil/gen/Cargo.toml`).
#[rustfmt::skip]
#[allow(clippy::all, missing_docs, rustdoc::all)]
pub mod proto;

pub use blob::{plan_locations, write_weight_files, write_weights, BlobLocation, BlobWriter, WeightLayout, Weights};
pub use error::{Error, Result};
pub use ir::{
    default_build_info, Argument, Binding, BlobId, Function, NamedType, Operation, Opset, Program,
    Value,
};
pub use package::{check_replaceable, to_model_proto, write_mlpackage, PackageOptions};
pub use text::{to_mil_text, Dialect};
pub use types::{DType, Tensor, TensorData, TensorType, ALL_DTYPES};
