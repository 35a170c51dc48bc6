//! `af.targets()`, `af.detect_family()`, `af.project_peak()`,
//! `af.cross_compile_check()`, `af.estimate()`, `af.reset_compile_breaker()`:
//! conversions only; the decisions live in `aneforge::target` and the
//! `aneforge-target` crate.

use crate::errors::IntoPy;
use crate::net::outputs_of;
use aneforge::target::{self as tg, table, Estimate, Report, Target, Violation};
use aneforge::Graph;
use pyo3::prelude::*;
use pyo3::types::PyDict;

/// One compiler target and what the engine behind it can do (read-only).
#[pyclass(name = "Target", module = "aneforge", frozen, get_all)]
#[derive(Clone)]
pub struct PyTarget {
    /// Canonical name, e.g. "H16s" (any case is accepted as input).
    name: String,
    /// Capability family, e.g. "H16".
    family: String,
    tier: u8,
    /// False for H11/H12/M9/T0: compile refuses them; validate/estimate work.
    mil_supported: bool,
    chips: Vec<String>,
    cores: u32,
    fmax_ghz: f64,
    fp16_tflops: f64,
    weight_gbs: f64,
    act_gbs: f64,
    floor_us: f64,
    sram_bytes: f64,
    max_axis: u64,
    max_channels: u64,
    max_conv_kernel_width: u64,
    max_rank: usize,
    /// Capability keys this target has ("sin_cos", "texture_ops", ...).
    capabilities: Vec<String>,
    /// Where the numbers come from.
    source: String,
    /// The chip profile, when the target came from a chip name ("M5 Pro").
    chip: Option<String>,
    display: String,
}

impl PyTarget {
    pub fn from(t: &Target) -> Self {
        PyTarget {
            name: t.name.clone(),
            family: t.family.clone(),
            tier: t.tier,
            mil_supported: t.mil_supported,
            chips: t.chips.clone(),
            cores: t.cores,
            fmax_ghz: t.fmax_ghz,
            fp16_tflops: t.fp16_tflops,
            weight_gbs: t.weight_gbs,
            act_gbs: t.act_gbs,
            floor_us: t.floor_us,
            sram_bytes: t.sram_bytes,
            max_axis: t.max_axis,
            max_channels: t.max_channels,
            max_conv_kernel_width: t.max_conv_kernel_width,
            max_rank: t.max_rank,
            capabilities: t.capabilities().iter().map(|c| c.key().to_string()).collect(),
            source: t.source.clone(),
            chip: t.chip.clone(),
            display: t.to_string(),
        }
    }
}

#[pymethods]
impl PyTarget {
    /// Lower-case name, the spelling `target=` and the system compiler take.
    #[getter]
    fn lower_name(&self) -> String {
        self.name.to_ascii_lowercase()
    }
    /// Whether the target has a capability, by key ("sin_cos").
    fn supports(&self, capability: &str) -> bool {
        self.capabilities.iter().any(|c| c == capability)
    }
    fn __repr__(&self) -> String {
        format!("Target({})", self.display)
    }
    fn __str__(&self) -> String {
        self.display.clone()
    }
}

/// One op's share of a latency projection.
#[pyclass(name = "OpEstimate", module = "aneforge", frozen, get_all)]
#[derive(Clone)]
pub struct PyOpEstimate {
    name: String,
    /// Kernel kind the estimator used ("Conv", "Matmul", "Elementwise", ...).
    kind: String,
    flops: f64,
    /// Bytes moved: weights + activations in + out.
    bytes: f64,
    /// "compute", "bandwidth" or "floor".
    bound: String,
    /// True when the op's activations spilled past the on-chip buffer.
    spilled: bool,
    time_us: f64,
}

#[pymethods]
impl PyOpEstimate {
    fn __repr__(&self) -> String {
        format!(
            "OpEstimate({:?}, {}, {:.4} GFLOP, {:.3} MB, {}-bound, {:.2} us)",
            self.name,
            self.kind,
            self.flops / 1e9,
            self.bytes / 1e6,
            self.bound,
            self.time_us
        )
    }
}

/// A latency *projection* for one program on one target (from published
/// measurements; `af.calibration_report()` shows its error).
#[pyclass(name = "Estimate", module = "aneforge", frozen, get_all)]
#[derive(Clone)]
pub struct PyEstimate {
    latency_us: f64,
    dispatch_us: f64,
    target: String,
    /// Always True: this is a projection, not a measurement.
    is_projection: bool,
    per_op: Vec<PyOpEstimate>,
    report: String,
    label: String,
}

impl PyEstimate {
    pub fn from(e: &Estimate) -> Self {
        PyEstimate {
            latency_us: e.latency_us,
            dispatch_us: e.dispatch_us,
            target: e.target.clone(),
            is_projection: e.is_projection,
            per_op: e
                .per_op
                .iter()
                .map(|o| PyOpEstimate {
                    name: o.name.clone(),
                    kind: format!("{:?}", o.kind),
                    flops: o.flops,
                    bytes: o.bytes,
                    bound: format!("{:?}", o.bound).to_ascii_lowercase(),
                    spilled: o.spilled,
                    time_us: o.time_us,
                })
                .collect(),
            report: e.report(),
            label: e.label(),
        }
    }
}

#[pymethods]
impl PyEstimate {
    /// Total projected latency in milliseconds.
    #[getter]
    fn latency_ms(&self) -> f64 {
        self.latency_us / 1000.0
    }
    /// Writes a per-op bar chart and roofline PNG (needs matplotlib).
    fn plot(slf: &Bound<'_, Self>, path: &Bound<'_, PyAny>) -> PyResult<()> {
        let m = slf.py().import("aneforge._plot")?;
        m.call_method1("plot_estimate", (slf, path))?;
        Ok(())
    }
    fn __repr__(&self) -> String {
        format!("Estimate({}; {} ops)", self.label, self.per_op.len())
    }
    fn __str__(&self) -> String {
        self.report.clone()
    }
}

/// One thing that keeps a graph from compiling for a target.
#[pyclass(name = "Violation", module = "aneforge", frozen, get_all)]
#[derive(Clone)]
pub struct PyViolation {
    op: String,
    /// Input shapes followed by the output shape.
    shapes: Vec<Vec<usize>>,
    /// "file.py:12" of the user code that built the op, when known.
    origin: Option<String>,
    problem: String,
    /// First family that supports it ("H16"), or None.
    first_family: Option<String>,
    hint: String,
    message: String,
}

impl PyViolation {
    fn from(v: &Violation) -> Self {
        PyViolation {
            op: v.op.clone(),
            shapes: v.shapes.clone(),
            origin: v.origin.clone(),
            problem: v.problem.clone(),
            first_family: v.first_family.clone(),
            hint: v.hint.clone(),
            message: v.to_string(),
        }
    }
}

#[pymethods]
impl PyViolation {
    fn __repr__(&self) -> String {
        format!("Violation({})", self.message)
    }
    fn __str__(&self) -> String {
        self.message.clone()
    }
}

/// What compiling for a target would do: `.ok`, `.violations` (all of them),
/// `.warnings` (rewrites made instead of refusals), `.estimate`.
#[pyclass(name = "TargetReport", module = "aneforge", frozen, get_all)]
#[derive(Clone)]
pub struct PyReport {
    ok: bool,
    target: String,
    violations: Vec<PyViolation>,
    warnings: Vec<String>,
    estimate: Option<PyEstimate>,
    text: String,
}

impl PyReport {
    pub fn from(r: &Report) -> Self {
        PyReport {
            ok: r.ok(),
            target: r.target.clone(),
            violations: r.violations.iter().map(PyViolation::from).collect(),
            warnings: r.warnings.clone(),
            estimate: r.estimate.as_ref().map(PyEstimate::from),
            text: r.to_string(),
        }
    }
}

#[pymethods]
impl PyReport {
    fn __bool__(&self) -> bool {
        self.ok
    }
    fn __repr__(&self) -> String {
        format!(
            "TargetReport(target={}, ok={}, {} violation(s), {} rewrite(s))",
            self.target,
            if self.ok { "True" } else { "False" },
            self.violations.len(),
            self.warnings.len()
        )
    }
    fn __str__(&self) -> String {
        self.text.clone()
    }
}

/// All 28 compiler targets, oldest family first.
#[pyfunction]
fn targets() -> Vec<PyTarget> {
    table::targets().iter().map(PyTarget::from).collect()
}

/// One target by name (any case), or a chip profile by chip name ("M5 Pro").
/// Unknown names raise af.TargetError with the valid list and a did-you-mean.
#[pyfunction]
fn target(name: &str) -> PyResult<PyTarget> {
    tg::resolve(name).py().map(|t| PyTarget::from(&t))
}

/// The host's target name ("h16g"), `ANEFORGE_TARGET` if set, else None
/// (off macOS there is no engine to detect).
#[pyfunction]
fn detect_family() -> PyResult<Option<String>> {
    Ok(tg::detect().py()?.map(|t| t.lower_name()))
}

/// Theoretical peak of a target: 2 × 256 MAC × cores × fmax.
#[pyfunction]
fn project_peak<'py>(py: Python<'py>, arch: &str) -> PyResult<Bound<'py, PyDict>> {
    let p = table::project_peak(arch).map_err(tg::target_err).py()?;
    let d = PyDict::new(py);
    d.set_item("tflops_fp16", p.tflops_fp16)?;
    d.set_item("tops_int8", p.tops_int8)?;
    d.set_item("cores", p.cores)?;
    d.set_item("ghz", p.ghz)?;
    Ok(d)
}

fn graph_of(outputs: &Bound<'_, PyAny>) -> PyResult<Graph> {
    let (outs, _) = outputs_of(outputs)?;
    Graph::from_outputs(&outs).py()
}

/// Checks what compiling `outputs` for `target` would do, on any host:
/// rewrites applied (listed in `.warnings`), every violation listed, and a
/// latency projection. Never raises for a graph that does not fit.
#[pyfunction]
fn cross_compile_check(py: Python<'_>, outputs: &Bound<'_, PyAny>, target: &str) -> PyResult<PyReport> {
    let g = graph_of(outputs)?;
    let t = tg::resolve(target).py()?;
    let (_, report) = py.detach(|| tg::check(g, &t)).py()?;
    Ok(PyReport::from(&report))
}

/// Latency projection of `outputs` compiled as one program. target=None:
/// the host's target, else h16g (the base M4).
#[pyfunction]
#[pyo3(signature = (outputs, target=None))]
fn estimate(py: Python<'_>, outputs: &Bound<'_, PyAny>, target: Option<&str>) -> PyResult<PyEstimate> {
    let g = graph_of(outputs)?;
    let t = tg::estimate_target(target).py()?;
    let e = py.detach(|| -> aneforge::Result<Estimate> {
        let (g, _) = tg::legalize(g, &t)?;
        let g = aneforge::passes::optimize(g)?;
        Ok(tg::estimate_graph(&g, &t))
    });
    Ok(PyEstimate::from(&e.py()?))
}

/// Median round trip, in nanoseconds, of a cache line between the first two
/// CPUs this process may use (None with fewer than two, or off Linux). On
/// shared VMs it tells apart the times the host keeps the vCPUs close
/// (~0.1-0.3 us) from those it places them far apart (0.4-1 us), in which
/// the sim's multi-threaded kernels run a fifth to a third slower.
/// Benchmarks print it beside their timings.
#[pyfunction]
#[pyo3(signature = (trips=20000))]
fn host_core_round_trip_ns(py: Python<'_>, trips: u32) -> Option<f64> {
    py.detach(|| aneforge::backend::sim::core_round_trip_ns(trips))
}

/// Clears the compile breaker (the wait after a failed compile).
#[pyfunction]
fn reset_compile_breaker() {
    tg::reset_compile_breaker();
}

/// Test hook: the next `n` compiles with a target fail as if the system
/// compiler had refused them, to exercise the breaker without a Mac.
#[pyfunction]
fn _inject_compile_failures(n: usize) {
    tg::inject_compile_failures(n);
}

/// Predicted vs published latency for every calibration point (a list of
/// dicts; `held_out` marks points the fit never saw).
#[pyfunction]
fn calibration_report<'py>(py: Python<'py>) -> PyResult<Vec<Bound<'py, PyDict>>> {
    let rows = table::calibration_report().map_err(tg::target_err).py()?;
    rows.iter()
        .map(|r| {
            let d = PyDict::new(py);
            d.set_item("model", &r.model)?;
            d.set_item("chip", &r.chip)?;
            d.set_item("target", r.target.to_ascii_lowercase())?;
            d.set_item("published_ms", r.published_ms)?;
            d.set_item("predicted_ms", r.predicted_ms)?;
            d.set_item("error_pct", r.error_pct)?;
            d.set_item("held_out", r.held_out)?;
            d.set_item("source", &r.source)?;
            Ok(d)
        })
        .collect()
}

pub fn register(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<PyTarget>()?;
    m.add_class::<PyEstimate>()?;
    m.add_class::<PyOpEstimate>()?;
    m.add_class::<PyViolation>()?;
    m.add_class::<PyReport>()?;
    m.add_function(wrap_pyfunction!(targets, m)?)?;
    m.add_function(wrap_pyfunction!(target, m)?)?;
    m.add_function(wrap_pyfunction!(detect_family, m)?)?;
    m.add_function(wrap_pyfunction!(project_peak, m)?)?;
    m.add_function(wrap_pyfunction!(cross_compile_check, m)?)?;
    m.add_function(wrap_pyfunction!(estimate, m)?)?;
    m.add_function(wrap_pyfunction!(host_core_round_trip_ns, m)?)?;
    m.add_function(wrap_pyfunction!(reset_compile_breaker, m)?)?;
    m.add_function(wrap_pyfunction!(_inject_compile_failures, m)?)?;
    m.add_function(wrap_pyfunction!(calibration_report, m)?)?;
    Ok(())
}
