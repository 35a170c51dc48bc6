//! The protobuf lowering and the `.mlpackage` layout, checked by decoding
//! what was written. (coremltools checks the same packages in
//! `tests/test_mil_oracle.py` at the repository root.)

mod fixtures;

use std::collections::BTreeMap;

use aneforge_mil::proto::core_ml::specification as spec;
use aneforge_mil::proto::core_ml::specification::mil_spec as mil;
use aneforge_mil::*;
use prost::Message as _;

fn main_block(model: &spec::Model) -> (&mil::Function, &mil::Block) {
    let Some(spec::model::Type::MlProgram(p)) = &model.r#type else {
        panic!("not an ML program")
    };
    let f = &p.functions["main"];
    (f, &f.block_specializations[&f.opset])
}

fn tensor_value(v: &mil::Value) -> &mil::tensor_value::Value {
    match &v.value {
        Some(mil::value::Value::ImmediateValue(mil::value::ImmediateValue {
            value: Some(mil::value::immediate_value::Value::Tensor(t)),
        })) => t.value.as_ref().expect("tensor value"),
        other => panic!("not an immediate tensor: {other:?}"),
    }
}

#[test]
fn opset_string_and_specification_version_agree() {
    for (p, ver, opset) in [
        (fixtures::relu_chain(), 7, "CoreML6"),
        (fixtures::linear_relu(), 8, "CoreML7"),
        (fixtures::conv(), 9, "CoreML8"),
    ] {
        let locs = plan_locations(&p, WeightLayout::SingleFile).expect("plan");
        let m = to_model_proto(&p, &locs, &BTreeMap::new()).expect("lowers");
        assert_eq!(m.specification_version, ver);
        let (f, _) = main_block(&m);
        assert_eq!(f.opset, opset);
        assert_eq!(f.block_specializations.len(), 1);
    }
}

#[test]
fn description_mirrors_main_signature() {
    let p = fixtures::relu_chain();
    let m = to_model_proto(&p, &[], &BTreeMap::new()).expect("lowers");
    let d = m.description.expect("description");
    let arr = |f: &spec::FeatureDescription| match &f.r#type.as_ref().expect("type").r#type {
        Some(spec::feature_type::Type::MultiArrayType(a)) => (a.shape.clone(), a.data_type),
        other => panic!("{other:?}"),
    };
    use spec::array_feature_type::ArrayDataType as A;
    assert_eq!(d.input.len(), 1);
    assert_eq!(d.input[0].name, "x");
    assert_eq!(arr(&d.input[0]), (vec![1, 64], A::Float16 as i32));
    assert_eq!(d.output[0].name, "y");
    assert_eq!(arr(&d.output[0]), (vec![1, 64], A::Float32 as i32));
}

#[test]
fn immediates_use_the_field_coremltools_reads() {
    let mut f = Function::new();
    let x = f.input("x", TensorType::new(DType::Fp16, [2]));
    f.constant(
        "h",
        Tensor::fp16([2], vec![half::f16::ONE, half::f16::NEG_ONE]).expect("t"),
    );
    f.constant("s", Tensor::fp32([1], vec![0.5]).expect("t"));
    f.constant(
        "i",
        Tensor::new(DType::Int16, [2], TensorData::I16(vec![-2, 3])).expect("t"),
    );
    f.constant(
        "u",
        Tensor::new(DType::Uint8, [2], TensorData::U8(vec![7, 255])).expect("t"),
    );
    f.constant("b", Tensor::scalar_bool(true));
    f.op(
        "relu",
        [("x", Argument::name(x))],
        NamedType::new("y", TensorType::new(DType::Fp16, [2])),
    );
    f.output("y");
    let p = Program::with_main(Opset::Ios18, f);
    let m = to_model_proto(&p, &[], &BTreeMap::new()).expect("lowers");
    let (_, block) = main_block(&m);
    let val = |name: &str| {
        let op = block
            .operations
            .iter()
            .find(|o| o.outputs[0].name == name)
            .expect("op");
        tensor_value(&op.attributes["val"]).clone()
    };
    use mil::tensor_value::*;
    assert_eq!(
        val("h"),
        Value::Bytes(RepeatedBytes {
            values: vec![0x00, 0x3c, 0x00, 0xbc]
        })
    );
    assert_eq!(
        val("s"),
        Value::Floats(RepeatedFloats { values: vec![0.5] })
    );
    assert_eq!(
        val("i"),
        Value::Ints(RepeatedInts {
            values: vec![-2, 3]
        })
    );
    assert_eq!(
        val("u"),
        Value::Bytes(RepeatedBytes {
            values: vec![7, 255]
        })
    );
    assert_eq!(val("b"), Value::Bools(RepeatedBools { values: vec![true] }));
    // Every op carries its name attribute; scalars are rank-0 tensors.
    let relu = block
        .operations
        .iter()
        .find(|o| o.r#type == "relu")
        .expect("relu");
    assert_eq!(
        tensor_value(&relu.attributes["name"]),
        &Value::Strings(RepeatedStrings {
            values: vec!["y".into()]
        })
    );
    let b = block
        .operations
        .iter()
        .find(|o| o.outputs[0].name == "b")
        .expect("b");
    match &b.outputs[0].r#type.as_ref().expect("type").r#type {
        Some(mil::value_type::Type::TensorType(t)) => {
            assert_eq!((t.rank, t.dimensions.len()), (0, 0));
            assert_eq!(t.data_type, mil::DataType::Bool as i32);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn package_layout_is_complete_and_deterministic() {
    let dir = std::env::temp_dir().join(format!("aneforge-mil-pkg-{}", std::process::id()));
    let pkg = dir.join("conv.mlpackage");
    let p = fixtures::conv();
    write_mlpackage(&p, &pkg, &PackageOptions::default()).expect("writes");
    let read = |rel: &str| std::fs::read(pkg.join(rel)).expect(rel);
    let manifest: serde_json::Value = serde_json::from_slice(&read("Manifest.json")).expect("json");
    let root = manifest["rootModelIdentifier"].as_str().expect("root");
    assert_eq!(
        manifest["itemInfoEntries"][root]["path"],
        "com.apple.CoreML/model.mlmodel"
    );
    let model = spec::Model::decode(read("Data/com.apple.CoreML/model.mlmodel").as_slice())
        .expect("decodes");
    let weights = read("Data/com.apple.CoreML/weights/weight.bin");
    assert_eq!(
        weights,
        write_weights(&p, WeightLayout::SingleFile)
            .expect("w")
            .files[0]
            .1
    );

    // Blob references point at metadata records holding the right dtype.
    let (_, block) = main_block(&model);
    let mut refs = 0;
    for op in &block.operations {
        if let Some(mil::value::Value::BlobFileValue(b)) =
            op.attributes.get("val").and_then(|v| v.value.as_ref())
        {
            refs += 1;
            assert_eq!(b.file_name, "@model_path/weights/weight.bin");
            let at = b.offset as usize;
            assert_eq!(&weights[at..at + 4], &[0xEF, 0xBE, 0xAD, 0xDE]);
            assert_eq!(weights[at + 4], 1, "fp16 blob code");
        }
    }
    assert_eq!(refs, 2);

    // Writing again replaces the package with identical bytes.
    let before = std::fs::read(pkg.join("Manifest.json")).expect("manifest");
    write_mlpackage(&p, &pkg, &PackageOptions::default()).expect("rewrites");
    assert_eq!(
        before,
        std::fs::read(pkg.join("Manifest.json")).expect("manifest")
    );

    // Something that is not a package is never overwritten.
    let other = dir.join("not_a_package");
    std::fs::create_dir_all(&other).expect("mkdir");
    assert!(write_mlpackage(&p, &other, &PackageOptions::default()).is_err());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn file_per_blob_layout_writes_one_file_per_weight() {
    let dir = std::env::temp_dir().join(format!("aneforge-mil-per-blob-{}", std::process::id()));
    let pkg = dir.join("lin.mlpackage");
    let opts = PackageOptions {
        layout: WeightLayout::FilePerBlob,
        ..Default::default()
    };
    write_mlpackage(&fixtures::linear_relu(), &pkg, &opts).expect("writes");
    let w = pkg.join("Data/com.apple.CoreML/weights");
    assert!(w.join("w0.bin").is_file() && w.join("w1.bin").is_file());
    assert!(!w.join("weight.bin").exists());
    std::fs::remove_dir_all(&dir).expect("cleanup");
}

#[test]
fn io_dtypes_core_ml_cannot_carry_are_rejected() {
    let mut f = Function::new();
    let x = f.input("x", TensorType::new(DType::Int8, [4]));
    f.output(x);
    let p = Program::with_main(Opset::Ios18, f);
    let err = to_model_proto(&p, &[], &BTreeMap::new()).expect_err("int8 I/O");
    assert!(err.to_string().contains("int8"), "{err}");
}

#[test]
fn states_are_typed_and_described_as_states() {
    let p = fixtures::state_accumulate();
    let m = to_model_proto(&p, &[], &BTreeMap::new()).expect("lowers");
    let (f, _) = main_block(&m);
    assert_eq!(f.inputs[0].name, "cache");
    assert!(matches!(
        f.inputs[0].r#type.as_ref().and_then(|t| t.r#type.as_ref()),
        Some(mil::value_type::Type::StateType(_))
    ));
    let d = m.description.expect("description");
    assert_eq!(
        d.input.iter().map(|i| i.name.as_str()).collect::<Vec<_>>(),
        ["x"]
    );
    assert_eq!(d.state.len(), 1);
    assert!(matches!(
        d.state[0].r#type.as_ref().and_then(|t| t.r#type.as_ref()),
        Some(spec::feature_type::Type::StateType(_))
    ));

    let mut old = fixtures::state_accumulate();
    old.opset = Opset::Ios17;
    let err = old.validate().expect_err("states need iOS18");
    assert!(err.to_string().contains("iOS18"), "{err}");
}

#[test]
fn several_functions_are_described_per_function() {
    let p = fixtures::multifunction();
    let m = to_model_proto(&p, &[], &BTreeMap::new()).expect("lowers");
    let d = m.description.expect("description");
    assert_eq!(d.default_function_name, "main");
    let names: Vec<&str> = d.functions.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names, ["main", "scale"]);
    assert!(d.input.is_empty() && d.output.is_empty());
    assert_eq!(d.functions[1].output[0].name, "z");
}
