//! The `ane` backend's runtime: hands MIL text and weights to the system's
//! Neural Engine compiler and runs the compiled program on IOSurfaces.
//!
//! On Apple hosts ([`apple`], behind `cfg(target_vendor = "apple")`) this
//! is the `_ANEInMemoryModelDescriptor` / `_ANEInMemoryModel` path of the
//! private AppleNeuralEngine framework (ane-anchors §4): the framework is
//! `dlopen`ed and its classes looked up at run time, so nothing links
//! against it and a missing or changed framework is an error, not a crash
//! at load. Elsewhere the same API is a stub whose every entry point
//! returns [`AneError::Unavailable`]; callers see no `cfg`.
//!
//! What is shared (and tested on every host): the content hash that keys
//! the per-process cache of compiled programs, and the per-process compile
//! budget. The system daemon degrades after about 119 compiles in one
//! process (silent failures, then instability), so ANEForge stops at
//! [`DEFAULT_COMPILE_BUDGET`] with an error saying what to do instead.
//!
//! This path is type-checked for `aarch64-apple-darwin` in CI but has not
//! been run: the development hosts have no Neural Engine.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

#[cfg(target_vendor = "apple")]
mod apple;
#[cfg(target_vendor = "apple")]
use apple as platform;
#[cfg(not(target_vendor = "apple"))]
mod stub;
#[cfg(not(target_vendor = "apple"))]
use stub as platform;

/// Compiles allowed per process before ANEForge refuses more.
pub const DEFAULT_COMPILE_BUDGET: usize = 100;

/// What can go wrong on the engine path. Each maps to one core error (and
/// so one Python exception).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AneError {
    /// No Neural Engine path on this host (not macOS on Apple silicon, or
    /// the private framework or one of its classes is missing).
    #[error("{0}")]
    Unavailable(String),
    /// The per-process compile budget is spent.
    #[error("the per-process Neural Engine compile budget is spent ({used} of {budget} compiles): the system compiler becomes unreliable after ~119 compiles in one process. Reuse compiled Nets (identical programs are cached), restart the process (checkpoint and exec), or raise ANEFORGE_ANE_COMPILE_BUDGET at your own risk")]
    BudgetSpent { used: usize, budget: usize },
    /// The system compiler or loader refused the program.
    #[error("Neural Engine compile failed: {0}")]
    Compile(String),
    /// Evaluation failed (wrong surface sizes, engine error status).
    #[error("Neural Engine evaluation failed: {0}")]
    Eval(String),
}

/// Whether this host can run programs on the Neural Engine: macOS on Apple
/// silicon with the private framework and its classes present.
pub fn available() -> bool {
    platform::available()
}

/// Why [`available`] is false, and what would be needed.
pub fn unavailable_reason() -> String {
    platform::unavailable_reason()
}

/// Surface sizes a program is compiled for (from the I/O plan): all inputs
/// one size, all outputs one size, in binding order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Surfaces {
    pub inputs: usize,
    pub input_bytes: usize,
    pub outputs: usize,
    pub output_bytes: usize,
}

/// A compiled, loaded program. Cloning shares it; it is unloaded when the
/// last clone (and the cache entry) is gone.
#[derive(Clone)]
pub struct Model {
    inner: Arc<platform::Loaded>,
    /// The content hash it is cached under.
    pub key: String,
    pub surfaces: Surfaces,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Model({})", self.key)
    }
}

impl Model {
    /// Compiles and loads `mil` with its weight files (`(name inside
    /// weights/, bytes)`), or returns the cached program with the same
    /// content. Only real compiles count against the budget.
    pub fn compile(mil: &str, weights: &[(String, Vec<u8>)], surfaces: Surfaces) -> Result<Model, AneError> {
        if !available() {
            return Err(AneError::Unavailable(platform::unavailable_reason()));
        }
        let key = content_key(mil, weights);
        let cache = cache();
        if let Some(m) = cache.lock().map_err(|_| AneError::Compile("the program cache was poisoned".into()))?.get(&key) {
            return Ok(m.clone());
        }
        take_budget()?;
        let inner = Arc::new(platform::compile(mil, weights, &surfaces)?);
        let m = Model { inner, key: key.clone(), surfaces };
        if let Ok(mut c) = cache.lock() {
            c.insert(key, m.clone());
        }
        Ok(m)
    }

    /// Runs the program: `inputs` are the packed input surfaces in binding
    /// order (each `surfaces.input_bytes`); returns the output surfaces.
    pub fn eval(&self, inputs: &[Vec<u8>]) -> Result<Vec<Vec<u8>>, AneError> {
        if inputs.len() != self.surfaces.inputs || inputs.iter().any(|s| s.len() != self.surfaces.input_bytes) {
            return Err(AneError::Eval(format!(
                "expected {} input surfaces of {} bytes",
                self.surfaces.inputs, self.surfaces.input_bytes
            )));
        }
        platform::eval(&self.inner, inputs, &self.surfaces)
    }

    /// Drops this program from the cache (it is unloaded once no Net holds
    /// it).
    pub fn evict(&self) {
        if let Ok(mut c) = cache().lock() {
            c.remove(&self.key);
        }
    }
}

fn cache() -> &'static Mutex<HashMap<String, Model>> {
    static CACHE: OnceLock<Mutex<HashMap<String, Model>>> = OnceLock::new();
    CACHE.get_or_init(|| Mutex::new(HashMap::new()))
}

static USED: AtomicUsize = AtomicUsize::new(0);

/// The budget in force: `ANEFORGE_ANE_COMPILE_BUDGET` or the default.
pub fn compile_budget() -> usize {
    std::env::var("ANEFORGE_ANE_COMPILE_BUDGET").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(DEFAULT_COMPILE_BUDGET)
}

/// Compiles made so far in this process.
pub fn compiles_used() -> usize {
    USED.load(Ordering::SeqCst)
}

fn take_budget() -> Result<(), AneError> {
    take_budget_from(&USED, compile_budget())
}

fn take_budget_from(used: &AtomicUsize, budget: usize) -> Result<(), AneError> {
    used.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| (n < budget).then_some(n + 1))
        .map(|_| ())
        .map_err(|n| AneError::BudgetSpent { used: n, budget })
}

/// A content hash of the program and its weights (two independent 64-bit
/// FNV-1a lanes, hex): equal programs share one compile.
pub fn content_key(mil: &str, weights: &[(String, Vec<u8>)]) -> String {
    let mut a = Fnv(0xcbf2_9ce4_8422_2325);
    let mut b = Fnv(0x6c62_272e_07bb_0142);
    let mut feed = |bytes: &[u8]| {
        a.write(&(bytes.len() as u64).to_le_bytes());
        a.write(bytes);
        b.write(bytes);
        b.write(&(bytes.len() as u64).to_le_bytes());
    };
    feed(mil.as_bytes());
    for (name, data) in weights {
        feed(name.as_bytes());
        feed(data);
    }
    format!("{:016x}{:016x}", a.0, b.0)
}

struct Fnv(u64);

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &x in bytes {
            self.0 ^= u64::from(x);
            self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_key_depends_on_text_weights_and_names() {
        let w = vec![("w0.bin".to_string(), vec![1u8, 2, 3])];
        let k = content_key("program(1.3)", &w);
        assert_eq!(k, content_key("program(1.3)", &w));
        assert_ne!(k, content_key("program(1.0)", &w));
        assert_ne!(k, content_key("program(1.3)", &[("w1.bin".to_string(), vec![1, 2, 3])]));
        assert_ne!(k, content_key("program(1.3)", &[("w0.bin".to_string(), vec![1, 2, 4])]));
        assert_eq!(k.len(), 32);
    }

    #[test]
    fn the_budget_runs_out_with_a_clear_error() {
        let used = AtomicUsize::new(0);
        for _ in 0..3 {
            take_budget_from(&used, 3).expect("within budget");
        }
        let e = take_budget_from(&used, 3).expect_err("spent");
        assert_eq!(e, AneError::BudgetSpent { used: 3, budget: 3 });
        assert!(e.to_string().contains("restart the process"));
    }

    #[cfg(not(target_vendor = "apple"))]
    #[test]
    fn off_apple_everything_is_unavailable() {
        assert!(!available());
        let s = Surfaces { inputs: 1, input_bytes: 49152, outputs: 1, output_bytes: 49152 };
        match Model::compile("program(1.3)", &[], s) {
            Err(AneError::Unavailable(m)) => assert!(m.contains("macOS"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(compiles_used(), 0);
    }
}
