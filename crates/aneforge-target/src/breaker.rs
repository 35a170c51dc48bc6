//! The compile breaker: after a failed compile, wait before the next one.
//!
//! The system compiler fails "environmentally" under rapid or large compiles
//! (and a process degrades after ~119 of them, research/ane-anchors.md §5);
//! hammering it right after a failure makes things worse. So the next compile
//! after a failure waits out a backoff, or (strict mode) is refused with
//! [`TargetError::CompileBackoff`] so a caller can decide for itself.
//!
//! Clock and sleeper are injected so tests never sleep, and configuration is
//! read from the environment by [`BreakerConfig::from_env`] only, so the logic
//! can be tested without racing on process-global environment variables.

use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use crate::error::TargetError;

/// Seconds to wait after a failed compile (default 15.0; 0 disables).
pub const BACKOFF_ENV: &str = "ANEFORGE_COMPILE_BACKOFF";
/// `1` → refuse with an error instead of sleeping.
pub const STRICT_ENV: &str = "ANEFORGE_COMPILE_BREAKER_STRICT";
/// `1` → no breaker at all.
pub const DISABLE_ENV: &str = "ANEFORGE_DISABLE_COMPILE_BREAKER";
/// Default backoff, seconds.
pub const DEFAULT_BACKOFF_S: f64 = 15.0;

/// How the breaker behaves; read fresh for every compile so a user can change
/// the environment between compiles.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Seconds to wait after a failure; 0 disables the wait.
    pub backoff_s: f64,
    /// Refuse instead of sleeping.
    pub strict: bool,
    /// Breaker off entirely.
    pub disabled: bool,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        BreakerConfig {
            backoff_s: DEFAULT_BACKOFF_S,
            strict: false,
            disabled: false,
        }
    }
}

impl BreakerConfig {
    /// Reads the three environment variables of the process.
    pub fn from_env() -> Result<Self, TargetError> {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// Reads configuration through `get` (a fake environment in tests).
    /// Malformed values are errors, not silently replaced by defaults.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, TargetError> {
        let backoff_s = match get(BACKOFF_ENV) {
            None => DEFAULT_BACKOFF_S,
            Some(v) if v.trim().is_empty() => DEFAULT_BACKOFF_S,
            Some(v) => match v.trim().parse::<f64>() {
                Ok(x) if x.is_finite() && x >= 0.0 => x,
                _ => {
                    return Err(TargetError::InvalidEnv {
                        var: BACKOFF_ENV,
                        value: v,
                        expected: "a finite number of seconds >= 0 (0 disables the wait)",
                    })
                }
            },
        };
        Ok(BreakerConfig {
            backoff_s,
            strict: flag(STRICT_ENV, get(STRICT_ENV))?,
            disabled: flag(DISABLE_ENV, get(DISABLE_ENV))?,
        })
    }
}

fn flag(var: &'static str, value: Option<String>) -> Result<bool, TargetError> {
    let Some(v) = value else { return Ok(false) };
    match v.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "no" | "off" => Ok(false),
        "1" | "true" | "yes" | "on" => Ok(true),
        _ => Err(TargetError::InvalidEnv {
            var,
            value: v,
            expected: "1/true/yes/on or 0/false/no/off",
        }),
    }
}

/// A monotonic clock: time since an arbitrary fixed origin.
pub trait Clock: Send + Sync {
    /// Now, as a duration since the clock's origin.
    fn now(&self) -> Duration;
}

/// Something that can block for a while (a real sleep, or a test double that
/// only records the request and advances a fake clock).
pub trait Sleeper: Send + Sync {
    /// Block for `d`.
    fn sleep(&self, d: Duration);
}

/// The real monotonic clock.
#[derive(Debug)]
pub struct SystemClock {
    origin: Instant,
}

impl Default for SystemClock {
    fn default() -> Self {
        SystemClock {
            origin: Instant::now(),
        }
    }
}

impl Clock for SystemClock {
    fn now(&self) -> Duration {
        self.origin.elapsed()
    }
}

/// The real sleeper (`std::thread::sleep`).
#[derive(Debug, Default)]
pub struct ThreadSleeper;

impl Sleeper for ThreadSleeper {
    fn sleep(&self, d: Duration) {
        std::thread::sleep(d);
    }
}

/// What `before_compile` did, so callers can log or report it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Gate {
    /// No recent failure (or breaker off): compile now.
    Clear,
    /// Waited this long, then let the compile through.
    Waited(Duration),
}

/// The breaker's state machine. One instance per process is typical
/// ([`global`]); tests build their own with fake clock and sleeper.
pub struct CompileBreaker<C: Clock, S: Sleeper> {
    clock: C,
    sleeper: S,
    last_failure: Mutex<Option<Duration>>,
}

impl<C: Clock, S: Sleeper> CompileBreaker<C, S> {
    /// A breaker with no failure recorded.
    pub fn new(clock: C, sleeper: S) -> Self {
        CompileBreaker {
            clock,
            sleeper,
            last_failure: Mutex::new(None),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, Option<Duration>> {
        // The guarded value is a plain timestamp, valid even if a holder panicked.
        self.last_failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Seconds still to wait before a compile would be let through.
    pub fn remaining(&self, cfg: &BreakerConfig) -> Duration {
        if cfg.disabled || cfg.backoff_s <= 0.0 {
            return Duration::ZERO;
        }
        let Some(failed_at) = *self.state() else {
            return Duration::ZERO;
        };
        let since = self.clock.now().saturating_sub(failed_at);
        Duration::from_secs_f64(cfg.backoff_s).saturating_sub(since)
    }

    /// Call before every compile. Waits out what is left of the backoff since
    /// the last failure (the backoff counts from the failure, so a compile
    /// issued long after a failure does not wait at all), or in strict mode
    /// returns [`TargetError::CompileBackoff`] without waiting.
    pub fn before_compile(&self, cfg: &BreakerConfig) -> Result<Gate, TargetError> {
        let remaining = self.remaining(cfg);
        if remaining.is_zero() {
            return Ok(Gate::Clear);
        }
        if cfg.strict {
            let since = Duration::from_secs_f64(cfg.backoff_s).saturating_sub(remaining);
            return Err(TargetError::CompileBackoff {
                remaining_s: remaining.as_secs_f64(),
                since_failure_s: since.as_secs_f64(),
            });
        }
        self.sleeper.sleep(remaining);
        Ok(Gate::Waited(remaining))
    }

    /// Record a failed compile: the next one waits.
    pub fn record_failure(&self) {
        let now = self.clock.now();
        *self.state() = Some(now);
    }

    /// Record a successful compile: the breaker clears.
    pub fn record_success(&self) {
        *self.state() = None;
    }

    /// Clear by hand (`af.reset_compile_breaker()`).
    pub fn reset(&self) {
        *self.state() = None;
    }

    /// Whether a failure is on record.
    pub fn is_tripped(&self) -> bool {
        self.state().is_some()
    }

    /// Runs `compile` between the gate and the bookkeeping: wait (or refuse),
    /// compile, then record the outcome. The outer error is the breaker's
    /// refusal; the inner result is the compile's own.
    pub fn run<T, E>(
        &self,
        cfg: &BreakerConfig,
        compile: impl FnOnce() -> Result<T, E>,
    ) -> Result<Result<T, E>, TargetError> {
        if cfg.disabled {
            return Ok(compile());
        }
        self.before_compile(cfg)?;
        let out = compile();
        match &out {
            Ok(_) => self.record_success(),
            Err(_) => self.record_failure(),
        }
        Ok(out)
    }
}

/// The process-wide breaker with the real clock and sleeper, shared by every
/// compile in the process (the system compiler's state is per process too).
pub fn global() -> &'static CompileBreaker<SystemClock, ThreadSleeper> {
    static G: OnceLock<CompileBreaker<SystemClock, ThreadSleeper>> = OnceLock::new();
    G.get_or_init(|| CompileBreaker::new(SystemClock::default(), ThreadSleeper))
}

/// What the core wraps every real compile in: reads the three environment
/// variables, gates on the process-wide breaker (sleeping, or refusing in
/// strict mode), runs `compile`, and records its outcome.
pub fn run_compile<T, E>(
    compile: impl FnOnce() -> Result<T, E>,
) -> Result<Result<T, E>, TargetError> {
    let cfg = BreakerConfig::from_env()?;
    global().run(&cfg, compile)
}

/// `af.reset_compile_breaker()`.
pub fn reset_compile_breaker() {
    global().reset();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A clock that only moves when told to (or when the fake sleeper sleeps).
    #[derive(Clone, Default)]
    struct FakeClock(Arc<Mutex<Duration>>);
    impl FakeClock {
        fn advance(&self, d: Duration) {
            *self.0.lock().expect("clock") += d;
        }
    }
    impl Clock for FakeClock {
        fn now(&self) -> Duration {
            *self.0.lock().expect("clock")
        }
    }

    #[derive(Clone, Default)]
    struct FakeSleeper {
        clock: FakeClock,
        slept: Arc<Mutex<Vec<Duration>>>,
    }
    impl Sleeper for FakeSleeper {
        fn sleep(&self, d: Duration) {
            self.slept.lock().expect("sleeper").push(d);
            self.clock.advance(d);
        }
    }

    fn rig() -> (
        CompileBreaker<FakeClock, FakeSleeper>,
        FakeClock,
        FakeSleeper,
    ) {
        let clock = FakeClock::default();
        let sleeper = FakeSleeper {
            clock: clock.clone(),
            slept: Arc::default(),
        };
        (
            CompileBreaker::new(clock.clone(), sleeper.clone()),
            clock,
            sleeper,
        )
    }

    fn slept(s: &FakeSleeper) -> Vec<Duration> {
        s.slept.lock().expect("sleeper").clone()
    }

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let owned: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| owned.iter().find(|(kk, _)| kk == k).map(|(_, v)| v.clone())
    }

    #[test]
    fn no_failure_no_wait() {
        let (b, _, s) = rig();
        let cfg = BreakerConfig::default();
        assert_eq!(b.before_compile(&cfg), Ok(Gate::Clear));
        assert!(slept(&s).is_empty());
    }

    #[test]
    fn failure_makes_the_next_compile_wait_the_backoff() {
        let (b, _, s) = rig();
        let cfg = BreakerConfig::default();
        let r: Result<Result<(), &str>, _> = b.run(&cfg, || Err("aned said no"));
        assert_eq!(r, Ok(Err("aned said no")));
        assert!(b.is_tripped());
        let r: Result<Result<u32, &str>, _> = b.run(&cfg, || Ok(7));
        assert_eq!(r, Ok(Ok(7)));
        assert_eq!(slept(&s), vec![Duration::from_secs(15)]);
        // success cleared it: the third compile does not wait
        assert!(!b.is_tripped());
        assert_eq!(b.before_compile(&cfg), Ok(Gate::Clear));
        assert_eq!(slept(&s).len(), 1);
    }

    #[test]
    fn wait_counts_from_the_failure() {
        let (b, clock, s) = rig();
        let cfg = BreakerConfig::default();
        b.record_failure();
        clock.advance(Duration::from_secs(10));
        assert_eq!(
            b.before_compile(&cfg),
            Ok(Gate::Waited(Duration::from_secs(5)))
        );
        clock.advance(Duration::from_secs(100));
        b.record_failure();
        clock.advance(Duration::from_secs(20));
        assert_eq!(b.before_compile(&cfg), Ok(Gate::Clear));
        assert_eq!(slept(&s), vec![Duration::from_secs(5)]);
    }

    #[test]
    fn strict_mode_refuses_instead_of_sleeping() {
        let (b, clock, s) = rig();
        let cfg = BreakerConfig {
            strict: true,
            ..BreakerConfig::default()
        };
        b.record_failure();
        clock.advance(Duration::from_secs(4));
        let mut ran = false;
        let r = b.run(&cfg, || {
            ran = true;
            Ok::<(), ()>(())
        });
        match r {
            Err(TargetError::CompileBackoff {
                remaining_s,
                since_failure_s,
            }) => {
                assert!((remaining_s - 11.0).abs() < 1e-9);
                assert!((since_failure_s - 4.0).abs() < 1e-9);
            }
            other => panic!("expected CompileBackoff, got {other:?}"),
        }
        assert!(!ran, "the compile must not run while refused");
        assert!(slept(&s).is_empty());
        assert!(b.is_tripped());
    }

    #[test]
    fn zero_backoff_and_disable_switch_it_off() {
        let (b, _, s) = rig();
        b.record_failure();
        let zero = BreakerConfig {
            backoff_s: 0.0,
            ..BreakerConfig::default()
        };
        assert_eq!(b.before_compile(&zero), Ok(Gate::Clear));
        let off = BreakerConfig {
            disabled: true,
            strict: true,
            ..BreakerConfig::default()
        };
        assert_eq!(b.before_compile(&off), Ok(Gate::Clear));
        let r: Result<Result<(), ()>, _> = b.run(&off, || Err(()));
        assert_eq!(r, Ok(Err(())));
        assert!(slept(&s).is_empty());
    }

    #[test]
    fn reset_clears_by_hand() {
        let (b, _, s) = rig();
        b.record_failure();
        b.reset();
        assert_eq!(b.before_compile(&BreakerConfig::default()), Ok(Gate::Clear));
        assert!(slept(&s).is_empty());
    }

    #[test]
    fn custom_backoff_is_honoured() {
        let (b, _, s) = rig();
        let cfg = BreakerConfig::from_lookup(env(&[(BACKOFF_ENV, "0.25")])).expect("valid");
        b.record_failure();
        b.before_compile(&cfg).expect("waits");
        assert_eq!(slept(&s), vec![Duration::from_millis(250)]);
    }

    #[test]
    fn config_from_environment_values() {
        assert_eq!(
            BreakerConfig::from_lookup(env(&[])),
            Ok(BreakerConfig::default())
        );
        let c = BreakerConfig::from_lookup(env(&[
            (BACKOFF_ENV, " 2.5 "),
            (STRICT_ENV, "1"),
            (DISABLE_ENV, "0"),
        ]))
        .expect("valid");
        assert_eq!(
            c,
            BreakerConfig {
                backoff_s: 2.5,
                strict: true,
                disabled: false
            }
        );
        let c = BreakerConfig::from_lookup(env(&[(DISABLE_ENV, "TRUE")])).expect("valid");
        assert!(c.disabled);
        for bad in ["-1", "abc", "inf", "NaN"] {
            assert!(
                matches!(
                    BreakerConfig::from_lookup(env(&[(BACKOFF_ENV, bad)])),
                    Err(TargetError::InvalidEnv { .. })
                ),
                "{bad}"
            );
        }
        assert!(BreakerConfig::from_lookup(env(&[(STRICT_ENV, "maybe")])).is_err());
    }

    #[test]
    fn backoff_error_message_names_the_remedies() {
        let e = TargetError::CompileBackoff {
            remaining_s: 3.0,
            since_failure_s: 12.0,
        };
        let m = e.to_string();
        assert!(
            m.contains("reset_compile_breaker") && m.contains("STRICT"),
            "{m}"
        );
    }

    #[test]
    fn global_breaker_resets() {
        global().reset();
        assert!(!global().is_tripped());
        reset_compile_breaker();
        assert!(!global().is_tripped());
    }
}
