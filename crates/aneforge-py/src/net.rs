//! `af.compile` and the `Net` it returns.

use crate::convert::origin;
use crate::errors::{af_err, guard, IntoPy};
use crate::tensor::PyTensor;
use aneforge::backend::sim::{HostInput, SimState};
use aneforge::{CompileOptions, Compiled, DType, Numerics, Precision, Tensor};
use half::f16;
use numpy::{PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::MutexExt;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::sync::Mutex;

#[path = "mil_api.rs"]
mod mil_api;
pub(crate) use mil_api::register as register_mil;

struct Live {
    compiled: Compiled,
    state: SimState,
    /// The program loaded on the Neural Engine when backend="ane".
    ane: Option<aneforge::backend::ane::AneNet>,
}

/// A compiled program bound to a backend, callable with numpy arrays.
#[pyclass(name = "Net", module = "aneforge")]
pub struct PyNet {
    live: Mutex<Option<Live>>,
    backend: String,
    /// Lower-case name of the target the Net was validated for, if any.
    target: Option<String>,
    single_output: bool,
    /// The compile report (rewrites, projection) when a target was given.
    report: Option<crate::targets::PyReport>,
}

pub(crate) fn outputs_of(obj: &Bound<'_, PyAny>) -> PyResult<(Vec<Tensor>, bool)> {
    if let Ok(t) = obj.cast::<PyTensor>() {
        return Ok((vec![t.get().t.clone()], true));
    }
    let items: Vec<Bound<'_, PyAny>> = obj
        .try_iter()
        .map_err(|_| PyTypeError::new_err("compile: outputs must be an af.Tensor or a list of them"))?
        .collect::<PyResult<_>>()?;
    let ts = items
        .iter()
        .map(|o| {
            o.cast::<PyTensor>()
                .map(|t| t.get().t.clone())
                .map_err(|_| PyTypeError::new_err("compile: every output must be an af.Tensor"))
        })
        .collect::<PyResult<Vec<_>>>()?;
    Ok((ts, false))
}

/// Compiles `outputs` (a Tensor or a list) into a Net. `target` ("h13",
/// "H16s", a chip name such as "M5 Pro") validates the graph for that engine
/// first (every violation at once, af.TargetError); None uses
/// `detect_family()`, which off a Mac is None: no validation.
#[pyfunction]
#[pyo3(signature = (outputs, target=None, precision="fp16", backend=None, numerics="ane", optimize=true))]
pub fn compile(
    py: Python<'_>,
    outputs: &Bound<'_, PyAny>,
    target: Option<&str>,
    precision: &str,
    backend: Option<&str>,
    numerics: &str,
    optimize: bool,
) -> PyResult<PyNet> {
    let (outs, single) = outputs_of(outputs)?;
    // The engine when the host has one, the sim elsewhere.
    let default = if aneforge::backend::ane::available() { "ane" } else { "sim" };
    let backend = backend.unwrap_or(default).to_ascii_lowercase();
    match backend.as_str() {
        "sim" => {}
        "ane" => {
            if !aneforge::backend::ane::available() {
                return Err(af_err("BackendUnavailableError", aneforge_ane_reason()));
            }
        }
        other => return Err(PyValueError::new_err(format!("compile: backend {other:?} is not \"sim\" or \"ane\""))),
    }
    let target = match target {
        Some(name) => Some(aneforge::target::resolve(name).py()?),
        None => aneforge::target::detect().py()?,
    };
    let target_name = target.as_ref().map(|t| t.lower_name());
    let opts = CompileOptions { precision: Precision::parse(precision).py()?, numerics: Numerics::parse(numerics).py()?, optimize, target };
    let org = origin(py);
    let compiled = py.detach(|| aneforge::error::with_origin(org, || aneforge::compile(&outs, opts))).py()?;
    let state = compiled.program.new_state();
    let report = compiled.report.as_ref().map(crate::targets::PyReport::from);
    let ane = if backend == "ane" {
        Some(py.detach(|| guard("ane compile", || aneforge::backend::ane::AneNet::compile(&compiled).py()))?)
    } else {
        None
    };
    Ok(PyNet { live: Mutex::new(Some(Live { compiled, state, ane })), backend, target: target_name, single_output: single, report })
}

/// What `backend="ane"` needs, for the error on hosts without it.
fn aneforge_ane_reason() -> String {
    format!("{} (the engine path is type-checked for aarch64-apple-darwin but only runs on a Mac)", aneforge::backend::ane::unavailable_reason())
}

fn port_dict<'py>(py: Python<'py>, p: &aneforge::backend::sim::Port) -> PyResult<Bound<'py, PyDict>> {
    let d = PyDict::new(py);
    d.set_item("name", &p.name)?;
    d.set_item("shape", PyTuple::new(py, &p.fact.shape)?)?;
    d.set_item("dtype", p.fact.dtype.name())?;
    Ok(d)
}

/// The numpy dtype an output of dtype `d` is returned as: fp16 values come
/// back as float32 when the program stores f32 (`precision="fp32"`).
fn numpy_name(d: DType, fp32: bool) -> &'static str {
    if fp32 && d == DType::F16 {
        "float32"
    } else {
        d.numpy_name()
    }
}

impl PyNet {
    /// Locks the Net's state, letting go of the GIL while another thread
    /// holds it: a run holds the lock with the GIL released, and a thread
    /// that waited for the lock while keeping the GIL (reading `net.inputs`
    /// during a call, say) left the run unable to take the GIL back, and
    /// both hung.
    fn lock(&self) -> std::sync::LockResult<std::sync::MutexGuard<'_, Option<Live>>> {
        Python::attach(|py| self.live.lock_py_attached(py))
    }

    fn with_live<T>(&self, f: impl FnOnce(&mut Live) -> PyResult<T>) -> PyResult<T> {
        let mut g = self.lock().map_err(|_| af_err("AneForgeError", "the Net's state was poisoned by a panic; compile it again"))?;
        match g.as_mut() {
            Some(l) => f(l),
            None => Err(af_err("AneForgeError", "this Net was released; compile the graph again to use it")),
        }
    }
}

/// A checked input array, borrowed from Python for the length of a run.
enum Held<'py> {
    F16(PyReadonlyArrayDyn<'py, f16>),
    F32 { arr: PyReadonlyArrayDyn<'py, f32>, round: bool },
}

impl Held<'_> {
    fn host(&self) -> PyResult<HostInput<'_>> {
        Ok(match self {
            Held::F16(a) => HostInput::F16(a.as_slice().map_err(not_contiguous)?),
            Held::F32 { arr, round } => HostInput::F32 { data: arr.as_slice().map_err(not_contiguous)?, round: *round },
        })
    }
}

fn not_contiguous(e: numpy::AsSliceError) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn borrowed(e: numpy::BorrowError) -> PyErr {
    PyValueError::new_err(format!("an input array is being written elsewhere: {e}"))
}

/// Checks one numpy argument against input port `k` (shape, dtype) and
/// borrows it in the form the port is fed from, converting only what numpy
/// must (non-contiguous arrays, integer ports).
fn check_input<'py>(py: Python<'py>, live: &Live, k: usize, arr: &Bound<'py, PyAny>) -> PyResult<Held<'py>> {
    let port = &live.compiled.program.inputs[k];
    // The common calls, a C-contiguous float16 (or float32) array of the
    // port's shape, cost no Python calls at all (the general path below
    // makes a dozen: ~3 us, as much as a small net's kernels).
    if port.fact.dtype == DType::F16 {
        if let Ok(a) = arr.cast::<PyArrayDyn<f16>>() {
            if a.shape() == port.fact.shape.as_slice() && a.is_c_contiguous() {
                return Ok(Held::F16(a.try_readonly().map_err(borrowed)?));
            }
        }
        if let Ok(a) = arr.cast::<PyArrayDyn<f32>>() {
            if a.shape() == port.fact.shape.as_slice() && a.is_c_contiguous() {
                return Ok(Held::F32 { arr: a.try_readonly().map_err(borrowed)?, round: live.compiled.program.ctx.fp16 });
            }
        }
    }
    let np = py.import("numpy")?;
    let a = if arr.hasattr("dtype")? && arr.hasattr("shape")? { arr.clone() } else { np.call_method1("asarray", (arr,))? };
    let shape: Vec<usize> = a.getattr("shape")?.extract()?;
    let dt: String = a.getattr("dtype")?.getattr("name")?.extract()?;
    if shape != port.fact.shape {
        return Err(af_err(
            "ShapeError",
            format!(
                "input {:?} expects shape {:?}, got an array of shape {:?}; reshape the array or rebuild the graph with af.input({:?})",
                port.name, port.fact.shape, shape, shape
            ),
        ));
    }
    let f32_array = |a: Bound<'py, PyAny>| -> PyResult<PyReadonlyArrayDyn<'py, f32>> {
        let a = np.call_method1("ascontiguousarray", (a, "float32"))?;
        a.cast_into::<PyArrayDyn<f32>>()?.try_readonly().map_err(borrowed)
    };
    match (port.fact.dtype, dt.as_str()) {
        (DType::F16, "float16") => {
            let a = np.call_method1("ascontiguousarray", (a,))?;
            Ok(Held::F16(a.cast_into::<PyArrayDyn<f16>>()?.try_readonly().map_err(borrowed)?))
        }
        (DType::F16, "float32" | "float64") => Ok(Held::F32 { arr: f32_array(a)?, round: live.compiled.program.ctx.fp16 }),
        (d, got) if d != DType::F16 && got == numpy_name(d, false) => Ok(Held::F32 { arr: f32_array(a)?, round: false }),
        (d, got) => {
            let want = if d == DType::F16 { "float16 (float32 is converted)".to_string() } else { numpy_name(d, false).to_string() };
            Err(af_err("DTypeError", format!("input {:?} is a {} port and needs a {want} array, got {got}", port.name, d)))
        }
    }
}

/// Output `k` as a new numpy array (see [`to_numpy`]).
fn fetch<'py>(py: Python<'py>, live: &Live, k: usize) -> PyResult<Bound<'py, PyAny>> {
    let prog = &live.compiled.program;
    let port = &prog.outputs[k];
    to_numpy(py, port.fact.dtype, &port.fact.shape, prog.output(&live.state, k), !prog.ctx.fp16)
}

/// Values of dtype `d` as a numpy array of the dtype the Net returns for it
/// (see [`numpy_name`]).
pub(crate) fn to_numpy<'py>(py: Python<'py>, d: DType, shape: &[usize], data: &[f32], fp32: bool) -> PyResult<Bound<'py, PyAny>> {
    if d == DType::F16 && !fp32 {
        let a = fp16_output(py, shape);
        aneforge::numerics::f32_to_f16(data, a.try_readwrite().map_err(borrowed)?.as_slice_mut().map_err(not_contiguous)?);
        return Ok(a.into_any());
    }
    let a = PyArrayDyn::<f32>::zeros(py, shape.to_vec(), false);
    a.try_readwrite().map_err(borrowed)?.as_slice_mut().map_err(not_contiguous)?.copy_from_slice(data);
    match numpy_name(d, fp32) {
        "float32" => Ok(a.into_any()),
        name => a.call_method1("astype", (name,)),
    }
}

/// A new, unfilled float16 array: every caller writes all of it before it
/// reaches Python (clearing it first cost a pass over the output per call).
fn fp16_output<'py>(py: Python<'py>, shape: &[usize]) -> Bound<'py, PyArrayDyn<f16>> {
    // SAFETY: see above; the elements are plain bits with no invalid values.
    unsafe { PyArrayDyn::<f16>::new(py, shape.to_vec(), false) }
}

/// Runs the sim with the checked inputs; the outputs come back as numpy
/// arrays. The fp16 ones are allocated first and filled inside the run, so
/// that converting the ports costs no hand-off of its own.
fn run_sim<'py>(py: Python<'py>, live: &mut Live, held: &[Held<'py>]) -> PyResult<Vec<Bound<'py, PyAny>>> {
    let prog = &live.compiled.program;
    let filled: Vec<Option<Bound<'py, PyArrayDyn<f16>>>> =
        prog.outputs.iter().map(|p| (p.fact.dtype == DType::F16 && prog.ctx.fp16).then(|| fp16_output(py, &p.fact.shape))).collect();
    {
        let mut writers = filled.iter().map(|a| a.as_ref().map(|a| a.try_readwrite().map_err(borrowed)).transpose()).collect::<PyResult<Vec<_>>>()?;
        let mut outs = writers
            .iter_mut()
            .map(|w| w.as_mut().map(|w| w.as_slice_mut().map_err(not_contiguous)).transpose())
            .collect::<PyResult<Vec<_>>>()?;
        let ins = held.iter().map(Held::host).collect::<PyResult<Vec<_>>>()?;
        let state = &mut live.state;
        py.detach(|| guard("sim run", || Ok(prog.run_io(state, &ins, &mut outs))))?;
    }
    filled.into_iter().enumerate().map(|(k, a)| a.map_or_else(|| fetch(py, live, k), |a| Ok(a.into_any()))).collect()
}

#[pymethods]
impl PyNet {
    /// Runs the program: positional arrays in input order, or by port name.
    #[pyo3(signature = (*args, **kwargs))]
    fn __call__<'py>(&self, py: Python<'py>, args: &Bound<'py, PyTuple>, kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Py<PyAny>> {
        self.with_live(|live| {
            let names: Vec<String> = live.compiled.program.inputs.iter().map(|p| p.name.clone()).collect();
            let n = names.len();
            let mut given: Vec<Option<Bound<'py, PyAny>>> = vec![None; n];
            if args.len() > n {
                return Err(PyTypeError::new_err(format!("the Net takes {n} input(s) ({}), got {} positional arrays", names.join(", "), args.len())));
            }
            for (k, a) in args.iter().enumerate() {
                given[k] = Some(a);
            }
            if let Some(kw) = kwargs {
                for (key, v) in kw.iter() {
                    let key: String = key.extract()?;
                    let k = names.iter().position(|n| *n == key).ok_or_else(|| {
                        PyTypeError::new_err(format!("the Net has no input named {key:?}; its inputs are {}", names.join(", ")))
                    })?;
                    if given[k].is_some() {
                        return Err(PyTypeError::new_err(format!("input {key:?} was given twice")));
                    }
                    given[k] = Some(v);
                }
            }
            let held = given
                .iter()
                .enumerate()
                .map(|(k, g)| {
                    let a = g.as_ref().ok_or_else(|| PyTypeError::new_err(format!("missing input {:?}", names[k])))?;
                    check_input(py, live, k, a)
                })
                .collect::<PyResult<Vec<_>>>()?;
            let outs: Vec<Bound<'py, PyAny>> = if let Some(ane) = live.ane.take() {
                let r = mil_api::run_ane(py, live, &ane, &held);
                live.ane = Some(ane);
                r?
            } else {
                run_sim(py, live, &held)?
            };
            if self.single_output {
                Ok(outs.into_iter().next().map(|o| o.unbind()).unwrap_or_else(|| py.None()))
            } else {
                Ok(PyTuple::new(py, outs)?.into_any().unbind())
            }
        })
    }

    /// The input ports: a list of {"name", "shape", "dtype"}.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.with_live(|l| PyList::new(py, l.compiled.program.inputs.iter().map(|p| port_dict(py, p)).collect::<PyResult<Vec<_>>>()?))
    }
    #[getter]
    fn outputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.with_live(|l| PyList::new(py, l.compiled.program.outputs.iter().map(|p| port_dict(py, p)).collect::<PyResult<Vec<_>>>()?))
    }
    #[getter]
    fn backend(&self) -> String {
        self.backend.clone()
    }
    #[getter]
    fn target(&self) -> Option<String> {
        self.target.clone()
    }
    #[getter]
    fn precision(&self) -> PyResult<&'static str> {
        self.with_live(|l| Ok(if l.compiled.program.ctx.fp16 { "fp16" } else { "fp32" }))
    }
    #[getter]
    fn released(&self) -> bool {
        self.lock().map(|g| g.is_none()).unwrap_or(true)
    }
    /// The compile report when compiled for a target: `.warnings` lists the
    /// rewrites made instead of refusals, `.estimate` the projection.
    #[getter]
    fn report(&self) -> Option<crate::targets::PyReport> {
        self.report.clone()
    }
    /// Latency projection of this program on `target` (default: the target
    /// it was compiled for, else the host's, else h16g).
    #[pyo3(signature = (target=None))]
    fn estimate(&self, target: Option<&str>) -> PyResult<crate::targets::PyEstimate> {
        let name = target.map(str::to_string).or_else(|| self.target.clone());
        let t = aneforge::target::estimate_target(name.as_deref()).py()?;
        self.with_live(|l| Ok(crate::targets::PyEstimate::from(&aneforge::target::estimate_graph(&l.compiled.graph, &t))))
    }
    /// The optimised graph, one op per line (for debugging).
    fn graph(&self) -> PyResult<String> {
        self.with_live(|l| Ok(l.compiled.graph.to_string()))
    }
    /// Number of kernels the sim runs per call.
    #[getter]
    fn num_steps(&self) -> PyResult<usize> {
        self.with_live(|l| Ok(l.compiled.program.num_steps()))
    }
    /// Host bytes the sim's buffer plan uses.
    #[getter]
    fn planned_bytes(&self) -> PyResult<usize> {
        self.with_live(|l| Ok(l.compiled.program.planned_bytes()))
    }
    /// Frees the program and its buffers; calling the Net afterwards raises.
    fn release(&self) {
        if let Ok(mut g) = self.lock() {
            *g = None;
        }
    }
    fn __enter__(slf: Py<Self>) -> Py<Self> {
        slf
    }
    #[pyo3(signature = (*_args))]
    fn __exit__(&self, _args: &Bound<'_, PyTuple>) -> bool {
        self.release();
        false
    }
    fn __repr__(&self) -> String {
        match self.lock().ok().and_then(|g| {
            g.as_ref().map(|l| {
                let ins: Vec<String> = l.compiled.program.inputs.iter().map(|p| format!("{}: {}", p.name, p.fact)).collect();
                let outs: Vec<String> = l.compiled.program.outputs.iter().map(|p| format!("{}: {}", p.name, p.fact)).collect();
                format!("Net(backend={}, inputs=[{}], outputs=[{}])", self.backend, ins.join(", "), outs.join(", "))
            })
        }) {
            Some(s) => s,
            None => "Net(released)".into(),
        }
    }
}
