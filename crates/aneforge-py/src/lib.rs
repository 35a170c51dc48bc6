//! PyO3 bindings for ANEForge: argument conversion and error mapping only;
//! every decision lives in the core crate.

mod convert;
mod encoder;
mod errors;
mod functions;
mod net;
mod onnx;
mod targets;
mod tensor;
mod train;

use pyo3::prelude::*;

#[pymodule]
fn _aneforge(m: &Bound<'_, PyModule>) -> PyResult<()> {
    // The importing thread, normally the one that calls nets, takes its
    // share of each run (see the sim's `pinning` module).
    aneforge::backend::sim::adopt_calling_thread();
    m.add_class::<tensor::PyTensor>()?;
    m.add_class::<net::PyNet>()?;
    m.add_function(wrap_pyfunction!(net::compile, m)?)?;
    net::register_mil(m)?;
    functions::register(m)?;
    targets::register(m)?;
    encoder::register(m)?;
    train::register(m)?;
    onnx::register(m)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
