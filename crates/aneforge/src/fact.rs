//! What is known about a value at build time: its shape and dtype.

use crate::dtype::DType;
use crate::error::{Error, Result};
use std::fmt;

/// The largest single tensor the builder accepts, in bytes of fp16 storage.
/// Anything bigger would exhaust the host before the engine ever saw it.
pub const MAX_TENSOR_BYTES: u128 = 8 << 30;

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Fact {
    pub shape: Vec<usize>,
    pub dtype: DType,
}

impl Fact {
    pub fn new(shape: Vec<usize>, dtype: DType) -> Fact {
        Fact { shape, dtype }
    }
    pub fn rank(&self) -> usize {
        self.shape.len()
    }
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

impl fmt::Display for Fact {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}{}", self.dtype, ShapeFmt(&self.shape))
    }
}

/// Formats a shape as `[1, 3, 224, 224]`.
pub struct ShapeFmt<'a>(pub &'a [usize]);

impl fmt::Display for ShapeFmt<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[")?;
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, ", ")?;
            }
            write!(f, "{d}")?;
        }
        write!(f, "]")
    }
}

pub fn fmt_shape(s: &[usize]) -> String {
    ShapeFmt(s).to_string()
}

/// Refuses zero dims and sizes that would not fit in memory.
pub fn check_shape(op: &str, shape: &[usize]) -> Result<()> {
    if let Some(i) = shape.iter().position(|&d| d == 0) {
        return Err(Error::shape(
            op,
            format!("dimension {i} of {} is 0; every dimension must be at least 1", fmt_shape(shape)),
        ));
    }
    let numel: u128 = shape.iter().map(|&d| d as u128).product();
    let bytes = numel * 2;
    if bytes > MAX_TENSOR_BYTES {
        return Err(Error::Memory {
            op: op.into(),
            msg: format!(
                "shape {} has {numel} elements and would need {} of fp16 storage (limit {}); split the work into smaller tensors",
                fmt_shape(shape),
                human_bytes(bytes),
                human_bytes(MAX_TENSOR_BYTES)
            ),
        });
    }
    Ok(())
}

pub fn human_bytes(b: u128) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b as f64;
    let mut u = 0;
    while v >= 1024.0 && u < UNITS.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// numpy broadcasting of two shapes.
pub fn broadcast_shapes(op: &str, a: &[usize], b: &[usize]) -> Result<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for i in 0..r {
        let da = if i + a.len() >= r { a[i + a.len() - r] } else { 1 };
        let db = if i + b.len() >= r { b[i + b.len() - r] } else { 1 };
        out[i] = if da == db || db == 1 {
            da
        } else if da == 1 {
            db
        } else {
            return Err(Error::shape(
                op,
                format!(
                    "shapes {} and {} do not broadcast (axis {} is {da} vs {db}); reshape one operand or insert an axis of size 1",
                    fmt_shape(a),
                    fmt_shape(b),
                    i as isize - r as isize
                ),
            ));
        };
    }
    Ok(out)
}

/// Normalises a possibly negative axis against `rank`.
pub fn norm_axis(op: &str, axis: i64, rank: usize) -> Result<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r.max(1) {
        return Err(Error::shape(op, format!("axis {axis} is out of range for rank {rank}; use -{rank}..{}", r - 1)));
    }
    Ok(a as usize)
}

/// Normalises and deduplicates a list of axes, sorted ascending.
pub fn norm_axes(op: &str, axes: &[i64], rank: usize) -> Result<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let n = norm_axis(op, a, rank)?;
        if out.contains(&n) {
            return Err(Error::shape(op, format!("axis {a} is listed twice in {axes:?}")));
        }
        out.push(n);
    }
    out.sort_unstable();
    Ok(out)
}

/// A short per-axis list (strides, indices) kept on the stack: kernels build
/// these on every call, and the per-call path must not allocate. Ranks above
/// 8 (legal in the builder, refused for the engine) spill to the heap.
#[derive(Clone, Debug)]
pub struct Dims<T: Copy + Default> {
    buf: [T; 8],
    len: usize,
    heap: Vec<T>,
}

impl<T: Copy + Default> Dims<T> {
    pub fn zeros(len: usize) -> Dims<T> {
        if len <= 8 {
            Dims { buf: [T::default(); 8], len, heap: Vec::new() }
        } else {
            Dims { buf: [T::default(); 8], len, heap: vec![T::default(); len] }
        }
    }
}

impl<T: Copy + Default> std::ops::Deref for Dims<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        if self.len <= 8 {
            &self.buf[..self.len]
        } else {
            &self.heap
        }
    }
}

impl<T: Copy + Default> std::ops::DerefMut for Dims<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        if self.len <= 8 {
            &mut self.buf[..self.len]
        } else {
            &mut self.heap
        }
    }
}

impl<T: Copy + Default> FromIterator<T> for Dims<T> {
    fn from_iter<I: IntoIterator<Item = T>>(it: I) -> Self {
        let mut d = Dims { buf: [T::default(); 8], len: 0, heap: Vec::new() };
        for v in it {
            if d.len < 8 {
                d.buf[d.len] = v;
            } else {
                if d.len == 8 {
                    d.heap.extend_from_slice(&d.buf);
                }
                d.heap.push(v);
            }
            d.len += 1;
        }
        d
    }
}

/// Row-major strides of a contiguous shape, without allocating.
pub fn strides_small(shape: &[usize]) -> Dims<usize> {
    let mut s = Dims::zeros(shape.len());
    let mut acc = 1;
    for i in (0..shape.len()).rev() {
        s[i] = acc;
        acc *= shape[i];
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broadcasting_follows_numpy() {
        assert_eq!(broadcast_shapes("t", &[2, 1, 3], &[4, 1]).unwrap(), vec![2, 4, 3]);
        assert_eq!(broadcast_shapes("t", &[], &[5]).unwrap(), vec![5]);
        assert!(broadcast_shapes("t", &[2, 3], &[4, 3]).is_err());
    }

    #[test]
    fn huge_shapes_are_refused_with_their_size() {
        let e = check_shape("input", &[1 << 20, 1 << 20]).unwrap_err().to_string();
        assert!(e.contains("2.0 TiB"), "{e}");
        assert!(check_shape("input", &[3, 0]).is_err());
    }

    #[test]
    fn small_dims_match_vectors_at_every_rank() {
        for r in 0..12 {
            let shape: Vec<usize> = (1..=r).collect();
            let want: Vec<usize> = (0..r).map(|i| shape[i + 1..].iter().product()).collect();
            assert_eq!(&*strides_small(&shape), want.as_slice());
            let d: Dims<isize> = (0..r as isize).collect();
            assert_eq!(d.to_vec(), (0..r as isize).collect::<Vec<_>>());
        }
    }

    #[test]
    fn axes_normalise() {
        assert_eq!(norm_axes("t", &[-1, 0], 3).unwrap(), vec![0, 2]);
        assert!(norm_axis("t", 3, 3).is_err());
    }
}
