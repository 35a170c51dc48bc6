//! Once compiled, a sim program allocates nothing per call: buffers are
//! planned up front, kernels keep per-axis lists on the stack, and whatever
//! work a kernel needs beyond its output lives in the program's scratch.
//!
//! A counting global allocator (all threads, so rayon workers too) watches
//! steady-state calls of one inference program and one resident training
//! step that between them touch every op family. Each allocation it sees
//! is attributed by its backtrace; `ANEFORGE_ALLOC_TRACE=1` also prints
//! the backtraces.
//!
//! Two sources are tolerated, both outside this crate:
//! * rayon's injector. A job handed to the pool from a thread outside it
//!   goes into a crossbeam `Injector`, a list of 63-slot blocks: every 63rd
//!   push allocates a block (freed once drained). There is no other way
//!   into the pool from the caller's thread, so `SimProgram::run` makes one
//!   such hand-off per run, and the test bounds these to one per 63 runs.
//! * the `gemm` crate, which allocates its packing flags and buffers on
//!   every call. `sgemm` falls back to it on machines without AVX-512
//!   only; on an AVX-512 machine the test requires it to be silent.

use aneforge::backend::sim::HostInput;
use aneforge::builder::{self as b, ConvArgs, PadSpec};
use aneforge::ops::{PadMode, ReduceKind, ResizeMode};
use aneforge::{compile, CompileOptions, Compiled, DType, Tensor};
use half::f16;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::Relaxed};

struct Counting;

static ARMED: AtomicBool = AtomicBool::new(false);
static TRACE: AtomicBool = AtomicBool::new(false);
/// Allocations made by this crate's per-call path: must stay 0.
static OURS: AtomicUsize = AtomicUsize::new(0);
static INJECTOR: AtomicUsize = AtomicUsize::new(0);
static GEMM_CRATE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    // Capturing a backtrace allocates; this keeps the tracer from counting
    // (and recursing into) its own allocations.
    static TRACING: Cell<bool> = const { Cell::new(false) };
}

fn note(size: usize) {
    if !ARMED.load(Relaxed) {
        return;
    }
    let _ = TRACING.try_with(|t| {
        if t.replace(true) {
            return;
        }
        let bt = std::backtrace::Backtrace::force_capture().to_string();
        let bucket = if bt.contains("crossbeam_deque::deque::Injector") {
            &INJECTOR
        } else if bt.contains("gemm_common::") || bt.contains("gemm_f32::") {
            &GEMM_CRATE
        } else {
            &OURS
        };
        bucket.fetch_add(1, Relaxed);
        if TRACE.load(Relaxed) {
            eprintln!("allocation of {size} bytes on {:?}:\n{bt}", std::thread::current().name());
        }
        t.set(false);
    });
}

// SAFETY: forwards every call to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc(l)
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note(l.size());
        System.alloc_zeroed(l)
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        note(new);
        System.realloc(p, l, new)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        System.dealloc(p, l)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Deterministic values in about [-1, 1].
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n).map(|i| (((i * 7919 + seed * 104_729) % 2003) as f32 / 1001.5 - 1.0) * 0.9).collect()
}

fn konst(shape: &[usize], seed: usize) -> Tensor {
    b::constant(values(shape.iter().product(), seed), shape.to_vec(), DType::F16).unwrap()
}

fn ops_in(c: &Compiled) -> BTreeSet<String> {
    c.graph.nodes.iter().map(|n| n.op.name()).collect()
}

/// Allocations of `calls` steady-state runs of `c`, by source.
#[derive(Debug)]
struct Counts {
    ours: usize,
    injector: usize,
    gemm_crate: usize,
}

/// Runs `c` a few times to warm up (rayon starts its workers and the
/// caller's latch), then counts `calls` more runs, made as the Python
/// binding makes them: fp16 host arrays in and out, converted inside the
/// run.
fn steady_state_allocations(c: &Compiled, calls: usize) -> Counts {
    let p = &c.program;
    let mut st = p.new_state();
    let host: Vec<Vec<f16>> = p.inputs.iter().enumerate().map(|(k, port)| values(port.fact.numel(), k).into_iter().map(f16::from_f32).collect()).collect();
    let ins: Vec<HostInput> = host.iter().map(|h| HostInput::F16(h)).collect();
    let mut results: Vec<Vec<f16>> = p.outputs.iter().map(|port| vec![f16::ZERO; port.fact.numel()]).collect();
    let mut outs: Vec<Option<&mut [f16]>> =
        results.iter_mut().zip(&p.outputs).map(|(r, port)| (port.fact.dtype == DType::F16).then_some(&mut r[..])).collect();
    for _ in 0..3 {
        p.run_io(&mut st, &ins, &mut outs);
    }
    for n in [&OURS, &INJECTOR, &GEMM_CRATE] {
        n.store(0, Relaxed);
    }
    ARMED.store(true, Relaxed);
    for _ in 0..calls {
        p.run_io(&mut st, &ins, &mut outs);
    }
    ARMED.store(false, Relaxed);
    Counts { ours: OURS.load(Relaxed), injector: INJECTOR.load(Relaxed), gemm_crate: GEMM_CRATE.load(Relaxed) }
}

/// Every forward op family, at sizes that take the kernels' parallel paths.
fn inference_program() -> Compiled {
    let x = b::input(&[4, 16, 32, 32], DType::F16, Some("x")).unwrap();
    let mut outs = vec![];

    // conv: Winograd (3x3 s1, >= 16 channels) with constant weights (prepared
    // at compile time), im2col (strided, grouped), 1x1, depthwise, transposed.
    let wino = b::conv(&x, &konst(&[16, 16, 3, 3], 1), Some(&konst(&[16], 2)), &ConvArgs { pad: PadSpec::Same, ..Default::default() }).unwrap();
    let wino = b::relu(&wino).unwrap();
    let strided = ConvArgs { stride: [2, 2], pad: PadSpec::Explicit([1, 1, 1, 1]), groups: 2, ..Default::default() };
    outs.push(b::conv(&wino, &konst(&[32, 8, 3, 3], 3), None, &strided).unwrap());
    outs.push(b::conv(&wino, &konst(&[8, 16, 1, 1], 4), None, &ConvArgs::default()).unwrap());
    let dw = ConvArgs { pad: PadSpec::Same, groups: 16, ..Default::default() };
    outs.push(b::conv(&x, &konst(&[16, 1, 3, 3], 5), None, &dw).unwrap());
    let up = ConvArgs { stride: [2, 2], pad: PadSpec::Explicit([1, 1, 1, 1]), ..Default::default() };
    outs.push(b::conv_transpose(&x, &konst(&[16, 4, 3, 3], 6), None, &up, [1, 1]).unwrap());

    // matmul with a broadcast batch, and with one batch.
    let a = b::reshape(&x, &[4, 8, 64, 32]).unwrap();
    outs.push(b::matmul(&a, &konst(&[8, 32, 48], 7)).unwrap());
    outs.push(b::matmul(&b::reshape(&x, &[4096, 16]).unwrap(), &konst(&[16, 24], 8)).unwrap());

    // data movement
    for mode in [PadMode::Constant(0.5), PadMode::Reflect, PadMode::Replicate] {
        outs.push(b::pad(&x, &[(1, 2), (3, 0), (2, 1)], mode).unwrap());
    }
    outs.push(b::tile(&x, &[1, 2, 1, 3]).unwrap());
    outs.push(b::transpose(&x, &[0, 2, 3, 1]).unwrap());
    outs.push(b::slice(&x, &[(None, None, 1), (Some(1), Some(15), 2), (None, None, -1), (Some(3), None, 3)]).unwrap());
    outs.push(b::concat(&[x.clone(), wino.clone()], 1).unwrap());
    outs.push(b::broadcast_to(&b::reshape(&b::reduce(&x, ReduceKind::Max, Some(&[1]), true).unwrap(), &[4, 1, 32, 32]).unwrap(), &[4, 16, 32, 32]).unwrap());
    outs.push(b::gather(&x, &[3, 0, 0, 15, 7], &[5], 1).unwrap());

    // reductions: non-contiguous axes (the general walk), rows, columns
    outs.push(b::reduce(&x, ReduceKind::Sum, Some(&[0, 2]), false).unwrap());
    outs.push(b::reduce(&x, ReduceKind::LogSumExp, Some(&[1, 3]), true).unwrap());
    outs.push(b::reduce(&x, ReduceKind::Mean, Some(&[3]), false).unwrap());
    outs.push(b::reduce(&x, ReduceKind::L2Norm, Some(&[1]), false).unwrap());
    outs.push(b::cumsum(&x, 2, false, true).unwrap());

    // normalisation
    outs.push(b::softmax(&x, -1).unwrap());
    outs.push(b::log_softmax(&x, 1).unwrap());
    outs.push(b::layer_norm(&x, &[-1], Some(&konst(&[32], 9)), Some(&konst(&[32], 10)), 1e-5).unwrap());
    outs.push(b::rms_norm(&x, &[-2, -1], None, 1e-5).unwrap());

    // pooling and resize
    outs.push(b::max_pool(&x, [3, 3], Some([2, 2]), &PadSpec::Explicit([1; 4]), false).unwrap());
    outs.push(b::avg_pool(&x, [2, 2], None, &PadSpec::Explicit([0; 4]), false, true).unwrap());
    outs.push(b::resize(&x, [48, 40], ResizeMode::Bilinear { align_corners: false }).unwrap());
    outs.push(b::upsample_nearest(&x, [2, 2]).unwrap());

    // elementwise
    let s = b::sigmoid(&x).unwrap();
    let cond = b::greater(&x, &b::scalar_like(0.0, &x).unwrap()).unwrap();
    outs.push(b::where_(&cond, &s, &b::reshape(&konst(&[32], 11), &[1, 1, 1, 32]).unwrap()).unwrap());
    outs.push(b::cast(&b::round(&b::mul_scalar(&x, 10.0).unwrap()).unwrap(), DType::I32).unwrap());

    compile(&outs, CompileOptions::default()).unwrap()
}

/// One SGD step of a small conv net, parameters resident: the backward ops
/// (conv weight and input gradients, pool, activation and gather
/// gradients) plus the update.
/// A small MLP: its steps are all below the sim's inline bounds.
fn small_program() -> Compiled {
    let x = b::input(&[4, 32], DType::F16, Some("x")).unwrap();
    let h = b::relu(&b::matmul(&x, &konst(&[32, 16], 20)).unwrap()).unwrap();
    let y = b::softmax(&b::matmul(&h, &konst(&[16, 8], 21)).unwrap(), -1).unwrap();
    compile(&[y], CompileOptions::default()).unwrap()
}

fn training_program() -> Compiled {
    let x = b::input(&[4, 16, 16, 16], DType::F16, Some("x")).unwrap();
    let w1 = b::parameter(values(16 * 16 * 9, 20).iter().map(|v| v * 0.1).collect(), vec![16, 16, 3, 3], Some("w1")).unwrap();
    let b1 = b::parameter(vec![0.0; 16], vec![16], Some("b1")).unwrap();
    let w2 = b::parameter(values(8 * 16 * 9, 21).iter().map(|v| v * 0.1).collect(), vec![8, 16, 3, 3], Some("w2")).unwrap();
    let h = b::conv(&x, &w1, Some(&b1), &ConvArgs { pad: PadSpec::Same, ..Default::default() }).unwrap();
    let h = b::gelu(&b::relu(&h).unwrap(), "tanh").unwrap();
    let h = b::max_pool(&h, [2, 2], None, &PadSpec::Explicit([0; 4]), false).unwrap();
    let strided = ConvArgs { stride: [2, 2], pad: PadSpec::Explicit([1, 1, 1, 1]), ..Default::default() };
    let h = b::conv(&h, &w2, None, &strided).unwrap();
    let h = b::gather(&h, &[0, 2, 2, 5], &[4], 1).unwrap();
    let h = b::pad(&h, &[(1, 1), (1, 1)], PadMode::Constant(0.0)).unwrap();
    let loss = b::reduce(&b::square(&h).unwrap(), ReduceKind::Mean, None, false).unwrap();
    let params = [w1, b1, w2];
    let grads = aneforge::grad(&loss, &params).unwrap();
    let updates: Vec<(Tensor, Tensor)> =
        params.iter().zip(&grads).map(|(p, g)| (p.clone(), b::sub(p, &b::mul_scalar(g, 0.01).unwrap()).unwrap())).collect();
    aneforge::train::compile_resident(&[loss], &updates, CompileOptions::default()).unwrap()
}

#[test]
fn steady_state_calls_allocate_nothing() {
    TRACE.store(std::env::var("ANEFORGE_ALLOC_TRACE").is_ok_and(|v| v != "0"), Relaxed);
    let inference = inference_program();
    let training = training_program();

    // The programs must really contain what they are meant to exercise:
    // a pass that folded an op away would make this test vacuous.
    let ops = &ops_in(&inference) | &ops_in(&training);
    for want in [
        "conv", "conv_transpose", "matmul", "pad", "tile", "transpose", "slice", "concat", "broadcast_to", "gather", "sum",
        "log_sum_exp", "mean", "l2_norm", "cumsum", "softmax", "log_softmax", "layer_norm", "rms_norm", "max_pool",
        "avg_pool", "resize_bilinear", "upsample_nearest", "where", "cast", "conv_weight_grad", "max_pool_grad",
        "relu_grad", "gelu_grad", "scatter_add",
    ] {
        assert!(ops.contains(want), "no {want} op left in the compiled programs: {ops:?}");
    }

    // Both go through the pool (the hand-off, the assisting worker); a
    // small program runs on the caller's thread, and is counted too.
    assert!(!inference.program.runs_inline() && !training.program.runs_inline(), "the programs no longer reach the pool");
    let small = small_program();
    assert!(small.program.runs_inline(), "the small program should run on the caller's thread");

    const CALLS: usize = 10;
    for (what, c) in [("inference", &inference), ("training step", &training), ("small, inline", &small)] {
        let n = steady_state_allocations(c, CALLS);
        eprintln!(
            "{what}: {CALLS} steady-state runs allocated {} times in aneforge, {} in rayon's injector, {} in the gemm crate",
            n.ours, n.injector, n.gemm_crate
        );
        assert_eq!(n.ours, 0, "{what}: {CALLS} runs allocated {n:?} (ANEFORGE_ALLOC_TRACE=1 shows where)");
        assert!(n.injector <= CALLS.div_ceil(63), "{what}: more than one hand-off to rayon per run: {n:?}");
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("avx512f") {
            assert_eq!(n.gemm_crate, 0, "{what}: the gemm crate ran although sgemm's AVX-512 kernel is available: {n:?}");
        }
    }
}
