//! Data movement: reshape, transpose, concat, slice (incl. reverse),
//! expand, tile, pad and gather with constant indices. None of these
//! create new values, so the sim never re-rounds their outputs.

use super::{Cost, EvalCtx, OpDef, View};
use crate::error::{Error, Result};
use crate::fact::{Dims, Fact, broadcast_shapes, fmt_shape, norm_axis, strides_small};
use rayon::prelude::*;
use std::sync::Arc;

/// out[i] = src[base + Σ i_k * strides[k]] for every multi-index of `oshape`.
/// The one strided walker behind transpose, slice, reverse and expand.
pub(crate) fn copy_strided(src: &[f32], base: isize, strides: &[isize], oshape: &[usize], out: &mut [f32]) {
    let r = oshape.len();
    if r == 0 {
        out[0] = src[base as usize];
        return;
    }
    let inner = oshape[r - 1];
    let si = strides[r - 1];
    let row = |ri: usize, o: &mut [f32]| {
        let mut off = base;
        let mut rem = ri;
        for k in (0..r - 1).rev() {
            off += (rem % oshape[k]) as isize * strides[k];
            rem /= oshape[k];
        }
        if si == 1 {
            o.copy_from_slice(&src[off as usize..off as usize + inner]);
        } else {
            for (j, d) in o.iter_mut().enumerate() {
                *d = src[(off + j as isize * si) as usize];
            }
        }
    };
    if out.len() >= 1 << 16 && out.len() / inner > 1 {
        out.par_chunks_mut(inner).enumerate().for_each(|(ri, o)| row(ri, o));
    } else {
        out.chunks_mut(inner).enumerate().for_each(|(ri, o)| row(ri, o));
    }
}

fn movement_cost() -> Cost {
    Cost { flops: 0.0 }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reshape {
    pub shape: Vec<usize>,
}

impl OpDef for Reshape {
    fn name(&self) -> String {
        "reshape".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("reshape", inputs, 1)?;
        let x = inputs[0];
        let n: usize = self.shape.iter().product();
        if n != x.numel() {
            return Err(Error::shape(
                "reshape",
                format!("cannot reshape {} ({} elements) to {} ({n} elements)", fmt_shape(&x.shape), x.numel(), fmt_shape(&self.shape)),
            ));
        }
        Ok(Fact::new(self.shape.clone(), x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], _: &EvalCtx) {
        out.copy_from_slice(ins[0].data);
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Transpose {
    pub perm: Vec<usize>,
}

impl OpDef for Transpose {
    fn name(&self) -> String {
        "transpose".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("transpose", inputs, 1)?;
        let x = inputs[0];
        let mut seen = vec![false; x.rank()];
        if self.perm.len() != x.rank() || self.perm.iter().any(|&p| p >= x.rank() || std::mem::replace(&mut seen[p], true)) {
            return Err(Error::shape(
                "transpose",
                format!("perm {:?} is not a permutation of the {} axes of {}", self.perm, x.rank(), fmt_shape(&x.shape)),
            ));
        }
        Ok(Fact::new(self.perm.iter().map(|&p| x.shape[p]).collect(), x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let st = strides_small(ins[0].shape);
        let strides: Dims<isize> = self.perm.iter().map(|&p| st[p] as isize).collect();
        copy_strided(ins[0].data, 0, &strides, out_shape, out);
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Concat {
    pub axis: usize,
}

impl OpDef for Concat {
    fn name(&self) -> String {
        "concat".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        if inputs.is_empty() {
            return Err(Error::value("concat", "needs at least one tensor"));
        }
        let first = inputs[0];
        norm_axis("concat", self.axis as i64, first.rank())?;
        let mut shape = first.shape.clone();
        shape[self.axis] = 0;
        for f in inputs {
            let ok = f.rank() == first.rank()
                && f.shape.iter().zip(&first.shape).enumerate().all(|(i, (a, b))| i == self.axis || a == b);
            if !ok {
                let all: Vec<String> = inputs.iter().map(|f| fmt_shape(&f.shape)).collect();
                return Err(Error::shape(
                    "concat",
                    format!("shapes {} differ outside axis {}; all axes but the concatenated one must match", all.join(", "), self.axis),
                ));
            }
            if f.dtype != first.dtype {
                return Err(Error::dtype("concat", format!("mixed dtypes {} and {}; cast to one dtype first", first.dtype, f.dtype)));
            }
            shape[self.axis] += f.shape[self.axis];
        }
        Ok(Fact::new(shape, first.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let outer: usize = out_shape[..self.axis].iter().product();
        let inner: usize = out_shape[self.axis + 1..].iter().product();
        let row = out_shape[self.axis] * inner;
        let mut col = 0;
        for v in ins {
            let w = v.shape[self.axis] * inner;
            for o in 0..outer {
                out[o * row + col..o * row + col + w].copy_from_slice(&v.data[o * w..(o + 1) * w]);
            }
            col += w;
        }
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

/// Per-axis strided slice; a negative stride walks backwards (reverse).
/// `begin` is the first index taken, `len` the number of elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slice {
    pub begin: Vec<usize>,
    pub len: Vec<usize>,
    pub stride: Vec<isize>,
}

impl Slice {
    /// numpy-style `begin:end:stride` per axis (None = open end), normalised.
    pub fn from_ranges(shape: &[usize], ranges: &[(Option<i64>, Option<i64>, i64)]) -> Result<Slice> {
        if ranges.len() > shape.len() {
            return Err(Error::shape("slice", format!("{} slice ranges given for a tensor of shape {}", ranges.len(), fmt_shape(shape))));
        }
        let (mut begin, mut len, mut stride) = (vec![], vec![], vec![]);
        for (ax, &d) in shape.iter().enumerate() {
            let (b, e, s) = ranges.get(ax).copied().unwrap_or((None, None, 1));
            if s == 0 {
                return Err(Error::value("slice", format!("step on axis {ax} is 0")));
            }
            let d = d as i64;
            let clampi = |v: i64, lo: i64, hi: i64| v.clamp(lo, hi);
            let norm = |v: i64| if v < 0 { v + d } else { v };
            let (b, e) = if s > 0 {
                (clampi(b.map(norm).unwrap_or(0), 0, d), clampi(e.map(norm).unwrap_or(d), 0, d))
            } else {
                (clampi(b.map(norm).unwrap_or(d - 1), -1, d - 1), clampi(e.map(norm).unwrap_or(-1), -1, d - 1))
            };
            let n = if s > 0 { (e - b + s - 1).max(0) / s } else { (b - e - s - 1).max(0) / (-s) };
            if n == 0 {
                return Err(Error::shape(
                    "slice",
                    format!("axis {ax} of {} becomes empty; empty tensors are not supported on the engine", fmt_shape(shape)),
                ));
            }
            begin.push(b.max(0) as usize);
            len.push(n as usize);
            stride.push(s as isize);
        }
        Ok(Slice { begin, len, stride })
    }
}

impl OpDef for Slice {
    fn name(&self) -> String {
        "slice".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("slice", inputs, 1)?;
        let x = inputs[0];
        if self.begin.len() != x.rank() {
            return Err(Error::shape("slice", format!("{} axes given for {}", self.begin.len(), fmt_shape(&x.shape))));
        }
        for ax in 0..x.rank() {
            let last = self.begin[ax] as isize + (self.len[ax] as isize - 1) * self.stride[ax];
            if self.len[ax] == 0 || self.begin[ax] >= x.shape[ax] || last < 0 || last >= x.shape[ax] as isize {
                return Err(Error::shape("slice", format!("axis {ax}: begin {} len {} stride {} is outside {}", self.begin[ax], self.len[ax], self.stride[ax], fmt_shape(&x.shape))));
            }
        }
        Ok(Fact::new(self.len.clone(), x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let st = strides_small(ins[0].shape);
        let base: isize = self.begin.iter().zip(st.iter()).map(|(&b, &s)| (b * s) as isize).sum();
        let strides: Dims<isize> = self.stride.iter().zip(st.iter()).map(|(&k, &s)| k * s as isize).collect();
        copy_strided(ins[0].data, base, &strides, out_shape, out);
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

/// numpy `broadcast_to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expand {
    pub shape: Vec<usize>,
}

impl OpDef for Expand {
    fn name(&self) -> String {
        "broadcast_to".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("broadcast_to", inputs, 1)?;
        let x = inputs[0];
        let s = broadcast_shapes("broadcast_to", &x.shape, &self.shape)?;
        if s != self.shape {
            return Err(Error::shape("broadcast_to", format!("{} cannot broadcast to {}", fmt_shape(&x.shape), fmt_shape(&self.shape))));
        }
        Ok(Fact::new(s, x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let strides: Dims<isize> =
            super::elementwise::broadcast_strides(ins[0].shape, out_shape).iter().map(|&s| s as isize).collect();
        copy_strided(ins[0].data, 0, &strides, out_shape, out);
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tile {
    pub reps: Vec<usize>,
}

impl OpDef for Tile {
    fn name(&self) -> String {
        "tile".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("tile", inputs, 1)?;
        let x = inputs[0];
        if self.reps.len() != x.rank() || self.reps.contains(&0) {
            return Err(Error::shape("tile", format!("reps {:?} must give one count >= 1 per axis of {}", self.reps, fmt_shape(&x.shape))));
        }
        let shape: Option<Vec<usize>> = x.shape.iter().zip(&self.reps).map(|(a, b)| a.checked_mul(*b)).collect();
        let shape = shape.ok_or_else(|| Error::shape("tile", format!("reps {:?} overflow the size of {}", self.reps, fmt_shape(&x.shape))))?;
        Ok(Fact::new(shape, x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let shape = ins[0].shape;
        map_rows(ins[0], out, out_shape, 0.0, |ax, i| Some(i % shape[ax]), |src, o| {
            for rep in o.chunks_exact_mut(src.len()) {
                rep.copy_from_slice(src);
            }
        });
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PadMode {
    Constant(f32),
    Reflect,
    Replicate,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Pad {
    /// (before, after) per axis.
    pub pads: Vec<(usize, usize)>,
    pub mode: PadMode,
}

impl OpDef for Pad {
    fn name(&self) -> String {
        "pad".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("pad", inputs, 1)?;
        let x = inputs[0];
        if self.pads.len() != x.rank() {
            return Err(Error::shape("pad", format!("{} (before, after) pairs given for {}", self.pads.len(), fmt_shape(&x.shape))));
        }
        if self.mode == PadMode::Reflect {
            for (ax, &(a, b)) in self.pads.iter().enumerate() {
                if a >= x.shape[ax] || b >= x.shape[ax] {
                    return Err(Error::shape("pad", format!("reflect padding ({a}, {b}) on axis {ax} must be smaller than its size {}", x.shape[ax])));
                }
            }
        }
        let shape: Option<Vec<usize>> = x.shape.iter().zip(&self.pads).map(|(d, (a, b))| d.checked_add(*a)?.checked_add(*b)).collect();
        let shape = shape.ok_or_else(|| Error::shape("pad", format!("padding {:?} overflows the size of {}", self.pads, fmt_shape(&x.shape))))?;
        Ok(Fact::new(shape, x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let shape = ins[0].shape;
        let pads = &self.pads;
        let mode = self.mode;
        let fill = if let PadMode::Constant(v) = mode { v } else { 0.0 };
        let source = |ax: usize, i: usize| {
            let (b, n) = (pads[ax].0 as isize, shape[ax] as isize);
            let j = i as isize - b;
            if (0..n).contains(&j) {
                return Some(j as usize);
            }
            match mode {
                PadMode::Constant(_) => None,
                PadMode::Replicate => Some(j.clamp(0, n - 1) as usize),
                PadMode::Reflect => Some(if j < 0 { -j } else { 2 * (n - 1) - j } as usize),
            }
        };
        let last = shape.len().saturating_sub(1);
        map_rows(ins[0], out, out_shape, fill, source, |src, o| {
            let (b, n) = (pads[last].0, src.len());
            o[b..b + n].copy_from_slice(src);
            for j in (0..b).chain(b + n..o.len()) {
                o[j] = source(last, j).map_or(fill, |i| src[i]);
            }
        });
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

/// The walk behind pad and tile, whose output index on each axis comes
/// from one source index on the same axis (`source(ax, i)`, None: the row
/// is `fill`). Only the outer axes go through `source`, once per row; `row`
/// writes a whole output row from its source row, so the bulk of the work
/// is slice copies rather than an index lookup per element.
fn map_rows(
    x: View,
    out: &mut [f32],
    out_shape: &[usize],
    fill: f32,
    source: impl Fn(usize, usize) -> Option<usize> + Sync,
    row: impl Fn(&[f32], &mut [f32]) + Sync,
) {
    let r = out_shape.len();
    if r == 0 {
        out[0] = x.data[0];
        return;
    }
    let st = strides_small(x.shape);
    let (inner, src_inner) = (out_shape[r - 1], x.shape[r - 1]);
    let one = |ri: usize, o: &mut [f32]| {
        let mut off = 0usize;
        let mut rem = ri;
        for k in (0..r - 1).rev() {
            match source(k, rem % out_shape[k]) {
                Some(j) => off += j * st[k],
                None => {
                    o.fill(fill);
                    return;
                }
            }
            rem /= out_shape[k];
        }
        row(&x.data[off..off + src_inner], o);
    };
    if out.len() >= 1 << 16 && out.len() / inner > 1 {
        out.par_chunks_mut(inner).enumerate().for_each(|(ri, o)| one(ri, o));
    } else {
        out.chunks_mut(inner).enumerate().for_each(|(ri, o)| one(ri, o));
    }
}

/// Gather along one axis with indices fixed at build time.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gather {
    pub axis: usize,
    pub indices: Arc<Vec<usize>>,
    pub indices_shape: Vec<usize>,
}

impl Gather {
    /// Normalises negative indices against the axis size and checks bounds.
    pub fn new(x_shape: &[usize], axis: i64, indices: &[i64], indices_shape: Vec<usize>) -> Result<Gather> {
        let axis = norm_axis("gather", axis, x_shape.len())?;
        let n = x_shape[axis] as i64;
        let mut idx = Vec::with_capacity(indices.len());
        for &i in indices {
            let j = if i < 0 { i + n } else { i };
            if j < 0 || j >= n {
                return Err(Error::shape("gather", format!("index {i} is out of range for axis {axis} of size {n} in {}", fmt_shape(x_shape))));
            }
            idx.push(j as usize);
        }
        if indices_shape.iter().product::<usize>() != idx.len() {
            return Err(Error::shape("gather", format!("{} indices do not fill shape {}", idx.len(), fmt_shape(&indices_shape))));
        }
        Ok(Gather { axis, indices: Arc::new(idx), indices_shape })
    }
}

impl OpDef for Gather {
    fn name(&self) -> String {
        "gather".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("gather", inputs, 1)?;
        let x = inputs[0];
        norm_axis("gather", self.axis as i64, x.rank())?;
        if let Some(&m) = self.indices.iter().max() {
            if m >= x.shape[self.axis] {
                return Err(Error::shape("gather", format!("index {m} is out of range for axis {} of {}", self.axis, fmt_shape(&x.shape))));
            }
        }
        let mut shape = x.shape[..self.axis].to_vec();
        shape.extend(&self.indices_shape);
        shape.extend(&x.shape[self.axis + 1..]);
        Ok(Fact::new(shape, x.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], _: &[usize], _: &mut [f32], _: &EvalCtx) {
        let x = ins[0];
        let outer: usize = x.shape[..self.axis].iter().product();
        let inner: usize = x.shape[self.axis + 1..].iter().product();
        let n = x.shape[self.axis];
        let k = self.indices.len();
        for o in 0..outer {
            for (j, &i) in self.indices.iter().enumerate() {
                out[(o * k + j) * inner..(o * k + j + 1) * inner]
                    .copy_from_slice(&x.data[(o * n + i) * inner..(o * n + i + 1) * inner]);
            }
        }
    }
    fn cost(&self, _: &[&Fact], _: &Fact) -> Cost {
        movement_cost()
    }
}

/// Scatter-add along one axis with indices fixed at build time: the
/// backward of [`Gather`] (repeated indices accumulate) and of strided
/// slices. Input dy has the gather's output shape; the output has the
/// gathered tensor's shape with `size` along `axis`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScatterAdd {
    pub axis: usize,
    pub indices: Arc<Vec<usize>>,
    pub indices_shape: Vec<usize>,
    pub size: usize,
}

impl OpDef for ScatterAdd {
    fn name(&self) -> String {
        "scatter_add".into()
    }
    fn infer(&self, inputs: &[&Fact]) -> Result<Fact> {
        super::expect_inputs("scatter_add", inputs, 1)?;
        let dy = inputs[0];
        let k = self.indices_shape.len();
        if dy.rank() < self.axis + k || dy.shape[self.axis..self.axis + k] != self.indices_shape[..] {
            return Err(Error::shape("scatter_add", format!("dy {} does not hold indices of shape {} at axis {}", fmt_shape(&dy.shape), fmt_shape(&self.indices_shape), self.axis)));
        }
        if self.indices.iter().any(|&i| i >= self.size) {
            return Err(Error::shape("scatter_add", format!("an index is out of range for size {}", self.size)));
        }
        let mut shape = dy.shape[..self.axis].to_vec();
        shape.push(self.size);
        shape.extend(&dy.shape[self.axis + k..]);
        Ok(Fact::new(shape, dy.dtype))
    }
    fn eval(&self, ins: &[View], out: &mut [f32], out_shape: &[usize], _: &mut [f32], _: &EvalCtx) {
        let dy = ins[0];
        let outer: usize = out_shape[..self.axis].iter().product();
        let inner: usize = out_shape[self.axis + 1..].iter().product();
        let (n, k) = (self.size, self.indices.len());
        out.fill(0.0);
        for o in 0..outer {
            for (j, &i) in self.indices.iter().enumerate() {
                let src = &dy.data[(o * k + j) * inner..(o * k + j + 1) * inner];
                for (d, &s) in out[(o * n + i) * inner..(o * n + i + 1) * inner].iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }
    fn cost(&self, ins: &[&Fact], _: &Fact) -> Cost {
        Cost { flops: ins[0].numel() as f64 }
    }
}

// ---- MIL lowering (driver and conventions: backend/mil) ----

use crate::backend::mil::{i64s, repr, LowerMil, MilCtx, Val, MAX_CONCAT_INPUTS};
use aneforge_mil::Argument;

impl LowerMil for Reshape {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        let s = cx.ints("shape", &i64s(&self.shape))?;
        Ok(cx.op("reshape", vec![("shape", s), ("x", Argument::name(&ins[0].name))], &r, repr(out.dtype), &out.shape))
    }
}

impl LowerMil for Transpose {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        let p = cx.ints("perm", &i64s(&self.perm))?;
        Ok(cx.op("transpose", vec![("perm", p), ("x", Argument::name(&ins[0].name))], &r, repr(out.dtype), &out.shape))
    }
}

impl LowerMil for Concat {
    /// `concat`, as a balanced tree of at most [`MAX_CONCAT_INPUTS`]
    /// inputs per node (the engine's input-count limit); one input is a
    /// no-op.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = repr(out.dtype);
        let r = cx.result();
        if ins.len() == 1 {
            return Ok(ins[0].name.clone());
        }
        if ins.len() > MAX_CONCAT_INPUTS {
            cx.note(format!("concat of {} inputs split into a tree of {MAX_CONCAT_INPUTS}-input concats", ins.len()));
        }
        let mut level: Vec<(String, Vec<usize>)> = ins.iter().map(|v| (v.name.clone(), v.fact.shape.clone())).collect();
        while level.len() > 1 {
            let last_level = level.len() <= MAX_CONCAT_INPUTS;
            let mut next = vec![];
            for group in level.chunks(MAX_CONCAT_INPUTS) {
                if group.len() == 1 {
                    next.push(group[0].clone());
                    continue;
                }
                let mut shape = group[0].1.clone();
                shape[self.axis] = group.iter().map(|g| g.1[self.axis]).sum();
                let name = if last_level { r.clone() } else { cx.fresh("concat") };
                let args = vec![
                    ("axis", cx.int("axis", self.axis as i64)?),
                    ("interleave", cx.boolean("interleave", false)?),
                    ("values", Argument::names(group.iter().map(|g| g.0.clone()))),
                ];
                next.push((cx.op("concat", args, &name, d, &shape), shape));
            }
            level = next;
        }
        Ok(level.remove(0).0)
    }
}

impl LowerMil for Slice {
    /// `slice_by_index`. A negative stride whose end runs past index 0 uses
    /// `end_mask` (MIL reads an end of −1 as "the last element").
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        let rank = self.begin.len();
        let (mut end, mut end_mask) = (vec![0i64; rank], vec![false; rank]);
        for ax in 0..rank {
            let (b, n, s) = (self.begin[ax] as i64, self.len[ax] as i64, self.stride[ax] as i64);
            let e = b + (n - 1) * s + s.signum();
            if e < 0 {
                end_mask[ax] = true;
            } else {
                end[ax] = e;
            }
        }
        let mut args = vec![
            ("begin", cx.ints("begin", &i64s(&self.begin))?),
            ("end", cx.ints("end", &end)?),
            ("stride", cx.ints("stride", &self.stride.iter().map(|&s| s as i64).collect::<Vec<_>>())?),
            ("x", Argument::name(&ins[0].name)),
        ];
        if end_mask.iter().any(|&m| m) {
            let name = cx.fresh("end_mask");
            let t = aneforge_mil::Tensor::new(aneforge_mil::DType::Bool, [rank], aneforge_mil::TensorData::Bool(end_mask))
                .map_err(crate::backend::mil::mil_err)?;
            args.push(("end_mask", Argument::name(cx.f.constant(name, aneforge_mil::Value::Immediate(t)))));
        }
        Ok(cx.op("slice_by_index", args, &r, repr(out.dtype), &out.shape))
    }
}

impl LowerMil for Tile {
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        let reps = cx.ints("reps", &i64s(&self.reps))?;
        Ok(cx.op("tile", vec![("reps", reps), ("x", Argument::name(&ins[0].name))], &r, repr(out.dtype), &out.shape))
    }
}

impl LowerMil for Expand {
    /// MIL has no broadcast_to: a reshape adds the leading axes of size 1,
    /// then `tile` repeats the broadcast axes.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        cx.broadcast_to(&ins[0].name, &ins[0].fact.shape, &out.shape, repr(out.dtype), Some(&r))
    }
}

impl LowerMil for Pad {
    /// `pad` over the trailing axes that are padded (MIL pads the last N
    /// axes of its pad list), with the mode spelled out.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = repr(out.dtype);
        let r = cx.result();
        let first = self.pads.iter().position(|&(a, b)| a + b > 0).unwrap_or(self.pads.len().saturating_sub(1));
        let flat: Vec<i64> = self.pads[first..].iter().flat_map(|&(a, b)| [a as i64, b as i64]).collect();
        let (mode, value) = match self.mode {
            PadMode::Constant(v) => ("constant", v),
            PadMode::Reflect => ("reflect", 0.0),
            PadMode::Replicate => ("replicate", 0.0),
        };
        let args = vec![
            ("constant_val", cx.scalar("constant_val", d, value)?),
            ("mode", cx.string("mode", mode)?),
            ("pad", cx.ints("pad", &flat)?),
            ("x", Argument::name(&ins[0].name)),
        ];
        Ok(cx.op("pad", args, &r, d, &out.shape))
    }
}

impl LowerMil for Gather {
    /// `gather` with a constant int32 indices tensor: the engine compiles
    /// gather only when the indices are known at compile time, which the
    /// graph guarantees.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let r = cx.result();
        let idx: Vec<f32> = self.indices.iter().map(|&i| i as f32).collect();
        let shape = if self.indices_shape.is_empty() { vec![] } else { self.indices_shape.clone() };
        let ia = cx.tensor("indices", aneforge_mil::DType::Int32, &shape, &idx)?;
        let args = vec![("axis", cx.int("axis", self.axis as i64)?), ("indices", ia), ("x", Argument::name(&ins[0].name))];
        Ok(cx.op("gather", args, &r, repr(out.dtype), &out.shape))
    }
}

impl LowerMil for ScatterAdd {
    /// The backward of a constant-index gather: a matmul with a constant
    /// one-hot matrix M [size, K] (M[i, j] = 1 where index j is i) over dy
    /// viewed as [outer, K, inner]. The engine has no scatter, and repeated
    /// indices accumulate in the matmul's wide accumulator.
    fn lower_mil(&self, cx: &mut MilCtx, ins: &[Val], out: &Fact) -> Result<String> {
        let d = repr(out.dtype);
        let r = cx.result();
        let dy = ins[0].fact;
        let k = self.indices.len();
        let outer: usize = dy.shape[..self.axis].iter().product();
        let inner: usize = dy.shape[self.axis + self.indices_shape.len()..].iter().product();
        let mut onehot = vec![0.0f32; self.size * k];
        for (j, &i) in self.indices.iter().enumerate() {
            onehot[i * k + j] = 1.0;
        }
        let m = cx.tensor("onehot", d, &[self.size, k], &onehot)?;
        let s3 = cx.ints("shape", &[outer as i64, k as i64, inner as i64])?;
        let y3 = cx.tmp("reshape", vec![("shape", s3), ("x", Argument::name(&ins[0].name))], d, &[outer, k, inner]);
        let (f1, f2) = (cx.boolean("transpose_x", false)?, cx.boolean("transpose_y", false)?);
        let mm = cx.tmp("matmul", vec![("transpose_x", f1), ("transpose_y", f2), ("x", m), ("y", Argument::name(y3))], d, &[outer, self.size, inner]);
        let so = cx.ints("shape", &i64s(&out.shape))?;
        Ok(cx.op("reshape", vec![("shape", so), ("x", Argument::name(mm))], &r, d, &out.shape))
    }
}
