//! Target-driven rewrites: where a family cannot run an op or shape as
//! written but native ops can express it, rewrite instead of refusing, and
//! say so in the compile report.
//!
//! * `sin` / `cos` below H15 (no native unit): range reduction to
//!   [-π, π] with a two-part 2π (Cody–Waite, so `k·2π` stays exact in fp16),
//!   a fold to [0, π/2], and a degree-7 odd minimax polynomial (max error
//!   6e-7, far below fp16's 4.9e-4 spacing near 1). Everything is mul, add,
//!   sub, round, abs, sign and minimum: native on every MIL family. Accurate
//!   to a few fp16 ulps for |x| up to ~60 (k·6.28125 exact in fp16); beyond
//!   that the fp16 input itself is coarser than the result's precision.
//! * A reduction (sum, mean, max, min, sum_square, l1_norm) over one axis
//!   longer than the target's spatial limit: the axis is cut into equal
//!   tiles under the limit, each tile reduced, the partial results combined
//!   (add / maximum / minimum; means weighted by tile length). The tiles are
//!   pushed up through the elementwise ops that feed the reduction, so
//!   `sum(x * x)` tiles the `mul` too and no long intermediate remains; the
//!   tiles finally slice the program input (a DMA window, which the limit
//!   does not apply to).
//! * `upsample_nearest` by an integer factor below H14 (no texture engine):
//!   every pixel repeated `s` times is reshape → broadcast → reshape, which
//!   is exact and runs on every MIL family. Bilinear and non-integer scales
//!   are left to the validator (with a matmul decomposition as its hint).
//! * A "patchify" conv (stride equal to the kernel, no padding, no
//!   dilation: ViT's 16x16/s16 stem) whose kernel is wider than the target
//!   allows: the patches do not overlap, so cutting the input into them is
//!   pure data movement (space-to-depth: reshape → transpose → reshape), and
//!   the conv becomes a 1x1 conv over `C·kh·kw` channels. The channels are
//!   laid out in OIHW's own (c, ki, kj) order, so the new weight is the old
//!   one reshaped to `[O, C/groups·kh·kw, 1, 1]` (no data moves, and grouped
//!   convs stay grouped); every output is the same sum of the same products.

use crate::error::Result;
use crate::graph::{Graph, Node, ValueId};
use crate::fact::Fact;
use crate::ops::conv::Window;
use crate::ops::{Binary, Const, Conv, Expand, Op, Reduce, ReduceKind, Reshape, ResizeMode, Slice, Transpose, Unary};
use crate::DType;
use aneforge_target::{Capability, Target};
use std::collections::HashMap;
use std::fmt;

/// One rewrite made instead of a refusal, for the compile report.
#[derive(Clone, Debug, PartialEq)]
pub struct Rewrite {
    /// The op that was rewritten.
    pub op: String,
    /// The user's file:line that built it.
    pub origin: Option<String>,
    /// What it became and why.
    pub what: String,
}

impl fmt::Display for Rewrite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.origin {
            Some(o) => write!(f, "{} at {o}: {}", self.op, self.what),
            None => write!(f, "{}: {}", self.op, self.what),
        }
    }
}

/// Degree-7 odd minimax polynomial for sin on [0, π/2]: c1 u + c3 u³ + c5 u⁵ + c7 u⁷.
const SIN_POLY: [f32; 4] = [0.999_996_6, -0.166_648_29, 0.008_306_332, -0.000_183_638_39];
/// 2π = TWO_PI_HI + TWO_PI_LO with TWO_PI_HI = 201/32 (8 significant bits),
/// so k·TWO_PI_HI is exact in fp16 for |k| ≤ 10.
const TWO_PI_HI: f32 = 6.281_25;
const TWO_PI_LO: f32 = (std::f64::consts::TAU - 6.281_25) as f32;
/// π and π/2 split the same way (exact fp16 high parts).
const PI_HI: f32 = 3.140_625;
const PI_LO: f32 = (std::f64::consts::PI - 3.140_625) as f32;
const HALF_PI_HI: f32 = 1.570_312_5;
const HALF_PI_LO: f32 = (std::f64::consts::FRAC_PI_2 - 1.570_312_5) as f32;

struct Rewriter<'a> {
    old: &'a Graph,
    target: &'a Target,
    ng: Graph,
    map: Vec<ValueId>,
    tiles: HashMap<(ValueId, usize, usize, usize), ValueId>,
    sincos_native: bool,
}

impl Rewriter<'_> {
    fn constant(&mut self, v: f32, dtype: DType, origin: &Option<String>) -> Result<ValueId> {
        self.ng.push(Op::Const(Const::scalar(v, dtype)), vec![], origin.clone())
    }

    fn binary(&mut self, b: Binary, x: ValueId, y: ValueId, origin: &Option<String>) -> Result<ValueId> {
        self.ng.push(Op::Binary(b), vec![x, y], origin.clone())
    }

    fn binary_c(&mut self, b: Binary, x: ValueId, c: f32, origin: &Option<String>) -> Result<ValueId> {
        let dtype = self.ng.nodes[x].fact.dtype;
        let c = self.constant(c, dtype, origin)?;
        self.binary(b, x, c, origin)
    }

    fn unary(&mut self, u: Unary, x: ValueId, origin: &Option<String>) -> Result<ValueId> {
        self.ng.push(Op::Unary(u), vec![x], origin.clone())
    }

    /// sin(x) or cos(x) from native ops (see the module docs).
    fn sincos(&mut self, x: ValueId, cos: bool, o: &Option<String>) -> Result<ValueId> {
        use Binary::*;
        let t = self.binary_c(Mul, x, (1.0 / std::f64::consts::TAU) as f32, o)?;
        let k = self.unary(Unary::Round, t, o)?;
        let khi = self.binary_c(Mul, k, TWO_PI_HI, o)?;
        let klo = self.binary_c(Mul, k, TWO_PI_LO, o)?;
        let r0 = self.binary(Sub, x, khi, o)?;
        let r = self.binary(Sub, r0, klo, o)?; // r ∈ [-π, π]
        let a = self.unary(Unary::Abs, r, o)?;
        let u = if cos {
            // cos(r) = cos(|r|) = sin(π/2 − |r|), argument in [-π/2, π/2]
            let h = self.constant(HALF_PI_HI, self.ng.nodes[a].fact.dtype, o)?;
            let d = self.binary(Sub, h, a, o)?;
            self.binary_c(Add, d, HALF_PI_LO, o)?
        } else {
            // sin(|r|) = sin(min(|r|, π − |r|)), argument in [0, π/2]
            let p = self.constant(PI_HI, self.ng.nodes[a].fact.dtype, o)?;
            let d = self.binary(Sub, p, a, o)?;
            let pa = self.binary_c(Add, d, PI_LO, o)?;
            self.binary(Minimum, a, pa, o)?
        };
        let u2 = self.binary(Mul, u, u, o)?;
        // Horner in u²: u · (c1 + u²(c3 + u²(c5 + u² c7)))
        let mut p = self.binary_c(Mul, u2, SIN_POLY[3], o)?;
        for k in (0..3).rev() {
            let s = self.binary_c(Add, p, SIN_POLY[k], o)?;
            p = if k == 0 { s } else { self.binary(Mul, s, u2, o)? };
        }
        let poly = self.binary(Mul, p, u, o)?;
        if cos {
            Ok(poly)
        } else {
            // sin is odd: sin(r) = sign(r) · sin(|r|)
            let s = self.unary(Unary::Sign, r, o)?;
            self.binary(Mul, s, poly, o)
        }
    }

    /// Emits unary `u` on `x`, as the polynomial when the target needs it.
    fn emit_unary(&mut self, u: Unary, x: ValueId, o: &Option<String>) -> Result<ValueId> {
        match u {
            Unary::Sin | Unary::Cos if !self.sincos_native && self.ng.nodes[x].fact.dtype.is_float() => {
                self.sincos(x, u == Unary::Cos, o)
            }
            _ => self.unary(u, x, o),
        }
    }

    /// The window `[begin, begin + len)` of axis `axis` of old value `v`, in
    /// the new graph: elementwise producers are recomputed on the window of
    /// their operands (broadcast operands pass through whole), anything else
    /// is sliced.
    fn tile(&mut self, v: ValueId, axis: usize, begin: usize, len: usize) -> Result<ValueId> {
        if let Some(&t) = self.tiles.get(&(v, axis, begin, len)) {
            return Ok(t);
        }
        let node: &Node = &self.old.nodes[v];
        let o = node.origin.clone();
        let elementwise = matches!(node.op, Op::Unary(_) | Op::Binary(_) | Op::Where(_) | Op::Cast(_));
        let out = if elementwise {
            let rank = node.fact.rank();
            let mut ins = Vec::with_capacity(node.inputs.len());
            for &j in &node.inputs {
                let f = &self.old.nodes[j].fact;
                let off = rank - f.rank();
                if axis < off || f.shape[axis - off] == 1 {
                    ins.push(self.map[j]);
                } else {
                    ins.push(self.tile(j, axis - off, begin, len)?);
                }
            }
            match node.op.clone() {
                Op::Unary(u) => self.emit_unary(u, ins[0], &o)?,
                op => self.ng.push(op, ins, o)?,
            }
        } else {
            let shape = &node.fact.shape;
            let mut b = vec![0; shape.len()];
            let mut l = shape.clone();
            b[axis] = begin;
            l[axis] = len;
            let s = Slice { begin: b, len: l, stride: vec![1; shape.len()] };
            self.ng.push(Op::Slice(s), vec![self.map[v]], o)?
        };
        self.tiles.insert((v, axis, begin, len), out);
        Ok(out)
    }

    /// Nearest upsampling by integer factors (sh, sw) as reshape → broadcast →
    /// reshape through [N·C, H, 1, W, 1] (rank 5, within the engine's limit).
    /// None when the scale is not an integer on both axes.
    fn repeat_upsample(&mut self, i: ValueId) -> Result<Option<ValueId>> {
        let node = &self.old.nodes[i];
        let xs = &self.old.nodes[node.inputs[0]].fact.shape;
        let os = &node.fact.shape;
        let (&[n, c, h, w], &[_, _, oh, ow]) = (&xs[..], &os[..]) else { return Ok(None) };
        if oh % h != 0 || ow % w != 0 {
            return Ok(None);
        }
        let (sh, sw) = (oh / h, ow / w);
        let o = node.origin.clone();
        let x = self.map[node.inputs[0]];
        let r = self.ng.push(Op::Reshape(Reshape { shape: vec![n * c, h, 1, w, 1] }), vec![x], o.clone())?;
        let e = self.ng.push(Op::Expand(Expand { shape: vec![n * c, h, sh, w, sw] }), vec![r], o.clone())?;
        Ok(Some(self.ng.push(Op::Reshape(Reshape { shape: vec![n, c, oh, ow] }), vec![e], o)?))
    }

    /// A patchify conv as space-to-depth + a 1x1 conv (see the module docs).
    /// None when the intermediate tensors would themselves break a limit
    /// (then the original conv is validated, and refused, as written).
    fn patchify(&mut self, i: ValueId, c: &Conv) -> Result<Option<ValueId>> {
        let node = &self.old.nodes[i];
        let (xid, wid) = (node.inputs[0], node.inputs[1]);
        let &[n, ch, h, w] = &self.old.nodes[xid].fact.shape[..] else { return Ok(None) };
        let &[o, cg, _, _] = &self.old.nodes[wid].fact.shape[..] else { return Ok(None) };
        let [kh, kw] = c.window.kernel;
        // floor mode: rows and columns past the last whole patch are never read
        let (oh, ow) = (h / kh, w / kw);
        let cols = vec![n * ch, oh, kh, ow, kw];
        let patches = vec![n * ch, kh, kw, oh, ow];
        let folded = vec![n, ch * kh * kw, oh, ow];
        let fits = [&cols, &patches, &folded].iter().all(|s| {
            let s: Vec<u64> = s.iter().map(|&d| d as u64).collect();
            self.target.check_shape(&s, super::channel_axis(s.len())).is_empty()
        });
        if !fits {
            return Ok(None);
        }
        let org = node.origin.clone();
        let mut x = self.map[xid];
        if (oh * kh, ow * kw) != (h, w) {
            let crop = Slice { begin: vec![0; 4], len: vec![n, ch, oh * kh, ow * kw], stride: vec![1; 4] };
            x = self.ng.push(Op::Slice(crop), vec![x], org.clone())?;
        }
        let x = self.ng.push(Op::Reshape(Reshape { shape: cols }), vec![x], org.clone())?;
        let x = self.ng.push(Op::Transpose(Transpose { perm: vec![0, 2, 4, 1, 3] }), vec![x], org.clone())?;
        let x = self.ng.push(Op::Reshape(Reshape { shape: folded }), vec![x], org.clone())?;
        let wshape = vec![o, cg * kh * kw, 1, 1];
        let wt = match &self.old.nodes[wid].op {
            // a baked weight is re-declared with the new shape over the same data
            Op::Const(k) => {
                let k = Const { data: k.data.clone(), fact: Fact::new(wshape, k.fact.dtype) };
                self.ng.push(Op::Const(k), vec![], self.old.nodes[wid].origin.clone())?
            }
            _ => self.ng.push(Op::Reshape(Reshape { shape: wshape }), vec![self.map[wid]], org.clone())?,
        };
        let mut ins = vec![x, wt];
        ins.extend(node.inputs[2..].iter().map(|&j| self.map[j]));
        let pointwise = Window { kernel: [1, 1], stride: [1, 1], pad: [0; 4], dilation: [1, 1] };
        Ok(Some(self.ng.push(Op::Conv(Conv { window: pointwise, ..*c }), ins, org)?))
    }

    /// A reduction over one too-long axis as reductions of tiles, combined.
    /// None when the reduction is not of that form (then it is validated as is).
    fn tiled_reduce(&mut self, i: ValueId, r: &Reduce) -> Result<Option<ValueId>> {
        let node = &self.old.nodes[i];
        let x = node.inputs[0];
        let xs = self.old.nodes[x].fact.shape.clone();
        let max = self.target.max_axis as usize;
        let long: Vec<usize> = r.axes.iter().copied().filter(|&a| xs[a] > max).collect();
        let [ax] = long[..] else { return Ok(None) };
        let combine = match r.kind {
            ReduceKind::Sum | ReduceKind::Mean | ReduceKind::SumSquare | ReduceKind::L1Norm => Binary::Add,
            ReduceKind::Max => Binary::Maximum,
            ReduceKind::Min => Binary::Minimum,
            _ => return Ok(None),
        };
        let o = node.origin.clone();
        let n = xs[ax];
        let pieces = n.div_ceil(max);
        let size = n.div_ceil(pieces);
        let mut acc: Option<ValueId> = None;
        let mut begin = 0;
        while begin < n {
            let len = size.min(n - begin);
            let xt = self.tile(x, ax, begin, len)?;
            let part = Reduce { kind: r.kind, axes: r.axes.clone(), keepdims: true };
            let mut y = self.ng.push(Op::Reduce(part), vec![xt], o.clone())?;
            if r.kind == ReduceKind::Mean {
                // a mean of means, weighted by tile length (no tiny 1/n constant)
                y = self.binary_c(Binary::Mul, y, len as f32 / n as f32, &o)?;
            }
            acc = Some(match acc {
                None => y,
                Some(a) => self.binary(combine, a, y, &o)?,
            });
            begin += len;
        }
        let Some(mut y) = acc else { return Ok(None) };
        if !r.keepdims {
            y = self.ng.push(Op::Reshape(Reshape { shape: node.fact.shape.clone() }), vec![y], o)?;
        }
        Ok(Some(y))
    }
}

/// A conv whose patches do not overlap and whose kernel is too wide for
/// `target`: what [`Rewriter::patchify`] rewrites.
fn too_wide_patchify(c: &Conv, target: &Target) -> bool {
    let w = &c.window;
    w.stride == w.kernel && w.pad == [0; 4] && w.dilation == [1, 1] && !target.conv_kernel_width_ok(w.kernel[1] as u64)
}

/// Rewrites what `target` cannot run as written but native ops can express
/// (see the module docs), returning the new graph and what was rewritten.
/// Targets without MIL are left alone: nothing compiles for them anyway.
pub fn legalize(g: Graph, target: &Target) -> Result<(Graph, Vec<Rewrite>)> {
    if !target.mil_supported {
        return Ok((g, vec![]));
    }
    let sincos_native = target.supports(Capability::SinCos);
    let texture_native = target.supports(Capability::TextureOps);
    let max = target.max_axis as usize;
    let needs_work = g.nodes.iter().any(|n| match &n.op {
        Op::Unary(Unary::Sin | Unary::Cos) => !sincos_native,
        Op::Resize(r) => r.mode == ResizeMode::Nearest && !texture_native,
        Op::Reduce(r) => r.axes.iter().any(|&a| n.inputs.first().is_some_and(|&x| g.nodes[x].fact.shape[a] > max)),
        Op::Conv(c) => too_wide_patchify(c, target),
        _ => false,
    });
    if !needs_work {
        return Ok((g, vec![]));
    }
    let mut rw = Rewriter {
        old: &g,
        target,
        ng: Graph { nodes: Vec::with_capacity(g.nodes.len()), outputs: vec![] },
        map: Vec::with_capacity(g.nodes.len()),
        tiles: HashMap::new(),
        sincos_native,
    };
    let mut done = Vec::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let o = node.origin.clone();
        let replaced = match &node.op {
            Op::Unary(u @ (Unary::Sin | Unary::Cos)) if !sincos_native && node.fact.dtype.is_float() => {
                let y = rw.sincos(rw.map[node.inputs[0]], *u == Unary::Cos, &o)?;
                done.push(Rewrite {
                    op: u.op_name().into(),
                    origin: o.clone(),
                    what: format!(
                        "no native {} below {} on {}; computed as range reduction + a degree-7 polynomial \
                         from mul/add/round/abs (within a few fp16 ulps for |x| <= 64; the error grows as |x| * 2^-11 beyond)",
                        u.op_name(),
                        Capability::SinCos.first_family(),
                        target.lower_name()
                    ),
                });
                Some(y)
            }
            Op::Resize(rz) if rz.mode == ResizeMode::Nearest && !texture_native => {
                let y = rw.repeat_upsample(i)?;
                if y.is_some() {
                    done.push(Rewrite {
                        op: node.op.name(),
                        origin: o.clone(),
                        what: format!(
                            "no texture engine below {} on {}; integer-factor nearest upsampling computed as \
                             reshape + broadcast + reshape (exact)",
                            Capability::TextureOps.first_family(),
                            target.lower_name()
                        ),
                    });
                }
                y
            }
            Op::Conv(c) if too_wide_patchify(c, target) => {
                let y = rw.patchify(i, c)?;
                if let Some(y) = y {
                    let [kh, kw] = c.window.kernel;
                    let k = rw.ng.nodes[y].inputs[1];
                    done.push(Rewrite {
                        op: node.op.name(),
                        origin: o.clone(),
                        what: format!(
                            "kernel {kh}x{kw} at stride {kh}x{kw} (non-overlapping patches) is wider than {}'s limit \
                             of {}; computed as space-to-depth (reshape + transpose + reshape) and a 1x1 conv, the \
                             weight reshaped to {} at compile time (same products, same sums)",
                            target.lower_name(),
                            target.max_conv_kernel_width,
                            crate::fact::fmt_shape(&rw.ng.nodes[k].fact.shape)
                        ),
                    });
                }
                y
            }
            Op::Reduce(r) => {
                let y = rw.tiled_reduce(i, r)?;
                if y.is_some() {
                    let xs = &g.nodes[node.inputs[0]].fact.shape;
                    let ax = r.axes.iter().copied().find(|&a| xs[a] > max).unwrap_or(0);
                    done.push(Rewrite {
                        op: r.kind.op_name().into(),
                        origin: o.clone(),
                        what: format!(
                            "axis {ax} of length {} is above {}'s limit of {max}; tiled into {} pieces reduced \
                             separately and combined",
                            xs[ax],
                            target.lower_name(),
                            xs[ax].div_ceil(max)
                        ),
                    });
                }
                y
            }
            _ => None,
        };
        let id = match replaced {
            Some(y) => {
                rw.ng.nodes[y].name = node.name.clone();
                y
            }
            None => {
                let inputs = node.inputs.iter().map(|&j| rw.map[j]).collect();
                rw.ng.nodes.push(Node { inputs, ..node.clone() });
                rw.ng.nodes.len() - 1
            }
        };
        rw.map.push(id);
    }
    let outputs = g.outputs.iter().map(|&o| rw.map[o]).collect();
    let mut ng = rw.ng;
    ng.outputs = outputs;
    // the long intermediates the tiles replaced are now dead
    let ng = crate::passes::eliminate_dead_code(ng)?;
    Ok((ng, done))
}
