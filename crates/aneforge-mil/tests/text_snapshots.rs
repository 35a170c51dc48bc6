//! Snapshot tests of the MIL text writer.
//!
//! No tool on Linux parses MIL text, so the text is pinned here against
//! reviewed snapshots in `tests/snapshots/`. After an intended change, run
//! `UPDATE_SNAPSHOTS=1 cargo test -p aneforge-mil --test text_snapshots` and
//! review the diff.

mod fixtures;

use std::path::PathBuf;

use aneforge_mil::*;

fn check(name: &str, dialect: Dialect, layout: WeightLayout, program: &Program) {
    let suffix = match (dialect, layout) {
        (Dialect::Concise, WeightLayout::SingleFile) => "concise",
        (Dialect::Verbose, WeightLayout::SingleFile) => "verbose",
        (Dialect::Concise, WeightLayout::FilePerBlob) => "concise.per_blob",
        (Dialect::Verbose, WeightLayout::FilePerBlob) => "verbose.per_blob",
    };
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/snapshots")
        .join(format!("{name}.{suffix}.mil"));
    let text = to_mil_text(program, dialect, layout).expect("fixture writes");
    // Deterministic: the same program always prints the same bytes.
    assert_eq!(
        text,
        to_mil_text(program, dialect, layout).expect("fixture writes")
    );
    if std::env::var_os("UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, &text).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|_| {
        panic!(
            "missing snapshot {}; run with UPDATE_SNAPSHOTS=1",
            path.display()
        )
    });
    assert_eq!(
        text, want,
        "MIL text of {name} changed; UPDATE_SNAPSHOTS=1 to accept"
    );
}

#[test]
fn every_fixture_in_both_dialects_matches_its_snapshot() {
    for fx in fixtures::all() {
        for dialect in [Dialect::Concise, Dialect::Verbose] {
            check(fx.name, dialect, WeightLayout::SingleFile, &fx.program);
        }
    }
}

#[test]
fn one_file_per_blob_points_every_blobfile_at_offset_64() {
    let p = fixtures::conv();
    check("conv", Dialect::Concise, WeightLayout::FilePerBlob, &p);
    let text = to_mil_text(&p, Dialect::Concise, WeightLayout::FilePerBlob).expect("writes");
    assert!(text
        .contains(r#"BLOBFILE(path = string("@model_path/weights/w0.bin"), offset = uint64(64))"#));
    assert!(text
        .contains(r#"BLOBFILE(path = string("@model_path/weights/w1.bin"), offset = uint64(64))"#));
}

#[test]
fn verbose_dialect_spells_every_scalar_as_a_rank0_tensor() {
    let text = to_mil_text(
        &fixtures::conv(),
        Dialect::Verbose,
        WeightLayout::SingleFile,
    )
    .expect("writes");
    assert!(text.starts_with("program(1.0)\n"));
    assert!(text.contains("func main<ios18>("));
    assert!(text.contains(r#"tensor<string, []> pt = const()[name = tensor<string, []>("pt"), val = tensor<string, []>("valid")];"#));
    assert!(text.contains("offset = tensor<uint64, []>(384)"));
    assert!(!text.contains("string(\""), "no bare scalar spelling left");
    assert!(!text.contains(" int32("));
}

#[test]
fn literals_round_trip_and_strings_are_escaped() {
    let mut f = Function::new();
    let x = f.input("x", TensorType::new(DType::Fp16, [1, 2]));
    let eps = f.constant(
        "eps",
        Tensor::scalar_fp16(half::f16::from_f32(6.1035156e-5)),
    );
    let big = f.constant("big", Tensor::scalar_fp32(1.0e30));
    let q = f.constant("q", Tensor::scalar_string("a\"b\\c"));
    let _ = (eps, big, q);
    f.op(
        "relu",
        [("x", Argument::name(x))],
        NamedType::new("y", TensorType::new(DType::Fp16, [1, 2])),
    );
    f.output("y");
    let mut p = Program::with_main(Opset::Ios18, f);
    p.build_info.clear();
    let text = to_mil_text(&p, Dialect::Concise, WeightLayout::SingleFile).expect("writes");
    assert!(text.contains("val = fp16(6.1035156e-5)"), "{text}");
    assert!(text.contains("val = fp32(1e30)"), "{text}");
    assert!(text.contains(r#"val = string("a\"b\\c")"#), "{text}");
    assert!(!text.contains("buildInfo"));
    let eps: f32 = "6.1035156e-5".parse().expect("float");
    assert_eq!(half::f16::from_f32(eps).to_f32(), 6.1035156e-5);
}
