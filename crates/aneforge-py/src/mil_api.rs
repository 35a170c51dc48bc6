//! The MIL side of a Net: `net.mil()`, `net.save_mlpackage(path)`,
//! `net.io_plan()`, `af.export(...)`, and the `ane` backend's call path.
//! A child module of `net` so it can reach the Net's compiled program;
//! every decision is in the core (`backend::mil`, `backend::ane`).

use super::{outputs_of, PyNet};
use crate::convert::origin;
use crate::errors::{af_err, guard, IntoPy};
use aneforge::backend::mil::{lower_compiled, lower_compiled_graph, MilProgram, PortPlan};
use aneforge::{CompileOptions, Compiled};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::path::PathBuf;


fn lower(c: &Compiled) -> PyResult<MilProgram> {
    guard("MIL lowering", || lower_compiled(c).py())
}

fn port<'py>(py: Python<'py>, p: &PortPlan) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &p.name)?;
    d.set_item("mil_name", &p.mil_name)?;
    d.set_item("shape", PyTuple::new(py, &p.shape)?)?;
    d.set_item("dtype", p.host_dtype.name())?;
    d.set_item("port_dtype", "fp16")?;
    d.set_item("binding", p.binding)?;
    d.set_item("row_stride", p.row_stride)?;
    d.set_item("rows", p.rows)?;
    d.set_item("bytes", p.bytes)?;
    Ok(d)
}

fn plan_dict<'py>(py: Python<'py>, m: &MilProgram) -> PyResult<Bound<'py, PyDict>> {
    let plan = &m.plan;
    let d = PyDict::new(py);
    let ins = PyList::empty(py);
    for p in &plan.inputs {
        ins.append(port(py, p)?)?;
    }
    let outs = PyList::empty(py);
    for p in &plan.outputs {
        outs.append(port(py, p)?)?;
    }
    d.set_item("inputs", ins)?;
    d.set_item("outputs", outs)?;
    d.set_item("input_surface_bytes", plan.input_surface_bytes)?;
    d.set_item("output_surface_bytes", plan.output_surface_bytes)?;
    d.set_item("min_surface_bytes", aneforge::backend::mil::io::MIN_SURFACE_BYTES)?;
    d.set_item("row_align", aneforge::backend::mil::io::ROW_ALIGN)?;
    d.set_item("opset", m.program.opset.text_name())?;
    d.set_item("notes", PyList::new(py, &m.notes)?)?;
    Ok(d)
}

fn save(m: &MilProgram, path: PathBuf, with_text: bool) -> PyResult<()> {
    guard("save_mlpackage", || m.save(&path, with_text).py())
}

#[pymethods]
impl PyNet {
    /// The MIL text the engine compiles (`program(1.3)`/ios18, or the
    /// verbose `program(1.0)`/ios16 when compiled for H13/H14).
    fn mil(&self) -> PyResult<String> {
        self.with_live(|l| guard("mil", || lower(&l.compiled)?.text().py()))
    }

    /// Writes the program as an .mlpackage (loadable by coremltools and
    /// Core ML), plus `<stem>.mil` and `<stem>.weights/` beside it unless
    /// `with_text=False`.
    #[pyo3(signature = (path, with_text=true))]
    fn save_mlpackage(&self, path: PathBuf, with_text: bool) -> PyResult<()> {
        self.with_live(|l| {
            let m = lower(&l.compiled)?;
            save(&m, path, with_text)
        })
    }

    /// The engine's I/O plan: fp16 ports in binding (alphabetical MIL name)
    /// order, each surface ≥ 49,152 bytes, one size per side, rows padded
    /// to 64 bytes. ANEForge packs and unpacks; this is for inspection.
    fn io_plan<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        self.with_live(|l| {
            let m = lower(&l.compiled)?;
            plan_dict(py, &m)
        })
    }
}

/// `af.export(out, path, target=None, with_text=True)`: compiles `out` (a
/// Tensor, a list of Tensors, or a Net) for `target` and writes the
/// .mlpackage at `path` (plus the MIL text and weights beside it). Returns
/// the I/O plan.
#[pyfunction]
#[pyo3(signature = (out, path, target=None, with_text=true))]
pub fn export<'py>(py: Python<'py>, out: &Bound<'py, PyAny>, path: PathBuf, target: Option<&str>, with_text: bool) -> PyResult<Bound<'py, PyDict>> {
    if let Ok(net) = out.cast::<PyNet>() {
        let net = net.borrow();
        if target.is_some() {
            return Err(pyo3::exceptions::PyValueError::new_err(
                "export: a compiled Net keeps the target it was compiled for; pass the output Tensors to export for another target",
            ));
        }
        return net.with_live(|l| {
            let m = lower(&l.compiled)?;
            save(&m, path, with_text)?;
            plan_dict(py, &m)
        });
    }
    let (outs, _) = outputs_of(out)?;
    let target = match target {
        Some(name) => Some(aneforge::target::resolve(name).py()?),
        None => None,
    };
    let opts = CompileOptions { target, ..Default::default() };
    let org = origin(py);
    let compiled = py.detach(|| guard("export", || aneforge::error::with_origin(org, || aneforge::compile_graph(&outs, opts)).py()))?;
    let m = guard("MIL lowering", || lower_compiled_graph(&compiled).py())?;
    save(&m, path, with_text)?;
    plan_dict(py, &m)
}

/// Runs a Net on the engine: the checked inputs go through the sim
/// state's input slots (converted as the sim would take them), outputs
/// come back as numpy arrays of the ports' dtypes.
pub(crate) fn run_ane<'py>(py: Python<'py>, live: &mut super::Live, ane: &aneforge::backend::ane::AneNet, held: &[super::Held<'py>]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let prog = &live.compiled.program;
    for (k, h) in held.iter().enumerate() {
        prog.write_input(&mut live.state, k, h.host()?);
    }
    let names: Vec<String> = prog.inputs.iter().map(|p| p.name.clone()).collect();
    let values: Vec<Vec<f32>> = (0..names.len()).map(|k| prog.input_mut(&mut live.state, k).to_vec()).collect();
    let feeds: Vec<(&str, &[f32])> = names.iter().map(String::as_str).zip(values.iter().map(Vec::as_slice)).collect();
    let outs = py.detach(|| guard("ane", || ane.run(&feeds).py()))?;
    prog.outputs
        .iter()
        .map(|p| {
            let data = outs.iter().find(|(n, _)| *n == p.name).map(|(_, v)| v.as_slice()).ok_or_else(|| af_err("AneForgeError", format!("the engine returned no output {:?}", p.name)))?;
            super::to_numpy(py, p.fact.dtype, &p.fact.shape, data, false)
        })
        .collect()
}

pub(crate) fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(export, m)?)
}
