//! ONNX import for Python: `af.load_onnx`, `af.onnx_graph`, `af.onnx_coverage`.

use crate::errors::{af_err, to_py_msg};
use crate::tensor::PyTensor;
use aneforge_onnx::{coverage_of_file, import_file, Coverage, ImportOptions, Imported, OnnxError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::collections::HashMap;

/// ONNX errors → the `af.` class a user would catch: every unsupported op
/// at once → UnsupportedOpError; a bad or unreadable file → FileFormatError;
/// a model the core refuses keeps the core's classification.
fn onnx_err(e: OnnxError) -> PyErr {
    match e {
        OnnxError::Core { ref source, .. } => to_py_msg(source, e.to_string()),
        OnnxError::UnsupportedOps { .. } | OnnxError::UnsupportedOpset { .. } | OnnxError::UnsupportedDType { .. } => {
            af_err("UnsupportedOpError", e.to_string())
        }
        other => af_err("FileFormatError", other.to_string()),
    }
}

fn import(py: Python<'_>, path: &str, input_shapes: Option<HashMap<String, Vec<usize>>>) -> PyResult<Imported> {
    let opts = ImportOptions { input_shapes: input_shapes.unwrap_or_default() };
    let p = path.to_string();
    py.detach(|| import_file(&p, &opts)).map_err(onnx_err)
}

/// Imports an ONNX model and compiles it; keyword arguments are those of
/// `af.compile` (target, precision, backend, numerics, optimize). A model
/// with one output returns one array per call, several a tuple.
#[pyfunction]
#[pyo3(signature = (path, input_shapes=None, **compile_options))]
pub fn load_onnx(
    py: Python<'_>,
    path: std::path::PathBuf,
    input_shapes: Option<HashMap<String, Vec<usize>>>,
    compile_options: Option<&Bound<'_, PyDict>>,
) -> PyResult<Py<PyAny>> {
    let imp = import(py, &path.to_string_lossy(), input_shapes)?;
    let compile = py.import("aneforge")?.getattr("compile")?;
    // One output → the Net returns one array; several → a tuple, as compile does.
    let mut outs: Vec<PyTensor> = imp.outputs.into_iter().map(|(_, t)| PyTensor::new(t)).collect();
    if outs.len() == 1 {
        let only = Py::new(py, outs.remove(0))?;
        return Ok(compile.call((only,), compile_options)?.unbind());
    }
    let outs = PyList::new(py, outs)?;
    Ok(compile.call((outs,), compile_options)?.unbind())
}

/// The model's graph as af Tensors, for further building:
/// `inputs, outputs = af.onnx_graph(path)`.
#[pyfunction]
#[pyo3(signature = (path, input_shapes=None))]
pub fn onnx_graph<'py>(py: Python<'py>, path: std::path::PathBuf, input_shapes: Option<HashMap<String, Vec<usize>>>) -> PyResult<Bound<'py, PyTuple>> {
    let imp = import(py, &path.to_string_lossy(), input_shapes)?;
    let ins = PyList::new(py, imp.inputs.into_iter().map(|(_, t)| PyTensor::new(t)))?;
    let outs = PyList::new(py, imp.outputs.into_iter().map(|(_, t)| PyTensor::new(t)))?;
    PyTuple::new(py, [ins.into_any(), outs.into_any()])
}

/// Which ops a model uses and whether each is supported: every gap at once.
#[pyclass(name = "OnnxCoverage", module = "aneforge", frozen)]
pub struct PyCoverage {
    c: Coverage,
}

#[pymethods]
impl PyCoverage {
    /// One dict per op type: op, domain, count, supported, limit.
    #[getter]
    fn ops<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        let rows = self
            .c
            .ops
            .iter()
            .map(|o| {
                let d = PyDict::new(py);
                d.set_item("op", &o.op_type)?;
                d.set_item("domain", &o.domain)?;
                d.set_item("count", o.count)?;
                d.set_item("supported", o.supported)?;
                d.set_item("limit", o.limit)?;
                Ok(d)
            })
            .collect::<PyResult<Vec<_>>>()?;
        PyList::new(py, rows)
    }
    /// Op types the importer does not handle.
    #[getter]
    fn unsupported(&self) -> Vec<String> {
        self.c.unsupported().map(|o| o.qualified_name()).collect()
    }
    /// True when every op and the opset are supported.
    #[getter]
    fn supported(&self) -> bool {
        self.c.is_fully_supported() && self.c.opset_supported
    }
    #[getter]
    fn opset(&self) -> i64 {
        self.c.opset
    }
    #[getter]
    fn node_count(&self) -> usize {
        self.c.node_count
    }
    #[getter]
    fn producer(&self) -> String {
        self.c.producer.clone()
    }
    fn __str__(&self) -> String {
        let mut s = format!("{}: {} nodes, opset {}\n", self.c.path, self.c.node_count, self.c.opset);
        for o in &self.c.ops {
            s += &format!("  {:<28} {:>6}  {}\n", o.qualified_name(), o.count, if o.supported { "yes" } else { "NO" });
        }
        s
    }
    fn __repr__(&self) -> String {
        format!("OnnxCoverage({} op types, {} unsupported)", self.c.ops.len(), self.c.unsupported().count())
    }
}

#[pyfunction]
pub fn onnx_coverage(py: Python<'_>, path: std::path::PathBuf) -> PyResult<PyCoverage> {
    let p = path.to_string_lossy().to_string();
    let c = py.detach(|| coverage_of_file(&p)).map_err(onnx_err)?;
    Ok(PyCoverage { c })
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyCoverage>()?;
    m.add_function(wrap_pyfunction!(load_onnx, m)?)?;
    m.add_function(wrap_pyfunction!(onnx_graph, m)?)?;
    m.add_function(wrap_pyfunction!(onnx_coverage, m)?)?;
    Ok(())
}
