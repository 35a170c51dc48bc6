//! MIL text, the form `_ANEInMemoryModelDescriptor` compiles.
//!
//! Two spellings are in use and the ANE compiler of each chip family accepts
//! one of them: the concise `program(1.3)` form with bare scalar types
//! (`int32(1)`, `string("x")`; H15 and later) and the verbose `program(1.0)`
//! form where every scalar is a rank-0 tensor (`tensor<int32, []>(1)`;
//! needed on H13/H14). The output is deterministic: parameters and
//! attributes are printed in alphabetical order, floats in their shortest
//! round-tripping decimal form.
//!
//! Nothing on Linux parses this text (coremltools has no MIL text reader),
//! so it is checked by snapshot tests here; the protobuf written from the
//! same IR is what the coremltools oracle validates.

use std::fmt::Write as _;

use crate::blob::{plan_locations, BlobLocation, WeightLayout};
use crate::error::{Error, Result};
use crate::ir::{Argument, Binding, Function, Operation, Program, Value};
use crate::types::{Tensor, TensorData, TensorType};

/// Which MIL text spelling to produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Dialect {
    /// `program(1.3)`, bare scalar types. Pair with [`crate::Opset::Ios18`].
    #[default]
    Concise,
    /// `program(1.0)`, scalars as `tensor<T, []>`. Pair with
    /// [`crate::Opset::Ios16`] for H13/H14 (M1/M2).
    Verbose,
}

impl Dialect {
    fn program_version(self) -> &'static str {
        match self {
            Dialect::Concise => "1.3",
            Dialect::Verbose => "1.0",
        }
    }
}

/// Writes `program` as MIL text. `layout` decides the `BLOBFILE` paths and
/// offsets, and must be the layout the weight files are written with.
pub fn to_mil_text(program: &Program, dialect: Dialect, layout: WeightLayout) -> Result<String> {
    program.validate()?;
    let locations = plan_locations(program, layout)?;
    let w = TextWriter {
        dialect,
        locations: &locations,
    };
    let mut s = String::new();
    let _ = writeln!(s, "program({})", dialect.program_version());
    if !program.build_info.is_empty() {
        let entries: Vec<String> = program
            .build_info
            .iter()
            .map(|(k, v)| format!("{{{}, {}}}", quote(k), quote(v)))
            .collect();
        let dict_ty = match dialect {
            Dialect::Concise => "dict<string, string>".to_string(),
            Dialect::Verbose => "dict<tensor<string, []>, tensor<string, []>>".to_string(),
        };
        let _ = writeln!(s, "[buildInfo = {dict_ty}({{{}}})]", entries.join(", "));
    }
    s.push_str("{\n");
    for (name, f) in &program.functions {
        w.function(&mut s, name, program.opset.text_name(), f)?;
    }
    s.push_str("}\n");
    Ok(s)
}

struct TextWriter<'a> {
    dialect: Dialect,
    locations: &'a [BlobLocation],
}

impl TextWriter<'_> {
    fn function(&self, s: &mut String, name: &str, opset: &str, f: &Function) -> Result<()> {
        let inputs: Vec<String> = f
            .states
            .iter()
            .map(|i| format!("state<{}> {}", crate::ir::fmt_type(&i.ty), i.name))
            .chain(
                f.inputs
                    .iter()
                    .map(|i| format!("{} {}", self.ty(&i.ty), i.name)),
            )
            .collect();
        let _ = writeln!(s, "    func {name}<{opset}>({}) {{", inputs.join(", "));
        for op in &f.ops {
            s.push_str("        ");
            self.op(s, op)?;
            s.push('\n');
        }
        let _ = writeln!(s, "    }} -> ({});", f.outputs.join(", "));
        Ok(())
    }

    fn op(&self, s: &mut String, op: &Operation) -> Result<()> {
        let outs: Vec<String> = op
            .outputs
            .iter()
            .map(|o| format!("{} {}", self.ty(&o.ty), o.name))
            .collect();
        if !outs.is_empty() {
            let _ = write!(s, "{} = ", outs.join(", "));
        }
        let mut args = Vec::with_capacity(op.inputs.len());
        for (k, a) in &op.inputs {
            args.push(format!("{k} = {}", self.argument(a)?));
        }
        let _ = write!(s, "{}({})", op.op_type, args.join(", "));
        // `name` sorts among the attributes like any other key.
        let name_val = Tensor::scalar_string(op.name.clone());
        let mut attrs: Vec<(&str, String)> = vec![("name", self.tensor_literal(&name_val))];
        for (k, v) in &op.attributes {
            attrs.push((k, self.value(v)?));
        }
        attrs.sort_by(|a, b| a.0.cmp(b.0));
        let attrs: Vec<String> = attrs
            .into_iter()
            .map(|(k, v)| format!("{k} = {v}"))
            .collect();
        let _ = write!(s, "[{}];", attrs.join(", "));
        Ok(())
    }

    fn argument(&self, a: &Argument) -> Result<String> {
        Ok(match a {
            Argument::Single(b) => self.binding(b)?,
            Argument::Tuple(v) => {
                let items: Result<Vec<String>> = v.iter().map(|b| self.binding(b)).collect();
                format!("({})", items?.join(", "))
            }
        })
    }

    fn binding(&self, b: &Binding) -> Result<String> {
        match b {
            Binding::Name(n) => Ok(n.clone()),
            Binding::Value(v) => self.value(v),
        }
    }

    fn value(&self, v: &Value) -> Result<String> {
        match v {
            Value::Immediate(t) => Ok(self.tensor_literal(t)),
            Value::Blob { id, ty } => {
                let loc = self.locations.get(id.index()).ok_or_else(|| {
                    Error::invalid(format!("blob #{} is not in the program", id.index()))
                })?;
                let path = self.tensor_literal(&Tensor::scalar_string(loc.mil_path()));
                let offset = match self.dialect {
                    Dialect::Concise => format!("uint64({})", loc.offset),
                    Dialect::Verbose => format!("tensor<uint64, []>({})", loc.offset),
                };
                Ok(format!(
                    "{}(BLOBFILE(path = {path}, offset = {offset}))",
                    self.ty(ty)
                ))
            }
        }
    }

    /// `T(literal)`: scalars hold one element, tensors a flat row-major list.
    fn tensor_literal(&self, t: &Tensor) -> String {
        let elems = elements(t.data());
        let body = if t.ty().is_scalar() {
            elems.into_iter().next().unwrap_or_default()
        } else {
            format!("[{}]", elems.join(", "))
        };
        format!("{}({body})", self.ty(t.ty()))
    }

    fn ty(&self, t: &TensorType) -> String {
        if t.is_scalar() && self.dialect == Dialect::Concise {
            return t.dtype.mil_name().to_string();
        }
        crate::ir::fmt_type(t)
    }
}

fn elements(d: &TensorData) -> Vec<String> {
    match d {
        TensorData::F16(v) => v.iter().map(|x| float(x.to_f32())).collect(),
        TensorData::F32(v) => v.iter().map(|&x| float(x)).collect(),
        TensorData::I8(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::U8(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I16(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::U16(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::I32(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::U32(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Bool(v) => v.iter().map(|x| x.to_string()).collect(),
        TensorData::Str(v) => v.iter().map(|x| quote(x)).collect(),
    }
}

/// Shortest decimal that reads back to the same f32 (and therefore to the
/// same fp16 for fp16 values), always with a `.` or exponent so it reads as
/// a float.
fn float(x: f32) -> String {
    if x.is_nan() {
        return "nan".to_string();
    }
    if x.is_infinite() {
        return if x > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    format!("{x:?}")
}

fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
