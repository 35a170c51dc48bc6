//! Typed arrays decoded from ONNX `TensorProto`s (initializers, `Constant`
//! values, attribute tensors) and back.
//!
//! ONNX spreads one tensor's payload over `raw_data` or one of several typed
//! repeated fields, and packs small integer types and fp16 bit patterns into
//! `int32_data`. The importer should never care which: it gets an [`Array`]
//! with a shape and a Rust vector of the right element type, or an error that
//! names the tensor.

use half::f16;

use crate::error::{OnnxError, Result};
use crate::proto::tensor_proto::{DataLocation, DataType};
use crate::proto::TensorProto;

/// The element types ANEForge reads from a model.
///
/// Deliberately small: these are the types an inference graph for the engine
/// carries (fp32 / fp16 weights, int64 shapes and indices, int8 / uint8
/// quantized weights, boolean masks). Anything else is refused by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32 (`FLOAT`).
    F32,
    /// IEEE binary16 (`FLOAT16`).
    F16,
    /// `INT64`: shapes, axes and indices.
    I64,
    /// `INT32`.
    I32,
    /// `INT8`: quantized weights.
    I8,
    /// `UINT8`: quantized weights and images.
    U8,
    /// `BOOL`: masks and comparison results.
    Bool,
}

impl DType {
    /// Maps an ONNX `TensorProto.DataType` code, or `None` if we do not carry it.
    pub fn from_onnx(code: i32) -> Option<DType> {
        match DataType::try_from(code).ok()? {
            DataType::Float => Some(DType::F32),
            DataType::Float16 => Some(DType::F16),
            DataType::Int64 => Some(DType::I64),
            DataType::Int32 => Some(DType::I32),
            DataType::Int8 => Some(DType::I8),
            DataType::Uint8 => Some(DType::U8),
            DataType::Bool => Some(DType::Bool),
            _ => None,
        }
    }

    /// The ONNX `TensorProto.DataType` code, for writing protos back.
    pub fn to_onnx(self) -> i32 {
        let dt = match self {
            DType::F32 => DataType::Float,
            DType::F16 => DataType::Float16,
            DType::I64 => DataType::Int64,
            DType::I32 => DataType::Int32,
            DType::I8 => DataType::Int8,
            DType::U8 => DataType::Uint8,
            DType::Bool => DataType::Bool,
        };
        dt as i32
    }

    /// Bytes per element in `raw_data`.
    pub fn size_of(self) -> usize {
        match self {
            DType::F32 | DType::I32 => 4,
            DType::F16 => 2,
            DType::I64 => 8,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }

    /// True for the integer types (bool excluded), the ones shape math runs on.
    pub fn is_int(self) -> bool {
        matches!(self, DType::I64 | DType::I32 | DType::I8 | DType::U8)
    }
}

/// Human name of an ONNX data type code for error messages (`DOUBLE`, `STRING`…).
pub fn onnx_dtype_name(code: i32) -> String {
    match DataType::try_from(code) {
        Ok(dt) => dt.as_str_name().to_string(),
        Err(_) => format!("unknown data type code {code}"),
    }
}

/// The element storage of an [`Array`], one variant per [`DType`].
#[derive(Debug, Clone, PartialEq)]
pub enum ArrayData {
    /// fp32 values.
    F32(Vec<f32>),
    /// fp16 values.
    F16(Vec<f16>),
    /// int64 values.
    I64(Vec<i64>),
    /// int32 values.
    I32(Vec<i32>),
    /// int8 values.
    I8(Vec<i8>),
    /// uint8 values.
    U8(Vec<u8>),
    /// bool values.
    Bool(Vec<bool>),
}

impl ArrayData {
    /// The element type.
    pub fn dtype(&self) -> DType {
        match self {
            ArrayData::F32(_) => DType::F32,
            ArrayData::F16(_) => DType::F16,
            ArrayData::I64(_) => DType::I64,
            ArrayData::I32(_) => DType::I32,
            ArrayData::I8(_) => DType::I8,
            ArrayData::U8(_) => DType::U8,
            ArrayData::Bool(_) => DType::Bool,
        }
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            ArrayData::F32(v) => v.len(),
            ArrayData::F16(v) => v.len(),
            ArrayData::I64(v) => v.len(),
            ArrayData::I32(v) => v.len(),
            ArrayData::I8(v) => v.len(),
            ArrayData::U8(v) => v.len(),
            ArrayData::Bool(v) => v.len(),
        }
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The data and shape disagree on the element count.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("shape {shape:?} holds {expected} elements but the data has {found}")]
pub struct ShapeMismatch {
    /// The requested shape.
    pub shape: Vec<usize>,
    /// Its element count.
    pub expected: usize,
    /// The data's element count.
    pub found: usize,
}

/// A dense, row-major, owned tensor value: what an initializer or a folded
/// constant becomes. The shape always matches the element count.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    shape: Vec<usize>,
    data: ArrayData,
}

impl Array {
    /// Pairs a shape with data, refusing a mismatched element count so every
    /// `Array` in the importer can be trusted.
    pub fn new(shape: Vec<usize>, data: ArrayData) -> std::result::Result<Array, ShapeMismatch> {
        let expected = numel(&shape);
        if expected != data.len() {
            return Err(ShapeMismatch { shape, expected, found: data.len() });
        }
        Ok(Array { shape, data })
    }

    /// A 1-D int64 array: the common form of a shape or axes input.
    pub fn from_i64s(values: Vec<i64>) -> Array {
        Array { shape: vec![values.len()], data: ArrayData::I64(values) }
    }

    /// A 1-D fp32 array.
    pub fn from_f32s(values: Vec<f32>) -> Array {
        Array { shape: vec![values.len()], data: ArrayData::F32(values) }
    }

    /// A rank-0 int64 value (what `Gather` of one dim from `Shape` yields).
    pub fn scalar_i64(value: i64) -> Array {
        Array { shape: vec![], data: ArrayData::I64(vec![value]) }
    }

    /// A rank-0 fp32 value.
    pub fn scalar_f32(value: f32) -> Array {
        Array { shape: vec![], data: ArrayData::F32(vec![value]) }
    }

    /// The dimensions (empty for a scalar).
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    /// The elements.
    pub fn data(&self) -> &ArrayData {
        &self.data
    }

    /// Gives up the array's parts without copying (for handing weights to the core).
    pub fn into_parts(self) -> (Vec<usize>, ArrayData) {
        (self.shape, self.data)
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.data.dtype()
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    /// Number of dimensions.
    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    /// Same elements under a new shape; `Err` if the count differs.
    pub fn reshaped(self, shape: Vec<usize>) -> std::result::Result<Array, ShapeMismatch> {
        Array::new(shape, self.data)
    }

    /// The elements widened to int64, for arrays that hold shapes, axes or
    /// indices; `None` for floating-point arrays, where a silent truncation
    /// would hide a malformed model.
    pub fn to_i64_vec(&self) -> Option<Vec<i64>> {
        match &self.data {
            ArrayData::I64(v) => Some(v.clone()),
            ArrayData::I32(v) => Some(v.iter().map(|&x| x as i64).collect()),
            ArrayData::I8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            ArrayData::U8(v) => Some(v.iter().map(|&x| x as i64).collect()),
            ArrayData::Bool(v) => Some(v.iter().map(|&x| x as i64).collect()),
            ArrayData::F32(_) | ArrayData::F16(_) => None,
        }
    }

    /// Shape and elements as fp32, moving the buffer when it already is fp32
    /// (how weights reach the core without a copy).
    pub fn into_f32_parts(self) -> (Vec<usize>, Vec<f32>) {
        match self.data {
            ArrayData::F32(v) => (self.shape, v),
            _ => {
                let v = self.to_f32_vec();
                (self.shape, v)
            }
        }
    }

    /// The elements as fp32 (exact for every type but large int64/int32).
    pub fn to_f32_vec(&self) -> Vec<f32> {
        match &self.data {
            ArrayData::F32(v) => v.clone(),
            ArrayData::F16(v) => v.iter().map(|x| x.to_f32()).collect(),
            ArrayData::I64(v) => v.iter().map(|&x| x as f32).collect(),
            ArrayData::I32(v) => v.iter().map(|&x| x as f32).collect(),
            ArrayData::I8(v) => v.iter().map(|&x| x as f32).collect(),
            ArrayData::U8(v) => v.iter().map(|&x| x as f32).collect(),
            ArrayData::Bool(v) => v.iter().map(|&x| if x { 1.0 } else { 0.0 }).collect(),
        }
    }
}

/// Product of dims (1 for a scalar), saturating so an absurd shape from a
/// file compares unequal to any real element count instead of overflowing.
pub(crate) fn numel(shape: &[usize]) -> usize {
    shape.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or(usize::MAX)
}

/// Decodes an ONNX tensor into an [`Array`].
///
/// Errors name the tensor: external data, unsupported element types, negative
/// dims and payloads whose length disagrees with the shape (a truncated or
/// hand-edited file) are all refused rather than guessed at.
pub fn array_from_proto(t: &TensorProto) -> Result<Array> {
    let name = t.name.as_str();
    let bad = |reason: String| OnnxError::BadTensor { tensor: name.to_string(), reason };

    if t.data_location == DataLocation::External as i32 {
        let location = t
            .external_data
            .iter()
            .find(|kv| kv.key == "location")
            .map(|kv| kv.value.clone())
            .unwrap_or_default();
        return Err(OnnxError::ExternalData { tensor: name.to_string(), location });
    }
    if t.segment.is_some() {
        return Err(bad("segmented tensors are not supported".into()));
    }

    let mut shape = Vec::with_capacity(t.dims.len());
    let mut count: usize = 1;
    for &d in &t.dims {
        let d = usize::try_from(d).map_err(|_| bad(format!("negative dimension {d} in dims {:?}", t.dims)))?;
        count = count
            .checked_mul(d)
            .ok_or_else(|| bad(format!("dims {:?} overflow the address space", t.dims)))?;
        shape.push(d);
    }

    let dtype = DType::from_onnx(t.data_type).ok_or_else(|| OnnxError::UnsupportedDType {
        tensor: name.to_string(),
        dtype: onnx_dtype_name(t.data_type),
    })?;

    let raw: &[u8] = &t.raw_data;
    let data = if !raw.is_empty() {
        let want = count
            .checked_mul(dtype.size_of())
            .ok_or_else(|| bad(format!("dims {:?} overflow the address space", t.dims)))?;
        if raw.len() != want {
            return Err(bad(format!(
                "raw_data has {} bytes but {count} elements of {} need {want}",
                raw.len(),
                onnx_dtype_name(t.data_type)
            )));
        }
        match dtype {
            DType::F32 => ArrayData::F32(decode_le(raw)),
            DType::F16 => ArrayData::F16(decode_le(raw)),
            DType::I64 => ArrayData::I64(decode_le(raw)),
            DType::I32 => ArrayData::I32(decode_le(raw)),
            DType::I8 => ArrayData::I8(raw.iter().map(|&b| b as i8).collect()),
            DType::U8 => ArrayData::U8(raw.to_vec()),
            DType::Bool => ArrayData::Bool(raw.iter().map(|&b| b != 0).collect()),
        }
    } else {
        let narrow = |what: &str, lo: i64, hi: i64| -> Result<()> {
            match t.int32_data.iter().find(|&&v| (v as i64) < lo || (v as i64) > hi) {
                Some(v) => Err(bad(format!("int32_data holds {v}, out of range for {what}"))),
                None => Ok(()),
            }
        };
        match dtype {
            DType::F32 => ArrayData::F32(t.float_data.clone()),
            DType::I64 => ArrayData::I64(t.int64_data.clone()),
            DType::I32 => ArrayData::I32(t.int32_data.clone()),
            // ONNX packs these narrow types (and fp16 bit patterns) into int32_data.
            DType::F16 => {
                narrow("FLOAT16 bit patterns", 0, u16::MAX as i64)?;
                ArrayData::F16(t.int32_data.iter().map(|&v| f16::from_bits(v as u16)).collect())
            }
            DType::I8 => {
                narrow("INT8", i8::MIN as i64, i8::MAX as i64)?;
                ArrayData::I8(t.int32_data.iter().map(|&v| v as i8).collect())
            }
            DType::U8 => {
                narrow("UINT8", 0, u8::MAX as i64)?;
                ArrayData::U8(t.int32_data.iter().map(|&v| v as u8).collect())
            }
            DType::Bool => ArrayData::Bool(t.int32_data.iter().map(|&v| v != 0).collect()),
        }
    };

    if data.len() != count {
        return Err(bad(format!(
            "dims {:?} need {count} elements but the tensor holds {}",
            t.dims,
            data.len()
        )));
    }
    Ok(Array { shape, data })
}

/// Encodes an [`Array`] as an ONNX tensor with little-endian `raw_data`:
/// the form exporters write, so models built in tests look like real ones.
pub fn array_to_proto(name: &str, a: &Array) -> TensorProto {
    let raw: Vec<u8> = match a.data() {
        ArrayData::F32(v) => encode_le(v),
        ArrayData::F16(v) => encode_le(v),
        ArrayData::I64(v) => encode_le(v),
        ArrayData::I32(v) => encode_le(v),
        ArrayData::I8(v) => v.iter().map(|&x| x as u8).collect(),
        ArrayData::U8(v) => v.clone(),
        ArrayData::Bool(v) => v.iter().map(|&x| x as u8).collect(),
    };
    TensorProto {
        name: name.to_string(),
        dims: a.shape().iter().map(|&d| d as i64).collect(),
        data_type: a.dtype().to_onnx(),
        raw_data: raw.into(),
        ..Default::default()
    }
}

/// Little-endian bytes → elements, as one memcpy on little-endian hosts.
/// The caller has checked that `raw.len()` is a multiple of the element size.
fn decode_le<T: bytemuck::Pod>(raw: &[u8]) -> Vec<T> {
    let size = std::mem::size_of::<T>();
    let mut out = vec![T::zeroed(); raw.len() / size];
    let bytes: &mut [u8] = bytemuck::cast_slice_mut(&mut out);
    bytes.copy_from_slice(&raw[..bytes.len()]);
    if cfg!(target_endian = "big") {
        bytes.chunks_exact_mut(size).for_each(|c| c.reverse());
    }
    out
}

/// Elements → little-endian bytes.
fn encode_le<T: bytemuck::Pod>(values: &[T]) -> Vec<u8> {
    let mut bytes = bytemuck::cast_slice::<T, u8>(values).to_vec();
    if cfg!(target_endian = "big") {
        bytes.chunks_exact_mut(std::mem::size_of::<T>()).for_each(|c| c.reverse());
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn proto(dtype: DataType, dims: &[i64]) -> TensorProto {
        TensorProto { name: "t".into(), data_type: dtype as i32, dims: dims.to_vec(), ..Default::default() }
    }

    #[test]
    fn every_dtype_round_trips_through_raw_data() {
        let arrays = [
            Array::new(vec![2, 2], ArrayData::F32(vec![1.0, -2.5, 3.25, 0.0])),
            Array::new(vec![3], ArrayData::F16(vec![f16::from_f32(1.5), f16::NEG_INFINITY, f16::MIN_POSITIVE])),
            Array::new(vec![2], ArrayData::I64(vec![i64::MIN, 7])),
            Array::new(vec![1, 2], ArrayData::I32(vec![-3, i32::MAX])),
            Array::new(vec![2], ArrayData::I8(vec![-128, 127])),
            Array::new(vec![2], ArrayData::U8(vec![0, 255])),
            Array::new(vec![3], ArrayData::Bool(vec![true, false, true])),
            Array::new(vec![], ArrayData::F32(vec![4.0])),
            Array::new(vec![0, 3], ArrayData::F32(vec![])),
        ];
        for a in arrays {
            let a = a.expect("consistent test array");
            let back = array_from_proto(&array_to_proto("t", &a)).expect("decodes");
            assert_eq!(back, a);
        }
    }

    #[test]
    fn typed_fields_decode_including_packed_int32_data() {
        let mut t = proto(DataType::Float, &[2]);
        t.float_data = vec![1.0, 2.0];
        assert_eq!(array_from_proto(&t).expect("float").data(), &ArrayData::F32(vec![1.0, 2.0]));

        let mut t = proto(DataType::Int64, &[3]);
        t.int64_data = vec![1, -1, 5];
        assert_eq!(array_from_proto(&t).expect("i64").to_i64_vec(), Some(vec![1, -1, 5]));

        let mut t = proto(DataType::Float16, &[2]);
        t.int32_data = vec![f16::from_f32(0.5).to_bits() as i32, f16::from_f32(-2.0).to_bits() as i32];
        assert_eq!(
            array_from_proto(&t).expect("f16").data(),
            &ArrayData::F16(vec![f16::from_f32(0.5), f16::from_f32(-2.0)])
        );

        let mut t = proto(DataType::Int8, &[2]);
        t.int32_data = vec![-5, 100];
        assert_eq!(array_from_proto(&t).expect("i8").data(), &ArrayData::I8(vec![-5, 100]));

        let mut t = proto(DataType::Uint8, &[1]);
        t.int32_data = vec![200];
        assert_eq!(array_from_proto(&t).expect("u8").data(), &ArrayData::U8(vec![200]));

        let mut t = proto(DataType::Bool, &[2]);
        t.int32_data = vec![0, 1];
        assert_eq!(array_from_proto(&t).expect("bool").data(), &ArrayData::Bool(vec![false, true]));

        let mut t = proto(DataType::Int32, &[]);
        t.int32_data = vec![9];
        let a = array_from_proto(&t).expect("scalar");
        assert_eq!((a.shape(), a.data()), (&[][..], &ArrayData::I32(vec![9])));
    }

    #[test]
    fn malformed_tensors_are_named_errors() {
        let mut t = proto(DataType::Float, &[4]);
        t.raw_data = vec![0u8; 12].into();
        let e = array_from_proto(&t).expect_err("short raw_data");
        assert!(matches!(e, OnnxError::BadTensor { .. }), "{e}");
        assert!(e.to_string().contains("\"t\"") && e.to_string().contains("12 bytes"), "{e}");

        let mut t = proto(DataType::Float, &[3]);
        t.float_data = vec![1.0];
        assert!(matches!(array_from_proto(&t), Err(OnnxError::BadTensor { .. })));

        let t = proto(DataType::Float, &[-1]);
        assert!(matches!(array_from_proto(&t), Err(OnnxError::BadTensor { .. })));

        let mut t = proto(DataType::Int8, &[1]);
        t.int32_data = vec![300];
        assert!(matches!(array_from_proto(&t), Err(OnnxError::BadTensor { .. })));

        let t = proto(DataType::Double, &[1]);
        let e = array_from_proto(&t).expect_err("double");
        assert!(e.to_string().contains("DOUBLE"), "{e}");

        let mut t = proto(DataType::Float, &[1]);
        t.data_location = DataLocation::External as i32;
        t.external_data.push(crate::proto::StringStringEntryProto {
            key: "location".into(),
            value: "weights.bin".into(),
        });
        let e = array_from_proto(&t).expect_err("external");
        assert!(matches!(e, OnnxError::ExternalData { .. }));
        assert!(e.to_string().contains("weights.bin"), "{e}");
    }

    #[test]
    fn array_new_refuses_mismatched_counts() {
        assert!(Array::new(vec![2, 3], ArrayData::I64(vec![1; 5])).is_err());
        assert_eq!(Array::scalar_i64(3).rank(), 0);
    }
}
