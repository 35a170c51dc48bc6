//! The sim's f32 GEMM: C = A·B (optionally + C) on strided operands.
//!
//! Why our own: the `gemm` crate re-packs both operands on every call and
//! splits work across threads in a way that leaves the second core half
//! idle on the shapes convolutions produce (64×3136×576). This one is the
//! classic three-level blocking (KC × NC panel of B in L2, MC × KC block of
//! A, a register tile of MR × NR), an AVX-512 register kernel, packing
//! buffers that live per thread and only ever grow (so a warm program does
//! not allocate), and threading by whole column (or row) stripes so each
//! core owns its output and its packed panels (or, for a deep product with
//! a small output, by depth: see [`split_k`]). Operands that are compile
//! time constants can be packed once ([`pack_lhs_each`], [`pack_rhs`]) and
//! skip packing per call (a packed fp16 B is widened by the kernel's own
//! loads); a row-major A is never packed, the kernel reads its rows in
//! place. Machines without AVX-512 fall back to the `gemm` crate.

#[cfg(target_arch = "x86_64")]
mod avx512;
/// Lane masks for vector loops' tails (the Winograd transforms use it too).
#[cfg(target_arch = "x86_64")]
pub(crate) use avx512::lane_mask;

use crate::aligned::Buf;
use crate::numerics::{add_residual_serial, f16_to_f32_serial, f32_to_f16_serial};
use half::f16;
use rayon::prelude::*;
use std::cell::RefCell;

/// Rows of the register tile (broadcast operand).
pub(crate) const MR: usize = 12;
/// Columns of the register tile: two 16-lane vectors.
pub(crate) const NR: usize = 32;
/// Depth of a packed block: an A micro-panel (MR×KC) plus a B micro-panel
/// (KC×NR) fit L1 together.
const KC: usize = 256;
/// Rows of A packed per block (L2 resident).
const MC: usize = 144;
/// Columns of B packed per block.
const NC: usize = 1024;
/// Work (m·n·k) below which threading costs more than it saves.
const PAR_WORK: usize = 1 << 18;

/// A read-only strided matrix: element (i, j) is at `ptr + i*rs + j*cs`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Mat {
    pub ptr: *const f32,
    pub rs: isize,
    pub cs: isize,
}

// SAFETY: a `Mat` is only read, and callers keep the data alive for the call.
unsafe impl Send for Mat {}
unsafe impl Sync for Mat {}

impl Mat {
    /// A row-major [rows, cols] matrix of `data` (cols = row stride).
    pub fn rows(data: &[f32], ld: usize) -> Mat {
        Mat { ptr: data.as_ptr(), rs: ld as isize, cs: 1 }
    }
    /// The transpose view of a row-major matrix with row stride `ld`.
    pub fn cols(data: &[f32], ld: usize) -> Mat {
        Mat { ptr: data.as_ptr(), rs: 1, cs: ld as isize }
    }
    #[inline(always)]
    unsafe fn at(&self, i: usize, j: usize) -> f32 {
        *self.ptr.offset(i as isize * self.rs + j as isize * self.cs)
    }
    unsafe fn offset(&self, i: usize, j: usize) -> Mat {
        Mat { ptr: self.ptr.offset(i as isize * self.rs + j as isize * self.cs), ..*self }
    }
}

struct OutPtr<T>(*mut T);
// Copy without requiring `T: Copy` (a derive would).
impl<T> Clone for OutPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for OutPtr<T> {}
// SAFETY: every task writes a disjoint stripe of C, or panel of a packed operand.
unsafe impl<T> Send for OutPtr<T> {}
unsafe impl<T> Sync for OutPtr<T> {}

/// Packs `count` consecutive row-major [m, k] left operands of `a` (a conv
/// weight per group, Winograd's 36 transformed ones) into one buffer in the
/// layout the kernel streams, so calls passing them skip packing; matrix g
/// is `Operand::packed_lhs(..).nth(g, packed_len(m, k))`.
pub(crate) fn pack_lhs_each(a: &[f32], count: usize, m: usize, k: usize) -> Vec<f32> {
    stored((0..count).flat_map(|g| pack_lhs_f32(&a[g * m * k..(g + 1) * m * k], m, k)).collect(), true)
}

/// Elements of one packed [m, k] left operand.
pub(crate) fn packed_len(m: usize, k: usize) -> usize {
    m.next_multiple_of(MR) * k
}

fn pack_lhs_f32(a: &[f32], m: usize, k: usize) -> Vec<f32> {
    let ld = m.next_multiple_of(MR);
    let mut data = vec![0.0; ld * k];
    let src = Mat::rows(a, k);
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        // SAFETY: a is [m, k]; the block stays in bounds.
        unsafe { pack_a(src.offset(0, pc), m, kc, &mut data[ld * pc..ld * (pc + kc)]) };
    }
    data
}

/// Packs a [k, n] right operand (e.g. a constant linear weight; `b` gives
/// its strides) that will multiply `rows` rows of A into the layout the
/// kernel streams: fp16 when its values are fp16 values and too few rows
/// (below [`F32_RHS_ROWS`]) reuse each one for the kernel to be bound by
/// anything but its bytes, else f32.
pub(crate) fn pack_rhs(b: Mat, k: usize, n: usize, rows: usize) -> Vec<f32> {
    stored(pack_rhs_f32(b, k, n), rows < F32_RHS_ROWS)
}

/// Rows of A from which a packed constant B is kept as f32 even when fp16
/// holds its values. Widening fp16 as it loads (`vcvtph2ps`) competes with
/// the FMAs for their ports, which costs whenever A's rows are many enough
/// to keep the kernel compute-bound: the 197x768x768 product (a ViT-B/16
/// linear, 98 rows a thread) ran 0.95x the time with f32, ViT-B/16 too
/// (A/B between builds; single-thread best runs 170 GFLOP/s against 148;
/// no hardware counters here to show the ports). Fewer rows are bound by B's bytes,
/// which fp16 halves: a late 3x3 conv run transposed (49 rows, 4.7 MB of
/// f32 weights) and a short sequence's linears keep fp16.
pub(crate) const F32_RHS_ROWS: usize = 96;

/// Packs `count` consecutive row-major [k, n] right operands of `b` into
/// one buffer, as [`pack_lhs_each`] does left ones: matrix g is
/// `Operand::packed_rhs(..).nth(g, packed_rhs_len(k, n))`.
pub(crate) fn pack_rhs_each(b: &[f32], count: usize, k: usize, n: usize) -> Vec<f32> {
    stored((0..count).flat_map(|g| pack_rhs_f32(Mat::rows(&b[g * k * n..(g + 1) * k * n], n), k, n)).collect(), true)
}

/// Elements of one packed [k, n] right operand.
pub(crate) fn packed_rhs_len(k: usize, n: usize) -> usize {
    n.next_multiple_of(NR) * k
}

fn pack_rhs_f32(b: Mat, k: usize, n: usize) -> Vec<f32> {
    let ld = n.next_multiple_of(NR);
    let mut data = vec![0.0; ld * k];
    for pc in (0..k).step_by(KC) {
        let kc = KC.min(k - pc);
        for (p, panel) in data[ld * pc..ld * (pc + kc)].chunks_exact_mut(NR * kc).enumerate() {
            // SAFETY: the caller's `b` addresses a valid [k, n] matrix.
            unsafe { pack_b_panel(b.offset(pc, p * NR), kc, NR.min(n - p * NR), panel) };
        }
    }
    data
}

/// An operand packed ahead of time by [`pack_lhs_each`] / [`pack_rhs`]: `ld` is
/// the padded length of its outer (m or n) dimension, `off` the first row
/// (or column) this call uses, a multiple of MR (or NR); `k` its depth
/// and `k0` the first depth this call uses (any, see [`Packed::block`]).
/// `T` is f32, or fp16 for weights whose values fp16 holds exactly (half
/// the memory traffic: a model's weights do not stay in cache between calls).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Packed<'a, T> {
    data: &'a [T],
    ld: usize,
    off: usize,
    k: usize,
    k0: usize,
    /// Expected to be in cache when the call starts (see [`Operand::cached`]).
    cached: bool,
}

impl<'a, T> Packed<'a, T> {
    fn new(data: &'a [T], ld: usize, k: usize) -> Packed<'a, T> {
        Packed { data, ld, off: 0, k, k0: 0, cached: false }
    }
    /// Depths `pc..pc + kc` (from `k0`), which lie inside one KC block,
    /// from outer index `i` on, as micro-panels `tile` wide: the first
    /// panel, and the distance from one panel to the next in rows of
    /// `tile` (the block's depth, which exceeds `kc` when the call uses
    /// only part of the block, as a split along K does).
    fn block(&self, pc: usize, kc: usize, i: usize, tile: usize) -> (&'a [T], usize) {
        let at = self.k0 + pc;
        let start = at / KC * KC;
        let depth = KC.min(self.k - start);
        debug_assert!(at + kc <= start + depth, "depths {at}..{} cross a packed block", at + kc);
        (&self.data[self.ld * start + (self.off + i) * depth + (at - start) * tile..], depth)
    }
    /// Depth before the next KC block boundary.
    fn to_boundary(&self, pc: usize) -> usize {
        KC - (self.k0 + pc) % KC
    }
}

/// An operand that writes its own micro-panels instead of being read from
/// memory. A convolution's im2col columns are made this way, a panel at a
/// time straight into the packing buffer, so the unfolded matrix (7 MB for
/// a ResNet stem) never goes out to memory and back.
///
/// It is a [k, n] matrix; as a right operand its panels are NR columns
/// wide, as a left operand it stands for its transpose, [n, k], and its
/// panels are MR of those rows: the same layout at another width.
pub(crate) trait PanelSource: Sync {
    /// Rows `pc..pc + kc` and columns `j0..j0 + cols` (cols ≤ width ≤ NR)
    /// as one micro-panel: element (kk, j) at `dst[kk * width + j]`, zero
    /// for j ≥ cols.
    fn panel(&self, pc: usize, kc: usize, j0: usize, cols: usize, width: usize, dst: &mut [f32]);
    /// Whether every value it makes is an fp16 value, so a copy packed as
    /// fp16 loses nothing.
    fn fp16_exact(&self) -> bool {
        false
    }
}

/// A [`PanelSource`] from row (k) `row0` and column `col0` on.
#[derive(Clone, Copy)]
pub(crate) struct Source<'a> {
    src: &'a dyn PanelSource,
    row0: usize,
    col0: usize,
}

impl std::fmt::Debug for Source<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Source(from row {}, column {})", self.row0, self.col0)
    }
}

/// A GEMM operand: strided in memory, packed ahead of time, or generated
/// panel by panel.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Operand<'a> {
    Strided(Mat),
    Packed(Packed<'a, f32>),
    PackedF16(Packed<'a, f16>),
    Source(Source<'a>),
}

impl<'a> Operand<'a> {
    /// A [`pack_lhs_each`] result for `m` rows (fp16 if [`pack_lhs_each`] made it so).
    pub fn packed_lhs(p: &PackedData<'a>, m: usize) -> Operand<'a> {
        p.operand(m.next_multiple_of(MR))
    }
    /// An operand made by `src` (AVX-512 machines only: the fallback GEMM
    /// reads strided memory). As a left operand it is `src`'s transpose.
    pub fn source(src: &'a dyn PanelSource) -> Operand<'a> {
        Operand::Source(Source { src, row0: 0, col0: 0 })
    }
    /// A [`pack_rhs`] result for `n` columns.
    pub fn packed_rhs(p: &PackedData<'a>, n: usize) -> Operand<'a> {
        p.operand(n.next_multiple_of(NR))
    }
    /// Marks a packed operand as found in cache from one call to the next
    /// (its program's weights take at most half the last-level cache): a threaded
    /// call may then have every thread read all of it (see [`split_cost`]).
    /// Other operands are unchanged.
    pub fn cached(self, yes: bool) -> Operand<'a> {
        match self {
            Operand::Packed(p) => Operand::Packed(Packed { cached: yes, ..p }),
            Operand::PackedF16(p) => Operand::PackedF16(Packed { cached: yes, ..p }),
            other => other,
        }
    }
    /// Matrix `g` of a [`pack_lhs_each`] result whose matrices are each
    /// [`packed_len`] elements long.
    pub fn nth(self, g: usize, len: usize) -> Operand<'a> {
        match self {
            Operand::Packed(p) => Operand::Packed(Packed { data: &p.data[g * len..], k: len / p.ld, ..p }),
            Operand::PackedF16(p) => Operand::PackedF16(Packed { data: &p.data[g * len..], k: len / p.ld, ..p }),
            Operand::Strided(_) | Operand::Source(_) => unreachable!("only packed operands hold several matrices"),
        }
    }
    /// The operand from outer index `i` on (row of A or column of B);
    /// `i` must be a multiple of the tile size when packed.
    ///
    /// # Safety
    /// `i` lies inside the operand.
    pub unsafe fn skip(self, i: usize, lhs: bool) -> Operand<'a> {
        match self {
            Operand::Strided(s) => Operand::Strided(if lhs { s.offset(i, 0) } else { s.offset(0, i) }),
            Operand::Packed(p) => Operand::Packed(Packed { off: p.off + i, ..p }),
            Operand::PackedF16(p) => Operand::PackedF16(Packed { off: p.off + i, ..p }),
            Operand::Source(s) => Operand::Source(Source { col0: s.col0 + i, ..s }),
        }
    }
    /// The operand from depth `k0` on (column of A or row of B).
    unsafe fn skip_k(self, k0: usize, lhs: bool) -> Operand<'a> {
        match self {
            Operand::Strided(s) => Operand::Strided(if lhs { s.offset(0, k0) } else { s.offset(k0, 0) }),
            Operand::Packed(p) => Operand::Packed(Packed { k0: p.k0 + k0, ..p }),
            Operand::PackedF16(p) => Operand::PackedF16(Packed { k0: p.k0 + k0, ..p }),
            Operand::Source(s) => Operand::Source(Source { row0: s.row0 + k0, ..s }),
        }
    }
}

/// A packed operand as it is stored between calls. It travels as an f32
/// buffer (the sim keeps prepared data that way) behind a header whose
/// first slot says how the rest is stored: f32 values, or two fp16 halves
/// per slot.
pub(crate) struct PackedData<'a>(&'a [f32]);

/// Header slot values (bit patterns, so no weight value can be mistaken
/// for one: the header is never data).
const F32_HEADER: u32 = 0;
const F16_HEADER: u32 = 1;
/// Slots the header takes: a cache line, so that the body of a buffer
/// stored on one starts on the next (the sim aligns prepared data).
const HEADER: usize = 16;

impl<'a> PackedData<'a> {
    pub fn new(data: &'a [f32]) -> PackedData<'a> {
        PackedData(data)
    }
    fn operand(&self, ld: usize) -> Operand<'a> {
        let body = &self.0[HEADER..];
        match self.0[0].to_bits() {
            // An odd count of halves was padded by one, less than `ld`.
            F16_HEADER => Operand::PackedF16(Packed::new(bytemuck::cast_slice(body), ld, body.len() * 2 / ld)),
            _ => Operand::Packed(Packed::new(body, ld, body.len() / ld)),
        }
    }
}

/// The stored form of a packed buffer: fp16 when `half` allows it and
/// every value survives the round trip (and all are finite), else f32.
fn stored(data: Vec<f32>, half: bool) -> Vec<f32> {
    let half_ok = half && data.iter().all(|&x| x.is_finite() && f16::from_f32(x).to_f32().to_bits() == x.to_bits());
    if !half_ok {
        let mut out = Vec::with_capacity(HEADER + data.len());
        out.push(f32::from_bits(F32_HEADER));
        out.resize(HEADER, 0.0);
        out.extend_from_slice(&data);
        return out;
    }
    let mut halves: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
    if halves.len() % 2 == 1 {
        halves.push(f16::ZERO);
    }
    let mut out = Vec::with_capacity(HEADER + halves.len() / 2);
    out.push(f32::from_bits(F16_HEADER));
    out.resize(HEADER, 0.0);
    // Two halves a word, in memory order. Not `cast_slice`: a Vec<f16>
    // need only be 2-aligned (an empty one never is), and it panicked.
    out.extend(halves.chunks_exact(2).map(|p| {
        let (lo, hi) = (p[0].to_ne_bytes(), p[1].to_ne_bytes());
        f32::from_bits(u32::from_ne_bytes([lo[0], lo[1], hi[0], hi[1]]))
    }));
    out
}

/// What the kernel applies to a finished tile: a bias per row or per
/// column, then a residual, then a clamp (relu, relu6 and clip are
/// clamps), then rounding to fp16 (ties to even) while the tile is still
/// in registers: the sim's storage rounding, without a pass of its own
/// over the output.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Epilogue<'a> {
    pub row_bias: Option<&'a [f32]>,
    pub col_bias: Option<&'a [f32]>,
    pub residual: Option<Residual<'a>>,
    pub clamp: Option<(f32, f32)>,
    pub round: bool,
}

/// A tensor added to an op's result before its activation (a residual
/// connection fused into a conv), read at the result's positions.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Residual<'a> {
    pub data: &'a [f32],
    /// Round to fp16 before the add and after it, as the unfused op and
    /// add would store their results.
    pub round: bool,
}

impl Residual<'_> {
    /// Adds the residual's values from `at` on to an op's finished values
    /// `out` outside the GEMM kernel, in the kernel's order, then `clamp`.
    /// Rounds at the end too when the residual does, so a caller's own
    /// rounding pass is redundant.
    pub fn add_to(self, out: &mut [f32], at: usize, clamp: Option<(f32, f32)>) {
        add_residual_serial(out, &self.data[at..at + out.len()], clamp, self.round);
    }
}

impl<'a> Epilogue<'a> {
    /// The epilogue of the block of C that starts at (rows, cols), C's
    /// row stride being `ldc`.
    fn skip(self, rows: usize, cols: usize, ldc: usize) -> Epilogue<'a> {
        Epilogue {
            row_bias: self.row_bias.map(|b| &b[rows..]),
            col_bias: self.col_bias.map(|b| &b[cols..]),
            residual: self.residual.map(|r| Residual { data: &r.data[rows * ldc + cols..], ..r }),
            ..self
        }
    }

    /// One finished value at row i, column j (row stride `ldc`): bias,
    /// residual, clamp and rounding, in the kernel's order.
    fn apply(&self, v: f32, i: usize, j: usize, ldc: usize) -> f32 {
        let mut v = v + self.row_bias.map_or(0.0, |b| b[i]) + self.col_bias.map_or(0.0, |b| b[j]);
        let f16 = |v: f32, yes: bool| if yes { half::f16::from_f32(v).to_f32() } else { v };
        if let Some(r) = self.residual {
            v = f16(f16(v, r.round) + r.data[i * ldc + j], r.round);
        }
        if let Some((lo, hi)) = self.clamp {
            v = v.max(lo).min(hi);
        }
        f16(v, self.round)
    }
}

/// The operand every stripe of a threaded call reads, packed once. One
/// for the process, not per thread: whichever thread makes the call, the
/// buffer has already grown to the largest operand a warm program packs.
static SHARED: std::sync::Mutex<Buf> = std::sync::Mutex::new(Buf::new());

thread_local! {
    /// Packed A block, packed B block.
    static PACK: RefCell<(Buf, Buf)> = const { RefCell::new((Buf::new(), Buf::new())) };
}

/// Whether the AVX-512 kernel can run here (checked once by std).
pub(crate) fn has_avx512() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// C[m, n] (row stride `ldc`) = A[m, k] · B[k, n], plus C's old value when
/// `accumulate`, then `epi`. Threads over both cores when `parallel` and
/// the work is large enough.
///
/// # Safety
/// `a`, `b` must address valid [m, k] / [k, n] matrices and `c` a writable
/// [m, n] matrix with row stride `ldc` that aliases neither; epilogue
/// biases hold m (row) or n (column) values.
#[allow(clippy::too_many_arguments)]
pub(crate) unsafe fn sgemm(m: usize, n: usize, k: usize, a: Operand, b: Operand, c: *mut f32, ldc: usize, accumulate: bool, epi: Epilogue, parallel: bool) {
    if m == 0 || n == 0 {
        return;
    }
    if !has_avx512() {
        return fallback(m, n, k, a, b, c, ldc, accumulate, epi, parallel);
    }
    let threads = if parallel && m * n * k >= PAR_WORK { rayon::current_num_threads() } else { 1 };
    if threads <= 1 {
        return blocked(m, n, k, a, b, c, ldc, accumulate, epi);
    }
    // Each task owns a stripe of C: whole columns or whole rows, whichever
    // leaves the busiest task fewer (partial) tiles. The operand every
    // stripe reads in full is packed once, by all threads together, rather
    // than once per stripe.
    let out = OutPtr(c);
    let by_cols = split_cost(true, m, n, k, a, b, threads) <= split_cost(false, m, n, k, a, b, threads);
    let (len, tile) = if by_cols { (n, NR) } else { (m, MR) };
    // Up to four stripes per thread when each keeps 8 tiles or more and
    // the operand they all read costs nothing more per stripe (read in
    // place, or packed below):
    // threads that finish early take the next stripe, so a core slowed by
    // another process does not hold up the other.
    let shared = if by_cols { a } else { b };
    let whole = if by_cols { m * k } else { k * n };
    if let Some(per) = k_split(m, n, k, threads, shares(shared, whole, by_cols).then_some(whole)) {
        if let Ok(mut partial) = PARTIAL.try_lock() {
            return split_k(m, n, k, per, a, b, c, ldc, accumulate, epi, &mut partial);
        }
    }
    let stripes = |cheap: bool| {
        let per = if cheap { [4, 2].into_iter().find(|&s| len / (threads * s) >= 8 * tile).unwrap_or(1) } else { 1 };
        let stripe = len.div_ceil(threads * per);
        // Rows of an A read in place may start anywhere: no rounding to
        // whole tiles, which would leave one thread 108 rows of 197 and the
        // other 89. Columns of a B made panel by panel may start at any
        // vector: a 784-wide product splits 400 + 384, not 416 + 368.
        match b {
            _ if !by_cols && keeps_rows_local(a, b) => stripe,
            Operand::Strided(_) | Operand::Source(_) if by_cols => stripe.next_multiple_of(16),
            _ => stripe.next_multiple_of(tile),
        }
    };
    let run = |a: Operand, b: Operand| {
        let read_whole = if by_cols { a } else { b };
        let step = stripes(in_place(read_whole, by_cols));
        (0..len.div_ceil(step)).into_par_iter().for_each(|t| {
            let s0 = t * step;
            let part = step.min(len - s0);
            // The whole Send wrapper, not its raw pointer field, is captured.
            #[allow(clippy::redundant_locals)]
            let out = out;
            if by_cols {
                blocked(m, part, k, a, b.skip(s0, false), out.0.add(s0), ldc, accumulate, epi.skip(0, s0, ldc));
            } else {
                blocked(part, n, k, a.skip(s0, true), b, out.0.add(s0 * ldc), ldc, accumulate, epi.skip(s0, 0, ldc));
            }
        })
    };
    if !shares(shared, whole, by_cols) {
        return run(a, b);
    }
    // Busy only if a stripe's own work (say a kernel's nested GEMM)
    // reached here: that call then packs per stripe, as it used to.
    let Ok(mut buf) = SHARED.try_lock() else { return run(a, b) };
    if by_cols {
        let ld = m.next_multiple_of(MR);
        let data = prepack(&mut buf, ld * k, k, m, MR, |pc, kc, i0, rows, dst| pack_a_from(a, pc, kc, i0, rows, dst));
        run(Operand::Packed(Packed::new(data, ld, k)), b)
    } else if matches!(b, Operand::Source(s) if s.src.fp16_exact()) {
        // Half the bytes for both threads to read, half of them written by
        // the other core; the kernel widens fp16 B as it loads it. ResNet-18
        // (its 3x3 convs on 14x14 and 28x28 maps share a packed B of up to
        // 1.8 MB as f32): 3% faster while the host kept the vCPUs apart,
        // the same otherwise (in-process A/B).
        let ld = n.next_multiple_of(NR);
        let data = prepack::<f16>(&mut buf, ld * k, k, n, NR, |pc, kc, j0, cols, dst| pack_b_from(b, pc, kc, j0, cols, dst));
        run(a, Operand::PackedF16(Packed::new(data, ld, k)))
    } else {
        let ld = n.next_multiple_of(NR);
        let data = prepack(&mut buf, ld * k, k, n, NR, |pc, kc, j0, cols, dst| pack_b_from(b, pc, kc, j0, cols, dst));
        run(a, Operand::Packed(Packed::new(data, ld, k)))
    }
}

/// Partial products of a K-split call beyond the first (see [`split_k`]).
static PARTIAL: std::sync::Mutex<Buf> = std::sync::Mutex::new(Buf::new());

/// The depth of each part when a threaded call is better split along K:
/// when the row or column split would have every thread read an operand
/// (of `shared` values) that the threads pack together, C is no larger
/// (the partials cross between cores instead), and each part is at least
/// half a KC block deep.
///
/// C as large as the shared operand still gains: a 1x1 conv 256->256 on
/// 14x14 split by rows packs its input by panels that each read every
/// channel, half of them converted by the other core, then reads the
/// panels the other core packed, and its next input's conversion writes
/// lines the other core read. Split along K each thread packs the channels
/// it converted. Measured (in-process A/B): 0.78x the time with the vCPUs
/// apart (1.12x ORT -> 0.88x), 0.97x with them close.
fn k_split(m: usize, n: usize, k: usize, threads: usize, shared: Option<usize>) -> Option<usize> {
    let shared = shared?;
    let per = k.div_ceil(threads);
    (per >= KC / 2 && m * n <= shared).then_some(per)
}

/// C = A·B as `k / per` partial products over consecutive depths, one per
/// thread: the first into C, the rest into `partial`; then, by rows, C
/// plus the partials, and the epilogue.
///
/// Why: a late convolution (C of 49x512 from a depth of 4608) split by
/// columns has both threads read the whole unfolded input, packed once by
/// both: every packed value one thread reads, the other wrote, and when
/// the host places the two vCPUs on different L3s each such value crosses
/// between them (at ~40 GB/s against ~110 within one). Split along K, each
/// thread packs and reads only its own depth range of both operands (the
/// input channels the previous layer's split left in its cache); only the
/// partial sums cross, a tenth of the data. Measured (in-process A/B):
/// 3x3 convs 512->512 @7 and 256->256 @14 15-17% faster with the vCPUs
/// apart and the same or 5% faster with them close; ResNet-18 8% faster
/// apart, 1% close.
#[allow(clippy::too_many_arguments)]
unsafe fn split_k(m: usize, n: usize, k: usize, per: usize, a: Operand, b: Operand, c: *mut f32, ldc: usize, accumulate: bool, epi: Epilogue, partial: &mut Buf) {
    let parts = k.div_ceil(per);
    let each = m * n;
    partial.grow_to((parts - 1) * each);
    let (out, part) = (OutPtr(c), OutPtr(partial.as_mut_ptr()));
    (0..parts).into_par_iter().for_each(|t| {
        // The whole Send wrappers, not their raw pointer fields, are captured.
        #[allow(clippy::redundant_locals)]
        let (out, part) = (out, part);
        let k0 = t * per;
        let (a, b) = (a.skip_k(k0, true), b.skip_k(k0, false));
        if t == 0 {
            blocked(m, n, per.min(k - k0), a, b, out.0, ldc, accumulate, Epilogue::default());
        } else {
            blocked(m, n, per.min(k - k0), a, b, part.0.add((t - 1) * each), n, false, Epilogue::default());
        }
    });
    let rows = crate::parallel::per_thread(m);
    (0..m.div_ceil(rows)).into_par_iter().for_each(|r| {
        #[allow(clippy::redundant_locals)]
        let (out, part) = (out, part);
        let (i0, i1) = (r * rows, (r * rows + rows).min(m));
        for i in i0..i1 {
            let row = std::slice::from_raw_parts_mut(out.0.add(i * ldc), n);
            for t in 1..parts {
                let p = std::slice::from_raw_parts(part.0.add((t - 1) * each + i * n), n);
                for (x, &y) in row.iter_mut().zip(p) {
                    *x += y;
                }
            }
        }
        blocked(i1 - i0, n, 0, a, b, out.0.add(i0 * ldc), ldc, true, epi.skip(i0, 0, ldc));
    });
}

/// How a shared operand's micro-panels are stored: f32, or fp16 for
/// values that fp16 holds exactly (packed as f32 into this thread's B
/// buffer, then narrowed).
trait PackedElem: bytemuck::Pod + Send + Sync {
    /// Writes one micro-panel into `dst` through `pack`, which makes it as f32.
    fn store(dst: &mut [Self], pack: impl FnOnce(&mut [f32]));
}

impl PackedElem for f32 {
    fn store(dst: &mut [f32], pack: impl FnOnce(&mut [f32])) {
        pack(dst)
    }
}

impl PackedElem for f16 {
    fn store(dst: &mut [f16], pack: impl FnOnce(&mut [f32])) {
        PACK.with(|cell| {
            let panel = &mut cell.borrow_mut().1;
            panel.grow_to(dst.len());
            let panel = &mut panel[..dst.len()];
            pack(panel);
            f32_to_f16_serial(panel, dst);
        })
    }
}

/// Packs a whole operand (depth `k`, outer length `len` in tiles of `tile`)
/// into `buf` (reused as storage of `T`) in the layout of [`Packed`], all
/// threads taking micro-panels in turn: `pack(pc, kc, i0, rows, dst)`
/// writes one.
fn prepack<T: PackedElem>(buf: &mut Buf, total: usize, k: usize, len: usize, tile: usize, pack: impl Fn(usize, usize, usize, usize, &mut [f32]) + Sync) -> &[T] {
    let words = (total * std::mem::size_of::<T>()).div_ceil(4);
    buf.grow_to(words);
    let ld = len.next_multiple_of(tile);
    let data = OutPtr(bytemuck::cast_slice_mut::<f32, T>(&mut buf[..words]).as_mut_ptr());
    let panels = ld / tile;
    (0..k.div_ceil(KC) * panels).into_par_iter().for_each(|t| {
        let (pc, i0) = ((t / panels) * KC, (t % panels) * tile);
        let kc = KC.min(k - pc);
        // The whole Send wrapper, not its raw pointer field, is captured.
        #[allow(clippy::redundant_locals)]
        let data = data;
        // SAFETY: each task writes its own panel of the `total` elements.
        let dst = unsafe { std::slice::from_raw_parts_mut(data.0.add(ld * pc + i0 * kc), tile * kc) };
        T::store(dst, |panel| pack(pc, kc, i0, tile.min(len - i0), panel));
    });
    &bytemuck::cast_slice::<f32, T>(&buf[..words])[..total]
}

/// Largest operand (in elements) packed once for all stripes: beyond it
/// the packed copy no longer stays in the last-level cache, and packing it
/// all before any product reads it costs a trip through memory that
/// per-stripe packing (block by block, into L2) does not.
const SHARED_MAX: usize = 1 << 20;

/// Whether a threaded call packs `op`, the operand every stripe reads, up
/// front (see [`SHARED_MAX`]).
fn shares(op: Operand, elems: usize, lhs: bool) -> bool {
    matches!(op, Operand::Strided(_) | Operand::Source(_)) && !in_place(op, lhs) && elems <= SHARED_MAX
}

/// Whether the kernel reads `op` where it is, unpacked: a row-major A (see
/// the kernel's `RowsA`). Packed B is read in place too, fp16 included.
fn in_place(op: Operand, lhs: bool) -> bool {
    match op {
        Operand::Strided(_) => lhs && row_major(op).is_some(),
        Operand::Packed(_) => true,
        Operand::PackedF16(_) => !lhs,
        Operand::Source(_) => false,
    }
}

/// `op` as a row-major matrix (contiguous along k), the form of A the
/// kernel reads in place.
fn row_major(op: Operand) -> Option<Mat> {
    match op {
        Operand::Strided(s) if s.cs == 1 => Some(s),
        _ => None,
    }
}

/// Estimated cycles of the busiest thread when C is cut into column
/// stripes (`by_cols`) or row stripes: its tiles (a short edge tile costs
/// less, the kernel is sized to it), plus the packing and fp16 widening it
/// does. It decides the split: a 49-column GEMM split by columns, for
/// instance, has every thread widen all of a 9 MB fp16 weight.
///
/// Activations times a cached weight (see [`keeps_rows_local`]) charge
/// the column split for its reads of the other core's data: the kernels
/// around a GEMM split their outputs into one contiguous part per thread
/// (whole rows of C here, and of A from the kernel before), and column
/// stripes have each thread read all of A and leave half of each part of
/// C in the other core's cache. 768x768x197 as columns took 0.56 ms
/// against 0.50 as rows while the host kept the vCPUs apart, its input's
/// conversion 44 us against 9 (writing lines the other core had read);
/// the same with them close.
fn split_cost(by_cols: bool, m: usize, n: usize, k: usize, a: Operand, b: Operand, threads: usize) -> f32 {
    let t = threads as f32;
    let rows_local = keeps_rows_local(a, b);
    let rows = if rows_local { m.div_ceil(threads) } else { m.div_ceil(threads).next_multiple_of(MR).min(m) };
    let (rows, cols) = if by_cols { (m, n.div_ceil(threads).next_multiple_of(NR).min(n)) } else { (rows, n) };
    // 24 FMAs per k step of a full tile, two per cycle.
    let compute = edge_cost(rows, MR) * edge_cost(cols, NR) * (k * 12) as f32;
    let pack_a = prep_cost(a, true, m * k, by_cols, rows as f32 / m as f32, t, cols.div_ceil(NC));
    let pack_b = prep_cost(b, false, k * n, !by_cols, cols as f32 / n as f32, t, rows.div_ceil(MC));
    // Half a cycle per value of the other cores' parts.
    let remote = if by_cols && rows_local { 0.5 * (m * k + m * n) as f32 * (t - 1.0) / t } else { 0.0 };
    compute + pack_a + pack_b + remote
}

/// Whether row stripes keep each thread on its own rows of A and C at no
/// extra cost: A is read in place, so any row may start a stripe, and B is
/// a packed weight found in cache, so every thread reading all of it costs
/// no more memory traffic. A weight that comes from memory on every call
/// (a model larger than the cache) is better split: 768x768x197 products
/// over 40 weights in turn ran 4% slower as rows than as columns, 197x768
/// x2304 ones 6-9%, and ViT-B/16 6-8%.
fn keeps_rows_local(a: Operand, b: Operand) -> bool {
    row_major(a).is_some() && matches!(b, Operand::Packed(Packed { cached: true, .. }) | Operand::PackedF16(Packed { cached: true, .. }))
}

/// Cycles one thread spends preparing an operand (`lhs`: A) of `elems`
/// values: ~1 per value packed, ~0.5 per value widened from fp16, none
/// for one read in place. The operand every stripe reads (`whole`) is
/// packed once by all threads, or by each when too large to share; a
/// packed fp16 A is widened for this thread's `part` of it, once per block
/// (`blocks`) of B.
fn prep_cost(op: Operand, lhs: bool, elems: usize, whole: bool, part: f32, threads: f32, blocks: usize) -> f32 {
    let e = elems as f32;
    if in_place(op, lhs) {
        return 0.0;
    }
    match op {
        Operand::PackedF16(_) => 0.5 * e * part * blocks as f32,
        _ if whole && !shares(op, elems, lhs) => e,
        _ => e / threads,
    }
}

/// Whether C = A·B [m, n] is cheaper computed as Cᵀ = Bᵀ·Aᵀ [n, m]: a
/// 49-column product wastes a quarter of its 32-wide tiles, while 49 rows
/// fill four 12-row tiles and a cheap 1-row one.
pub(crate) fn prefers_transposed(m: usize, n: usize) -> bool {
    edge_cost(n, MR) * edge_cost(m, NR) < 0.9 * edge_cost(m, MR) * edge_cost(n, NR)
}

/// Cost of `len` rows (tile MR) or columns (tile NR) in whole tiles: a
/// short last tile costs its rows (with a floor, for latency) or its
/// 16-lane vectors.
fn edge_cost(len: usize, tile: usize) -> f32 {
    let (full, rest) = (len / tile, len % tile);
    let part = match (rest, tile == NR) {
        (0, _) => 0.0,
        (r, true) => r.div_ceil(16) as f32 * 16.0 / NR as f32,
        (r, false) => r.max(3) as f32 / tile as f32,
    };
    full as f32 + part
}

/// One thread: the three blocking loops around the register kernel.
#[allow(clippy::too_many_arguments)]
unsafe fn blocked(m: usize, n: usize, k: usize, a: Operand, b: Operand, c: *mut f32, ldc: usize, accumulate: bool, epi: Epilogue) {
    if k == 0 {
        // No products: C keeps its value (or is zero), then the epilogue.
        if !accumulate {
            for i in 0..m {
                std::slice::from_raw_parts_mut(c.add(i * ldc), n).fill(0.0);
            }
        }
        if has_avx512() {
            // The kernel at depth 0 is the epilogue alone, vectorized.
            for jr in (0..n).step_by(NR) {
                for ir in (0..m).step_by(MR) {
                    let te = TileEpi::of(&epi, ir, jr, ldc, true);
                    tile(0, ATile::Panel(std::ptr::null()), BTile::F32(std::ptr::null()), c.add(ir * ldc + jr), ldc, MR.min(m - ir), NR.min(n - jr), true, &te);
                }
            }
            return;
        }
        for i in 0..m {
            let row = std::slice::from_raw_parts_mut(c.add(i * ldc), n);
            for (j, v) in row.iter_mut().enumerate() {
                *v = epi.apply(*v, i, j, ldc);
            }
        }
        return;
    }
    PACK.with(|cell| {
        let mut bufs = cell.borrow_mut();
        let (pa, pb) = &mut *bufs;
        let need_a = if in_place(a, true) { 0 } else { m.next_multiple_of(MR).min(MC) * KC };
        let a_rows = row_major(a);
        let need_b = if matches!(b, Operand::Strided(_) | Operand::Source(_)) { n.next_multiple_of(NR).min(NC) * KC } else { 0 };
        pa.grow_to(need_a);
        pb.grow_to(need_b);
        // Blocks end where a packed operand's do (a call split along K may
        // start inside one).
        let boundary = |pc: usize| match (a, b) {
            (Operand::Packed(p), _) | (_, Operand::Packed(p)) => p.to_boundary(pc),
            (Operand::PackedF16(p), _) => p.to_boundary(pc),
            (_, Operand::PackedF16(p)) => p.to_boundary(pc),
            _ => KC,
        };
        for jc in (0..n).step_by(NC) {
            let nc = NC.min(n - jc);
            let mut pc = 0;
            while pc < k {
                let kc = boundary(pc).min(k - pc);
                // fp16 B is read in place: the kernel widens it as it loads.
                // `bstep`: from one micro-panel to the next, in rows of NR.
                let (bblock, half, bstep): (&[f32], &[f16], usize) = match b {
                    Operand::Packed(p) => {
                        let (d, step) = p.block(pc, kc, jc, NR);
                        (d, &[], step)
                    }
                    Operand::PackedF16(p) => {
                        let (d, step) = p.block(pc, kc, jc, NR);
                        (&[], d, step)
                    }
                    Operand::Strided(_) | Operand::Source(_) => {
                        let pb = &mut pb[..nc.next_multiple_of(NR) * kc];
                        for (p, panel) in pb.chunks_exact_mut(NR * kc).enumerate() {
                            let j0 = jc + p * NR;
                            pack_b_from(b, pc, kc, j0, NR.min(n - j0), panel);
                        }
                        (pb, &[], kc)
                    }
                };
                let last = pc + kc == k;
                let add = accumulate || pc > 0;
                for ic in (0..m).step_by(MC) {
                    let mc = MC.min(m - ic);
                    // `astep`: as `bstep`, in rows of MR.
                    let (ablock, astep): (&[f32], usize) = match a {
                        _ if a_rows.is_some() => (&[], kc),
                        Operand::Strided(_) | Operand::Source(_) => {
                            let pa = &mut pa[..mc.next_multiple_of(MR) * kc];
                            for (p, panel) in pa.chunks_exact_mut(MR * kc).enumerate() {
                                let i0 = ic + p * MR;
                                pack_a_from(a, pc, kc, i0, MR.min(m - i0), panel);
                            }
                            (pa, kc)
                        }
                        Operand::Packed(p) => p.block(pc, kc, ic, MR),
                        Operand::PackedF16(p) => {
                            let (src, step) = p.block(pc, kc, ic, MR);
                            let pa = &mut pa[..mc.next_multiple_of(MR) * kc];
                            for (t, panel) in pa.chunks_exact_mut(MR * kc).enumerate() {
                                f16_to_f32_serial(&src[t * MR * step..][..MR * kc], panel);
                            }
                            (pa, kc)
                        }
                    };
                    // Which of the two stays in L1 while the other streams past
                    // it: a micro-panel of B (across row tiles), or, when A's
                    // rows are read in place and B was packed ahead (one
                    // contiguous run), a tile of A's rows (across B's panels),
                    // so B streams in order rather than A as twelve strided
                    // rows. ViT-B/16 2-3% faster and the 768x768x197 matmul 2%
                    // (A/B between builds); with A packed (conv weights) B's
                    // panels are the ones to keep: a 1x1 conv ran 13% slower
                    // with A's tiles kept.
                    //
                    // Also A's tiles when B's panels are made here (a
                    // convolution's unfolded input) for a product of few
                    // rows, as a stem conv's 64 channels: with B's panels
                    // kept, every panel writes a line of each of C's rows,
                    // 64 streams of stores, likely more than the
                    // prefetchers follow (no counters here to confirm), so
                    // each missed line would wait on its own fetch once
                    // the previous layers have cleared the caches;
                    // with A's tiles kept C is written 12 rows at a time,
                    // and B's block (made before this loop) is re-read
                    // from L2 only m/12 times. ResNet-18 0.99x the time
                    // (A/B between builds, both orders); its stem 0.9x
                    // after a cache-clearing op. Wider products (ResNet's
                    // stride-2 3x3 convs, 128 and 256 rows) ran slower so.
                    let ir_outer = match b {
                        Operand::Packed(_) | Operand::PackedF16(_) => a_rows.is_some(),
                        Operand::Source(_) => m <= FEW_ROWS,
                        Operand::Strided(_) => false,
                    };
                    let (outer, inner) = if ir_outer { ((0..mc).step_by(MR), (0..nc).step_by(NR)) } else { ((0..nc).step_by(NR), (0..mc).step_by(MR)) };
                    for o in outer {
                        for i in inner.clone() {
                            let (jr, ir) = if ir_outer { (i, o) } else { (o, i) };
                            let nr = NR.min(nc - jr);
                            let mr = MR.min(mc - ir);
                            let ap = match a_rows {
                                Some(s) => ATile::Rows { ptr: s.ptr.offset((ic + ir) as isize * s.rs + pc as isize), ld: s.rs },
                                None => ATile::Panel(ablock.as_ptr().add(ir * astep)),
                            };
                            let cp = c.add((ic + ir) * ldc + jc + jr);
                            let tile_epi = TileEpi::of(&epi, ic + ir, jc + jr, ldc, last);
                            let bp = if half.is_empty() { BTile::F32(bblock.as_ptr().add(jr * bstep)) } else { BTile::F16(half.as_ptr().add(jr * bstep)) };
                            tile(kc, ap, bp, cp, ldc, mr, nr, add, &tile_epi);
                        }
                    }
                }
                pc += kc;
            }
        }
    });
}

/// Rows of C up to which a product with B made panel by panel keeps A's
/// tiles in L1 rather than B's panels (see `blocked`).
const FEW_ROWS: usize = 64;

/// The epilogue of one tile, applied when its last K block is done: null
/// bias pointers mean no bias.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct TileEpi {
    row_bias: *const f32,
    col_bias: *const f32,
    /// Laid out like the tile of C (its row stride).
    residual: *const f32,
    /// See [`Residual::round`].
    res_round: bool,
    clamp: bool,
    round: bool,
    lo: f32,
    hi: f32,
}

impl TileEpi {
    /// `epi` for the tile at row i, column j of C (row stride `ldc`); only
    /// the `last` K block of a tile applies it.
    fn of(epi: &Epilogue, i: usize, j: usize, ldc: usize, last: bool) -> TileEpi {
        let (lo, hi) = epi.clamp.unwrap_or((f32::NEG_INFINITY, f32::INFINITY));
        let at = |b: Option<&[f32]>, x: usize| match b {
            // In bounds: i and j lie inside C, whose rows and columns the biases cover.
            Some(b) if last => b[x..].as_ptr(),
            _ => std::ptr::null(),
        };
        TileEpi {
            row_bias: at(epi.row_bias, i),
            col_bias: at(epi.col_bias, j),
            residual: at(epi.residual.map(|r| r.data), i * ldc + j),
            res_round: epi.residual.is_some_and(|r| r.round),
            clamp: last && epi.clamp.is_some(),
            round: last && epi.round,
            lo,
            hi,
        }
    }
}

/// Where a tile's A rows are: a packed micro-panel, or rows of a row-major
/// matrix (stride `ld`) read in place.
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum ATile {
    Panel(*const f32),
    Rows { ptr: *const f32, ld: isize },
}

/// A tile's packed B micro-panel, f32 or fp16 (widened as the kernel loads it).
#[derive(Clone, Copy)]
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
enum BTile {
    F32(*const f32),
    F16(*const f16),
}

/// The register kernel (only reached once AVX-512 was detected).
#[allow(clippy::too_many_arguments)]
#[inline(always)]
unsafe fn tile(kc: usize, a: ATile, b: BTile, c: *mut f32, ldc: usize, mr: usize, nr: usize, add: bool, epi: &TileEpi) {
    #[cfg(target_arch = "x86_64")]
    avx512::tile(kc, a, b, c, ldc, mr, nr, add, epi);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (kc, a, b, c, ldc, mr, nr, add, epi);
        unreachable!("the AVX-512 kernel is only dispatched on x86-64")
    }
}

/// Packs an [mc, kc] block of A as MR-row micro-panels, k-major inside each
/// (the kernel reads MR consecutive values per k step); short panels are
/// zero-padded.
unsafe fn pack_a(a: Mat, mc: usize, kc: usize, dst: &mut [f32]) {
    for (p, panel) in dst.chunks_exact_mut(MR * kc).enumerate() {
        let i0 = p * MR;
        let rows = MR.min(mc - i0);
        if a.cs == 1 && rows == MR {
            for i in 0..MR {
                let src = a.ptr.offset((i0 + i) as isize * a.rs);
                for kk in 0..kc {
                    *panel.get_unchecked_mut(kk * MR + i) = *src.add(kk);
                }
            }
        } else {
            for kk in 0..kc {
                for i in 0..MR {
                    panel[kk * MR + i] = if i < rows { a.at(i0 + i, kk) } else { 0.0 };
                }
            }
        }
    }
}

/// Micro-panel `i0..i0 + rows` (rows ≤ MR) of columns `pc..pc + kc` of an
/// A that is not packed ahead of time: [kc][MR], zero-padded.
unsafe fn pack_a_from(a: Operand, pc: usize, kc: usize, i0: usize, rows: usize, panel: &mut [f32]) {
    match a {
        Operand::Source(s) => s.src.panel(s.row0 + pc, kc, s.col0 + i0, rows, MR, panel),
        Operand::Strided(a) => pack_a(a.offset(i0, pc), rows, kc, panel),
        _ => unreachable!("packed operands are read in place"),
    }
}

/// Micro-panel `j0..j0 + cols` (cols ≤ NR) of rows `pc..pc + kc` of a B
/// that is not packed ahead of time: [kc][NR], zero-padded.
unsafe fn pack_b_from(b: Operand, pc: usize, kc: usize, j0: usize, cols: usize, panel: &mut [f32]) {
    match b {
        Operand::Source(s) => s.src.panel(s.row0 + pc, kc, s.col0 + j0, cols, NR, panel),
        Operand::Strided(b) => pack_b_panel(b.offset(pc, j0), kc, cols, panel),
        _ => unreachable!("packed operands are read in place"),
    }
}

unsafe fn pack_b_panel(b: Mat, kc: usize, cols: usize, panel: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if b.cs == 1 && has_avx512() {
        return avx512::pack_b_panel(b.ptr, b.rs, kc, cols, panel);
    }
    if b.cs == 1 {
        for kk in 0..kc {
            let src = std::slice::from_raw_parts(b.ptr.offset(kk as isize * b.rs), cols);
            let row = &mut panel[kk * NR..(kk + 1) * NR];
            row[..cols].copy_from_slice(src);
            row[cols..].fill(0.0);
        }
    } else {
        for j in 0..NR {
            for kk in 0..kc {
                panel[kk * NR + j] = if j < cols { b.at(kk, j) } else { 0.0 };
            }
        }
    }
}

/// Without AVX-512: the `gemm` crate, which dispatches on the CPU itself,
/// then the epilogue as a pass over C.
#[allow(clippy::too_many_arguments)]
unsafe fn fallback(m: usize, n: usize, k: usize, a: Operand, b: Operand, c: *mut f32, ldc: usize, accumulate: bool, epi: Epilogue, parallel: bool) {
    let (Operand::Strided(a), Operand::Strided(b)) = (a, b) else {
        unreachable!("operands are only packed ahead of time, or generated, when the AVX-512 kernel runs")
    };
    let par = if parallel && m * n * k >= PAR_WORK { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    if k > 0 {
        gemm::gemm(m, n, k, c, 1, ldc as isize, accumulate, a.ptr, a.cs, a.rs, b.ptr, b.cs, b.rs, if accumulate { 1.0 } else { 0.0 }, 1.0, false, false, false, par);
    }
    // The k == 0 path of `blocked` clears (unless accumulating) and applies the epilogue.
    blocked(m, n, 0, Operand::Strided(a), Operand::Strided(b), c, ldc, accumulate || k > 0, epi);
}

/// Whether constant operands should be pre-packed on this machine.
pub(crate) fn packs_constants() -> bool {
    has_avx512()
}

/// Grows this thread's packing buffers to the largest blocks any call can
/// need. The sim does it on every pool thread when it creates a program's
/// state: buffers grown on demand would otherwise leave any worker that
/// happened not to run the largest GEMM while a program warmed up to
/// allocate on some later call.
pub(crate) fn reserve_packing() {
    if !has_avx512() {
        return;
    }
    PACK.with(|cell| {
        let (pa, pb) = &mut *cell.borrow_mut();
        pa.grow_to(MC * KC);
        pb.grow_to(NC * KC);
    });
}

#[cfg(test)]
mod tests;
