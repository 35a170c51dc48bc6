//! Lowering tests: MIL text snapshots of a handful of programs in both
//! dialects (`snapshots/`, regenerate a reviewed change with
//! `UPDATE_SNAPSHOTS=1`), and the quirk rules. The coremltools checks of
//! every op live in tests/test_mil_lowering.py.

use super::*;
use crate::builder::{self as b, self as nn, self as mv, ConvArgs, PadSpec};
use crate::ops::{Binary, ReduceKind, Unary};
use crate::{compile, CompileOptions};

fn lower_outputs(outs: &[crate::Tensor], tier: Option<u8>) -> MilProgram {
    let c = compile(outs, CompileOptions::default()).expect("compile");
    lower(&c.graph, &c.input_names, &c.output_names, tier).expect("lower")
}

fn weights(n: usize) -> Vec<f32> {
    (0..n).map(|i| ((i * 37 % 17) as f32 - 8.0) / 16.0).collect()
}

fn snapshot(name: &str, text: &str) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/backend/mil/snapshots");
    let path = dir.join(format!("{name}.mil"));
    if std::env::var("UPDATE_SNAPSHOTS").is_ok_and(|v| v == "1") || !path.exists() {
        std::fs::create_dir_all(&dir).expect("snapshot dir");
        std::fs::write(&path, text).expect("write snapshot");
        return;
    }
    let want = std::fs::read_to_string(&path).expect("read snapshot");
    assert_eq!(text, want, "MIL text of {name} changed; review and rerun with UPDATE_SNAPSHOTS=1");
}

fn programs() -> Vec<(&'static str, Vec<crate::Tensor>)> {
    let mut v = vec![];
    // A linear layer with bias and gelu (matmul epilogue → linear + gelu).
    let x = b::input(&[1, 4, 16], DType::F16, Some("x")).unwrap();
    let w = b::constant(weights(16 * 8), vec![8, 16], DType::F16).unwrap();
    let bias = b::constant(weights(8), vec![8], DType::F16).unwrap();
    let y = nn::linear(&x, &w, Some(&bias)).unwrap();
    let y = b::gelu(&y, "tanh").unwrap();
    v.push(("linear_gelu", vec![y.named("y")]));
    // conv + relu, then max pool.
    let x = b::input(&[1, 3, 8, 8], DType::F16, Some("image")).unwrap();
    let w = b::constant(weights(4 * 3 * 9), vec![4, 3, 3, 3], DType::F16).unwrap();
    let cb = b::constant(weights(4), vec![4], DType::F16).unwrap();
    let args = ConvArgs { pad: PadSpec::Explicit([1, 1, 1, 1]), ..Default::default() };
    let y = b::unary(&nn::conv(&x, &w, Some(&cb), &args).unwrap(), Unary::Relu).unwrap();
    let y = nn::max_pool(&y, [2, 2], None, &PadSpec::Explicit([0; 4]), false).unwrap();
    v.push(("conv_relu_pool", vec![y.named("features")]));
    // layer norm with eps 1e-5 (rescaled) and a softmax over the last axis.
    let x = b::input(&[2, 8, 32], DType::F16, Some("h")).unwrap();
    let g = b::constant(weights(32), vec![32], DType::F16).unwrap();
    let y = nn::layer_norm(&x, &[-1], Some(&g), None, 1e-5).unwrap();
    let y = nn::softmax(&y, -1).unwrap();
    v.push(("layer_norm_softmax", vec![y.named("probs")]));
    // A comparison output (bool → fp16 port) and a uint8 input (cast inside).
    let q = b::input(&[2, 3], DType::U8, Some("q")).unwrap();
    let qf = b::cast(&q, DType::F16).unwrap();
    let half = b::scalar_like(100.0, &qf).unwrap();
    let m = b::binary(&qf, &half, Binary::Greater).unwrap();
    let s = nn::reduce(&qf, ReduceKind::Mean, Some(&[1]), true).unwrap();
    v.push(("uint8_compare_mean", vec![m.named("mask"), s.named("mean")]));
    v
}

#[test]
fn mil_text_snapshots_both_dialects() {
    for (name, outs) in programs() {
        for (tier, tag) in [(None, "ios18"), (Some(13u8), "ios16")] {
            let p = lower_outputs(&outs, tier);
            let text = p.text().expect("text");
            let header = if tier.is_some() { "program(1.0)" } else { "program(1.3)" };
            assert!(text.starts_with(header), "{name}/{tag}: {}", &text[..40]);
            assert!(text.contains(&format!("func main<{tag}>")));
            snapshot(&format!("{name}.{tag}"), &text);
        }
    }
}

#[test]
fn dialect_follows_the_target_family() {
    assert_eq!(dialect_for(None), (Opset::Ios18, Dialect::Concise));
    assert_eq!(dialect_for(Some(14)), (Opset::Ios16, Dialect::Verbose));
    assert_eq!(dialect_for(Some(15)), (Opset::Ios18, Dialect::Concise));
}

#[test]
fn small_epsilons_are_rescaled_or_clamped_never_subnormal() {
    assert_eq!(safe_eps(1e-3), (1.0, 1e-3, false));
    let (k, e, c) = safe_eps(1e-5);
    assert!(!c && k == 4.0 && (e - 16e-5).abs() < 1e-9);
    let (k, e, c) = safe_eps(1e-6);
    assert!(!c && k == 8.0 && e >= FP16_MIN_NORMAL);
    assert_eq!(safe_eps(1e-12), (1.0, FP16_MIN_NORMAL, true));
    assert_eq!(safe_eps(0.0), (1.0, 0.0, false));
    // The program never holds a subnormal epsilon.
    let x = b::input(&[1, 16], DType::F16, Some("x")).unwrap();
    let y = nn::layer_norm(&x, &[-1], None, None, 1e-12).unwrap();
    let p = lower_outputs(&[y], None);
    assert!(p.notes.iter().any(|n| n.contains("clamped")), "{:?}", p.notes);
    let text = p.text().unwrap();
    assert!(!text.contains("1e-12") && !text.contains("1e-5"), "{text}");
}

#[test]
fn concat_becomes_a_tree_of_two_input_concats() {
    let xs: Vec<_> = (0..5).map(|i| b::input(&[1, 2], DType::F16, Some(&format!("x{i}"))).unwrap()).collect();
    let y = mv::concat(&xs, 1).unwrap();
    let p = lower_outputs(&[y.named("y")], None);
    let main = p.program.main().unwrap();
    let concats: Vec<_> = main.ops.iter().filter(|o| o.op_type == "concat").collect();
    assert_eq!(concats.len(), 4);
    assert!(concats.iter().all(|o| o.inputs["values"].bindings().len() <= MAX_CONCAT_INPUTS));
    assert_eq!(main.outputs, vec!["y".to_string()]);
    assert_eq!(main.value_type("y").unwrap().shape, vec![1, 10]);
}

#[test]
fn mul_by_zero_is_not_emitted() {
    let x = b::input(&[2, 3], DType::F16, Some("x")).unwrap();
    let s = nn::reduce(&x, ReduceKind::Sum, Some(&[1]), true).unwrap();
    let z = b::constant(vec![0.0; 3], vec![1, 3], DType::F16).unwrap();
    let y = b::binary(&s, &z, Binary::Mul).unwrap();
    let opts = CompileOptions { optimize: false, ..Default::default() };
    let c = compile(&[y.named("y")], opts).unwrap();
    let p = lower(&c.graph, &c.input_names, &c.output_names, None).unwrap();
    let main = p.program.main().unwrap();
    assert!(!main.ops.iter().any(|o| o.op_type == "mul"), "{:?}", main.ops.iter().map(|o| &o.op_type).collect::<Vec<_>>());
    assert_eq!(main.value_type("y").unwrap().shape, vec![2, 3]);
}

#[test]
fn ports_are_fp16_with_casts_inside_and_plan_alphabetical() {
    let (_, outs) = programs().into_iter().find(|(n, _)| *n == "uint8_compare_mean").unwrap();
    let p = lower_outputs(&outs, None);
    let main = p.program.main().unwrap();
    assert!(main.inputs.iter().all(|i| i.ty.dtype == aneforge_mil::DType::Fp16));
    for o in &main.outputs {
        assert_eq!(main.value_type(o).unwrap().dtype, aneforge_mil::DType::Fp16, "{o}");
    }
    let names: Vec<_> = p.plan.outputs.iter().map(|o| o.mil_name.clone()).collect();
    assert_eq!(names, ["mask", "mean"]);
    assert_eq!(p.plan.outputs[0].host_dtype, DType::Bool);
}

#[test]
fn port_names_become_mil_identifiers() {
    assert_eq!(ident("my-input.0"), "my_input_0");
    assert_eq!(ident("3d"), "_3d");
    let x = b::input(&[1, 4], DType::F16, Some("in put")).unwrap();
    let y = b::unary(&x, Unary::Relu).unwrap();
    let p = lower_outputs(&[y.named("1out")], None);
    let main = p.program.main().unwrap();
    assert_eq!(main.inputs[0].name, "in_put");
    assert_eq!(main.outputs, vec!["_1out".to_string()]);
    assert_eq!(p.plan.inputs[0].name, "in put");
}
