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
        let mut allowed: CpuSet = [0; 16];
        // SAFETY: `allowed` is a writable cpu_set_t-sized buffer; pid 0 is this thread.
        if unsafe { sched_getaffinity(0, std::mem::size_of::<CpuSet>(), &mut allowed) } != 0 {
            return;
        }
        let cpus: Vec<usize> = (0..1024).filter(|&c| allowed[c / 64] >> (c % 64) & 1 == 1).collect();
        if cpus.len() < 2 || rayon::current_num_threads() > cpus.len() {
            return;
        }
        rayon::broadcast(|ctx| {
            let cpu = cpus[ctx.index()];
            let mut set: CpuSet = [0; 16];
            set[cpu / 64] |= 1 << (cpu % 64);
            // SAFETY: a valid cpu_set_t for the calling thread. Failure (a
            // sandbox forbidding it) only leaves the thread floating.
            unsafe { sched_setaffinity(0, std::mem::size_of::<CpuSet>(), &set) };
        });
    }
}
