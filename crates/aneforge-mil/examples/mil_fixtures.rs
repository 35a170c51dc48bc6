//! Writes MIL artifacts for the coremltools oracle tests
//! (`tests/test_mil_oracle.py` at the repository root).
//!
//!     mil_fixtures packages OUT_DIR
//!         Writes every fixture program as OUT_DIR/<name>.mlpackage and
//!         OUT_DIR/<name>.mil, and prints a JSON list describing each one
//!         (declared op output types, evaluability) on stdout.
//!
//!     mil_fixtures blobs SPEC.json OUT.bin
//!         Writes a weight file holding the arrays SPEC.json lists
//!         ({"blobs": [{"dtype": "fp16", "shape": [..], "data": "a.raw"}]},
//!         data as raw little-endian bytes, one byte per element for
//!         sub-byte dtypes) and prints {"offsets": [...]}.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use aneforge_mil::*;
use serde_json::{json, Value as Json};

#[path = "../tests/fixtures/mod.rs"]
mod fixtures;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        ["packages", out] => packages(Path::new(out)),
        ["blobs", spec, out] => blobs(Path::new(spec), Path::new(out)),
        _ => Err("usage: mil_fixtures packages OUT_DIR | blobs SPEC.json OUT.bin".into()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mil_fixtures: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = std::result::Result<T, Box<dyn std::error::Error>>;

/// The type spelling coremltools prints (`tensor<fp16,[1,2]>`, bare dtype
/// for scalars), so the test can compare declared and inferred types as text.
fn ct_type(t: &TensorType) -> String {
    if t.is_scalar() {
        return t.dtype.mil_name().to_string();
    }
    let dims: Vec<String> = t.shape.iter().map(|d| d.to_string()).collect();
    format!("tensor<{},[{}]>", t.dtype.mil_name(), dims.join(","))
}

fn named(v: &[NamedType]) -> Json {
    v.iter()
        .map(|n| json!({"name": n.name, "type": ct_type(&n.ty)}))
        .collect()
}

fn packages(out: &Path) -> Res<()> {
    std::fs::create_dir_all(out)?;
    let mut listing = Vec::new();
    for fx in fixtures::all() {
        let pkg: PathBuf = out.join(format!("{}.mlpackage", fx.name));
        write_mlpackage(&fx.program, &pkg, &PackageOptions::default())?;
        let text = to_mil_text(&fx.program, fx.dialect, WeightLayout::SingleFile)?;
        std::fs::write(out.join(format!("{}.mil", fx.name)), text)?;
        let main = fx.program.main()?;
        let ops: Vec<Json> = main
            .ops
            .iter()
            .map(|o| json!({"type": o.op_type, "name": o.name, "outputs": named(&o.outputs)}))
            .collect();
        let outputs: Vec<Json> = main
            .outputs
            .iter()
            .map(|o| {
                let ty = main.value_type(o).map(ct_type).unwrap_or_default();
                json!({"name": o, "type": ty})
            })
            .collect();
        listing.push(json!({
            "name": fx.name,
            "package": pkg.display().to_string(),
            "opset": fx.program.opset.text_name(),
            "specification_version": fx.program.opset.specification_version(),
            "evaluable": fx.evaluable,
            "states": named(&main.states),
            "inputs": named(&main.inputs),
            "functions": fx.program.functions.keys().collect::<Vec<_>>(),
            "ops": ops,
            "outputs": outputs,
        }));
    }
    println!("{}", serde_json::to_string_pretty(&listing)?);
    Ok(())
}

fn blobs(spec: &Path, out: &Path) -> Res<()> {
    let spec: Json = serde_json::from_slice(&std::fs::read(spec)?)?;
    let base = Path::new(".");
    let list = spec["blobs"].as_array().ok_or("spec has no `blobs` list")?;
    let mut w = BlobWriter::new();
    let mut offsets = Vec::new();
    for (i, b) in list.iter().enumerate() {
        let dtype_name = b["dtype"].as_str().ok_or(format!("blob {i}: no dtype"))?;
        let dtype = DType::from_mil_name(dtype_name)
            .ok_or(format!("blob {i}: unknown dtype {dtype_name}"))?;
        let shape: Vec<usize> = b["shape"]
            .as_array()
            .ok_or(format!("blob {i}: no shape"))?
            .iter()
            .map(|d| d.as_u64().map(|d| d as usize).ok_or("bad dimension"))
            .collect::<std::result::Result<_, _>>()?;
        let data_path = base.join(b["data"].as_str().ok_or(format!("blob {i}: no data"))?);
        let raw = std::fs::read(&data_path)?;
        let tensor = if dtype.is_sub_byte() {
            let data = if dtype == DType::Int4 {
                TensorData::I8(raw.iter().map(|&x| x as i8).collect())
            } else {
                TensorData::U8(raw)
            };
            Tensor::new(dtype, shape, data)?
        } else {
            Tensor::from_le_bytes(dtype, shape, &raw)?
        };
        offsets.push(w.add(&tensor)?);
    }
    std::fs::write(out, w.finish())?;
    println!("{}", json!({ "offsets": offsets }));
    Ok(())
}
