//! The in-memory MIL program that every writer reads.
//!
//! It mirrors MIL's own structure (program → functions → one block of ops)
//! closely enough that the text and protobuf writers are straight walks, and
//! it owns the weight tensors so that blob offsets are a pure function of the
//! program: the text, the blob file and the package always agree.

use std::collections::{BTreeMap, HashMap};

use crate::error::{Error, Result};
use crate::types::{DType, Tensor, TensorType};

/// The MIL opset a program targets. It fixes the `func main<iosNN>` tag in
/// text, the protobuf opset string and the model's `specificationVersion`,
/// which coremltools requires to agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Opset {
    Ios15,
    Ios16,
    Ios17,
    Ios18,
}

impl Opset {
    /// `Model.specificationVersion` for this opset.
    pub fn specification_version(self) -> i32 {
        match self {
            Opset::Ios15 => 6,
            Opset::Ios16 => 7,
            Opset::Ios17 => 8,
            Opset::Ios18 => 9,
        }
    }

    /// The opset string of a protobuf `Function` (`CoreML5` … `CoreML8`).
    pub fn proto_name(self) -> &'static str {
        match self {
            Opset::Ios15 => "CoreML5",
            Opset::Ios16 => "CoreML6",
            Opset::Ios17 => "CoreML7",
            Opset::Ios18 => "CoreML8",
        }
    }

    /// The tag in MIL text, `func main<ios18>`.
    pub fn text_name(self) -> &'static str {
        match self {
            Opset::Ios15 => "ios15",
            Opset::Ios16 => "ios16",
            Opset::Ios17 => "ios17",
            Opset::Ios18 => "ios18",
        }
    }
}

/// Handle of a weight tensor stored in the program's blob table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BlobId(pub(crate) usize);

impl BlobId {
    /// Position in [`Program::blobs`], which is also the blob's position in a
    /// single weight file.
    pub fn index(self) -> usize {
        self.0
    }
}

/// A constant value: inline in the program, or a reference to a weight blob.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Spelled out in the text / proto (`int32(1)`, `tensor<int32, [2]>([1, 1])`).
    Immediate(Tensor),
    /// Stored in a weight file and referenced by `BLOBFILE(path, offset)`.
    /// Carries its type so values can be typed without the blob table.
    Blob { id: BlobId, ty: TensorType },
}

impl Value {
    /// The value's tensor type.
    pub fn ty(&self) -> &TensorType {
        match self {
            Value::Immediate(t) => t.ty(),
            Value::Blob { ty, .. } => ty,
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Self {
        Value::Immediate(t)
    }
}

/// One element of an argument: a named SSA value, or an inline constant.
#[derive(Debug, Clone, PartialEq)]
pub enum Binding {
    Name(String),
    Value(Value),
}

/// An op input. `Tuple` is MIL's variadic form (`concat(values = (a, b))`);
/// a one-element tuple is still a tuple, so the two are distinct.
#[derive(Debug, Clone, PartialEq)]
pub enum Argument {
    Single(Binding),
    Tuple(Vec<Binding>),
}

impl Argument {
    /// A reference to the SSA value `name`.
    pub fn name(name: impl Into<String>) -> Self {
        Argument::Single(Binding::Name(name.into()))
    }

    /// A tuple of SSA value references.
    pub fn names<S: Into<String>>(names: impl IntoIterator<Item = S>) -> Self {
        Argument::Tuple(names.into_iter().map(|n| Binding::Name(n.into())).collect())
    }

    /// An inline constant. Prefer a `const` op (see [`Function::constant`])
    /// for anything the ANE compiler reads: that is the form every known
    /// working MIL text uses.
    pub fn value(v: impl Into<Value>) -> Self {
        Argument::Single(Binding::Value(v.into()))
    }

    /// The bindings, in order.
    pub fn bindings(&self) -> &[Binding] {
        match self {
            Argument::Single(b) => std::slice::from_ref(b),
            Argument::Tuple(v) => v,
        }
    }
}

impl From<&str> for Argument {
    fn from(s: &str) -> Self {
        Argument::name(s)
    }
}

impl From<String> for Argument {
    fn from(s: String) -> Self {
        Argument::name(s)
    }
}

/// A name with its type: a function input or an op output.
#[derive(Debug, Clone, PartialEq)]
pub struct NamedType {
    pub name: String,
    pub ty: TensorType,
}

impl NamedType {
    /// A named tensor type.
    pub fn new(name: impl Into<String>, ty: TensorType) -> Self {
        NamedType {
            name: name.into(),
            ty,
        }
    }
}

/// One MIL operation.
///
/// `inputs` and `attributes` are ordered maps so that every writer emits
/// parameters in the same (alphabetical) order, which makes output
/// deterministic and matches the compiler's own printing.
#[derive(Debug, Clone, PartialEq)]
pub struct Operation {
    /// MIL op type, e.g. `conv`, `const`, `constexpr_lut_to_dense`.
    pub op_type: String,
    /// The op's `name` attribute; by convention the first output's name.
    pub name: String,
    pub inputs: BTreeMap<String, Argument>,
    pub outputs: Vec<NamedType>,
    /// Attributes besides `name`: `val` of a `const`, and the parameters of
    /// pre-iOS18 `constexpr_*` ops, which MIL passes as attributes.
    pub attributes: BTreeMap<String, Value>,
}

impl Operation {
    /// An op with the given inputs and outputs, named after its first output.
    pub fn new<K: Into<String>>(
        op_type: impl Into<String>,
        inputs: impl IntoIterator<Item = (K, Argument)>,
        outputs: Vec<NamedType>,
    ) -> Self {
        let name = outputs.first().map(|o| o.name.clone()).unwrap_or_default();
        Operation {
            op_type: op_type.into(),
            name,
            inputs: inputs.into_iter().map(|(k, v)| (k.into(), v)).collect(),
            outputs,
            attributes: BTreeMap::new(),
        }
    }

    /// A `const` op producing `value` under `name`.
    pub fn constant(name: impl Into<String>, value: Value) -> Self {
        let name = name.into();
        let ty = value.ty().clone();
        let mut attributes = BTreeMap::new();
        attributes.insert("val".to_string(), value);
        Operation {
            op_type: "const".to_string(),
            name: name.clone(),
            inputs: BTreeMap::new(),
            outputs: vec![NamedType::new(name, ty)],
            attributes,
        }
    }
}

/// A MIL function: typed inputs, ops in topological order, and the names of
/// the values it returns.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Function {
    /// State inputs (iOS18): buffers that persist across calls, read with
    /// `read_state(input = s)` and updated with `write_state(data = v,
    /// input = s)`. Listed before the tensor inputs in the signature.
    pub states: Vec<NamedType>,
    pub inputs: Vec<NamedType>,
    pub ops: Vec<Operation>,
    pub outputs: Vec<String>,
}

impl Function {
    /// An empty function.
    pub fn new() -> Self {
        Function::default()
    }

    /// Declares an input and returns its name, for chaining into ops.
    pub fn input(&mut self, name: impl Into<String>, ty: TensorType) -> String {
        let name = name.into();
        self.inputs.push(NamedType::new(name.clone(), ty));
        name
    }

    /// Declares a state input (iOS18) holding a tensor of type `ty` and
    /// returns its name.
    pub fn state(&mut self, name: impl Into<String>, ty: TensorType) -> String {
        let name = name.into();
        self.states.push(NamedType::new(name.clone(), ty));
        name
    }

    /// Appends a `const` op and returns the name to bind it by.
    pub fn constant(&mut self, name: impl Into<String>, value: impl Into<Value>) -> String {
        let op = Operation::constant(name, value.into());
        let name = op.name.clone();
        self.ops.push(op);
        name
    }

    /// Appends an op with a single output and returns the output's name.
    pub fn op<K: Into<String>>(
        &mut self,
        op_type: impl Into<String>,
        inputs: impl IntoIterator<Item = (K, Argument)>,
        output: NamedType,
    ) -> String {
        let name = output.name.clone();
        self.ops.push(Operation::new(op_type, inputs, vec![output]));
        name
    }

    /// Marks a value as a function output (in call order).
    pub fn output(&mut self, name: impl Into<String>) {
        self.outputs.push(name.into());
    }

    /// Type of a value defined in this function (input or op output).
    pub fn value_type(&self, name: &str) -> Option<&TensorType> {
        self.states
            .iter()
            .chain(&self.inputs)
            .chain(self.ops.iter().flat_map(|o| o.outputs.iter()))
            .find(|n| n.name == name)
            .map(|n| &n.ty)
    }
}

/// Build information written into the program header (text) and program
/// attributes (protobuf). The numbers are those of a recent Core ML compiler
/// that the ANE's in-memory descriptor is known to accept.
pub fn default_build_info() -> Vec<(String, String)> {
    [
        ("coremlc-component-MIL", "3510.2.1"),
        ("coremlc-version", "3505.4.1"),
        ("coremltools-component-milinternal", ""),
        ("coremltools-version", "9.0"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

/// A MIL program: functions (normally just `main`), the opset, build info,
/// and the weight tensors its `Value::Blob`s refer to.
#[derive(Debug, Clone, PartialEq)]
pub struct Program {
    pub opset: Opset,
    pub functions: BTreeMap<String, Function>,
    pub build_info: Vec<(String, String)>,
    blobs: Vec<Tensor>,
}

impl Program {
    /// An empty program for `opset` with the default build info.
    pub fn new(opset: Opset) -> Self {
        Program {
            opset,
            functions: BTreeMap::new(),
            build_info: default_build_info(),
            blobs: Vec::new(),
        }
    }

    /// A program whose only function is `main`.
    pub fn with_main(opset: Opset, main: Function) -> Self {
        let mut p = Program::new(opset);
        p.functions.insert("main".to_string(), main);
        p
    }

    /// Adds (or replaces) a function.
    pub fn add_function(&mut self, name: impl Into<String>, f: Function) {
        self.functions.insert(name.into(), f);
    }

    /// Stores a weight tensor in the blob table and returns the value that
    /// references it. Blobs are laid out in the order they are added.
    pub fn add_blob(&mut self, tensor: Tensor) -> Result<Value> {
        if tensor.dtype().blob_code().is_none() {
            return Err(Error::unsupported(format!(
                "weight blobs cannot hold {} tensors",
                tensor.dtype().mil_name()
            )));
        }
        let ty = tensor.ty().clone();
        self.blobs.push(tensor);
        Ok(Value::Blob {
            id: BlobId(self.blobs.len() - 1),
            ty,
        })
    }

    /// Stores `tensor` where coremltools would: in the weight file when it
    /// has at least 10 elements of a dtype blobs hold for this opset (fp16,
    /// fp32, int8, uint8 and the sub-byte types; from iOS18 also int16,
    /// uint16, int32, uint32), inline otherwise. Lowering passes use this so
    /// small parameters stay readable in the text and large ones stay out
    /// of it.
    pub fn auto_value(&mut self, tensor: Tensor) -> Result<Value> {
        let dtype = tensor.dtype();
        let blob_dtype = match dtype {
            DType::Fp16 | DType::Fp32 | DType::Int8 | DType::Uint8 => true,
            DType::Int16 | DType::Uint16 | DType::Int32 | DType::Uint32 => {
                self.opset >= Opset::Ios18
            }
            d => d.is_sub_byte(),
        };
        let large = tensor.ty().num_elements().is_some_and(|n| n >= 10);
        if blob_dtype && large {
            self.add_blob(tensor)
        } else {
            Ok(Value::Immediate(tensor))
        }
    }

    /// The blob table, in layout order.
    pub fn blobs(&self) -> &[Tensor] {
        &self.blobs
    }

    /// The `main` function, which the package writer exports.
    pub fn main(&self) -> Result<&Function> {
        self.functions
            .get("main")
            .ok_or_else(|| Error::invalid("program has no `main` function"))
    }

    /// Checks what the writers rely on and what coremltools and the ANE
    /// compiler would otherwise reject with a less specific message:
    /// identifiers, SSA uniqueness, use-before-definition, const shapes,
    /// blob references, and attribute placement.
    pub fn validate(&self) -> Result<()> {
        if self.functions.is_empty() {
            return Err(Error::invalid("program has no functions"));
        }
        for (fname, f) in &self.functions {
            check_ident(fname, "function name")?;
            let mut defined: HashMap<&str, &TensorType> = HashMap::new();
            if !f.states.is_empty() && self.opset < Opset::Ios18 {
                return Err(Error::invalid(format!(
                    "{fname}: state inputs need the iOS18 opset, the program targets {}",
                    self.opset.text_name()
                )));
            }
            for i in f.states.iter().chain(&f.inputs) {
                check_ident(&i.name, &format!("{fname}: input name"))?;
                if i.ty.dtype == DType::String {
                    return Err(Error::invalid(format!(
                        "{fname}: input `{}` is a string; inputs must be numeric or bool",
                        i.name
                    )));
                }
                if defined.insert(&i.name, &i.ty).is_some() {
                    return Err(Error::invalid(format!(
                        "{fname}: input `{}` declared twice",
                        i.name
                    )));
                }
            }
            for op in &f.ops {
                let at = format!("{fname}: op {} `{}`", op.op_type, op.name);
                check_ident(&op.op_type, &format!("{at}: op type"))?;
                check_ident(&op.name, &format!("{at}: name"))?;
                for (param, arg) in &op.inputs {
                    check_ident(param, &format!("{at}: parameter"))?;
                    if let Argument::Tuple(v) = arg {
                        if v.is_empty() {
                            return Err(Error::invalid(format!(
                                "{at}: `{param}` is an empty tuple"
                            )));
                        }
                    }
                    for b in arg.bindings() {
                        match b {
                            Binding::Name(n) => {
                                if !defined.contains_key(n.as_str()) {
                                    return Err(Error::invalid(format!(
                                        "{at}: `{param}` uses `{n}`, which is not defined before it"
                                    )));
                                }
                            }
                            Binding::Value(v) => {
                                self.check_value(v, &format!("{at}: `{param}`"))?
                            }
                        }
                    }
                }
                let is_const = op.op_type == "const";
                let is_constexpr = op.op_type.starts_with("constexpr_");
                for (k, v) in &op.attributes {
                    check_ident(k, &format!("{at}: attribute"))?;
                    if k == "name" {
                        return Err(Error::invalid(format!(
                            "{at}: `name` is set through Operation::name, not as an attribute"
                        )));
                    }
                    if !is_const && !is_constexpr {
                        return Err(Error::invalid(format!(
                            "{at}: attribute `{k}` on a non-const op (only const and constexpr_* take attributes)"
                        )));
                    }
                    self.check_value(v, &format!("{at}: attribute `{k}`"))?;
                }
                if is_const {
                    let val = op.attributes.get("val").ok_or_else(|| {
                        Error::invalid(format!("{at}: const without a `val` attribute"))
                    })?;
                    if !op.inputs.is_empty() || op.outputs.len() != 1 {
                        return Err(Error::invalid(format!(
                            "{at}: const takes no inputs and has exactly one output"
                        )));
                    }
                    if val.ty() != &op.outputs[0].ty {
                        return Err(Error::invalid(format!(
                            "{at}: val is {} but the output is declared {}",
                            fmt_type(val.ty()),
                            fmt_type(&op.outputs[0].ty)
                        )));
                    }
                }
                if op.outputs.is_empty() && !matches!(op.op_type.as_str(), "write_state") {
                    return Err(Error::invalid(format!("{at}: op has no outputs")));
                }
                for o in &op.outputs {
                    check_ident(&o.name, &format!("{at}: output name"))?;
                    if defined.insert(&o.name, &o.ty).is_some() {
                        return Err(Error::invalid(format!(
                            "{at}: SSA value `{}` defined more than once",
                            o.name
                        )));
                    }
                }
            }
            if f.outputs.is_empty() {
                return Err(Error::invalid(format!("{fname}: function returns nothing")));
            }
            for o in &f.outputs {
                if !defined.contains_key(o.as_str()) {
                    return Err(Error::invalid(format!(
                        "{fname}: output `{o}` is not defined in the function"
                    )));
                }
            }
        }
        Ok(())
    }

    fn check_value(&self, v: &Value, at: &str) -> Result<()> {
        if let Value::Blob { id, ty } = v {
            let t = self.blobs.get(id.0).ok_or_else(|| {
                Error::invalid(format!("{at}: blob #{} is not in the program", id.0))
            })?;
            if t.ty() != ty {
                return Err(Error::invalid(format!(
                    "{at}: blob #{} holds {} but is used as {}",
                    id.0,
                    fmt_type(t.ty()),
                    fmt_type(ty)
                )));
            }
        }
        Ok(())
    }
}

/// `tensor<fp16, [1, 2]>`: the type spelling used in error messages.
pub(crate) fn fmt_type(t: &TensorType) -> String {
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    format!("tensor<{}, [{}]>", t.dtype.mil_name(), dims.join(", "))
}

/// MIL identifiers: `[A-Za-z_][A-Za-z0-9_@]*` (MIL.proto). Checked because
/// the text form has no quoting for names.
fn check_ident(s: &str, what: &str) -> Result<()> {
    let mut chars = s.chars();
    let ok = match chars.next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => {
            chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '@')
        }
        _ => false,
    };
    if ok {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{what} `{s}` is not a MIL identifier ([A-Za-z_][A-Za-z0-9_@]*)"
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fp16(shape: &[usize]) -> TensorType {
        TensorType::new(DType::Fp16, shape)
    }

    fn relu_program() -> Program {
        let mut f = Function::new();
        let x = f.input("x", fp16(&[2]));
        f.op(
            "relu",
            [("x", Argument::name(x))],
            NamedType::new("y", fp16(&[2])),
        );
        f.output("y");
        Program::with_main(Opset::Ios18, f)
    }

    fn err_of(p: &Program) -> String {
        p.validate().expect_err("should be invalid").to_string()
    }

    #[test]
    fn a_well_formed_program_validates() {
        relu_program().validate().expect("valid");
    }

    #[test]
    fn use_before_definition_is_named() {
        let mut p = relu_program();
        let f = p.functions.get_mut("main").expect("main");
        f.ops[0].inputs.insert("x".into(), Argument::name("later"));
        assert!(err_of(&p).contains("`later`, which is not defined before it"));
    }

    #[test]
    fn duplicate_ssa_names_are_rejected() {
        let mut p = relu_program();
        let f = p.functions.get_mut("main").expect("main");
        f.op(
            "relu",
            [("x", Argument::name("y"))],
            NamedType::new("x", fp16(&[2])),
        );
        assert!(err_of(&p).contains("defined more than once"));
    }

    #[test]
    fn names_must_be_mil_identifiers() {
        let mut p = relu_program();
        p.functions.get_mut("main").expect("main").outputs = vec!["y".into()];
        p.functions.get_mut("main").expect("main").ops[0].outputs[0].name = "1y".into();
        assert!(err_of(&p).contains("not a MIL identifier"));
    }

    #[test]
    fn const_val_must_match_its_declared_type() {
        let mut p = relu_program();
        let f = p.functions.get_mut("main").expect("main");
        let mut c = Operation::constant("c", Tensor::scalar_int32(1).into());
        c.outputs[0].ty = fp16(&[]);
        f.ops.insert(0, c);
        assert!(err_of(&p).contains("val is tensor<int32, []>"));
    }

    #[test]
    fn attributes_only_on_const_and_constexpr() {
        let mut p = relu_program();
        let f = p.functions.get_mut("main").expect("main");
        f.ops[0]
            .attributes
            .insert("alpha".into(), Tensor::scalar_fp32(1.0).into());
        assert!(err_of(&p).contains("attribute `alpha` on a non-const op"));
    }

    #[test]
    fn blob_references_are_checked() {
        let mut p = relu_program();
        let v = p
            .add_blob(Tensor::fp32([2], vec![1.0, 2.0]).expect("t"))
            .expect("blob");
        let bad = Value::Blob {
            id: BlobId(5),
            ty: v.ty().clone(),
        };
        let f = p.functions.get_mut("main").expect("main");
        f.constant("w", bad);
        assert!(err_of(&p).contains("blob #5 is not in the program"));
        assert!(p.add_blob(Tensor::scalar_string("s")).is_err());
    }

    #[test]
    fn auto_value_follows_coremltools_placement() {
        let mut p = Program::new(Opset::Ios17);
        let big = Tensor::fp16([10], vec![half::f16::ONE; 10]).expect("t");
        let small = Tensor::fp16([9], vec![half::f16::ONE; 9]).expect("t");
        let ints = Tensor::int32([16], vec![1; 16]).expect("t");
        assert!(matches!(p.auto_value(big).expect("v"), Value::Blob { .. }));
        assert!(matches!(
            p.auto_value(small).expect("v"),
            Value::Immediate(_)
        ));
        assert!(matches!(
            p.auto_value(ints.clone()).expect("v"),
            Value::Immediate(_)
        ));
        p.opset = Opset::Ios18;
        assert!(matches!(p.auto_value(ints).expect("v"), Value::Blob { .. }));
        assert_eq!(p.blobs().len(), 2);
    }

    #[test]
    fn outputs_must_exist() {
        let mut p = relu_program();
        p.functions.get_mut("main").expect("main").output("nope");
        assert!(err_of(&p).contains("output `nope`"));
    }
}
