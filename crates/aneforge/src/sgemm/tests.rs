use super::*;

/// Reference product in f64, from the same strided description.
fn naive(m: usize, n: usize, k: usize, a: &[f32], a_t: bool, b: &[f32], b_t: bool) -> Vec<f32> {
    let mut c = vec![0.0f32; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f64;
            for p in 0..k {
                let av = if a_t { a[p * m + i] } else { a[i * k + p] };
                let bv = if b_t { b[j * k + p] } else { b[p * n + j] };
                s += av as f64 * bv as f64;
            }
            c[i * n + j] = s as f32;
        }
    }
    c
}

fn data(len: usize, seed: u32) -> Vec<f32> {
    // A small LCG: deterministic, no rand dependency.
    let mut x = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..len)
        .map(|_| {
            x = x.wrapping_mul(1664525).wrapping_add(1013904223);
            (x >> 8) as f32 / (1u32 << 24) as f32 - 0.5
        })
        .collect()
}

#[derive(Clone, Copy, Default)]
struct Case {
    a_t: bool,
    b_t: bool,
    accumulate: bool,
    parallel: bool,
    pack_a: bool,
    pack_b: bool,
    row_bias: bool,
    col_bias: bool,
    relu: bool,
    /// Round C to fp16 in the epilogue.
    round: bool,
    /// Operands fp16 holds exactly: packing stores them as fp16.
    half_exact: bool,
    /// Run [`split_k`] with parts of this depth instead of [`sgemm`].
    split_k: Option<usize>,
    /// Mark a packed B as cached (see [`Operand::cached`]).
    cached_b: bool,
}

fn check(m: usize, n: usize, k: usize, case: Case) {
    let Case { a_t, b_t, accumulate, parallel, .. } = case;
    let to_half = |v: Vec<f32>| -> Vec<f32> { if case.half_exact { v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() } else { v } };
    let a = to_half(data(m * k, 1));
    let b = to_half(data(k * n, 2));
    let init = data(m * n, 3);
    let rb = data(m, 4);
    let cb = data(n, 5);
    let mut want = naive(m, n, k, &a, a_t, &b, b_t);
    for i in 0..m {
        for j in 0..n {
            let w = &mut want[i * n + j];
            if accumulate {
                *w += init[i * n + j];
            }
            if case.row_bias {
                *w += rb[i];
            }
            if case.col_bias {
                *w += cb[j];
            }
            if case.relu {
                *w = w.max(0.0);
            }
        }
    }
    // A wider C row stride than n checks that ldc is honoured.
    let ldc = n + 3;
    let mut c = vec![7.0f32; m * ldc];
    for i in 0..m {
        c[i * ldc..i * ldc + n].copy_from_slice(&init[i * n..(i + 1) * n]);
    }
    let am = if a_t { Mat::cols(&a, m) } else { Mat::rows(&a, k) };
    let bm = if b_t { Mat::cols(&b, k) } else { Mat::rows(&b, n) };
    let (packed_a, packed_b);
    let lhs = if case.pack_a && packs_constants() && !a_t {
        packed_a = pack_lhs_each(&a, 1, m, k);
        let op = Operand::packed_lhs(&PackedData::new(&packed_a), m);
        assert_eq!(matches!(op, Operand::PackedF16(_)), case.half_exact || k == 0, "fp16 packing iff the values are fp16 (no values are)");
        op
    } else {
        Operand::Strided(am)
    };
    let rhs = if case.pack_b && packs_constants() {
        packed_b = pack_rhs(bm, k, n, m);
        let op = Operand::packed_rhs(&PackedData::new(&packed_b), n).cached(case.cached_b);
        let half = (case.half_exact || k == 0) && m < F32_RHS_ROWS;
        assert_eq!(matches!(op, Operand::PackedF16(_)), half, "fp16 packing iff the values are fp16 (no values are) and few rows use them");
        op
    } else {
        Operand::Strided(bm)
    };
    let epi = Epilogue {
        row_bias: case.row_bias.then_some(&rb[..]),
        col_bias: case.col_bias.then_some(&cb[..]),
        residual: None,
        clamp: case.relu.then_some((0.0, f32::INFINITY)),
        round: case.round,
    };
    match case.split_k {
        Some(per) => unsafe { split_k(m, n, k, per, lhs, rhs, c.as_mut_ptr(), ldc, accumulate, epi, &mut crate::aligned::Buf::new()) },
        None => unsafe { sgemm(m, n, k, lhs, rhs, c.as_mut_ptr(), ldc, accumulate, epi, parallel) },
    }
    for i in 0..m {
        for j in 0..n {
            let (got, w) = (c[i * ldc + j], want[i * n + j]);
            // Rounded: an fp16 value, within one fp16 step of the exact
            // result (f32 accumulation can tip a value across a tie).
            let step = if case.round { 2f32.powi(-10) * w.abs().max(2f32.powi(-14)) } else { 0.0 };
            assert!(!case.round || half::f16::from_f32(got).to_f32() == got, "[{m}x{n}x{k}] C[{i},{j}] = {got} is not an fp16 value");
            assert!((got - w).abs() <= step + 1e-4 * (1.0 + w.abs()) * (k as f32).sqrt().max(1.0), "[{m}x{n}x{k} a_t={a_t} b_t={b_t}] C[{i},{j}] = {got}, want {w}");
        }
        assert!(c[i * ldc + n..(i + 1) * ldc].iter().all(|&v| v == 7.0), "wrote past column {n} in row {i}");
    }
}

#[test]
fn matches_naive_product_on_edge_shapes() {
    for &(m, n, k) in &[(1, 1, 1), (12, 32, 7), (13, 33, 300), (5, 70, 513), (64, 100, 576), (150, 40, 9), (25, 1030, 20)] {
        for a_t in [false, true] {
            for b_t in [false, true] {
                check(m, n, k, Case { a_t, b_t, ..Case::default() });
            }
        }
        check(m, n, k, Case { accumulate: true, ..Case::default() });
    }
}

/// Whole 12-row tiles, 32 columns wide and 16 or fewer (the edge tiles
/// with a loop of their own): each kind of A (rows in place, packed
/// panel) with each kind of B (f32, fp16), depths below, at and past a
/// KC block, into a fresh or an accumulated C.
#[test]
fn whole_tiles_of_every_operand_kind_agree() {
    for n in [2 * NR, 2 * NR + 4, NR + 16] {
        for k in [0, 1, 7, KC, KC + 5] {
            for (pack_a, half_exact) in [(false, false), (false, true), (true, false), (true, true)] {
                for accumulate in [false, true] {
                    check(2 * MR, n, k, Case { pack_a, pack_b: true, half_exact, accumulate, ..Case::default() });
                }
            }
            check(2 * MR, n, k, Case { pack_b: true, half_exact: true, col_bias: true, round: true, ..Case::default() });
        }
    }
}

#[test]
fn parallel_split_by_rows_and_columns_agrees() {
    check(200, 40, 100, Case { parallel: true, row_bias: true, ..Case::default() }); // few columns: row stripes
    check(64, 784, 200, Case { parallel: true, accumulate: true, col_bias: true, ..Case::default() }); // column stripes
    check(197, 768, 64, Case { parallel: true, a_t: true, b_t: true, ..Case::default() });
    // An A read in place, a cached B: row stripes of 19 and 18 rows, cutting a tile.
    check(37, 256, 64, Case { parallel: true, pack_b: true, cached_b: true, row_bias: true, col_bias: true, ..Case::default() });
}

/// Activations times a cached packed weight split by rows, where each
/// thread's rows of A and of C lie in its own cache: a 197-row product as
/// 99 and 98 rows, though whole-tile row stripes (108 and 89) would lose
/// to columns. A weight that comes from memory is split by columns, each
/// thread reading half of it.
#[test]
fn activations_times_a_cached_weight_split_by_rows() {
    let (m, n, k) = (197, 768, 768);
    let a = data(m * k, 1);
    let packed = pack_rhs(Mat::rows(&data(k * n, 2), n), k, n, m);
    let a = Operand::Strided(Mat::rows(&a, k));
    let cached = Operand::packed_rhs(&PackedData::new(&packed), n).cached(true);
    assert!(split_cost(false, m, n, k, a, cached, 2) < split_cost(true, m, n, k, a, cached, 2));
    let cold = cached.cached(false);
    assert!(split_cost(true, m, n, k, a, cold, 2) < split_cost(false, m, n, k, a, cold, 2));
}

#[test]
fn prepacked_operands_agree() {
    for parallel in [false, true] {
        check(64, 500, 600, Case { parallel, pack_a: true, ..Case::default() });
        check(13, 45, 257, Case { parallel, accumulate: true, pack_a: true, pack_b: true, ..Case::default() });
        check(150, 20, 30, Case { parallel, pack_a: true, ..Case::default() }); // row stripes of a packed A
        check(197, 300, 520, Case { parallel, pack_b: true, b_t: true, col_bias: true, ..Case::default() });
        check(30, 1100, 300, Case { parallel, pack_b: true, ..Case::default() }); // several NC blocks
    }
}

#[test]
fn fp16_packed_operands_agree() {
    for parallel in [false, true] {
        check(64, 500, 600, Case { parallel, pack_a: true, half_exact: true, ..Case::default() });
        check(150, 20, 30, Case { parallel, pack_a: true, half_exact: true, ..Case::default() });
        check(13, 45, 257, Case { parallel, accumulate: true, pack_a: true, pack_b: true, half_exact: true, ..Case::default() });
        check(197, 301, 520, Case { parallel, pack_b: true, b_t: true, col_bias: true, half_exact: true, ..Case::default() });
    }
}

/// Parts along K: the first into C, the others into partials added before
/// the epilogue; part boundaries that cut packed operands' KC blocks.
#[test]
fn split_along_k_agrees() {
    let ops = [(false, false, false), (true, false, false), (true, false, true), (false, true, true), (true, true, false)];
    for per in [KC / 2, KC, KC + 100, 301] {
        for (pack_a, pack_b, half_exact) in ops {
            let case = Case { split_k: Some(per), pack_a, pack_b, half_exact, accumulate: true, row_bias: true, col_bias: true, relu: true, round: true, ..Case::default() };
            check(49, 70, 3 * KC + 50, case);
        }
    }
    check(13, 40, 2 * KC, Case { split_k: Some(KC), b_t: true, ..Case::default() });
}

/// K is split where the row or column split would have the threads share
/// a packed operand no smaller than C (a late convolution, a 1x1 conv as
/// wide as its input), not for a linear layer, whose activations every
/// thread reads in place.
#[test]
fn deep_products_with_small_outputs_split_along_k() {
    assert_eq!(k_split(49, 512, 4608, 2, Some(49 * 4608)), Some(2304));
    assert_eq!(k_split(256, 196, 2304, 2, Some(196 * 2304)), Some(1152));
    assert_eq!(k_split(197, 768, 768, 2, None), None);
    assert_eq!(k_split(256, 196, 256, 2, Some(196 * 256)), Some(128), "C as large as the shared operand");
    assert_eq!(k_split(512, 196, 256, 2, Some(196 * 256)), None, "C larger than the shared operand");
    assert_eq!(k_split(64, 784, 128, 2, Some(784 * 128)), None, "parts under half a KC block");
}

#[test]
fn epilogue_adds_biases_then_clamps_once() {
    // k > KC: the epilogue must run after the last K block only.
    check(30, 70, 600, Case { row_bias: true, col_bias: true, relu: true, ..Case::default() });
    check(30, 70, 600, Case { accumulate: true, row_bias: true, relu: true, pack_a: true, ..Case::default() });
}

#[test]
fn zero_depth_clears_or_keeps() {
    check(5, 6, 0, Case::default());
    check(5, 6, 0, Case { accumulate: true, row_bias: true, relu: true, ..Case::default() });
    check(5, 6, 0, Case { accumulate: true, round: true, ..Case::default() });
}

#[test]
fn epilogue_rounds_to_fp16_after_the_last_block() {
    for parallel in [false, true] {
        check(30, 70, 600, Case { parallel, round: true, col_bias: true, relu: true, ..Case::default() });
        check(197, 300, 520, Case { parallel, round: true, accumulate: true, pack_b: true, half_exact: true, ..Case::default() });
        check(64, 500, 600, Case { parallel, round: true, pack_a: true, half_exact: true, ..Case::default() });
    }
}

/// GFLOP/s of this kernel against the `gemm` crate on the shapes the sim
/// meets: `cargo test --release -p aneforge --lib sgemm::tests::throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn throughput() {
    let shapes = [(64, 3136, 576, "3x3 conv im2col"), (64, 784, 64, "winograd 64ch"), (256, 196, 256, "1x1 conv"), (197, 768, 768, "linear"), (197, 3072, 768, "mlp up"), (256, 196, 2304, "14x14 3x3 conv"), (512, 49, 4608, "late 3x3 conv"), (49, 512, 4608, "late, transposed")];
    // fp16-exact values, as the sim's weights are: packing keeps them fp16.
    let half_exact = |v: Vec<f32>| -> Vec<f32> { v.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect() };
    for &(m, n, k, what) in &shapes {
        let a = half_exact(data(m * k, 1));
        let b = half_exact(data(k * n, 2));
        let mut c = vec![0.0f32; m * n];
        let flops = 2.0 * (m * n * k) as f64;
        for parallel in [false, true] {
            let time = |f: &mut dyn FnMut()| {
                for _ in 0..3 {
                    f();
                }
                let mut best = f64::MAX;
                for _ in 0..20 {
                    let t = std::time::Instant::now();
                    f();
                    best = best.min(t.elapsed().as_secs_f64());
                }
                best
            };
            let (am, bm) = (Operand::Strided(Mat::rows(&a, k)), Operand::Strided(Mat::rows(&b, n)));
            let ours = time(&mut || unsafe { sgemm(m, n, k, am, bm, c.as_mut_ptr(), n, false, Epilogue::default(), parallel) });
            let packed = pack_lhs_each(&a, 1, m, k);
            let pd = PackedData::new(&packed);
            let pa = Operand::packed_lhs(&pd, m);
            let pre = time(&mut || unsafe { sgemm(m, n, k, pa, bm, c.as_mut_ptr(), n, false, Epilogue::default(), parallel) });
            let packed_b = pack_rhs(Mat::rows(&b, n), k, n, m);
            let pdb = PackedData::new(&packed_b);
            let pb = Operand::packed_rhs(&pdb, n);
            let pre_b = time(&mut || unsafe { sgemm(m, n, k, am, pb, c.as_mut_ptr(), n, false, Epilogue::default(), parallel) });
            let par = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
            let theirs = time(&mut || unsafe {
                gemm::gemm(m, n, k, c.as_mut_ptr(), 1, n as isize, false, a.as_ptr(), 1, k as isize, b.as_ptr(), 1, n as isize, 0.0, 1.0, false, false, false, par)
            });
            println!(
                "{what:>16} {m}x{n}x{k} par={parallel:<5}  ours {:6.1}  prepacked A {:6.1}  B {:6.1}  gemm crate {:6.1} GFLOP/s",
                flops / ours / 1e9,
                flops / pre / 1e9,
                flops / pre_b / 1e9,
                flops / theirs / 1e9
            );
        }
    }
}

/// A weight with no values (a zero-depth product) packs without panicking.
#[test]
fn empty_operands_pack() {
    let _ = pack_rhs(Mat::rows(&[], 3), 0, 3, 1);
    let _ = pack_lhs_each(&[], 1, 3, 0);
}

/// The storage header is a slot of its own: no weight value, not even one
/// with the header's bit pattern or a NaN, changes how a buffer is read.
#[test]
fn packed_storage_is_never_guessed_from_the_data() {
    if !packs_constants() {
        return;
    }
    for first in [f32::from_bits(1), f32::NAN, 0.5] {
        let mut a = vec![0.25f32; 12 * 3];
        a[0] = first;
        let p = pack_lhs_each(&a, 1, 12, 3);
        let op = Operand::packed_lhs(&PackedData::new(&p), 12);
        let want_half = first == 0.5;
        assert_eq!(matches!(op, Operand::PackedF16(_)), want_half, "first value {first:?}");
        if let Operand::Packed(pk) = op {
            assert_eq!(pk.data[0].to_bits(), first.to_bits());
        }
    }
}

/// fp16 weights stay fp16 for a few rows of activations (bound by the
/// weight's bytes) and are widened once, at packing, for many (bound by
/// the kernel, which would widen every value once per tile of rows).
#[test]
fn a_weight_many_rows_reuse_is_packed_as_f32() {
    if !packs_constants() {
        return;
    }
    let w: Vec<f32> = (0..64 * 40).map(|i| (i % 64) as f32 * 0.25).collect();
    let as_op = |rows| {
        let p = pack_rhs(Mat::rows(&w, 40), 64, 40, rows);
        matches!(Operand::packed_rhs(&PackedData::new(&p), 40), Operand::PackedF16(_))
    };
    assert!(as_op(F32_RHS_ROWS - 1));
    assert!(!as_op(F32_RHS_ROWS));
}

#[test]
fn packed_bodies_start_on_a_cache_line_when_their_buffer_does() {
    // fp16-exact values (stored as halves) and values that are not (f32).
    let exact: Vec<f32> = (0..40 * 70).map(|i| (i % 512) as f32 * 0.5).collect();
    let inexact: Vec<f32> = exact.iter().map(|v| v + 1e-4).collect();
    for w in [&exact, &inexact] {
        for (stored, ld) in [(pack_rhs(Mat::rows(w, 70), 40, 70, 1), 70usize.next_multiple_of(NR)), (pack_lhs_each(w, 1, 40, 70), 40usize.next_multiple_of(MR))] {
            let buf = crate::aligned::Buf::from_slice(&stored);
            let body = match PackedData::new(&buf).operand(ld) {
                Operand::Packed(p) => p.data.as_ptr() as usize,
                Operand::PackedF16(p) => p.data.as_ptr() as usize,
                _ => unreachable!("a stored buffer is packed"),
            };
            assert_eq!(body % 64, 0);
        }
    }
}

/// A right operand made panel by panel from a row-major [k, n] matrix,
/// as a convolution's unfolded input is.
struct RowsPanels<'a> {
    b: &'a [f32],
    n: usize,
}

impl PanelSource for RowsPanels<'_> {
    fn panel(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]) {
        for (kk, row) in dst[..kc * width].chunks_exact_mut(width).enumerate() {
            row[..cols].copy_from_slice(&self.b[(pc + kk) * self.n + j0..][..cols]);
            row[cols..].fill(0.0);
        }
    }
}

/// Products whose B is made panel by panel, with few rows (A's tiles kept
/// in L1 while the panels stream) and more (the panels kept), packed
/// weights as A, on one thread and split, deep enough to cross K blocks.
#[test]
fn panels_made_on_demand_multiply_as_a_strided_b_would() {
    for (m, n, k) in [(FEW_ROWS, 200, 147), (20, 70, 300), (FEW_ROWS + 1, 130, 40), (130, 97, 576)] {
        let (a, b) = (data(m * k, 3), data(k * n, 4));
        let want = naive(m, n, k, &a, false, &b, false);
        let src = RowsPanels { b: &b, n };
        let packed = pack_lhs_each(&a, 1, m, k);
        let pd = PackedData::new(&packed);
        for parallel in [false, true] {
            for lhs in [Operand::Strided(Mat::rows(&a, k)), Operand::packed_lhs(&pd, m)] {
                let mut c = vec![f32::NAN; m * n];
                unsafe { sgemm(m, n, k, lhs, Operand::source(&src), c.as_mut_ptr(), n, false, Epilogue::default(), parallel) };
                for (i, (g, w)) in c.iter().zip(&want).enumerate() {
                    assert!((g - w).abs() <= 1e-4 * (1.0 + w.abs()), "{m}x{n}x{k} parallel {parallel} at {i}: {g} vs {w}");
                }
            }
        }
    }
}
