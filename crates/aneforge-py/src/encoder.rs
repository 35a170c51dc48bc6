//! The model loaders: `af.load(path)` and the `Encoder` it returns, and the
//! native vision zoo behind `af.models`; argument conversion and error
//! mapping over `aneforge_hf`, which holds the logic.

use crate::errors::{af_err, to_py};
use aneforge_hf::{Encoder, Error as HfError, LoadOptions, Pooling, TokenBatch, DEFAULT_BATCH_SIZE};
use numpy::{PyArray1, PyArrayMethods, PyUntypedArrayMethods};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyList, PyString, PyTuple};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;

/// Model-folder errors become `af.FileFormatError` (they all name the file),
/// option errors `ValueError`, core errors their usual class.
fn hf_err(e: HfError) -> PyErr {
    match e {
        HfError::Core(e) => to_py(e),
        e @ HfError::InvalidOption { .. } => PyValueError::new_err(e.to_string()),
        e => af_err("FileFormatError", e.to_string()),
    }
}

/// Runs encoder code with the GIL released; a panic becomes an
/// `af.AneForgeError` instead of crossing into Python.
fn guarded<T: Send>(py: Python<'_>, f: impl FnOnce() -> aneforge_hf::Result<T> + Send) -> PyResult<T> {
    match py.detach(|| catch_unwind(AssertUnwindSafe(f))) {
        Ok(r) => r.map_err(hf_err),
        Err(_) => Err(af_err("AneForgeError", "internal error (a panic) in the encoder; please report it with the input that caused it")),
    }
}

/// A Hugging Face sentence encoder compiled for the engine.
///
/// ``enc(texts)`` returns float32 ``[n, dim]``. Batches are padded to
/// sequence-length buckets and each bucket is compiled once.
#[pyclass(name = "Encoder", module = "aneforge", frozen)]
pub struct PyEncoder {
    inner: Encoder,
}

/// Opens a Hugging Face model folder (BERT family) as an `Encoder`.
/// `pooling` ("mean", "cls", "max", "mean_sqrt_len"), `normalize` and
/// `max_length` override what the folder's sentence-transformers config says.
#[pyfunction]
#[pyo3(signature = (path, pooling=None, normalize=None, max_length=None))]
pub fn load(py: Python<'_>, path: PathBuf, pooling: Option<&str>, normalize: Option<bool>, max_length: Option<usize>) -> PyResult<PyEncoder> {
    let pooling = pooling.map(Pooling::from_name).transpose().map_err(hf_err)?;
    let options = LoadOptions { pooling, normalize, max_length };
    let inner = guarded(py, || Encoder::open(&path, &options))?;
    Ok(PyEncoder { inner })
}

fn texts_of(obj: &Bound<'_, PyAny>) -> PyResult<Vec<String>> {
    if let Ok(s) = obj.cast::<PyString>() {
        return Ok(vec![s.extract::<String>()?]);
    }
    let it = obj.try_iter().map_err(|_| PyTypeError::new_err("texts must be a str or a list of str"))?;
    it.map(|o| {
        let o = o?;
        o.cast::<PyString>()
            .map_err(|_| PyTypeError::new_err(format!("texts must be str, got {}", o.get_type().name().map(|n| n.to_string()).unwrap_or_default())))
            .and_then(|s| s.extract::<String>())
    })
    .collect()
}

/// A numpy integer matrix as (values, rows, cols); a 1-D array is one row.
fn int_matrix(py: Python<'_>, obj: &Bound<'_, PyAny>, what: &str) -> PyResult<(Vec<i64>, usize, usize)> {
    let np = py.import("numpy")?;
    let a = np.call_method1("asarray", (obj,))?;
    let kind: String = a.getattr("dtype")?.getattr("kind")?.extract()?;
    if !matches!(kind.as_str(), "i" | "u" | "b") {
        return Err(PyTypeError::new_err(format!("{what} must be an integer array, got dtype {}", a.getattr("dtype")?.str()?)));
    }
    let a = np.call_method1("ascontiguousarray", (a, "int64"))?;
    let arr = a.cast::<numpy::PyArrayDyn<i64>>()?.readonly();
    let shape = arr.shape().to_vec();
    let (rows, cols) = match shape.as_slice() {
        [c] => (1, *c),
        [r, c] => (*r, *c),
        _ => return Err(af_err("ShapeError", format!("{what} must be [batch, seq_len] (or one row [seq_len]), got shape {shape:?}"))),
    };
    let v = arr.as_slice().map_err(|e| PyValueError::new_err(e.to_string()))?.to_vec();
    Ok((v, rows, cols))
}

fn to_u32(v: Vec<i64>, what: &str) -> PyResult<Vec<u32>> {
    v.into_iter()
        .map(|x| u32::try_from(x).map_err(|_| PyValueError::new_err(format!("{what} holds {x}, which is not a valid token index"))))
        .collect()
}

fn matrix<'py>(py: Python<'py>, v: Vec<f32>, rows: usize, cols: usize) -> PyResult<Bound<'py, PyAny>> {
    PyArray1::from_vec(py, v).reshape([rows, cols]).map(|a| a.into_any())
}

#[pymethods]
impl PyEncoder {
    /// Sentence vectors of `texts` (a str or a list of str) as float32 [n, dim].
    #[pyo3(signature = (texts, batch_size=DEFAULT_BATCH_SIZE))]
    fn __call__<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>, batch_size: usize) -> PyResult<Bound<'py, PyAny>> {
        let texts = texts_of(texts)?;
        let n = texts.len();
        let enc = &self.inner;
        let v = guarded(py, || enc.encode(&texts, batch_size))?;
        matrix(py, v, n, enc.dim())
    }

    /// Token ids and attention mask (int64 [n, seq_len], padded to the
    /// longest text, truncated at max_length), exactly as sentence-transformers makes them.
    fn tokenize<'py>(&self, py: Python<'py>, texts: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyTuple>> {
        let texts = texts_of(texts)?;
        let enc = &self.inner;
        let b = guarded(py, || enc.tokenize(&texts))?;
        let as_i64 = |v: &[u32]| -> Vec<i64> { v.iter().map(|&x| x as i64).collect() };
        let ids = PyArray1::from_vec(py, as_i64(&b.input_ids)).reshape([b.batch, b.seq_len])?;
        let mask = PyArray1::from_vec(py, as_i64(&b.attention_mask)).reshape([b.batch, b.seq_len])?;
        PyTuple::new(py, [ids.into_any(), mask.into_any()])
    }

    /// Sentence vectors from token ids and mask ([n, seq_len] integer
    /// arrays, e.g. from `tokenize`), skipping tokenisation.
    #[pyo3(signature = (input_ids, attention_mask=None, token_type_ids=None, batch_size=DEFAULT_BATCH_SIZE))]
    fn encode_ids<'py>(
        &self,
        py: Python<'py>,
        input_ids: &Bound<'py, PyAny>,
        attention_mask: Option<&Bound<'py, PyAny>>,
        token_type_ids: Option<&Bound<'py, PyAny>>,
        batch_size: usize,
    ) -> PyResult<Bound<'py, PyAny>> {
        let (ids, rows, cols) = int_matrix(py, input_ids, "input_ids")?;
        let check = |o: Option<&Bound<'py, PyAny>>, what: &str| -> PyResult<Option<Vec<u32>>> {
            let Some(o) = o.filter(|o| !o.is_none()) else { return Ok(None) };
            let (v, r, c) = int_matrix(py, o, what)?;
            if (r, c) != (rows, cols) {
                return Err(af_err("ShapeError", format!("{what} has shape ({r}, {c}) but input_ids has ({rows}, {cols})")));
            }
            to_u32(v, what).map(Some)
        };
        let mask = check(attention_mask, "attention_mask")?.unwrap_or_else(|| vec![1; rows * cols]);
        let types = check(token_type_ids, "token_type_ids")?.unwrap_or_else(|| vec![0; rows * cols]);
        let batch = TokenBatch { input_ids: to_u32(ids, "input_ids")?, attention_mask: mask, token_type_ids: types, batch: rows, seq_len: cols };
        let enc = &self.inner;
        let v = guarded(py, || enc.encode_batch(&batch, batch_size))?;
        matrix(py, v, rows, enc.dim())
    }

    /// Width of a sentence vector.
    #[getter]
    fn dim(&self) -> usize {
        self.inner.dim()
    }
    /// Truncation length of `tokenize` and `__call__` (special tokens included).
    #[getter]
    fn max_length(&self) -> usize {
        self.inner.max_length()
    }
    #[getter]
    fn pooling(&self) -> &'static str {
        self.inner.pooling().name()
    }
    #[getter]
    fn normalize(&self) -> bool {
        self.inner.normalize()
    }
    /// The sequence-length buckets programs are compiled for.
    #[getter]
    fn seq_buckets(&self) -> Vec<usize> {
        self.inner.seq_buckets().to_vec()
    }
    /// How many programs have been compiled (one per bucket used).
    #[getter]
    fn compile_count(&self) -> usize {
        self.inner.compile_count()
    }
    /// The (batch, seq_len) buckets compiled so far.
    #[getter]
    fn compiled_buckets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyList>> {
        PyList::new(py, self.inner.compiled_buckets())
    }
    /// The model folder.
    #[getter]
    fn path(&self) -> PathBuf {
        self.inner.folder().root().to_path_buf()
    }
    fn __repr__(&self) -> String {
        let e = &self.inner;
        let c = e.folder().config();
        format!(
            "Encoder({}, {} layers, dim={}, max_length={}, pooling={}, normalize={}, compiled buckets={:?})",
            c.model_type,
            c.num_hidden_layers,
            e.dim(),
            e.max_length(),
            e.pooling().name(),
            e.normalize(),
            e.compiled_buckets()
        )
    }
}

/// The logits graph of a torchvision model built natively (used by
/// `af.models`): input `input` [batch, 3, 224, 224], output `logits`
/// [batch, 1000]. `weights`: a safetensors file with torchvision names, or
/// None for seeded random weights.
#[pyfunction]
#[pyo3(signature = (arch, weights=None, batch=1, seed=0))]
pub fn _vision_model(py: Python<'_>, arch: &str, weights: Option<PathBuf>, batch: usize, seed: u64) -> PyResult<crate::tensor::PyTensor> {
    use aneforge_hf::vision::{build, VisionArch};
    let arch = VisionArch::from_name(arch).map_err(hf_err)?;
    let org = crate::convert::origin(py);
    let t = guarded(py, || aneforge::error::with_origin(org, || build(arch, weights.as_deref(), batch, seed)))?;
    Ok(crate::tensor::PyTensor::new(t))
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyEncoder>()?;
    m.add_function(wrap_pyfunction!(load, m)?)?;
    m.add_function(wrap_pyfunction!(_vision_model, m)?)?;
    Ok(())
}
