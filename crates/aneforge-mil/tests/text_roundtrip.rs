//! The MIL text carries the whole program: parsing what the text writer
//! printed gives back the same IR, in both dialects.
//!
//! No MIL text reader exists on Linux, so the text cannot be handed to
//! coremltools directly. This test closes the gap: the package written from
//! the IR is what the coremltools oracle validates, and here the text is
//! shown to be a lossless spelling of that same IR (every type, literal bit,
//! tuple argument, attribute and BLOBFILE reference).
//!
//! The parser is deliberately test-only and accepts exactly the grammar the
//! writer emits.

mod fixtures;

use std::collections::BTreeMap;

use aneforge_mil::*;
use half::f16;

#[test]
fn every_fixture_round_trips_through_text_in_both_dialects() {
    for fx in fixtures::all() {
        for dialect in [Dialect::Concise, Dialect::Verbose] {
            for layout in [WeightLayout::SingleFile, WeightLayout::FilePerBlob] {
                let text = to_mil_text(&fx.program, dialect, layout).expect("writes");
                let locations = plan_locations(&fx.program, layout).expect("plans");
                let parsed = Parser::new(&text, &locations, fx.program.blobs())
                    .program()
                    .unwrap_or_else(|e| panic!("{} ({dialect:?}): {e}\n{text}", fx.name));
                assert_eq!(parsed.opset, fx.program.opset, "{}", fx.name);
                assert_eq!(parsed.build_info, fx.program.build_info, "{}", fx.name);
                assert_eq!(
                    parsed.functions, fx.program.functions,
                    "{} {dialect:?}",
                    fx.name
                );
            }
        }
    }
}

#[test]
fn odd_literals_round_trip() {
    let mut f = Function::new();
    let x = f.input("x", TensorType::new(DType::Fp32, [3]));
    let vals = [1.0e-30f32, -0.0, 3.4028235e38, 1.0 / 3.0, 6.1035156e-5];
    f.constant("a", Tensor::fp32([5], vals.to_vec()).expect("t"));
    f.constant(
        "h",
        Tensor::fp16(
            [3],
            vec![f16::MIN_POSITIVE_SUBNORMAL, f16::MAX, f16::from_f32(-0.1)],
        )
        .expect("t"),
    );
    f.constant(
        "s",
        Tensor::scalar_string("quote \" backslash \\ newline \n end"),
    );
    f.constant(
        "u",
        Tensor::new(DType::Uint16, [2], TensorData::U16(vec![0, 65535])).expect("t"),
    );
    f.constant("e", Tensor::fp32([0], vec![]).expect("t"));
    f.op(
        "relu",
        [("x", Argument::name(x))],
        NamedType::new("y", TensorType::new(DType::Fp32, [3])),
    );
    f.output("y");
    let p = Program::with_main(Opset::Ios18, f);
    for dialect in [Dialect::Concise, Dialect::Verbose] {
        let text = to_mil_text(&p, dialect, WeightLayout::SingleFile).expect("writes");
        let parsed = Parser::new(&text, &[], &[]).program().expect("parses");
        // Compare bit patterns: -0.0 == 0.0 would hide a lost sign.
        let bits = |p: &Program| format!("{:?}", p.functions).replace("-0.0", "NEG_ZERO");
        assert_eq!(bits(&parsed), bits(&p), "{dialect:?}\n{text}");
    }
}

// ---- a parser for exactly what the writer prints ---------------------------

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
    locations: &'a [BlobLocation],
    /// The program being rebuilt; its blob table is filled up front, in the
    /// original order, so BLOBFILE references resolve to the same ids.
    prog: Program,
    blob_values: Vec<Value>,
}

type R<T> = std::result::Result<T, String>;

impl<'a> Parser<'a> {
    fn new(text: &'a str, locations: &'a [BlobLocation], blobs: &[Tensor]) -> Self {
        let mut prog = Program::new(Opset::Ios18);
        let blob_values = blobs
            .iter()
            .map(|t| prog.add_blob(t.clone()).expect("blob"))
            .collect();
        Parser {
            s: text.as_bytes(),
            i: 0,
            locations,
            prog,
            blob_values,
        }
    }

    fn ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }

    fn peek(&mut self, lit: &str) -> bool {
        self.ws();
        self.s[self.i..].starts_with(lit.as_bytes())
    }

    fn eat(&mut self, lit: &str) -> bool {
        let ok = self.peek(lit);
        if ok {
            self.i += lit.len();
        }
        ok
    }

    fn expect(&mut self, lit: &str) -> R<()> {
        if self.eat(lit) {
            Ok(())
        } else {
            let end = (self.i + 40).min(self.s.len());
            Err(format!(
                "expected `{lit}` at byte {}: `{}`",
                self.i,
                String::from_utf8_lossy(&self.s[self.i..end])
            ))
        }
    }

    fn ident(&mut self) -> R<String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len()
            && (self.s[self.i].is_ascii_alphanumeric() || matches!(self.s[self.i], b'_' | b'@'))
        {
            self.i += 1;
        }
        if start == self.i {
            return Err(format!("expected an identifier at byte {start}"));
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned())
    }

    /// A bare token up to `,`, `]` or `)`: a number, bool, inf or nan.
    fn token(&mut self) -> R<String> {
        self.ws();
        let start = self.i;
        while self.i < self.s.len() && !matches!(self.s[self.i], b',' | b']' | b')') {
            self.i += 1;
        }
        Ok(String::from_utf8_lossy(&self.s[start..self.i])
            .trim()
            .to_string())
    }

    fn string(&mut self) -> R<String> {
        self.expect("\"")?;
        let mut out = Vec::new();
        loop {
            let c = *self.s.get(self.i).ok_or("unterminated string")?;
            self.i += 1;
            match c {
                b'"' => break,
                b'\\' => {
                    let e = *self.s.get(self.i).ok_or("bad escape")?;
                    self.i += 1;
                    out.push(if e == b'n' { b'\n' } else { e });
                }
                c => out.push(c),
            }
        }
        String::from_utf8(out).map_err(|e| e.to_string())
    }

    fn program(mut self) -> R<Program> {
        self.expect("program(")?;
        let version = self.token()?;
        self.expect(")")?;
        let verbose = match version.as_str() {
            "1.3" => false,
            "1.0" => true,
            v => return Err(format!("unknown program version {v}")),
        };
        let mut build_info = Vec::new();
        if self.eat("[buildInfo = ") {
            self.expect(if verbose {
                "dict<tensor<string, []>, tensor<string, []>>({"
            } else {
                "dict<string, string>({"
            })?;
            while self.eat("{") {
                let k = self.string()?;
                self.expect(",")?;
                let v = self.string()?;
                self.expect("}")?;
                build_info.push((k, v));
                self.eat(",");
            }
            self.expect("})]")?;
        }
        self.expect("{")?;
        let mut functions = BTreeMap::new();
        let mut opset = None;
        while self.eat("func ") {
            let name = self.ident()?;
            self.expect("<")?;
            let tag = self.ident()?;
            self.expect(">")?;
            let o = [Opset::Ios15, Opset::Ios16, Opset::Ios17, Opset::Ios18]
                .into_iter()
                .find(|o| o.text_name() == tag)
                .ok_or(format!("unknown opset {tag}"))?;
            if opset.replace(o).is_some_and(|prev| prev != o) {
                return Err("functions disagree on the opset".into());
            }
            functions.insert(name, self.function()?);
        }
        self.expect("}")?;
        self.ws();
        if self.i != self.s.len() {
            return Err(format!("trailing text at byte {}", self.i));
        }
        let mut p = self.prog;
        p.opset = opset.ok_or("no functions")?;
        p.build_info = build_info;
        p.functions = functions;
        Ok(p)
    }

    fn function(&mut self) -> R<Function> {
        let mut f = Function::new();
        self.expect("(")?;
        while !self.eat(")") {
            if self.eat("state<") {
                let ty = self.ty()?;
                self.expect(">")?;
                let name = self.ident()?;
                f.state(name, ty);
            } else {
                let ty = self.ty()?;
                let name = self.ident()?;
                f.input(name, ty);
            }
            self.eat(",");
        }
        self.expect("{")?;
        while !self.eat("}") {
            f.ops.push(self.operation()?);
        }
        self.expect("->")?;
        self.expect("(")?;
        while !self.eat(")") {
            let n = self.ident()?;
            f.output(n);
            self.eat(",");
        }
        self.expect(";")?;
        Ok(f)
    }

    fn operation(&mut self) -> R<Operation> {
        // Outputs: `TYPE name, TYPE name =`, absent for write_state. An
        // output list starts with a type; an op type is followed by `(`.
        let mut outputs = Vec::new();
        let save = self.i;
        let first = self.ident()?;
        let op_type = if self.peek("(") {
            first
        } else {
            self.i = save;
            loop {
                let ty = self.ty()?;
                let name = self.ident()?;
                outputs.push(NamedType::new(name, ty));
                if self.eat("=") {
                    break self.ident()?;
                }
                self.expect(",")?;
            }
        };
        let mut op = Operation::new(op_type, Vec::<(String, Argument)>::new(), outputs);
        self.expect("(")?;
        while !self.eat(")") {
            let k = self.ident()?;
            self.expect("=")?;
            let arg = if self.eat("(") {
                let mut v = Vec::new();
                while !self.eat(")") {
                    v.push(self.binding()?);
                    self.eat(",");
                }
                Argument::Tuple(v)
            } else {
                Argument::Single(self.binding()?)
            };
            op.inputs.insert(k, arg);
            self.eat(",");
        }
        self.expect("[")?;
        while !self.eat("]") {
            let k = self.ident()?;
            self.expect("=")?;
            let v = self.value()?;
            if k == "name" {
                match v {
                    Value::Immediate(t) => match t.data() {
                        TensorData::Str(s) if s.len() == 1 => op.name = s[0].clone(),
                        _ => return Err("name is not a string".into()),
                    },
                    _ => return Err("name is a blob".into()),
                }
            } else {
                op.attributes.insert(k, v);
            }
            self.eat(",");
        }
        self.expect(";")?;
        Ok(op)
    }

    fn binding(&mut self) -> R<Binding> {
        // A literal starts with a type; a reference is a bare identifier.
        let save = self.i;
        let word = self.ident()?;
        let is_type =
            word == "tensor" || (ALL_DTYPES.iter().any(|d| d.mil_name() == word) && self.peek("("));
        self.i = save;
        if is_type {
            Ok(Binding::Value(self.value()?))
        } else {
            Ok(Binding::Name(self.ident()?))
        }
    }

    fn ty(&mut self) -> R<TensorType> {
        if self.eat("tensor<") {
            let d = self.dtype()?;
            self.expect(",")?;
            self.expect("[")?;
            let mut shape = Vec::new();
            while !self.eat("]") {
                shape.push(self.token()?.parse::<usize>().map_err(|e| e.to_string())?);
                self.eat(",");
            }
            self.expect(">")?;
            Ok(TensorType::new(d, shape))
        } else {
            Ok(TensorType::scalar(self.dtype()?))
        }
    }

    fn dtype(&mut self) -> R<DType> {
        let w = self.ident()?;
        DType::from_mil_name(&w).ok_or(format!("unknown dtype {w}"))
    }

    fn value(&mut self) -> R<Value> {
        let ty = self.ty()?;
        self.expect("(")?;
        if self.eat("BLOBFILE(path = ") {
            let path_ty = self.ty()?;
            if path_ty.dtype != DType::String {
                return Err("BLOBFILE path is not a string".into());
            }
            self.expect("(")?;
            let path = self.string()?;
            self.expect(")")?;
            self.expect(", offset = ")?;
            if !self.eat("uint64(") && !self.eat("tensor<uint64, []>(") {
                return Err("BLOBFILE offset is not a uint64".into());
            }
            let offset: u64 = self.token()?.parse().map_err(|e| format!("offset: {e}"))?;
            self.expect(")")?;
            self.expect(")")?;
            self.expect(")")?;
            let i = self
                .locations
                .iter()
                .position(|l| l.mil_path() == path && l.offset == offset)
                .ok_or(format!("no blob at {path} offset {offset}"))?;
            let v = self.blob_values[i].clone();
            if v.ty() != &ty {
                return Err(format!("blob {i} has type {:?}, text says {ty:?}", v.ty()));
            }
            return Ok(v);
        }
        let mut elems = Vec::new();
        if ty.is_scalar() {
            elems.push(self.element(ty.dtype)?);
        } else {
            self.expect("[")?;
            while !self.eat("]") {
                elems.push(self.element(ty.dtype)?);
                self.eat(",");
            }
        }
        self.expect(")")?;
        Ok(Value::Immediate(build(ty, elems)?))
    }

    fn element(&mut self, d: DType) -> R<Elem> {
        if d == DType::String {
            return Ok(Elem::S(self.string()?));
        }
        let t = self.token()?;
        Ok(match t.as_str() {
            "true" => Elem::B(true),
            "false" => Elem::B(false),
            "inf" => Elem::F(f64::INFINITY),
            "-inf" => Elem::F(f64::NEG_INFINITY),
            "nan" => Elem::F(f64::NAN),
            _ if matches!(d, DType::Fp16 | DType::Fp32) => {
                Elem::F(t.parse::<f32>().map_err(|e| format!("{t}: {e}"))? as f64)
            }
            _ => Elem::I(t.parse::<i64>().map_err(|e| format!("{t}: {e}"))?),
        })
    }
}

enum Elem {
    F(f64),
    I(i64),
    B(bool),
    S(String),
}

fn build(ty: TensorType, elems: Vec<Elem>) -> R<Tensor> {
    fn all<T>(e: Vec<Elem>, f: impl Fn(Elem) -> Option<T>) -> R<Vec<T>> {
        e.into_iter()
            .map(|x| f(x).ok_or("element of the wrong kind".to_string()))
            .collect()
    }
    let int = |x: Elem| match x {
        Elem::I(i) => Some(i),
        _ => None,
    };
    let data = match ty.dtype {
        DType::Fp16 => TensorData::F16(all(elems, |x| match x {
            Elem::F(v) => Some(f16::from_f32(v as f32)),
            _ => None,
        })?),
        DType::Fp32 => TensorData::F32(all(elems, |x| match x {
            Elem::F(v) => Some(v as f32),
            _ => None,
        })?),
        DType::Int8 | DType::Int4 => TensorData::I8(all(elems, |x| int(x).map(|v| v as i8))?),
        DType::Int16 => TensorData::I16(all(elems, |x| int(x).map(|v| v as i16))?),
        DType::Uint16 => TensorData::U16(all(elems, |x| int(x).map(|v| v as u16))?),
        DType::Int32 => TensorData::I32(all(elems, |x| int(x).map(|v| v as i32))?),
        DType::Uint32 => TensorData::U32(all(elems, |x| int(x).map(|v| v as u32))?),
        DType::Bool => TensorData::Bool(all(elems, |x| match x {
            Elem::B(b) => Some(b),
            _ => None,
        })?),
        DType::String => TensorData::Str(all(elems, |x| match x {
            Elem::S(s) => Some(s),
            _ => None,
        })?),
        _ => TensorData::U8(all(elems, |x| int(x).map(|v| v as u8))?),
    };
    Tensor::new(ty.dtype, ty.shape, data).map_err(|e| e.to_string())
}
