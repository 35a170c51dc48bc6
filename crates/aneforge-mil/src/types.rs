//! Element types, tensor types and tensor data of the MIL IR.

use std::borrow::Cow;
use half::f16;

use crate::error::{Error, Result};

/// A MIL element type.
///
/// The byte-sized and wider types are what ANEForge computes with; the
/// sub-byte types exist because compressed weights (LUT indices, sparse masks,
/// int4 blocks) are stored packed in blob files and typed that way in MIL.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DType {
    Fp16,
    Fp32,
    Int8,
    Uint8,
    Int16,
    Uint16,
    Int32,
    Uint32,
    Bool,
    String,
    Int4,
    Uint1,
    Uint2,
    Uint3,
    Uint4,
    Uint6,
}

impl DType {
    /// Spelling in MIL text (`tensor<fp16, [..]>`), which is also what
    /// coremltools prints, so oracle output can be compared as strings.
    pub fn mil_name(self) -> &'static str {
        match self {
            DType::Fp16 => "fp16",
            DType::Fp32 => "fp32",
            DType::Int8 => "int8",
            DType::Uint8 => "uint8",
            DType::Int16 => "int16",
            DType::Uint16 => "uint16",
            DType::Int32 => "int32",
            DType::Uint32 => "uint32",
            DType::Bool => "bool",
            DType::String => "string",
            DType::Int4 => "int4",
            DType::Uint1 => "uint1",
            DType::Uint2 => "uint2",
            DType::Uint3 => "uint3",
            DType::Uint4 => "uint4",
            DType::Uint6 => "uint6",
        }
    }

    /// Inverse of [`DType::mil_name`], for tools and tests that name types
    /// in text (the fixture binary, JSON specs).
    pub fn from_mil_name(name: &str) -> Option<DType> {
        ALL_DTYPES.iter().copied().find(|d| d.mil_name() == name)
    }

    /// Bits per element in packed storage; `None` for strings, whose size
    /// is not fixed.
    pub fn bit_width(self) -> Option<u32> {
        Some(match self {
            DType::Uint1 => 1,
            DType::Bool => 8,
            DType::Uint2 => 2,
            DType::Uint3 => 3,
            DType::Int4 | DType::Uint4 => 4,
            DType::Uint6 => 6,
            DType::Int8 | DType::Uint8 => 8,
            DType::Fp16 | DType::Int16 | DType::Uint16 => 16,
            DType::Fp32 | DType::Int32 | DType::Uint32 => 32,
            DType::String => return None,
        })
    }

    /// Whether values of this type are narrower than a byte and therefore
    /// bit-packed (LSB first) in blobs and immediate byte strings.
    pub fn is_sub_byte(self) -> bool {
        matches!(self.bit_width(), Some(b) if b < 8)
    }

    /// The code of this type in coremltools' blob storage format
    /// (`BlobDataType.hpp`), or `None` where blobs cannot hold it.
    pub fn blob_code(self) -> Option<u32> {
        Some(match self {
            DType::Fp16 => 1,
            DType::Fp32 => 2,
            DType::Uint8 => 3,
            DType::Int8 => 4,
            DType::Int16 => 6,
            DType::Uint16 => 7,
            DType::Int4 => 8,
            DType::Uint1 => 9,
            DType::Uint2 => 10,
            DType::Uint4 => 11,
            DType::Uint3 => 12,
            DType::Uint6 => 13,
            DType::Int32 => 14,
            DType::Uint32 => 15,
            DType::Bool | DType::String => return None,
        })
    }
}

/// Every element type, in declaration order.
pub const ALL_DTYPES: [DType; 16] = [
    DType::Fp16,
    DType::Fp32,
    DType::Int8,
    DType::Uint8,
    DType::Int16,
    DType::Uint16,
    DType::Int32,
    DType::Uint32,
    DType::Bool,
    DType::String,
    DType::Int4,
    DType::Uint1,
    DType::Uint2,
    DType::Uint3,
    DType::Uint4,
    DType::Uint6,
];

/// A statically shaped tensor type; rank 0 is a scalar.
///
/// The ANE compiles static shapes only, so there are no unknown dimensions.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<usize>,
}

impl TensorType {
    /// A tensor type of the given element type and shape.
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>) -> Self {
        TensorType {
            dtype,
            shape: shape.into(),
        }
    }

    /// A rank-0 type, which the concise dialect spells as the bare dtype.
    pub fn scalar(dtype: DType) -> Self {
        TensorType {
            dtype,
            shape: Vec::new(),
        }
    }

    /// Number of elements (1 for a scalar); `None` on overflow so a hostile
    /// shape cannot wrap around into a small allocation.
    pub fn num_elements(&self) -> Option<usize> {
        self.shape
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
    }

    /// Whether this is a rank-0 type.
    pub fn is_scalar(&self) -> bool {
        self.shape.is_empty()
    }
}

/// Element data of a tensor, row-major.
///
/// Sub-byte types are held one value per element (unpacked) in `U8`/`I8`
/// vectors tagged with the real dtype by [`Tensor`]; packing happens only at
/// write time.
#[derive(Debug, Clone, PartialEq)]
pub enum TensorData {
    F16(Vec<f16>),
    F32(Vec<f32>),
    I8(Vec<i8>),
    U8(Vec<u8>),
    I16(Vec<i16>),
    U16(Vec<u16>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    Bool(Vec<bool>),
    Str(Vec<String>),
}

impl TensorData {
    /// Number of elements held.
    pub fn len(&self) -> usize {
        match self {
            TensorData::F16(v) => v.len(),
            TensorData::F32(v) => v.len(),
            TensorData::I8(v) => v.len(),
            TensorData::U8(v) => v.len(),
            TensorData::I16(v) => v.len(),
            TensorData::U16(v) => v.len(),
            TensorData::I32(v) => v.len(),
            TensorData::U32(v) => v.len(),
            TensorData::Bool(v) => v.len(),
            TensorData::Str(v) => v.len(),
        }
    }

    /// Whether no elements are held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The storage kind name, for error messages.
    fn kind(&self) -> &'static str {
        match self {
            TensorData::F16(_) => "f16",
            TensorData::F32(_) => "f32",
            TensorData::I8(_) => "i8",
            TensorData::U8(_) => "u8",
            TensorData::I16(_) => "i16",
            TensorData::U16(_) => "u16",
            TensorData::I32(_) => "i32",
            TensorData::U32(_) => "u32",
            TensorData::Bool(_) => "bool",
            TensorData::Str(_) => "String",
        }
    }
}

/// A constant tensor: its type plus the element data, checked to agree.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    ty: TensorType,
    data: TensorData,
}

impl Tensor {
    /// Builds a tensor, checking that the data's storage fits `dtype`, that
    /// sub-byte values are in range, and that the element count matches the
    /// shape. Sub-byte dtypes take `U8` data (`I8` for int4).
    pub fn new(dtype: DType, shape: impl Into<Vec<usize>>, data: TensorData) -> Result<Self> {
        let ty = TensorType::new(dtype, shape);
        let storage_ok = matches!(
            (dtype, &data),
            (DType::Fp16, TensorData::F16(_))
                | (DType::Fp32, TensorData::F32(_))
                | (DType::Int8 | DType::Int4, TensorData::I8(_))
                | (
                    DType::Uint8
                        | DType::Uint1
                        | DType::Uint2
                        | DType::Uint3
                        | DType::Uint4
                        | DType::Uint6,
                    TensorData::U8(_)
                )
                | (DType::Int16, TensorData::I16(_))
                | (DType::Uint16, TensorData::U16(_))
                | (DType::Int32, TensorData::I32(_))
                | (DType::Uint32, TensorData::U32(_))
                | (DType::Bool, TensorData::Bool(_))
                | (DType::String, TensorData::Str(_))
        );
        if !storage_ok {
            return Err(Error::invalid(format!(
                "tensor of dtype {} cannot hold {} data",
                dtype.mil_name(),
                data.kind()
            )));
        }
        let want = ty.num_elements().ok_or_else(|| {
            Error::invalid(format!("shape {:?} overflows the element count", ty.shape))
        })?;
        if want != data.len() {
            return Err(Error::invalid(format!(
                "shape {:?} needs {want} elements, data has {}",
                ty.shape,
                data.len()
            )));
        }
        if dtype.is_sub_byte() {
            let bits = dtype.bit_width().unwrap_or(8);
            let bad = match &data {
                TensorData::U8(v) => v.iter().any(|&x| u32::from(x) >= (1u32 << bits)),
                TensorData::I8(v) => v.iter().any(|&x| !(-8..=7).contains(&x)),
                _ => false,
            };
            if bad {
                return Err(Error::invalid(format!(
                    "a value does not fit in {}",
                    dtype.mil_name()
                )));
            }
        }
        Ok(Tensor { ty, data })
    }

    /// An fp16 tensor.
    pub fn fp16(shape: impl Into<Vec<usize>>, data: Vec<f16>) -> Result<Self> {
        Tensor::new(DType::Fp16, shape, TensorData::F16(data))
    }

    /// An fp32 tensor.
    pub fn fp32(shape: impl Into<Vec<usize>>, data: Vec<f32>) -> Result<Self> {
        Tensor::new(DType::Fp32, shape, TensorData::F32(data))
    }

    /// An int32 tensor.
    pub fn int32(shape: impl Into<Vec<usize>>, data: Vec<i32>) -> Result<Self> {
        Tensor::new(DType::Int32, shape, TensorData::I32(data))
    }

    /// A rank-1 int32 tensor, the form of MIL's integer-list parameters
    /// (`axes`, `perm`, `strides`, `pad`, ...).
    pub fn int32_list(values: &[i32]) -> Self {
        Tensor {
            ty: TensorType::new(DType::Int32, [values.len()]),
            data: TensorData::I32(values.to_vec()),
        }
    }

    /// An fp16 scalar.
    pub fn scalar_fp16(v: f16) -> Self {
        Tensor {
            ty: TensorType::scalar(DType::Fp16),
            data: TensorData::F16(vec![v]),
        }
    }

    /// An fp32 scalar.
    pub fn scalar_fp32(v: f32) -> Self {
        Tensor {
            ty: TensorType::scalar(DType::Fp32),
            data: TensorData::F32(vec![v]),
        }
    }

    /// An int32 scalar.
    pub fn scalar_int32(v: i32) -> Self {
        Tensor {
            ty: TensorType::scalar(DType::Int32),
            data: TensorData::I32(vec![v]),
        }
    }

    /// A bool scalar.
    pub fn scalar_bool(v: bool) -> Self {
        Tensor {
            ty: TensorType::scalar(DType::Bool),
            data: TensorData::Bool(vec![v]),
        }
    }

    /// A string scalar (`pad_type`, `mode`, `dtype` parameters).
    pub fn scalar_string(v: impl Into<String>) -> Self {
        Tensor {
            ty: TensorType::scalar(DType::String),
            data: TensorData::Str(vec![v.into()]),
        }
    }

    /// The tensor's type.
    pub fn ty(&self) -> &TensorType {
        &self.ty
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.ty.dtype
    }

    /// The shape.
    pub fn shape(&self) -> &[usize] {
        &self.ty.shape
    }

    /// The element data.
    pub fn data(&self) -> &TensorData {
        &self.data
    }

    /// The elements as raw little-endian bytes, sub-byte types packed LSB
    /// first: exactly what a blob payload (and a proto `bytes` immediate)
    /// holds. Errors for strings, which have no fixed-width encoding.
    pub fn to_le_bytes(&self) -> Result<Vec<u8>> {
        self.le_bytes().map(Cow::into_owned)
    }

    /// [`Tensor::to_le_bytes`], borrowing the data itself where it already
    /// is that encoding (every fixed-width type on a little-endian host):
    /// a blob of tens of MB is then written without a copy.
    pub fn le_bytes(&self) -> Result<Cow<'_, [u8]>> {
        let dtype = self.dtype();
        if dtype.is_sub_byte() {
            let bits = dtype.bit_width().unwrap_or(8);
            let values: Vec<u8> = match &self.data {
                TensorData::U8(v) => v.clone(),
                TensorData::I8(v) => v.iter().map(|&x| (x as u8) & 0x0f).collect(),
                _ => return Err(Error::invalid("sub-byte tensor without byte data")),
            };
            return Ok(Cow::Owned(pack_bits(&values, bits)));
        }
        Ok(match &self.data {
            TensorData::F16(v) => le(v),
            TensorData::F32(v) => le(v),
            TensorData::I8(v) => le(v),
            TensorData::U8(v) => Cow::Borrowed(v.as_slice()),
            TensorData::I16(v) => le(v),
            TensorData::U16(v) => le(v),
            TensorData::I32(v) => le(v),
            TensorData::U32(v) => le(v),
            TensorData::Bool(v) => Cow::Owned(v.iter().map(|&x| u8::from(x)).collect()),
            TensorData::Str(_) => {
                return Err(Error::invalid("string tensors have no byte encoding"))
            }
        })
    }

    /// Builds a tensor from raw little-endian bytes of a byte-sized or wider
    /// dtype, the inverse of [`Tensor::to_le_bytes`] (used by tools that read
    /// arrays written by numpy).
    pub fn from_le_bytes(dtype: DType, shape: impl Into<Vec<usize>>, bytes: &[u8]) -> Result<Self> {
        fn chunks<const N: usize, T>(b: &[u8], f: fn([u8; N]) -> T) -> Result<Vec<T>> {
            if !b.chunks_exact(N).remainder().is_empty() {
                return Err(Error::invalid(format!(
                    "{} bytes is not a multiple of the {N}-byte element size",
                    b.len()
                )));
            }
            Ok(b.chunks_exact(N)
                .map(|c| {
                    let mut a = [0u8; N];
                    a.copy_from_slice(c);
                    f(a)
                })
                .collect())
        }
        let data = match dtype {
            DType::Fp16 => TensorData::F16(chunks(bytes, f16::from_le_bytes)?),
            DType::Fp32 => TensorData::F32(chunks(bytes, f32::from_le_bytes)?),
            DType::Int8 => TensorData::I8(bytes.iter().map(|&b| b as i8).collect()),
            DType::Uint8 => TensorData::U8(bytes.to_vec()),
            DType::Int16 => TensorData::I16(chunks(bytes, i16::from_le_bytes)?),
            DType::Uint16 => TensorData::U16(chunks(bytes, u16::from_le_bytes)?),
            DType::Int32 => TensorData::I32(chunks(bytes, i32::from_le_bytes)?),
            DType::Uint32 => TensorData::U32(chunks(bytes, u32::from_le_bytes)?),
            DType::Bool => TensorData::Bool(bytes.iter().map(|&b| b != 0).collect()),
            other => {
                return Err(Error::invalid(format!(
                    "from_le_bytes does not take packed or string dtype {}",
                    other.mil_name()
                )))
            }
        };
        Tensor::new(dtype, shape, data)
    }
}

/// Packs `bits`-wide values into a little-endian bit stream: element `i`
/// occupies bits `[i*bits, (i+1)*bits)`, bit 0 being the LSB of byte 0 — the
/// layout coremltools' MILBlob uses for every sub-byte type.
pub(crate) fn pack_bits(values: &[u8], bits: u32) -> Vec<u8> {
    let total_bits = values.len() * bits as usize;
    let mut out = vec![0u8; total_bits.div_ceil(8)];
    for (i, &v) in values.iter().enumerate() {
        for b in 0..bits as usize {
            if (v >> b) & 1 == 1 {
                let pos = i * bits as usize + b;
                out[pos / 8] |= 1 << (pos % 8);
            }
        }
    }
    out
}

/// Values as little-endian bytes: their own memory on a little-endian
/// host, a swapped copy elsewhere.
fn le<T: bytemuck::Pod>(values: &[T]) -> Cow<'_, [u8]> {
    let bytes: &[u8] = bytemuck::cast_slice(values);
    if cfg!(target_endian = "little") {
        return Cow::Borrowed(bytes);
    }
    let size = std::mem::size_of::<T>();
    let mut out = bytes.to_vec();
    out.chunks_exact_mut(size).for_each(|c| c.reverse());
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_sub_byte_values_lsb_first() {
        // The uint3 example from coremltools' own writer: [1,2,3,4,7] -> D1 78.
        assert_eq!(pack_bits(&[1, 2, 3, 4, 7], 3), vec![0xD1, 0x78]);
        assert_eq!(pack_bits(&[1, 2, 3, 4, 5], 4), vec![0x21, 0x43, 0x05]);
        let t = Tensor::new(DType::Int4, [3], TensorData::I8(vec![-1, 2, -8])).unwrap();
        assert_eq!(t.to_le_bytes().unwrap(), vec![0x2F, 0x08]);
    }

    #[test]
    fn rejects_data_that_does_not_fit_the_type() {
        assert!(Tensor::fp32([2, 2], vec![1.0; 3]).is_err());
        assert!(Tensor::new(DType::Fp16, [1], TensorData::F32(vec![1.0])).is_err());
        assert!(Tensor::new(DType::Uint4, [1], TensorData::U8(vec![16])).is_err());
        assert!(Tensor::fp32([usize::MAX, 2], vec![]).is_err());
    }
}

