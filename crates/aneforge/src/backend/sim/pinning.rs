//! Where the sim's threads run: the caller as worker 0 of rayon's global
//! pool, and each other worker pinned to a CPU of its own (Linux).
//!
//! Why the caller works: a run handed from a foreign thread to a sleeping
//! pool costs three wake-ups (the caller's to a worker, that worker's to a
//! second one, and the finished run's back to the caller), and on a
//! shared 2-vCPU VM each wake-up of an idle vCPU costs microseconds to tens
//! of microseconds. ONNX Runtime's caller takes a share of its own work.
//! Measured with the vCPUs far apart (see [`core_round_trip_ns`]): a relu
//! over 50K values 39 -> 11 us, a 1x1 conv 256->256 on 14x14 118 -> 78 us.
//!
//! Why pinning: Linux wakes a sleeping thread onto the waker's CPU when it
//! looks cache-friendly ("wake affine"), so after an idle spell two threads
//! of one run can end up time-sharing one CPU while the other stays idle,
//! and stay that way: measured on a 2-CPU VM, a 768x768x197 matmul ran at
//! one core's speed (1.13 ms, CPU time = wall time, one CPU idle) in most
//! bursts of calls that followed a 50 ms pause, and at 0.60 ms otherwise.
//! The caller itself is left free (it is the user's thread, and the rest of
//! the process, ONNX Runtime's pool for one, shares its CPUs); instead a
//! worker pinned to the CPU the caller is found on at the start of a run
//! moves to the CPU no thread holds. A sleeping thread moves for the price
//! of one system call.
//!
//! `ANEFORGE_PIN_THREADS=0` turns pinning off (e.g. when several processes
//! share the machine and should float); `ANEFORGE_CALLER_WORKER=0` keeps the
//! caller out of the pool.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Once;

/// Set once the calling thread of [`adopt_calling_thread`] became worker 0.
static ADOPTED: AtomicBool = AtomicBool::new(false);

/// Builds rayon's global pool with the calling thread as its worker 0, so
/// that runs started on this thread execute on it, with the other workers
/// taking their shares. Meant for the thread that imports the Python
/// package; runs started on any other thread are handed to the pool as
/// before (and find one worker fewer while worker 0 is busy elsewhere).
///
/// Returns false, changing nothing, with fewer than two threads, when
/// `ANEFORGE_CALLER_WORKER=0`, or when the global pool already exists.
pub fn adopt_calling_thread() -> bool {
    if std::env::var("ANEFORGE_CALLER_WORKER").is_ok_and(|v| v == "0") {
        return false;
    }
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if threads < 2 {
        return false;
    }
    let built = rayon::ThreadPoolBuilder::new().num_threads(threads).use_current_thread().build_global().is_ok();
    ADOPTED.store(built, Ordering::Release);
    if built {
        pin_workers_once();
    }
    built
}

/// Whether `rayon::broadcast` may be called from this thread. With the
/// caller adopted, worker 0 takes its share of a broadcast only while it is
/// inside the pool, so from any other thread a broadcast could wait on a
/// thread that is itself waiting for this one.
pub(crate) fn may_broadcast() -> bool {
    !ADOPTED.load(Ordering::Acquire) || rayon::current_thread_index().is_some()
}

/// Pins the pool's workers once per process (all of them, or all but the
/// adopted caller); later calls do nothing.
pub(crate) fn pin_workers_once() {
    static ONCE: Once = Once::new();
    if !may_broadcast() {
        return;
    }
    ONCE.call_once(|| {
        if std::env::var("ANEFORGE_PIN_THREADS").is_ok_and(|v| v == "0") {
            return;
        }
        #[cfg(target_os = "linux")]
        linux::pin_pool(ADOPTED.load(Ordering::Acquire));
    });
}

/// Before a run on the adopted caller: moves the worker pinned to the
/// caller's CPU, if any, to the CPU no thread holds.
pub(crate) fn make_room_for_caller() {
    #[cfg(target_os = "linux")]
    if rayon::current_thread_index() == Some(0) {
        linux::make_room_for_caller();
    }
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
    use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering};
    use std::sync::OnceLock;

    /// Which worker holds which CPU, once the pool is pinned with the
    /// caller adopted.
    struct Seats {
        /// Per worker (index 0, the caller, unused): its thread id and CPU.
        tid: Vec<AtomicI32>,
        cpu: Vec<AtomicUsize>,
        /// The allowed CPU no pinned worker holds.
        spare: AtomicUsize,
    }

    static SEATS: OnceLock<Seats> = OnceLock::new();

    /// glibc's cpu_set_t: 1024 bits.
    type CpuSet = [u64; 16];

    extern "C" {
        fn sched_getaffinity(pid: i32, size: usize, mask: *mut CpuSet) -> i32;
        fn sched_setaffinity(pid: i32, size: usize, mask: *const CpuSet) -> i32;
        fn sched_getcpu() -> i32;
    }

    /// Worker i goes to the i-th CPU the process may use; with the caller
    /// adopted as worker 0, CPU 0 stays free for it. With more workers than
    /// CPUs pinning would only add contention, so nothing is pinned.
    pub(super) fn pin_pool(adopted: bool) {
        let Some(cpus) = allowed_cpus() else { return };
        let n = rayon::current_num_threads();
        if cpus.len() < 2 || n > cpus.len() {
            return;
        }
        if !adopted {
            rayon::broadcast(|ctx| pin_to(0, cpus[ctx.index()]));
            return;
        }
        let seats = Seats {
            tid: (0..n).map(|_| AtomicI32::new(0)).collect(),
            cpu: (0..n).map(|i| AtomicUsize::new(cpus[i])).collect(),
            spare: AtomicUsize::new(cpus[0]),
        };
        rayon::broadcast(|ctx| {
            let i = ctx.index();
            if i > 0 {
                seats.tid[i].store(thread_id().unwrap_or(0), Ordering::Relaxed);
                pin_to(0, cpus[i]);
            }
        });
        if seats.tid[1..].iter().all(|t| t.load(Ordering::Relaxed) > 0) {
            let _ = SEATS.set(seats);
        }
    }

    /// See [`super::make_room_for_caller`]. Only worker 0 calls it, so the
    /// seats change under one thread at a time.
    pub(super) fn make_room_for_caller() {
        let Some(seats) = SEATS.get() else { return };
        // SAFETY: no arguments; returns the CPU or -1.
        let Ok(here) = usize::try_from(unsafe { sched_getcpu() }) else { return };
        let Some(w) = (1..seats.cpu.len()).find(|&w| seats.cpu[w].load(Ordering::Relaxed) == here) else {
            return;
        };
        let spare = seats.spare.load(Ordering::Relaxed);
        if pin_to(seats.tid[w].load(Ordering::Relaxed), spare) {
            seats.cpu[w].store(spare, Ordering::Relaxed);
            seats.spare.store(here, Ordering::Relaxed);
        }
    }

    /// The calling thread's kernel thread id, from `/proc/thread-self`
    /// (which links to `<pid>/task/<tid>`).
    fn thread_id() -> Option<i32> {
        let link = std::fs::read_link("/proc/thread-self").ok()?;
        link.file_name()?.to_str()?.parse().ok()
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

    /// Pins thread `tid` (0: the calling thread) to `cpu`. Failure (a
    /// sandbox forbidding it) only leaves the thread where it was.
    fn pin_to(tid: i32, cpu: usize) -> bool {
        let mut set: CpuSet = [0; 16];
        set[cpu / 64] |= 1 << (cpu % 64);
        // SAFETY: a valid cpu_set_t; `tid` is 0 or a thread of this process.
        unsafe { sched_setaffinity(tid, std::mem::size_of::<CpuSet>(), &set) == 0 }
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
            pin_to(0, b);
            for i in 0..trips {
                while other.0.load(Ordering::Acquire) != 2 * i + 1 {
                    std::hint::spin_loop();
                }
                other.0.store(2 * i + 2, Ordering::Release);
            }
        });
        let ping = std::thread::spawn(move || {
            pin_to(0, a);
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
