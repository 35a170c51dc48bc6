//! Element types a graph value can carry.
//!
//! The engine computes in fp16; the integer types exist for I/O ports and
//! explicit intermediates (`cast`), and `Bool` for comparison results.

use crate::error::{Error, Result};
use std::fmt;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    F16,
    F32,
    U8,
    I8,
    I16,
    U16,
    I32,
    Bool,
}

impl DType {
    pub const ALL: [DType; 8] =
        [DType::F16, DType::F32, DType::U8, DType::I8, DType::I16, DType::U16, DType::I32, DType::Bool];

    /// The spelling used in the Python API and in error messages (`"fp16"`, `"uint8"`).
    pub fn name(self) -> &'static str {
        match self {
            DType::F16 => "fp16",
            DType::F32 => "fp32",
            DType::U8 => "uint8",
            DType::I8 => "int8",
            DType::I16 => "int16",
            DType::U16 => "uint16",
            DType::I32 => "int32",
            DType::Bool => "bool",
        }
    }

    /// The numpy spelling (`"float16"`, `"int8"`), which [`DType::parse`]
    /// accepts back. Only the floats are spelled differently from [`DType::name`].
    pub fn numpy_name(self) -> &'static str {
        match self {
            DType::F16 => "float16",
            DType::F32 => "float32",
            d => d.name(),
        }
    }

    /// Accepts the API spelling and the numpy spelling (`"float16"`, `"int8"`).
    pub fn parse(s: &str) -> Result<DType> {
        let d = match s.to_ascii_lowercase().as_str() {
            "fp16" | "float16" | "half" | "f16" => DType::F16,
            "fp32" | "float32" | "float" | "f32" => DType::F32,
            "uint8" | "u8" => DType::U8,
            "int8" | "i8" => DType::I8,
            "int16" | "i16" => DType::I16,
            "uint16" | "u16" => DType::U16,
            "int32" | "i32" => DType::I32,
            "bool" => DType::Bool,
            _ => {
                return Err(Error::dtype(
                    "dtype",
                    format!(
                        "unknown dtype {s:?}; use one of fp16, fp32, uint8, int8, int16, uint16, int32, bool"
                    ),
                ))
            }
        };
        Ok(d)
    }

    pub fn size_bytes(self) -> usize {
        match self {
            DType::U8 | DType::I8 | DType::Bool => 1,
            DType::F16 | DType::I16 | DType::U16 => 2,
            DType::F32 | DType::I32 => 4,
        }
    }

    pub fn is_float(self) -> bool {
        matches!(self, DType::F16 | DType::F32)
    }

    pub fn is_int(self) -> bool {
        matches!(self, DType::U8 | DType::I8 | DType::I16 | DType::U16 | DType::I32)
    }

    /// Inclusive value range of an integer type; casts saturate to it.
    pub fn int_range(self) -> Option<(f32, f32)> {
        match self {
            DType::U8 => Some((0.0, 255.0)),
            DType::I8 => Some((-128.0, 127.0)),
            DType::I16 => Some((-32768.0, 32767.0)),
            DType::U16 => Some((0.0, 65535.0)),
            DType::I32 => Some((-2147483648.0, 2147483647.0)),
            DType::Bool => Some((0.0, 1.0)),
            _ => None,
        }
    }

    /// Port dtypes the engine accepts for graph inputs.
    pub fn is_input_port(self) -> bool {
        matches!(self, DType::F16 | DType::U8 | DType::I8 | DType::I16 | DType::U16)
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::DType;

    #[test]
    fn both_spellings_parse_back() {
        for d in DType::ALL {
            assert_eq!(DType::parse(d.name()).ok(), Some(d));
            assert_eq!(DType::parse(d.numpy_name()).ok(), Some(d));
        }
        assert_eq!(DType::F16.numpy_name(), "float16");
        assert_eq!(DType::U16.numpy_name(), "uint16");
    }
}
