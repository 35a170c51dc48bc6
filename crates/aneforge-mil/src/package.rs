//! The protobuf form of a program and the `.mlpackage` directory around it.
//!
//! coremltools reads this form (and so can check it on Linux), and Core ML
//! compiles it on macOS. The lowering follows what coremltools' own exporter
//! writes: rank-0 tensor types for scalars, immediates in the field its
//! loader reads for each dtype, the function's opset string agreeing with
//! `specificationVersion`, and a model description mirroring `main`'s
//! signature.

use std::collections::BTreeMap;
use std::path::Path;

use prost::Message as _;

use crate::blob::{plan_locations, write_weight_files, BlobLocation, WeightLayout};
use crate::error::{Error, Result};
use crate::ir::{Argument, Binding, Function, Operation, Program, Value};
use crate::proto::core_ml::specification as spec;
use crate::proto::core_ml::specification::mil_spec as mil;
use crate::types::{DType, Tensor, TensorData, TensorType};

/// Options for [`write_mlpackage`].
#[derive(Debug, Clone, Default)]
pub struct PackageOptions {
    /// How blobs are spread over files in `Data/com.apple.CoreML/weights/`.
    pub layout: WeightLayout,
    /// Written to the model description's `metadata.userDefined`.
    pub user_metadata: BTreeMap<String, String>,
}

/// Lowers `program` to the Core ML `Model` message, with blob references
/// resolved against `locations` (from [`crate::blob::plan_locations`] or
/// [`crate::blob::write_weights`] for the same layout).
pub fn to_model_proto(
    program: &Program,
    locations: &[BlobLocation],
    user_metadata: &BTreeMap<String, String>,
) -> Result<spec::Model> {
    program.validate()?;
    let main = program.main()?;
    let lower = Lowerer { locations };

    let opset = program.opset.proto_name().to_string();
    let mut functions = BTreeMap::new();
    for (name, f) in &program.functions {
        functions.insert(name.clone(), lower.function(f, &opset)?);
    }
    let mut attributes = BTreeMap::new();
    if !program.build_info.is_empty() {
        attributes.insert(
            "buildInfo".to_string(),
            build_info_value(&program.build_info),
        );
    }
    let ml_program = mil::Program {
        version: 1,
        functions,
        doc_string: String::new(),
        attributes,
    };

    let spec_version = program.opset.specification_version();
    let metadata = (!user_metadata.is_empty()).then(|| spec::Metadata {
        user_defined: user_metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        ..Default::default()
    });
    // One function: its ports are the model's. Several (iOS18+): each gets
    // a FunctionDescription and `main` is the default, as coremltools'
    // multifunction export does.
    let description = if program.functions.len() == 1 {
        let d = describe("main", main, spec_version)?;
        spec::ModelDescription {
            input: d.input,
            output: d.output,
            state: d.state,
            metadata,
            ..Default::default()
        }
    } else {
        if spec_version < 9 {
            return Err(Error::unsupported(
                "a model with several functions needs the iOS18 opset",
            ));
        }
        let functions = program
            .functions
            .iter()
            .map(|(name, f)| describe(name, f, spec_version))
            .collect::<Result<_>>()?;
        spec::ModelDescription {
            functions,
            default_function_name: "main".to_string(),
            metadata,
            ..Default::default()
        }
    };
    Ok(spec::Model {
        specification_version: spec_version,
        description: Some(description),
        is_updatable: false,
        r#type: Some(spec::model::Type::MlProgram(ml_program)),
    })
}

/// Writes `program` as an `.mlpackage` directory at `path`: `Manifest.json`,
/// `Data/com.apple.CoreML/model.mlmodel` and the weight files. An existing
/// package at `path` (a directory with a `Manifest.json`) is replaced; any
/// other existing file or directory is left alone and reported as an error.
/// The output is deterministic: the manifest's identifiers are derived from
/// the content.
pub fn write_mlpackage(program: &Program, path: &Path, opts: &PackageOptions) -> Result<()> {
    let locations = plan_locations(program, opts.layout)?;
    let model = to_model_proto(program, &locations, &opts.user_metadata)?;
    let model_bytes = model.encode_to_vec();

    check_replaceable(path)?;
    if path.exists() {
        std::fs::remove_dir_all(path).map_err(|e| Error::io(path, e))?;
    }
    let coreml = path.join("Data").join("com.apple.CoreML");
    let weights_dir = coreml.join("weights");
    std::fs::create_dir_all(&weights_dir).map_err(|e| Error::io(&weights_dir, e))?;
    write_file(&coreml.join("model.mlmodel"), &model_bytes)?;
    write_weight_files(program, opts.layout, &weights_dir)?;
    let model_id = uuid_from(&model_bytes, 0x6d6f_6465_6c00_0001);
    let weights_id = uuid_from(&model_bytes, 0x7765_6967_6874_0002);
    write_file(
        &path.join("Manifest.json"),
        manifest(&model_id, &weights_id).as_bytes(),
    )
}

/// Refuses a `path` that exists and is not an `.mlpackage` (which
/// [`write_mlpackage`] would replace), before anything is written.
pub fn check_replaceable(path: &Path) -> Result<()> {
    if path.exists() && !(path.is_dir() && path.join("Manifest.json").is_file()) {
        return Err(Error::invalid(format!(
            "{} exists and is not an .mlpackage; refusing to overwrite it",
            path.display()
        )));
    }
    Ok(())
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<()> {
    std::fs::write(path, bytes).map_err(|e| Error::io(path, e))
}

fn manifest(model_id: &str, weights_id: &str) -> String {
    let mut entries = serde_json::Map::new();
    entries.insert(
        model_id.to_string(),
        serde_json::json!({
            "author": "com.apple.CoreML",
            "description": "CoreML Model Specification",
            "name": "model.mlmodel",
            "path": "com.apple.CoreML/model.mlmodel",
        }),
    );
    entries.insert(
        weights_id.to_string(),
        serde_json::json!({
            "author": "com.apple.CoreML",
            "description": "CoreML Model Weights",
            "name": "weights",
            "path": "com.apple.CoreML/weights",
        }),
    );
    let doc = serde_json::json!({
        "fileFormatVersion": "1.0.0",
        "itemInfoEntries": entries,
        "rootModelIdentifier": model_id,
    });
    // serde_json's to_string_pretty cannot fail on a Value with string keys.
    serde_json::to_string_pretty(&doc).unwrap_or_default()
}

/// A UUID-shaped (version 4 layout) identifier from a 128-bit FNV-1a hash
/// of `bytes`: stable for the same model, so writing a package twice gives
/// the same files.
fn uuid_from(bytes: &[u8], seed: u64) -> String {
    const PRIME: u128 = 0x0000000001000000000000000000013B;
    let mut h: u128 = 0x6c62272e07bb014262b821756295c58d ^ u128::from(seed);
    for &b in bytes {
        h ^= u128::from(b);
        h = h.wrapping_mul(PRIME);
    }
    let mut b = h.to_be_bytes();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02X}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// The description of one function's ports (inputs, outputs, states).
fn describe(name: &str, f: &Function, spec_version: i32) -> Result<spec::FunctionDescription> {
    let mut d = spec::FunctionDescription {
        name: name.to_string(),
        ..Default::default()
    };
    for i in &f.inputs {
        d.input.push(feature(&i.name, &i.ty, spec_version)?);
    }
    for o in &f.outputs {
        let ty = f
            .value_type(o)
            .ok_or_else(|| Error::invalid(format!("{name}: output `{o}` has no type")))?;
        d.output.push(feature(o, ty, spec_version)?);
    }
    for st in &f.states {
        // Core ML keeps state in fp16 only.
        if st.ty.dtype != DType::Fp16 {
            return Err(Error::unsupported(format!(
                "{name}: state `{}` is {}; Core ML states must be fp16",
                st.name,
                st.ty.dtype.mil_name()
            )));
        }
        let array = array_type(&st.name, &st.ty, spec_version)?;
        d.state.push(spec::FeatureDescription {
            name: st.name.clone(),
            short_description: String::new(),
            r#type: Some(spec::FeatureType {
                is_optional: false,
                r#type: Some(spec::feature_type::Type::StateType(
                    spec::StateFeatureType {
                        r#type: Some(spec::state_feature_type::Type::ArrayType(array)),
                    },
                )),
            }),
        });
    }
    Ok(d)
}

/// The model description entry for an input or output.
fn feature(name: &str, ty: &TensorType, spec_version: i32) -> Result<spec::FeatureDescription> {
    Ok(spec::FeatureDescription {
        name: name.to_string(),
        short_description: String::new(),
        r#type: Some(spec::FeatureType {
            is_optional: false,
            r#type: Some(spec::feature_type::Type::MultiArrayType(array_type(
                name,
                ty,
                spec_version,
            )?)),
        }),
    })
}

/// A port's array type. Core ML I/O is multi-arrays of fp16 (spec >= 7),
/// fp32 or int32 (fp64 exists but ANEForge never produces it).
fn array_type(name: &str, ty: &TensorType, spec_version: i32) -> Result<spec::ArrayFeatureType> {
    use spec::array_feature_type::ArrayDataType as A;
    let data_type = match ty.dtype {
        DType::Fp16 if spec_version >= 7 => A::Float16,
        DType::Fp32 => A::Float32,
        DType::Int32 => A::Int32,
        other => {
            return Err(Error::unsupported(format!(
                "model I/O `{name}` is {}; Core ML model inputs and outputs must be fp16, fp32 or int32",
                other.mil_name()
            )))
        }
    };
    // Core ML describes a scalar port as shape [1], as coremltools does.
    let shape: Vec<i64> = if ty.is_scalar() {
        vec![1]
    } else {
        ty.shape.iter().map(|&d| d as i64).collect()
    };
    Ok(spec::ArrayFeatureType {
        shape,
        data_type: data_type as i32,
        ..Default::default()
    })
}

struct Lowerer<'a> {
    locations: &'a [BlobLocation],
}

impl Lowerer<'_> {
    fn function(&self, f: &Function, opset: &str) -> Result<mil::Function> {
        let inputs = f
            .states
            .iter()
            .map(|st| mil::NamedValueType {
                name: st.name.clone(),
                r#type: Some(mil::ValueType {
                    r#type: Some(mil::value_type::Type::StateType(Box::new(mil::StateType {
                        wrapped_type: Some(Box::new(value_type(&st.ty))),
                    }))),
                }),
            })
            .chain(f.inputs.iter().map(|i| named(&i.name, &i.ty)))
            .collect();
        let mut operations = Vec::with_capacity(f.ops.len());
        for op in &f.ops {
            operations.push(self.operation(op)?);
        }
        let block = mil::Block {
            inputs: Vec::new(),
            outputs: f.outputs.clone(),
            operations,
            attributes: BTreeMap::new(),
        };
        Ok(mil::Function {
            inputs,
            opset: opset.to_string(),
            block_specializations: BTreeMap::from([(opset.to_string(), block)]),
            attributes: BTreeMap::new(),
        })
    }

    fn operation(&self, op: &Operation) -> Result<mil::Operation> {
        let mut inputs = BTreeMap::new();
        for (k, a) in &op.inputs {
            let bindings = match a {
                Argument::Single(b) => vec![self.binding(b)?],
                Argument::Tuple(v) => v.iter().map(|b| self.binding(b)).collect::<Result<_>>()?,
            };
            inputs.insert(
                k.clone(),
                mil::Argument {
                    arguments: bindings,
                },
            );
        }
        let mut attributes = BTreeMap::new();
        attributes.insert(
            "name".to_string(),
            immediate(&Tensor::scalar_string(op.name.clone()))?,
        );
        for (k, v) in &op.attributes {
            attributes.insert(k.clone(), self.value(v)?);
        }
        Ok(mil::Operation {
            r#type: op.op_type.clone(),
            inputs,
            outputs: op.outputs.iter().map(|o| named(&o.name, &o.ty)).collect(),
            blocks: Vec::new(),
            attributes,
        })
    }

    fn binding(&self, b: &Binding) -> Result<mil::argument::Binding> {
        use mil::argument::binding::Binding as B;
        Ok(mil::argument::Binding {
            binding: Some(match b {
                Binding::Name(n) => B::Name(n.clone()),
                Binding::Value(v) => B::Value(self.value(v)?),
            }),
        })
    }

    fn value(&self, v: &Value) -> Result<mil::Value> {
        match v {
            Value::Immediate(t) => immediate(t),
            Value::Blob { id, ty } => {
                let loc = self.locations.get(id.index()).ok_or_else(|| {
                    Error::invalid(format!("blob #{} has no planned location", id.index()))
                })?;
                Ok(mil::Value {
                    doc_string: String::new(),
                    r#type: Some(value_type(ty)),
                    value: Some(mil::value::Value::BlobFileValue(
                        mil::value::BlobFileValue {
                            file_name: loc.mil_path(),
                            offset: loc.offset,
                        },
                    )),
                })
            }
        }
    }
}

fn named(name: &str, ty: &TensorType) -> mil::NamedValueType {
    mil::NamedValueType {
        name: name.to_string(),
        r#type: Some(value_type(ty)),
    }
}

fn value_type(ty: &TensorType) -> mil::ValueType {
    mil::ValueType {
        r#type: Some(mil::value_type::Type::TensorType(mil::TensorType {
            data_type: proto_dtype(ty.dtype) as i32,
            rank: ty.shape.len() as i64,
            dimensions: ty
                .shape
                .iter()
                .map(|&d| mil::Dimension {
                    dimension: Some(mil::dimension::Dimension::Constant(
                        mil::dimension::ConstantDimension { size: d as u64 },
                    )),
                })
                .collect(),
            attributes: BTreeMap::new(),
        })),
    }
}

/// The MIL.proto `DataType` of an element type.
pub fn proto_dtype(d: DType) -> mil::DataType {
    use mil::DataType as P;
    match d {
        DType::Fp16 => P::Float16,
        DType::Fp32 => P::Float32,
        DType::Int8 => P::Int8,
        DType::Uint8 => P::Uint8,
        DType::Int16 => P::Int16,
        DType::Uint16 => P::Uint16,
        DType::Int32 => P::Int32,
        DType::Uint32 => P::Uint32,
        DType::Bool => P::Bool,
        DType::String => P::String,
        DType::Int4 => P::Int4,
        DType::Uint1 => P::Uint1,
        DType::Uint2 => P::Uint2,
        DType::Uint3 => P::Uint3,
        DType::Uint4 => P::Uint4,
        DType::Uint6 => P::Uint6,
    }
}

/// An immediate value, each dtype in the `TensorValue` field coremltools'
/// loader reads it from: `floats` for fp32, `ints` for int32/int16/uint16
/// (widened), `bools`, `strings`, and raw little-endian `bytes` for fp16,
/// int8/uint8, uint32 and the packed sub-byte types.
fn immediate(t: &Tensor) -> Result<mil::Value> {
    use mil::tensor_value as tv;
    let value = match t.data() {
        TensorData::F32(v) => tv::Value::Floats(tv::RepeatedFloats { values: v.clone() }),
        TensorData::I32(v) => tv::Value::Ints(tv::RepeatedInts { values: v.clone() }),
        TensorData::I16(v) => tv::Value::Ints(tv::RepeatedInts {
            values: v.iter().map(|&x| i32::from(x)).collect(),
        }),
        TensorData::U16(v) => tv::Value::Ints(tv::RepeatedInts {
            values: v.iter().map(|&x| i32::from(x)).collect(),
        }),
        TensorData::Bool(v) => tv::Value::Bools(tv::RepeatedBools { values: v.clone() }),
        TensorData::Str(v) => tv::Value::Strings(tv::RepeatedStrings { values: v.clone() }),
        TensorData::F16(_) | TensorData::I8(_) | TensorData::U8(_) | TensorData::U32(_) => {
            tv::Value::Bytes(tv::RepeatedBytes {
                values: t.to_le_bytes()?,
            })
        }
    };
    Ok(mil::Value {
        doc_string: String::new(),
        r#type: Some(value_type(t.ty())),
        value: Some(mil::value::Value::ImmediateValue(
            mil::value::ImmediateValue {
                value: Some(mil::value::immediate_value::Value::Tensor(
                    mil::TensorValue { value: Some(value) },
                )),
            },
        )),
    })
}

/// `buildInfo` as coremltools writes it: a string→string dictionary value.
fn build_info_value(entries: &[(String, String)]) -> mil::Value {
    let str_type = mil::ValueType {
        r#type: Some(mil::value_type::Type::TensorType(mil::TensorType {
            data_type: mil::DataType::String as i32,
            ..Default::default()
        })),
    };
    let string_value = |s: &str| mil::Value {
        doc_string: String::new(),
        r#type: Some(str_type.clone()),
        value: Some(mil::value::Value::ImmediateValue(
            mil::value::ImmediateValue {
                value: Some(mil::value::immediate_value::Value::Tensor(
                    mil::TensorValue {
                        value: Some(mil::tensor_value::Value::Strings(
                            mil::tensor_value::RepeatedStrings {
                                values: vec![s.to_string()],
                            },
                        )),
                    },
                )),
            },
        )),
    };
    let values = entries
        .iter()
        .map(|(k, v)| mil::dictionary_value::KeyValuePair {
            key: Some(string_value(k)),
            value: Some(string_value(v)),
        })
        .collect();
    mil::Value {
        doc_string: String::new(),
        r#type: Some(mil::ValueType {
            r#type: Some(mil::value_type::Type::DictionaryType(Box::new(
                mil::DictionaryType {
                    key_type: Some(Box::new(str_type.clone())),
                    value_type: Some(Box::new(str_type.clone())),
                },
            ))),
        }),
        value: Some(mil::value::Value::ImmediateValue(
            mil::value::ImmediateValue {
                value: Some(mil::value::immediate_value::Value::Dictionary(
                    mil::DictionaryValue { values },
                )),
            },
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_stable_and_uuid_shaped() {
        let a = uuid_from(b"abc", 1);
        assert_eq!(a, uuid_from(b"abc", 1));
        assert_ne!(a, uuid_from(b"abc", 2));
        assert_eq!(a.len(), 36);
        assert_eq!(&a[14..15], "4");
    }
}
