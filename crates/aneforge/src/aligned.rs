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
        let mut b = Buf::zeroed(v.len());
        b.copy_from_slice(v);
        b
    }

    /// Grows to `len` values (new ones zero), as `Vec::resize(len, 0.0)`;
    /// never shrinks the allocation.
    pub fn resize(&mut self, len: usize) {
        if len > self.lines.len() * 16 {
            self.lines.resize(len.div_ceil(16), Line([0.0; 16]));
        }
        if len > self.len {
            let start = self.len;
            self.len = len;
            self[start..].fill(0.0);
        } else {
            self.len = len;
        }
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
        b.resize(3);
        b.resize(40);
        assert_eq!(b.len(), 40);
        assert!(b.iter().all(|&v| v == 0.0), "values past a shrink come back as zeros");
        assert_eq!(b.as_ptr() as usize % 64, 0);
    }
}
