//! Shape and data-movement builders.

use crate::error::{Error, Result};
use crate::fact::{fmt_shape, norm_axes, norm_axis};
use crate::graph::Tensor;
use crate::ops::*;

pub fn reshape(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    Tensor::build(Op::Reshape(Reshape { shape: shape.to_vec() }), vec![x.clone()])
}

/// numpy-style reshape: one `-1` is inferred, `0` is refused.
pub fn reshape_spec(x: &Tensor, spec: &[i64]) -> Result<Tensor> {
    let n = x.fact().numel();
    let known: i64 = spec.iter().filter(|&&d| d != -1).product();
    let infer = spec.iter().filter(|&&d| d == -1).count();
    if infer > 1 || spec.iter().any(|&d| d == 0 || d < -1) {
        return Err(x.err_here(Error::shape(
            "reshape",
            format!("shape {spec:?} may hold one -1 and otherwise positive sizes (input {})", fmt_shape(x.shape())),
        )));
    }
    if infer == 1 && (known == 0 || n as i64 % known != 0) {
        return Err(x.err_here(Error::shape("reshape", format!("cannot infer -1 in {spec:?} for {} ({n} elements)", fmt_shape(x.shape())))));
    }
    let shape: Vec<usize> = spec.iter().map(|&d| if d == -1 { (n as i64 / known) as usize } else { d as usize }).collect();
    reshape(x, &shape)
}

pub fn transpose(x: &Tensor, perm: &[usize]) -> Result<Tensor> {
    if perm.iter().enumerate().all(|(i, &p)| i == p) && perm.len() == x.rank() {
        return Ok(x.clone());
    }
    Tensor::build(Op::Transpose(Transpose { perm: perm.to_vec() }), vec![x.clone()])
}

/// Transpose with possibly negative axes; `None` reverses all axes.
pub fn permute(x: &Tensor, perm: Option<&[i64]>) -> Result<Tensor> {
    let r = x.rank();
    let p: Vec<usize> = match perm {
        None => (0..r).rev().collect(),
        Some(p) => {
            if p.len() != r {
                return Err(x.err_here(Error::shape("transpose", format!("perm {p:?} has {} entries for rank {r}", p.len()))));
            }
            p.iter().map(|&a| norm_axis("transpose", a, r)).collect::<Result<_>>()?
        }
    };
    transpose(x, &p)
}

/// Merges axes `start..=end` into one.
pub fn flatten(x: &Tensor, start: i64, end: i64) -> Result<Tensor> {
    let r = x.rank();
    let (s, e) = (norm_axis("flatten", start, r)?, norm_axis("flatten", end, r)?);
    if s > e {
        return Err(Error::value("flatten", format!("start axis {start} comes after end axis {end}")));
    }
    let mut shape = x.shape()[..s].to_vec();
    shape.push(x.shape()[s..=e].iter().product());
    shape.extend(&x.shape()[e + 1..]);
    reshape(x, &shape)
}

pub fn squeeze(x: &Tensor, axes: Option<&[i64]>) -> Result<Tensor> {
    let r = x.rank();
    let axes: Vec<usize> = match axes {
        None => (0..r).filter(|&a| x.shape()[a] == 1).collect(),
        Some(a) => norm_axes("squeeze", a, r)?,
    };
    for &a in &axes {
        if x.shape()[a] != 1 {
            return Err(x.err_here(Error::shape("squeeze", format!("axis {a} of {} has size {}, not 1", fmt_shape(x.shape()), x.shape()[a]))));
        }
    }
    let shape: Vec<usize> = (0..r).filter(|a| !axes.contains(a)).map(|a| x.shape()[a]).collect();
    reshape(x, &shape)
}

pub fn expand_dims(x: &Tensor, axis: i64) -> Result<Tensor> {
    let r = x.rank() + 1;
    let a = norm_axis("expand_dims", axis, r)?;
    let mut shape = x.shape().to_vec();
    shape.insert(a, 1);
    reshape(x, &shape)
}

pub fn concat(xs: &[Tensor], axis: i64) -> Result<Tensor> {
    let first = xs.first().ok_or_else(|| Error::value("concat", "needs at least one tensor"))?;
    if xs.len() == 1 {
        return Ok(first.clone());
    }
    let axis = norm_axis("concat", axis, first.rank())?;
    Tensor::build(Op::Concat(Concat { axis }), xs.to_vec())
}

pub fn stack(xs: &[Tensor], axis: i64) -> Result<Tensor> {
    let first = xs.first().ok_or_else(|| Error::value("stack", "needs at least one tensor"))?;
    let a = norm_axis("stack", axis, first.rank() + 1)? as i64;
    for t in xs {
        if t.shape() != first.shape() {
            let all: Vec<String> = xs.iter().map(|t| fmt_shape(t.shape())).collect();
            return Err(t.err_here(Error::shape("stack", format!("all tensors must have one shape, got {}", all.join(", ")))));
        }
    }
    let ex: Vec<Tensor> = xs.iter().map(|t| expand_dims(t, a)).collect::<Result<_>>()?;
    concat(&ex, a)
}

/// Splits along `axis` into the given sizes.
pub fn split(x: &Tensor, sizes: &[usize], axis: i64) -> Result<Vec<Tensor>> {
    let a = norm_axis("split", axis, x.rank())?;
    // Checked: a hostile size list must not wrap around to the axis length.
    let total = sizes.iter().try_fold(0usize, |acc, &s| acc.checked_add(s));
    if total != Some(x.shape()[a]) || sizes.contains(&0) {
        return Err(x.err_here(Error::shape(
            "split",
            format!("sizes {sizes:?} must be >= 1 and sum to {} (axis {a} of {})", x.shape()[a], fmt_shape(x.shape())),
        )));
    }
    let mut out = vec![];
    let mut at = 0;
    for &s in sizes {
        out.push(slice_axis(x, a, at, s)?);
        at += s;
    }
    Ok(out)
}

/// Splits along `axis` into `n` equal parts.
pub fn split_n(x: &Tensor, n: usize, axis: i64) -> Result<Vec<Tensor>> {
    let a = norm_axis("split", axis, x.rank())?;
    let d = x.shape()[a];
    if n == 0 || d % n != 0 {
        return Err(x.err_here(Error::shape("split", format!("axis {a} of {} (size {d}) does not split into {n} equal parts", fmt_shape(x.shape())))));
    }
    split(x, &vec![d / n; n], axis)
}

/// `len` elements of `axis` starting at `begin`.
pub fn slice_axis(x: &Tensor, axis: usize, begin: usize, len: usize) -> Result<Tensor> {
    let mut ranges: Vec<(Option<i64>, Option<i64>, i64)> = vec![(None, None, 1); x.rank()];
    ranges[axis] = (Some(begin as i64), Some((begin + len) as i64), 1);
    slice(x, &ranges)
}

/// numpy slicing: `(begin, end, step)` per leading axis.
pub fn slice(x: &Tensor, ranges: &[(Option<i64>, Option<i64>, i64)]) -> Result<Tensor> {
    let s = Slice::from_ranges(x.shape(), ranges).map_err(|e| x.err_here(e))?;
    if s.len == x.shape() && s.stride.iter().all(|&k| k == 1) {
        return Ok(x.clone());
    }
    Tensor::build(Op::Slice(s), vec![x.clone()])
}

/// Crops `(before, after)` elements from each of the trailing axes given.
pub fn crop(x: &Tensor, crops: &[(usize, usize)]) -> Result<Tensor> {
    let r = x.rank();
    if crops.len() > r {
        return Err(Error::shape("crop", format!("{} crops for rank {r}", crops.len())));
    }
    let mut ranges = vec![(None, None, 1); r];
    for (k, &(a, b)) in crops.iter().enumerate() {
        let ax = r - crops.len() + k;
        ranges[ax] = (Some(a as i64), Some(x.shape()[ax] as i64 - b as i64), 1);
    }
    slice(x, &ranges)
}

pub fn reverse(x: &Tensor, axes: &[i64]) -> Result<Tensor> {
    let axes = norm_axes("reverse", axes, x.rank())?;
    let ranges: Vec<_> = (0..x.rank()).map(|a| if axes.contains(&a) { (None, None, -1) } else { (None, None, 1) }).collect();
    slice(x, &ranges)
}

pub fn tile(x: &Tensor, reps: &[usize]) -> Result<Tensor> {
    Tensor::build(Op::Tile(Tile { reps: reps.to_vec() }), vec![x.clone()])
}

pub fn broadcast_to(x: &Tensor, shape: &[usize]) -> Result<Tensor> {
    if x.shape() == shape {
        return Ok(x.clone());
    }
    Tensor::build(Op::Expand(Expand { shape: shape.to_vec() }), vec![x.clone()])
}

/// Pads the trailing axes: `pads` is (before, after) for the last
/// `pads.len()` axes.
pub fn pad(x: &Tensor, pads: &[(usize, usize)], mode: PadMode) -> Result<Tensor> {
    let r = x.rank();
    if pads.len() > r {
        return Err(x.err_here(Error::shape("pad", format!("{} pad pairs for {}", pads.len(), fmt_shape(x.shape())))));
    }
    let mut full = vec![(0, 0); r - pads.len()];
    full.extend_from_slice(pads);
    Tensor::build(Op::Pad(Pad { pads: full, mode }), vec![x.clone()])
}

/// [N, C·r², H, W] → [N, C, H·r, W·r] (PyTorch's pixel_shuffle, ONNX DepthToSpace CRD).
pub fn pixel_shuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let s = four_d("pixel_shuffle", x)?;
    // r² saturates: a huge r is refused, not wrapped to 0 and divided by.
    let rr = r.saturating_mul(r);
    if r == 0 || s[1] % rr != 0 {
        return Err(x.err_here(Error::shape("pixel_shuffle", format!("channels {} must be divisible by r²={rr} (r={r})", s[1]))));
    }
    let c = s[1] / rr;
    let y = reshape(x, &[s[0], c, r, r, s[2], s[3]])?;
    let y = transpose(&y, &[0, 1, 4, 2, 5, 3])?;
    reshape(&y, &[s[0], c, s[2] * r, s[3] * r])
}

/// Inverse of pixel_shuffle.
pub fn pixel_unshuffle(x: &Tensor, r: usize) -> Result<Tensor> {
    let s = four_d("pixel_unshuffle", x)?;
    if r == 0 || s[2] % r != 0 || s[3] % r != 0 {
        return Err(x.err_here(Error::shape("pixel_unshuffle", format!("H and W of {} must be divisible by {r}", fmt_shape(&s)))));
    }
    let y = reshape(x, &[s[0], s[1], s[2] / r, r, s[3] / r, r])?;
    let y = transpose(&y, &[0, 1, 3, 5, 2, 4])?;
    reshape(&y, &[s[0], s[1] * r * r, s[2] / r, s[3] / r])
}

/// [N, C, H, W] → [N, C·b², H/b, W/b] (TensorFlow / ONNX SpaceToDepth order).
pub fn space_to_depth(x: &Tensor, b: usize) -> Result<Tensor> {
    let s = four_d("space_to_depth", x)?;
    if b == 0 || s[2] % b != 0 || s[3] % b != 0 {
        return Err(x.err_here(Error::shape("space_to_depth", format!("H and W of {} must be divisible by {b}", fmt_shape(&s)))));
    }
    let y = reshape(x, &[s[0], s[1], s[2] / b, b, s[3] / b, b])?;
    let y = transpose(&y, &[0, 3, 5, 1, 2, 4])?;
    reshape(&y, &[s[0], s[1] * b * b, s[2] / b, s[3] / b])
}

/// Inverse of space_to_depth (ONNX DepthToSpace, mode DCR).
pub fn depth_to_space(x: &Tensor, b: usize) -> Result<Tensor> {
    let s = four_d("depth_to_space", x)?;
    let bb = b.saturating_mul(b);
    if b == 0 || s[1] % bb != 0 {
        return Err(x.err_here(Error::shape("depth_to_space", format!("channels {} must be divisible by block²={bb} (block={b})", s[1]))));
    }
    let c = s[1] / bb;
    let y = reshape(x, &[s[0], b, b, c, s[2], s[3]])?;
    let y = transpose(&y, &[0, 3, 4, 1, 5, 2])?;
    reshape(&y, &[s[0], c, s[2] * b, s[3] * b])
}

fn four_d(op: &str, x: &Tensor) -> Result<Vec<usize>> {
    if x.rank() != 4 {
        return Err(x.err_here(Error::shape(op, format!("expects [N, C, H, W], got {}", fmt_shape(x.shape())))));
    }
    Ok(x.shape().to_vec())
}

/// Gather with constant indices (any shape) along `axis`.
pub fn gather(x: &Tensor, indices: &[i64], indices_shape: &[usize], axis: i64) -> Result<Tensor> {
    let g = Gather::new(x.shape(), axis, indices, indices_shape.to_vec()).map_err(|e| x.err_here(e))?;
    Tensor::build(Op::Gather(g), vec![x.clone()])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::builder::input;
    use crate::DType;

    #[test]
    fn a_huge_block_size_is_refused_not_a_division_by_zero() {
        // Bug: r * r wrapped to 0 for r = 2^32 and `channels % 0` panicked.
        let x = input(&[1, 4, 2, 2], DType::F16, None).unwrap();
        assert!(matches!(pixel_shuffle(&x, 1 << 32), Err(Error::Shape { .. })));
        assert!(matches!(depth_to_space(&x, 1 << 32), Err(Error::Shape { .. })));
        assert_eq!(pixel_shuffle(&x, 2).unwrap().shape(), &[1, 1, 4, 4]);
    }

    #[test]
    fn overflowing_sizes_are_refused() {
        let x = input(&[1, 4, 2, 2], DType::F16, None).unwrap();
        assert!(split(&x, &[usize::MAX, 5], 1).is_err());
        assert!(tile(&x, &[1, usize::MAX, 1, 1]).is_err());
        assert!(pad(&x, &[(usize::MAX, 1)], crate::ops::PadMode::Constant(0.0)).is_err());
    }
}
