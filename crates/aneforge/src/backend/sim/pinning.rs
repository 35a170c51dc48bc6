//! Pins each worker of rayon's global pool to its own CPU (Linux).
//!
//! Why: the sim hands every kernel's halves to the pool's workers, which
//! sleep between kernels. Linux wakes a sleeping thread onto the waker's
//! CPU when it looks cache-friendly ("wake affine"), so after an idle spell
//! both workers end up time-sharing one CPU while the other stays idle, and
//! stay that way: measured on a 2-CPU VM, a 768x768x197 matmul ran at one
//! core's speed (1.13 ms, CPU time = wall time, one CPU idle) in most
//! bursts of calls that followed a 50 ms pause, and at 0.60 ms otherwise.
//! ONNX Runtime pins its intra-op threads and never showed it.
//!
//! `ANEFORGE_PIN_THREADS=0` turns it off (e.g. when several processes
//! share the machine and should float).

use std::sync::Once;

/// Pins the pool's workers once per process; later calls do nothing.
pub(crate) fn pin_workers_once() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        if std::env::var("ANEFORGE_PIN_THREADS").is_ok_and(|v| v == "0") {
            return;
        }
        #[cfg(target_os = "linux")]
        linux::pin_pool();
    });
}

/// Median time, in nanoseconds, for a cache line to go from one of this
/// process's CPUs to another and back: two threads pinned to the first two
/// CPUs it may use hand a counter to each other `trips` times. `None` with
/// fewer than two CPUs, or off Linux.
///
/// Why it exists: on shared 2-vCPU VMs the host sometimes places the two
/// vCPUs far apart, and every value one core writes and the other reads
/// then costs ~5x more (measured 0.1-0.3 us round trips, and 0.4-1.1 us).
/// The sim hands data between its threads at every kernel and slows by a
/// fifth to a third; ONNX Runtime barely changes. Benchmarks print this
/// beside their ratios so a reader can tell which kind of machine they saw.
pub fn core_round_trip_ns(trips: u32) -> Option<f64> {
    #[cfg(target_os = "linux")]
    {
        linux::round_trip_ns(trips)
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = trips;
        None
    }
}

#[cfg(target_os = "linux")]
mod linux {
    /// glibc's cpu_set_t: 1024 bits.
    type CpuSet = [u64; 16];

    extern "C" {
        fn sched_getaffinity(pid: i32, size: usize, mask: *mut CpuSet) -> i32;
        fn sched_setaffinity(pid: i32, size: usize, mask: *const CpuSet) -> i32;
    }

    /// Worker i goes to the i-th CPU the process may use. With more
    /// workers than CPUs pinning would only add contention, so nothing is
    /// pinned.
    pub(super) fn pin_pool() {
        let Some(cpus) = allowed_cpus() else { return };
        if cpus.len() < 2 || rayon::current_num_threads() > cpus.len() {
            return;
        }
        rayon::broadcast(|ctx| pin_to(cpus[ctx.index()]));
    }

    /// The CPUs this thread may run on.
    fn allowed_cpus() -> Option<Vec<usize>> {
        let mut allowed: CpuSet = [0; 16];
        // SAFETY: `allowed` is a writable cpu_set_t-sized buffer; pid 0 is this thread.
        if unsafe { sched_getaffinity(0, std::mem::size_of::<CpuSet>(), &mut allowed) } != 0 {
            return None;
        }
        Some((0..1024).filter(|&c| allowed[c / 64] >> (c % 64) & 1 == 1).collect())
    }

    /// Pins the calling thread to `cpu`. Failure (a sandbox forbidding
    /// it) only leaves the thread floating.
    fn pin_to(cpu: usize) {
        let mut set: CpuSet = [0; 16];
        set[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: a valid cpu_set_t for the calling thread.
        unsafe { sched_setaffinity(0, std::mem::size_of::<CpuSet>(), &set) };
    }

    /// See [`super::core_round_trip_ns`].
    pub(super) fn round_trip_ns(trips: u32) -> Option<f64> {
        use std::sync::atomic::{AtomicU32, Ordering};
        use std::sync::Arc;
        /// Alone on its cache lines (and the adjacent-line prefetcher's pair).
        #[repr(align(128))]
        struct Line(AtomicU32);
        let cpus = allowed_cpus()?;
        let [a, b] = [*cpus.first()?, *cpus.get(1)?];
        let line = Arc::new(Line(AtomicU32::new(0)));
        let other = Arc::clone(&line);
        let pong = std::thread::spawn(move || {
            pin_to(b);
            for i in 0..trips {
                while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                other.0.store(2 * i + 2, Ordering::Release);
            }
        });
        let ping = std::thread::spawn(move || {
            pin_to(a);
            let mut times = Vec::with_capacity(trips as usize);
            for i in 0..trips {
                let t = std::time::Instant::now();
                line.0.store(2 * i + 1, Ordering::Release);
                while line.0.load(Ordering::Acquire) != 2 * i + 2 {
                    std::hint::spin_loop();
                }
                times.push(t.elapsed().as_nanos() as f64);
            }
            times
        });
        let mut times = ping.join().ok()?;
        pong.join().ok()?;
        times.sort_by(f64::total_cmp);
        times.get(times.len() / 2).copied()
    }
}
