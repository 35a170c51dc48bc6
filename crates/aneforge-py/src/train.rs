//! Training bindings: `af.parameter`, `af.grad`, and the resident training
//! program (`_aneforge.compile_resident` → `ResidentNet`). Argument
//! conversion only: the gradient rules and the resident sim plan live in
//! the core (`aneforge::autograd`, `aneforge::train`); losses, optimizers
//! and the Trainer loop are Python (`aneforge/{losses,optim,trainer}.py`).

use crate::convert::{build, origin};
use crate::errors::{af_err, guard, IntoPy};
use crate::tensor::PyTensor;
use aneforge::backend::sim::{HostInput, SimState};
use aneforge::builder as b;
use aneforge::ops::source::ResidentReader;
use aneforge::ops::Op;
use aneforge::{CompileOptions, Compiled, DType, Numerics, Precision, Tensor};
use numpy::{PyArrayDyn, PyArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyTuple};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

/// A numpy-convertible object as contiguous f32 values and its shape.
fn f32_array(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<f32>, Vec<usize>)> {
    let np = py.import("numpy")?;
    let a = np.call_method1("asarray", (obj,))?;
    let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "f" | "i" | "u" | "b") {
        return Err(PyTypeError::new_err(format!("{what} must be a numeric array")));
    }
    let a = np.call_method1("ascontiguousarray", (a, "float32"))?;
    let shape: Vec<usize> = a.getattr("shape")?.extract()?;
    let arr = a.cast::<PyArrayDyn<f32>>()?.readonly();
    let s = arr.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
    Ok((s.to_vec(), shape))
}

fn to_numpy<'py>(py: Python<'py>, data: &[f32], shape: &[usize]) -> PyResult<Bound<'py, PyAny>> {
    let a = PyArrayDyn::<f32>::zeros(py, shape.to_vec(), false);
    {
        let mut w = a.readwrite();
        let s = w.as_slice_mut().map_err(|e| PyValueError::new_err(e.to_string()))?;
        s.copy_from_slice(data);
    }
    Ok(a.into_any())
}

/// A trainable tensor: stored as fp16 on the engine, kept resident in a
/// training program, and read back with `p.numpy()`.
#[pyfunction]
#[pyo3(signature = (array, name=None))]
pub fn parameter(py: Python<'_>, array: &Bound<'_, PyAny>, name: Option<&str>) -> PyResult<PyTensor> {
    let (v, shape) = f32_array(py, array, "parameter")?;
    if v.iter().any(|x| !x.is_finite()) {
        return Err(PyValueError::new_err("parameter: the initial values contain NaN or inf"));
    }
    build(py, || b::parameter(v, shape, name)).map(PyTensor::new)
}

/// Optimizer state (moments): a resident tensor that is not trained.
#[pyfunction]
#[pyo3(signature = (array, dtype="fp32", name=None))]
pub fn state(py: Python<'_>, array: &Bound<'_, PyAny>, dtype: &str, name: Option<&str>) -> PyResult<PyTensor> {
    let (v, shape) = f32_array(py, array, "state")?;
    let d = DType::parse(dtype).py()?;
    build(py, || b::state(v, shape, d, name)).map(PyTensor::new)
}

fn tensors(obj: &Bound<'_, PyAny>, what: &str) -> PyResult<Vec<Tensor>> {
    if let Ok(t) = obj.cast::<PyTensor>() {
        return Ok(vec![t.get().t.clone()]);
    }
    let it = obj.try_iter().map_err(|_| PyTypeError::new_err(format!("{what} must be an af.Tensor or a list of them")))?;
    it.map(|o| {
        let o = o?;
        o.cast::<PyTensor>().map(|t| t.get().t.clone()).map_err(|_| PyTypeError::new_err(format!("every entry of {what} must be an af.Tensor")))
    })
    .collect()
}

/// Gradients of the scalar `loss` with respect to each of `params`, as lazy
/// tensors. `seed` (a scalar tensor, e.g. a fed loss scale) replaces 1.
#[pyfunction]
#[pyo3(signature = (loss, params, seed=None))]
pub fn grad(py: Python<'_>, loss: &PyTensor, params: &Bound<'_, PyAny>, seed: Option<&PyTensor>) -> PyResult<Vec<PyTensor>> {
    let ps = tensors(params, "params")?;
    let g = build(py, || aneforge::grad_with_seed(&loss.t, &ps, seed.map(|s| &s.t)))?;
    Ok(g.into_iter().map(PyTensor::new).collect())
}

/// The values a parameter or constant holds (float32), for `Tensor.numpy()`.
pub fn values_of<'py>(py: Python<'py>, t: &Tensor) -> PyResult<Bound<'py, PyAny>> {
    match t.op() {
        Op::Param(p) => {
            let v = py.detach(|| p.values());
            to_numpy(py, &v, t.shape())
        }
        Op::Const(c) => to_numpy(py, &c.data, t.shape()),
        other => Err(af_err(
            "AneForgeError",
            format!("only parameters and constants hold values; this is a lazy {} tensor: compile it and call the Net", other.name()),
        )),
    }
}

/// Replaces a parameter's host values (e.g. when loading a checkpoint).
#[pyfunction]
pub fn set_parameter(py: Python<'_>, p: &PyTensor, array: &Bound<'_, PyAny>) -> PyResult<()> {
    let Op::Param(param) = p.t.op() else {
        return Err(PyTypeError::new_err("set_parameter: the tensor is not a parameter"));
    };
    let (v, shape) = f32_array(py, array, "values")?;
    if shape.iter().product::<usize>() != p.t.fact().numel() {
        return Err(af_err("ShapeError", format!("set_parameter: values of shape {shape:?} for a parameter of shape {:?}", p.t.shape())));
    }
    param.set_values(v);
    Ok(())
}

#[derive(Default)]
struct Counters {
    calls: AtomicU64,
    input_bytes: AtomicU64,
    output_bytes: AtomicU64,
    param_bytes_in: AtomicU64,
    param_bytes_out: AtomicU64,
}

struct Live {
    compiled: Compiled,
    state: SimState,
}

/// A compiled training step whose parameters and optimizer state live in
/// its buffers between calls. Calling it feeds the batch (and scalars such
/// as the learning rate), runs forward + backward + update, and returns
/// the user outputs; the updates stay inside.
#[pyclass(name = "ResidentNet", module = "aneforge")]
pub struct PyResidentNet {
    live: Arc<Mutex<Option<Live>>>,
    counters: Arc<Counters>,
    readers: Vec<Arc<ResidentReader>>,
    params: Vec<Tensor>,
    n_user_outputs: usize,
}

/// Compiles `outputs` plus the `updates` [(parameter, new value), …] into a
/// resident program. Every parameter the graph reads is resident.
#[pyfunction]
#[pyo3(signature = (outputs, updates, precision="fp16", numerics="ane"))]
pub fn compile_resident(
    py: Python<'_>,
    outputs: &Bound<'_, PyAny>,
    updates: &Bound<'_, PyList>,
    precision: &str,
    numerics: &str,
) -> PyResult<PyResidentNet> {
    let outs = tensors(outputs, "outputs")?;
    let mut ups = vec![];
    for item in updates.iter() {
        let (p, v): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
            item.extract().map_err(|_| PyTypeError::new_err("updates must be (parameter, new value) pairs"))?;
        let p = p.cast::<PyTensor>().map_err(|_| PyTypeError::new_err("an update's parameter must be an af.Tensor"))?.get().t.clone();
        let v = v.cast::<PyTensor>().map_err(|_| PyTypeError::new_err("an update's value must be an af.Tensor"))?.get().t.clone();
        ups.push((p, v));
    }
    let opts = CompileOptions { precision: Precision::parse(precision).py()?, numerics: Numerics::parse(numerics).py()?, ..Default::default() };
    let org = origin(py);
    let compiled = py.detach(|| aneforge::error::with_origin(org, || aneforge::train::compile_resident(&outs, &ups, opts))).py()?;
    let state = py.detach(|| compiled.program.new_state());
    let params: Vec<Tensor> = compiled
        .program
        .state
        .iter()
        .map(|s| {
            let fact = s.param.cell.fact.clone();
            Tensor::source(Op::Param(s.param.clone()), fact, s.param.cell.name.clone())
        })
        .collect::<aneforge::Result<_>>()
        .py()?;
    let n_user_outputs = outs.len();
    let live = Arc::new(Mutex::new(Some(Live { compiled, state })));
    let counters = Arc::new(Counters::default());
    let mut readers: Vec<Arc<ResidentReader>> = vec![];
    for (k, p) in params.iter().enumerate() {
        let (weak, c) = (Arc::downgrade(&live), counters.clone());
        let r: Arc<ResidentReader> = Arc::new(move || {
            let live = Weak::upgrade(&weak)?;
            let g = live.lock().ok()?;
            let l = g.as_ref()?;
            let v = l.compiled.program.state(&l.state, k).to_vec();
            c.param_bytes_out.fetch_add(v.len() as u64 * 2, Ordering::Relaxed);
            Some(v)
        });
        if let Op::Param(param) = p.op() {
            param.set_resident(Some(Arc::downgrade(&r)));
        }
        readers.push(r);
    }
    Ok(PyResidentNet { live, counters, readers, params, n_user_outputs })
}

impl PyResidentNet {
    fn with_live<T>(&self, f: impl FnOnce(&mut Live) -> PyResult<T>) -> PyResult<T> {
        let mut g = self.live.lock().map_err(|_| af_err("AneForgeError", "the training program was poisoned by a panic; build the Trainer again"))?;
        match g.as_mut() {
            Some(l) => f(l),
            None => Err(af_err("AneForgeError", "this training program was released")),
        }
    }

    /// Copies the resident values into the parameters' host copies and
    /// detaches them, so they keep the trained values after this is gone.
    fn detach_params(&self) {
        let Ok(mut g) = self.live.lock() else { return };
        if let Some(l) = g.as_ref() {
            for (k, s) in l.compiled.program.state.iter().enumerate() {
                s.param.set_values(l.compiled.program.state(&l.state, k).to_vec());
                let ours = self.readers.get(k).map(Arc::downgrade);
                let theirs = s.param.cell.resident.read().ok().and_then(|r| r.clone());
                if let (Some(a), Some(b)) = (ours, theirs) {
                    if Weak::ptr_eq(&a, &b) {
                        s.param.set_resident(None);
                    }
                }
            }
        }
        *g = None;
    }
}

impl Drop for PyResidentNet {
    fn drop(&mut self) {
        self.detach_params();
    }
}

fn feed(py: Python<'_>, live: &mut Live, k: usize, arr: &Bound<'_, PyAny>) -> PyResult<u64> {
    let port = live.compiled.program.inputs[k].clone();
    let np = py.import("numpy")?;
    let a = np.call_method1("asarray", (arr,))?;
    let shape: Vec<usize> = a.getattr("shape")?.extract()?;
    if shape != port.fact.shape {
        return Err(af_err(
            "ShapeError",
            format!("input {:?} expects shape {:?}, got an array of shape {:?}", port.name, port.fact.shape, shape),
        ));
    }
    let itemsize: u64 = a.getattr("dtype")?.getattr("itemsize")?.extract()?;
    let a = np.call_method1("ascontiguousarray", (a, "float32"))?;
    let arr = a.cast::<PyArrayDyn<f32>>()?.readonly();
    let s = arr.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?;
    let round = live.compiled.program.ctx.fp16 && port.fact.dtype == DType::F16;
    live.compiled.program.write_input(&mut live.state, k, HostInput::F32 { data: s, round });
    Ok(s.len() as u64 * itemsize.min(2).max(1))
}

#[pymethods]
impl PyResidentNet {
    /// Runs one step with the inputs in order; returns the user outputs
    /// (float32 arrays) as a tuple.
    #[pyo3(signature = (*args))]
    fn __call__<'py>(&self, py: Python<'py>, args: &Bound<'py, PyTuple>) -> PyResult<Bound<'py, PyTuple>> {
        let c = self.counters.clone();
        let nout = self.n_user_outputs;
        self.with_live(|live| {
            let n = live.compiled.program.inputs.len();
            if args.len() != n {
                let names: Vec<String> = live.compiled.program.inputs.iter().map(|p| format!("{} {:?}", p.name, p.fact.shape)).collect();
                return Err(PyTypeError::new_err(format!("the training step takes {n} input(s) ({}), got {}", names.join(", "), args.len())));
            }
            let mut bytes = 0;
            for (k, a) in args.iter().enumerate() {
                bytes += feed(py, live, k, &a)?;
            }
            guard("training step", || Ok(live.compiled.program.run(&mut live.state)))?;
            c.calls.fetch_add(1, Ordering::Relaxed);
            c.input_bytes.fetch_add(bytes, Ordering::Relaxed);
            let prog = &live.compiled.program;
            let mut outs = vec![];
            for k in 0..nout {
                let data = prog.output(&live.state, k);
                c.output_bytes.fetch_add(data.len() as u64 * 2, Ordering::Relaxed);
                outs.push(to_numpy(py, data, &prog.outputs[k].fact.shape)?);
            }
            PyTuple::new(py, outs)
        })
    }

    /// The resident tensors (parameters and optimizer state) in slot order.
    #[getter]
    fn params(&self) -> Vec<PyTensor> {
        self.params.iter().cloned().map(PyTensor::new).collect()
    }

    /// Index of a resident tensor (by identity), or None.
    fn index_of(&self, t: &PyTensor) -> Option<usize> {
        let Op::Param(p) = t.t.op() else { return None };
        self.params.iter().position(|q| matches!(q.op(), Op::Param(qp) if qp == p))
    }

    /// Copies resident tensor `k` to the host (float32).
    fn read_state<'py>(&self, py: Python<'py>, k: usize) -> PyResult<Bound<'py, PyAny>> {
        let c = self.counters.clone();
        self.with_live(|l| {
            let prog = &l.compiled.program;
            let s = prog.state.get(k).ok_or_else(|| PyValueError::new_err(format!("no resident tensor {k}")))?;
            let v = prog.state(&l.state, k);
            c.param_bytes_out.fetch_add(v.len() as u64 * 2, Ordering::Relaxed);
            to_numpy(py, v, &s.param.cell.fact.shape)
        })
    }

    /// Overwrites resident tensor `k` from the host.
    fn write_state(&self, py: Python<'_>, k: usize, array: &Bound<'_, PyAny>) -> PyResult<()> {
        let (v, _) = f32_array(py, array, "values")?;
        let c = self.counters.clone();
        self.with_live(|l| {
            let prog = &l.compiled.program;
            let s = prog.state.get(k).ok_or_else(|| PyValueError::new_err(format!("no resident tensor {k}")))?;
            if v.len() != s.param.cell.fact.numel() {
                return Err(af_err("ShapeError", format!("write_state: {} values for a tensor of shape {:?}", v.len(), s.param.cell.fact.shape)));
            }
            prog.set_state(&mut l.state, k, &v);
            c.param_bytes_in.fetch_add(v.len() as u64 * 2, Ordering::Relaxed);
            Ok(())
        })
    }

    /// Bytes crossing the host boundary so far: inputs fed, outputs
    /// fetched, and resident tensors read or written by the host.
    #[getter]
    fn host_transfers<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let d = PyDict::new(py);
        let c = &self.counters;
        d.set_item("calls", c.calls.load(Ordering::Relaxed))?;
        d.set_item("input_bytes", c.input_bytes.load(Ordering::Relaxed))?;
        d.set_item("output_bytes", c.output_bytes.load(Ordering::Relaxed))?;
        d.set_item("param_bytes_in", c.param_bytes_in.load(Ordering::Relaxed))?;
        d.set_item("param_bytes_out", c.param_bytes_out.load(Ordering::Relaxed))?;
        Ok(d)
    }

    /// Bytes of parameters and optimizer state held resident.
    #[getter]
    fn resident_bytes(&self) -> PyResult<usize> {
        self.with_live(|l| Ok(l.compiled.program.state.iter().map(|s| s.param.cell.fact.numel() * s.param.cell.fact.dtype.size_bytes()).sum()))
    }

    #[getter]
    fn num_steps(&self) -> PyResult<usize> {
        self.with_live(|l| Ok(l.compiled.program.num_steps()))
    }

    /// The input ports: a list of {"name", "shape"}.
    #[getter]
    fn inputs<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        self.with_live(|l| {
            let items = l
                .compiled
                .program
                .inputs
                .iter()
                .map(|p| {
                    let d = PyDict::new(py);
                    d.set_item("name", &p.name)?;
                    d.set_item("shape", PyTuple::new(py, &p.fact.shape)?)?;
                    Ok(d)
                })
                .collect::<PyResult<Vec<_>>>()?;
            PyList::new(py, items)
        })
    }

    fn graph(&self) -> PyResult<String> {
        self.with_live(|l| Ok(l.compiled.graph.to_string()))
    }

    /// Writes the trained values back into the parameter objects and frees
    /// the program.
    fn release(&self) {
        self.detach_params();
    }
}

/// Creation order of an input port (its position among a program's inputs).
#[pyfunction]
pub fn input_order(t: &PyTensor) -> PyResult<u64> {
    match t.t.op() {
        Op::Input(i) => Ok(i.order),
        other => Err(PyTypeError::new_err(format!("expected an af.input tensor, got a {} tensor", other.name()))),
    }
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(input_order, m)?)?;
    m.add_class::<PyResidentNet>()?;
    m.add_function(wrap_pyfunction!(parameter, m)?)?;
    m.add_function(wrap_pyfunction!(state, m)?)?;
    m.add_function(wrap_pyfunction!(grad, m)?)?;
    m.add_function(wrap_pyfunction!(set_parameter, m)?)?;
    m.add_function(wrap_pyfunction!(compile_resident, m)?)?;
    Ok(())
}
