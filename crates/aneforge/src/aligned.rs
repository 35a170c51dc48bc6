//! f32 buffers that start on a cache line. A `Vec<f32>` large enough to be
//! mapped by the allocator starts 16 bytes into a page, so every 64-byte
//! vector load or store of it crossed two cache lines.

use std::ops::{Deref, DerefMut};

/// One cache line of floats: the unit a [`Buf`] is allocated in.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line([f32; 16]);

// SAFETY: sixteen f32s and no padding (size 64, align 64).
unsafe impl bytemuck::Zeroable for Line {}
// SAFETY: as above; every bit pattern is a valid Line.
unsafe impl bytemuck::Pod for Line {}

/// A zero-initialised f32 buffer whose first element is 64-byte aligned.
#[derive(Clone, Default)]
pub(crate) struct Buf {
    lines: Vec<Line>,
    len: usize,
}

impl Buf {
    pub const fn new() -> Buf {
        Buf { lines: Vec::new(), len: 0 }
    }

    pub fn zeroed(len: usize) -> Buf {
        Buf { lines: vec![Line([0.0; 16]); len.div_ceil(16)], len }
    }

    pub fn from_slice(v: &[f32]) -> Buf {
        // Whole lines straight from the source: no zero-fill to overwrite.
        let chunks = v.chunks_exact(16);
        let tail = chunks.remainder();
        let mut lines: Vec<Line> = chunks.map(|c| Line(c.try_into().expect("chunks_exact(16)"))).collect();
        if !tail.is_empty() {
            let mut last = [0.0; 16];
            last[..tail.len()].copy_from_slice(tail);
            lines.push(Line(last));
        }
        Buf { lines, len: v.len() }
    }

    /// Makes the buffer at least `len` values long (new ones zero). Callers
    /// use it as reusable scratch sized for the largest job seen, so it
    /// never shrinks.
    pub fn grow_to(&mut self, len: usize) {
        if len <= self.len {
            return;
        }
        if len > self.lines.len() * 16 {
            self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        }
        // Values past `len` inside the last line are still zero: nothing
        // ever shrinks `len` to expose written ones.
        self.len = len;
    }
}

impl std::fmt::Debug for Buf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Buf({} values)", self.len)
    }
}

impl Deref for Buf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &bytemuck::cast_slice(&self.lines)[..self.len]
    }
}

impl DerefMut for Buf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut bytemuck::cast_slice_mut(&mut self.lines)[..self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_on_a_cache_line_and_grows_with_zeros() {
        let mut b = Buf::zeroed(5);
        assert_eq!(b.as_ptr() as usize % 64, 0);
        assert_eq!(&b[..], &[0.0; 5]);
        b[4] = 1.0;
        b.grow_to(3);
        assert_eq!(b.len(), 5, "grow_to never shrinks");
        b.grow_to(40);
        assert_eq!(b.len(), 40);
        assert_eq!(b[4], 1.0);
        assert!(b[5..].iter().all(|&v| v == 0.0), "grown values are zeros");
        assert_eq!(b.as_ptr() as usize % 64, 0);
    }

    #[test]
    fn from_slice_copies_every_value_and_pads_the_last_line_with_zeros() {
        for n in [0, 1, 15, 16, 17, 33] {
            let v: Vec<f32> = (0..n).map(|i| i as f32 + 0.5).collect();
            let b = Buf::from_slice(&v);
            assert_eq!(&b[..], &v[..]);
            assert_eq!(b.as_ptr() as usize % 64, 0);
            let mut g = b.clone();
            g.grow_to(n + 16);
            assert!(g[n..].iter().all(|&x| x == 0.0));
        }
    }
}
