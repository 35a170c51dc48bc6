//! Every op of the coverage table, in a one- or few-node model, imported and
//! run on the sim against ONNX Runtime (fp32) on the same fp16-representable
//! inputs. The bound is fp16-level: max |sim - ort| <= 1e-2 * max(1, max|ort|).
//!
//! All cases go to one `python3` process (numpy + onnxruntime); without it
//! the test says so and passes vacuously. The structural twin of this test,
//! `every_supported_op_has_an_importer`, runs everywhere.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use aneforge_onnx::builder::{ModelBuilder, NodeBuilder};
use aneforge_onnx::{import_model, Array, ArrayData, DType, ImportOptions, OnnxModel, SUPPORTED_OPS};
use prost::Message;

struct Case {
    name: &'static str,
    model: ModelBuilder,
    /// Runtime inputs: name, shape, and whether values must be positive.
    inputs: Vec<(&'static str, Vec<usize>, bool)>,
}

/// Deterministic values in [-2, 2) (or [0.1, 2.1) when `positive`), rounded
/// to fp16 so the sim's port sees exactly what ONNX Runtime sees.
fn values(seed: u64, n: usize, positive: bool) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let u = (s >> 40) as f32 / (1u64 << 24) as f32;
            let v = if positive { 0.1 + 2.0 * u } else { 4.0 * u - 2.0 };
            half::f16::from_f32(v).to_f32()
        })
        .collect()
}

fn weights(seed: u64, shape: &[usize]) -> Array {
    let n = shape.iter().product();
    let v: Vec<f32> = values(seed, n, false).iter().map(|x| x * 0.5).collect();
    Array::new(shape.to_vec(), ArrayData::F32(v)).expect("consistent weights")
}

fn i64s(v: &[i64]) -> Array {
    Array::from_i64s(v.to_vec())
}

fn f32s(v: &[f32]) -> Array {
    Array::from_f32s(v.to_vec())
}

fn one(name: &'static str, opset: i64, op: NodeBuilder, shape: &[usize]) -> Case {
    Case {
        name,
        model: ModelBuilder::new(opset).input("x", DType::F32, shape).node(op).output("y"),
        inputs: vec![("x", shape.to_vec(), false)],
    }
}

fn positive(mut c: Case) -> Case {
    for i in &mut c.inputs {
        i.2 = true;
    }
    c
}

fn n(op: &str, ins: &[&str]) -> NodeBuilder {
    NodeBuilder::new(op, ins, &["y"])
}

fn cases() -> Vec<Case> {
    let img = [1usize, 4, 6, 6];
    let mut c = vec![
        one("Relu", 17, n("Relu", &["x"]), &img),
        one("Sigmoid", 17, n("Sigmoid", &["x"]), &img),
        one("Tanh", 17, n("Tanh", &["x"]), &img),
        one("Exp", 17, n("Exp", &["x"]), &img),
        positive(one("Log", 17, n("Log", &["x"]), &img)),
        positive(one("Sqrt", 17, n("Sqrt", &["x"]), &img)),
        positive(one("Reciprocal", 17, n("Reciprocal", &["x"]), &img)),
        one("Neg", 17, n("Neg", &["x"]), &img),
        one("Abs", 17, n("Abs", &["x"]), &img),
        one("Erf", 17, n("Erf", &["x"]), &img),
        one("HardSwish", 17, n("HardSwish", &["x"]), &img),
        one("HardSigmoid", 17, n("HardSigmoid", &["x"]).attr_float("alpha", 0.25), &img),
        one("LeakyRelu", 17, n("LeakyRelu", &["x"]).attr_float("alpha", 0.1), &img),
        one("Elu", 17, n("Elu", &["x"]), &img),
        one("Gelu", 20, n("Gelu", &["x"]), &img),
        one("Gelu_tanh", 20, n("Gelu", &["x"]).attr_string("approximate", "tanh"), &img),
        one("Identity", 17, n("Identity", &["x"]), &img),
        one("Dropout", 17, n("Dropout", &["x"]), &img),
        one("Softmax", 17, n("Softmax", &["x"]).attr_int("axis", 1), &img),
        one("LogSoftmax", 17, n("LogSoftmax", &["x"]), &img),
        one("GlobalAveragePool", 17, n("GlobalAveragePool", &["x"]), &img),
        one("Transpose", 17, n("Transpose", &["x"]).attr_ints("perm", &[0, 2, 3, 1]), &img),
        one("Flatten", 17, n("Flatten", &["x"]).attr_int("axis", 2), &img),
        one("Flatten_negative_axis", 17, n("Flatten", &["x"]).attr_int("axis", -1), &img),
        one("Flatten_axis_0", 17, n("Flatten", &["x"]).attr_int("axis", 0), &img),
        one("DepthToSpace_DCR", 17, n("DepthToSpace", &["x"]).attr_int("blocksize", 2), &img),
        one("DepthToSpace_CRD", 17, n("DepthToSpace", &["x"]).attr_int("blocksize", 2).attr_string("mode", "CRD"), &img),
        one("SpaceToDepth", 17, n("SpaceToDepth", &["x"]).attr_int("blocksize", 2), &img),
        one("MaxPool", 17, n("MaxPool", &["x"]).attr_ints("kernel_shape", &[3, 3]).attr_ints("strides", &[2, 2]).attr_ints("pads", &[1, 1, 1, 1]), &img),
        one("MaxPool_ceil", 17, n("MaxPool", &["x"]).attr_ints("kernel_shape", &[2, 2]).attr_ints("strides", &[2, 2]).attr_int("ceil_mode", 1), &[1, 2, 5, 5]),
        one("AveragePool", 17, n("AveragePool", &["x"]).attr_ints("kernel_shape", &[3, 3]).attr_ints("pads", &[1, 1, 1, 1]), &img),
        one("AveragePool_incl", 17, n("AveragePool", &["x"]).attr_ints("kernel_shape", &[3, 3]).attr_ints("pads", &[1, 1, 1, 1]).attr_int("count_include_pad", 1), &img),
        one("ReduceMean", 18, n("ReduceMean", &["x", "axes"]), &img),
        one("ReduceSum", 17, n("ReduceSum", &["x", "axes"]).attr_int("keepdims", 0), &img),
        one("ReduceMax", 18, n("ReduceMax", &["x", "axes"]), &img),
        one("ReduceMin", 18, n("ReduceMin", &["x", "axes"]), &img),
        one("ReduceL2", 18, n("ReduceL2", &["x", "axes"]), &img),
        one("ReduceMean_attr_axes", 17, n("ReduceMean", &["x"]).attr_ints("axes", &[1]), &img),
        one("Clip", 17, n("Clip", &["x", "lo", "hi"]), &img),
        one("Reshape", 17, n("Reshape", &["x", "shape"]), &img),
        one("Squeeze", 17, n("Squeeze", &["x", "axes0"]), &img),
        one("Unsqueeze", 17, n("Unsqueeze", &["x", "axes"]), &img),
        one("Expand", 17, n("Expand", &["x", "eshape"]), &[1, 4, 1, 6]),
        one("Tile", 17, n("Tile", &["x", "reps"]), &img),
        one("Slice", 17, n("Slice", &["x", "st", "en", "ax", "stp"]), &img),
        one("Slice_reverse", 17, n("Slice", &["x", "rst", "ren", "rax", "rstp"]), &img),
        one("Gather", 17, n("Gather", &["x", "idx"]).attr_int("axis", 1), &img),
        one("Pad_constant", 18, n("Pad", &["x", "pads", "pval"]), &img),
        one("Pad_reflect", 18, n("Pad", &["x", "pads"]).attr_string("mode", "reflect"), &img),
        one("Pad_edge", 18, n("Pad", &["x", "pads"]).attr_string("mode", "edge"), &img),
        one("Resize_nearest", 19, n("Resize", &["x", "", "scales"]).attr_string("mode", "nearest").attr_string("coordinate_transformation_mode", "asymmetric").attr_string("nearest_mode", "floor"), &img),
        one("Resize_linear", 19, n("Resize", &["x", "", "", "sizes"]).attr_string("mode", "linear"), &img),
        one("Resize_linear_align", 19, n("Resize", &["x", "", "scales"]).attr_string("mode", "linear").attr_string("coordinate_transformation_mode", "align_corners"), &img),
        one("Conv", 17, n("Conv", &["x", "w", "b"]).attr_ints("pads", &[1, 1, 1, 1]).attr_ints("strides", &[2, 2]), &img),
        one("Conv_depthwise_dilated", 17, n("Conv", &["x", "wdw"]).attr_int("group", 4).attr_ints("dilations", &[2, 2]).attr_ints("pads", &[2, 2, 2, 2]), &img),
        one("Conv_same_upper", 17, n("Conv", &["x", "w", "b"]).attr_string("auto_pad", "SAME_UPPER"), &img),
        one("Conv1d", 17, n("Conv", &["x", "w1d"]).attr_ints("pads", &[1, 1]), &[1, 4, 10]),
        one("ConvTranspose", 17, n("ConvTranspose", &["x", "wt", "bt"]).attr_ints("strides", &[2, 2]).attr_ints("pads", &[1, 1, 1, 1]).attr_ints("output_padding", &[1, 1]), &img),
        one("BatchNormalization", 17, n("BatchNormalization", &["x", "g4", "b4", "m4", "v4"]), &img),
        one("InstanceNormalization", 17, n("InstanceNormalization", &["x", "g4", "b4"]), &img),
        one("LayerNormalization", 17, n("LayerNormalization", &["x", "g6", "b6"]), &img),
        one("PRelu", 17, n("PRelu", &["x", "slope"]), &img),
        one("Pow", 17, n("Pow", &["x", "two"]), &img),
        one("Einsum", 17, n("Einsum", &["x", "ein"]).attr_string("equation", "nchw,wk->nchk"), &img),
        one("Cast", 17, n("Cast", &["x"]).attr_int("to", 10), &img),
        // Corners where importers usually slip.
        one("Gemm_transA_rowbias", 17, n("Gemm", &["x", "gemm_b", "gemm_c"]).attr_int("transA", 1), &[16, 3]),
        one("MatMul_vector", 17, n("MatMul", &["x", "mm"]), &[16]),
        one("Softmax_default_axis", 17, n("Softmax", &["x"]), &img),
        one("Squeeze_all", 17, n("Squeeze", &["x"]), &[1, 6, 1, 4]),
        one("Concat_negative_axis", 17, n("Concat", &["x", "x"]).attr_int("axis", -2), &img),
        one("Gather_scalar_index", 17, n("Gather", &["x", "idx0"]).attr_int("axis", 2), &img),
        one("Slice_negative_axis_step", 17, n("Slice", &["x", "nst", "nen", "nax", "nstp"]), &img),
        one("ReduceSum_noop_empty", 18, n("ReduceSum", &["x"]).attr_int("noop_with_empty_axes", 1), &img),
        one("ReduceSum_all", 18, n("ReduceSum", &["x"]).attr_int("keepdims", 0), &img),
        one("Resize_nearest_sizes", 19, n("Resize", &["x", "", "", "nsizes"]).attr_string("mode", "nearest").attr_string("coordinate_transformation_mode", "asymmetric").attr_string("nearest_mode", "floor"), &img),
        one("Einsum_attention", 17, n("Einsum", &["x", "x"]).attr_string("equation", "bhqd,bhkd->bhqk"), &img),
        one("Conv_asymmetric_pads_nobias", 17, n("Conv", &["x", "w"]).attr_ints("pads", &[0, 1, 1, 0]), &img),
        one("AveragePool_ceil_pads", 19, n("AveragePool", &["x"]).attr_ints("kernel_shape", &[3, 3]).attr_ints("strides", &[2, 2]).attr_ints("pads", &[1, 1, 1, 1]).attr_int("ceil_mode", 1), &[1, 2, 7, 7]),
        one("MaxPool_1d", 17, n("MaxPool", &["x"]).attr_ints("kernel_shape", &[3]).attr_ints("strides", &[2]), &[1, 4, 11]),
        one("LayerNormalization_two_axes", 17, n("LayerNormalization", &["x", "g36", "b36"]).attr_int("axis", -2).attr_float("epsilon", 1e-3), &img),
        one("Where_broadcast_cond", 17, n("Where", &["mask", "x", "pval"]), &img),
        one("Pad_opset13", 13, n("Pad", &["x", "pads", "pval"]), &img),
    ];
    for op in ["Add", "Sub", "Mul", "Div"] {
        let name: &'static str = Box::leak(format!("{op}_broadcast").into_boxed_str());
        let mut case = one(name, 17, n(op, &["x", "per_c"]), &img);
        if op == "Div" {
            // Keep the divisor away from zero.
            case.model = ModelBuilder::new(17).input("x", DType::F32, &img).node(n("Div", &["x", "g4r"])).output("y");
        }
        c.push(case);
    }
    c.extend([
        Case {
            name: "Min_Max_3way",
            model: ModelBuilder::new(17)
                .input("x", DType::F32, &img)
                .input("z", DType::F32, &img)
                .node(NodeBuilder::new("Min", &["x", "z", "per_c"], &["m"]))
                .node(NodeBuilder::new("Max", &["m", "x"], &["y"]))
                .output("y"),
            inputs: vec![("x", img.to_vec(), false), ("z", img.to_vec(), false)],
        },
        Case {
            name: "Compare_Where",
            model: ModelBuilder::new(17)
                .input("x", DType::F32, &img)
                .input("z", DType::F32, &img)
                .node(NodeBuilder::new("Less", &["x", "z"], &["lt"]))
                .node(NodeBuilder::new("Greater", &["x", "per_c"], &["gt"]))
                .node(NodeBuilder::new("Equal", &["lt", "gt"], &["eq"]))
                .node(NodeBuilder::new("Where", &["eq", "x", "z"], &["y"]))
                .output("y"),
            inputs: vec![("x", img.to_vec(), false), ("z", img.to_vec(), false)],
        },
        Case {
            name: "MatMul_Gemm",
            model: ModelBuilder::new(17)
                .input("x", DType::F32, &[3, 16])
                .node(NodeBuilder::new("MatMul", &["x", "mm"], &["h"]))
                .node(NodeBuilder::new("Gemm", &["h", "gw", "gb"], &["y"]).attr_int("transB", 1).attr_float("alpha", 0.5).attr_float("beta", 2.0))
                .output("y"),
            inputs: vec![("x", vec![3, 16], false)],
        },
        Case {
            name: "Concat_Split",
            model: ModelBuilder::new(18)
                .input("x", DType::F32, &img)
                .input("z", DType::F32, &img)
                .node(NodeBuilder::new("Concat", &["x", "z"], &["c"]).attr_int("axis", 1))
                .node(NodeBuilder::new("Split", &["c", "split"], &["s0", "s1"]).attr_int("axis", 1))
                .node(NodeBuilder::new("Mul", &["s0", "s1"], &["m"]))
                .node(NodeBuilder::new("Split", &["m"], &["a", "b2"]).attr_int("axis", 3).attr_int("num_outputs", 2))
                .node(NodeBuilder::new("Sub", &["a", "b2"], &["y"]))
                .output("y"),
            inputs: vec![("x", img.to_vec(), false), ("z", img.to_vec(), false)],
        },
        Case {
            name: "ShapeSubgraph_Range_ConstantOfShape",
            model: ModelBuilder::new(17)
                .input("x", DType::F32, &img)
                .node(NodeBuilder::new("Shape", &["x"], &["s"]))
                .node(NodeBuilder::new("Constant", &[], &["k"]).attr_tensor("value", &Array::scalar_i64(3)))
                .node(NodeBuilder::new("Gather", &["s", "k"], &["width"]))
                .node(NodeBuilder::new("Constant", &[], &["z0"]).attr_tensor("value", &Array::scalar_i64(0)))
                .node(NodeBuilder::new("Constant", &[], &["one"]).attr_tensor("value", &Array::scalar_i64(1)))
                .node(NodeBuilder::new("Range", &["z0", "width", "one"], &["r"]))
                .node(NodeBuilder::new("Cast", &["r"], &["rf"]).attr_int("to", 1))
                .node(NodeBuilder::new("Add", &["x", "rf"], &["xr"]))
                .node(NodeBuilder::new("ConstantOfShape", &["s"], &["ones"]).attr_tensor("value", &f32s(&[0.5])))
                .node(NodeBuilder::new("Mul", &["xr", "ones"], &["y"]))
                .output("y"),
            inputs: vec![("x", img.to_vec(), false)],
        },
    ]);
    c.extend(families());
    c.into_iter()
        .map(|mut case| {
            // Shared initializers; unused ones are harmless to both runtimes.
            let inits: Vec<(&str, Array)> = vec![
                ("axes", i64s(&[2, 3])),
                ("axes0", i64s(&[0])),
                ("lo", f32s(&[-0.5]).reshaped(vec![]).expect("scalar")),
                ("hi", f32s(&[1.0]).reshaped(vec![]).expect("scalar")),
                ("shape", i64s(&[0, 4, -1])),
                ("eshape", i64s(&[2, 1, 3, 1])),
                ("reps", i64s(&[1, 2, 1, 2])),
                ("st", i64s(&[1, -5])),
                ("en", i64s(&[i64::MAX, 6])),
                ("ax", i64s(&[1, 3])),
                ("stp", i64s(&[2, 2])),
                ("rst", i64s(&[-1])),
                ("ren", i64s(&[i64::MIN])),
                ("rax", i64s(&[2])),
                ("rstp", i64s(&[-1])),
                ("idx", Array::new(vec![2, 2], ArrayData::I64(vec![3, 0, -1, 1])).expect("idx")),
                ("pads", i64s(&[0, 0, 1, 2, 0, 0, 2, 1])),
                ("pval", f32s(&[0.75]).reshaped(vec![]).expect("scalar")),
                ("scales", f32s(&[1.0, 1.0, 2.0, 2.0])),
                ("sizes", i64s(&[1, 4, 9, 15])),
                ("w", weights(1, &[8, 4, 3, 3])),
                ("b", weights(2, &[8])),
                ("wdw", weights(3, &[4, 1, 3, 3])),
                ("w1d", weights(4, &[6, 4, 3])),
                ("wt", weights(5, &[4, 3, 3, 3])),
                ("bt", weights(6, &[3])),
                ("g4", weights(7, &[4])),
                ("g4r", Array::new(vec![1, 4, 1, 1], ArrayData::F32(vec![0.5, -1.5, 2.0, 1.25])).expect("g4r")),
                ("b4", weights(8, &[4])),
                ("m4", weights(9, &[4])),
                ("v4", Array::new(vec![4], ArrayData::F32(vec![0.5, 1.0, 1.5, 2.0])).expect("v4")),
                ("g6", weights(10, &[6])),
                ("b6", weights(11, &[6])),
                ("slope", weights(12, &[4, 1, 1])),
                ("two", f32s(&[2.0]).reshaped(vec![]).expect("scalar")),
                ("ein", weights(13, &[6, 5])),
                ("per_c", weights(14, &[1, 4, 1, 1])),
                ("mm", weights(15, &[16, 12])),
                ("gw", weights(16, &[5, 12])),
                ("gb", weights(17, &[5])),
                ("split", i64s(&[4, 4])),
                ("gemm_b", weights(18, &[16, 7])),
                ("gemm_c", weights(19, &[1, 7])),
                ("idx0", Array::scalar_i64(-2)),
                ("nst", i64s(&[-2, 4])),
                ("nen", i64s(&[0, -10])),
                ("nax", i64s(&[-1, -2])),
                ("nstp", i64s(&[-1, -3])),
                ("nsizes", i64s(&[1, 4, 12, 9])),
                ("g36", weights(20, &[6, 6])),
                ("b36", weights(21, &[6, 6])),
                ("mask", Array::new(vec![1, 1, 1, 6], ArrayData::Bool(vec![true, false, true, true, false, true])).expect("mask")),
            ];
            for (name, a) in inits {
                case.model = case.model.initializer(name, &a);
            }
            case
        })
        .collect()
}

/// Small models of the families issue 5 names, in exporter style: a
/// depthwise-separable CNN block with hard-swish and squeeze-excite, a
/// transformer encoder block (erf GELU, as PyTorch exports it), and an
/// upsampling decoder.
fn families() -> Vec<Case> {
    let nb = |op: &str, ins: &[&str], out: &str| NodeBuilder::new(op, ins, &[out]);
    let mobile = ModelBuilder::new(17)
        .input("x", DType::F32, &[1, 8, 16, 16])
        .initializer("mb_w1", &weights(101, &[16, 8, 1, 1]))
        .initializer("mb_b1", &weights(102, &[16]))
        .initializer("mb_dw", &weights(103, &[16, 1, 3, 3]))
        .initializer("mb_se1", &weights(104, &[4, 16, 1, 1]))
        .initializer("mb_se1b", &weights(105, &[4]))
        .initializer("mb_se2", &weights(106, &[16, 4, 1, 1]))
        .initializer("mb_se2b", &weights(107, &[16]))
        .initializer("mb_proj", &weights(108, &[8, 16, 1, 1]))
        .initializer("mb_g", &weights(109, &[8]))
        .initializer("mb_beta", &weights(110, &[8]))
        .initializer("mb_mean", &weights(111, &[8]))
        .initializer("mb_var", &Array::new(vec![8], ArrayData::F32(vec![0.5, 0.8, 1.0, 1.2, 0.9, 1.5, 0.7, 1.1])).expect("var"))
        .initializer("mb_fc", &weights(112, &[10, 8]))
        .initializer("mb_fcb", &weights(113, &[10]))
        .node(nb("Conv", &["x", "mb_w1", "mb_b1"], "e1"))
        .node(nb("HardSwish", &["e1"], "e2"))
        .node(nb("Conv", &["e2", "mb_dw"], "d1").attr_int("group", 16).attr_ints("pads", &[1, 1, 1, 1]))
        .node(nb("HardSwish", &["d1"], "d2"))
        .node(nb("GlobalAveragePool", &["d2"], "se0"))
        .node(nb("Conv", &["se0", "mb_se1", "mb_se1b"], "se1"))
        .node(nb("Relu", &["se1"], "se2"))
        .node(nb("Conv", &["se2", "mb_se2", "mb_se2b"], "se3"))
        .node(nb("HardSigmoid", &["se3"], "se4").attr_float("alpha", 1.0 / 6.0))
        .node(nb("Mul", &["d2", "se4"], "se5"))
        .node(nb("Conv", &["se5", "mb_proj"], "p1"))
        .node(nb("BatchNormalization", &["p1", "mb_g", "mb_beta", "mb_mean", "mb_var"], "p2"))
        .node(nb("Add", &["p2", "x"], "res"))
        .node(nb("GlobalAveragePool", &["res"], "pool"))
        .node(nb("Flatten", &["pool"], "flat"))
        .node(nb("Gemm", &["flat", "mb_fc", "mb_fcb"], "logits").attr_int("transB", 1))
        .node(nb("Softmax", &["logits"], "y"))
        .output("y");

    let (t, d, h) = (10usize, 32usize, 4usize);
    let dh = (d / h) as i64;
    let mut enc = ModelBuilder::new(17)
        .input("x", DType::F32, &[1, t, d])
        .initializer("tf_heads", &i64s(&[1, t as i64, h as i64, dh]))
        .initializer("tf_merge", &i64s(&[1, t as i64, d as i64]))
        .initializer("tf_scale", &f32s(&[(dh as f32).sqrt()]).reshaped(vec![]).expect("scalar"))
        .initializer("tf_half", &f32s(&[0.5]).reshaped(vec![]).expect("scalar"))
        .initializer("tf_one", &f32s(&[1.0]).reshaped(vec![]).expect("scalar"))
        .initializer("tf_sqrt2", &f32s(&[std::f32::consts::SQRT_2]).reshaped(vec![]).expect("scalar"));
    for (k, (name, shape)) in [
        ("tf_ln1g", vec![d]), ("tf_ln1b", vec![d]), ("tf_wq", vec![d, d]), ("tf_bq", vec![d]), ("tf_wk", vec![d, d]),
        ("tf_bk", vec![d]), ("tf_wv", vec![d, d]), ("tf_bv", vec![d]), ("tf_wo", vec![d, d]), ("tf_bo", vec![d]),
        ("tf_ln2g", vec![d]), ("tf_ln2b", vec![d]), ("tf_w1", vec![d, 2 * d]), ("tf_b1", vec![2 * d]),
        ("tf_w2", vec![2 * d, d]), ("tf_b2", vec![d]),
    ]
    .into_iter()
    .enumerate()
    {
        enc = enc.initializer(name, &weights(200 + k as u64, &shape));
    }
    let mut enc = enc.node(nb("LayerNormalization", &["x", "tf_ln1g", "tf_ln1b"], "ln1"));
    for p in ["q", "k", "v"] {
        let (w, bias) = (format!("tf_w{p}"), format!("tf_b{p}"));
        let (mm, ad, rs, tr) = (format!("{p}_mm"), format!("{p}_ad"), format!("{p}_rs"), format!("{p}_h"));
        enc = enc
            .node(nb("MatMul", &["ln1", &w], &mm))
            .node(nb("Add", &[&mm, &bias], &ad))
            .node(nb("Reshape", &[&ad, "tf_heads"], &rs))
            .node(nb("Transpose", &[&rs], &tr).attr_ints("perm", &[0, 2, 1, 3]));
    }
    let enc = enc
        .node(nb("Transpose", &["k_h"], "k_t").attr_ints("perm", &[0, 1, 3, 2]))
        .node(nb("MatMul", &["q_h", "k_t"], "sc"))
        .node(nb("Div", &["sc", "tf_scale"], "sc2"))
        .node(nb("Softmax", &["sc2"], "att").attr_int("axis", -1))
        .node(nb("MatMul", &["att", "v_h"], "ctx"))
        .node(nb("Transpose", &["ctx"], "ctx_t").attr_ints("perm", &[0, 2, 1, 3]))
        .node(nb("Reshape", &["ctx_t", "tf_merge"], "ctx_m"))
        .node(nb("MatMul", &["ctx_m", "tf_wo"], "o1"))
        .node(nb("Add", &["o1", "tf_bo"], "o2"))
        .node(nb("Add", &["x", "o2"], "r1"))
        .node(nb("LayerNormalization", &["r1", "tf_ln2g", "tf_ln2b"], "ln2"))
        .node(nb("MatMul", &["ln2", "tf_w1"], "f1"))
        .node(nb("Add", &["f1", "tf_b1"], "f2"))
        .node(nb("Div", &["f2", "tf_sqrt2"], "gl1"))
        .node(nb("Erf", &["gl1"], "gl2"))
        .node(nb("Add", &["gl2", "tf_one"], "gl3"))
        .node(nb("Mul", &["f2", "gl3"], "gl4"))
        .node(nb("Mul", &["gl4", "tf_half"], "gl5"))
        .node(nb("MatMul", &["gl5", "tf_w2"], "f3"))
        .node(nb("Add", &["f3", "tf_b2"], "f4"))
        .node(nb("Add", &["r1", "f4"], "y"))
        .output("y");

    let decoder = ModelBuilder::new(19)
        .input("x", DType::F32, &[1, 8, 6, 6])
        .initializer("up_c1", &weights(301, &[8, 8, 3, 3]))
        .initializer("up_c1b", &weights(302, &[8]))
        .initializer("up_scales", &f32s(&[1.0, 1.0, 2.0, 2.0]))
        .initializer("up_c2", &weights(303, &[4, 16, 3, 3]))
        .initializer("up_t", &weights(304, &[4, 2, 2, 2]))
        .initializer("up_tb", &weights(305, &[2]))
        .node(nb("Conv", &["x", "up_c1", "up_c1b"], "u1").attr_ints("pads", &[1, 1, 1, 1]))
        .node(nb("Relu", &["u1"], "u2"))
        .node(nb("Resize", &["u2", "", "up_scales"], "u3")
            .attr_string("mode", "nearest")
            .attr_string("coordinate_transformation_mode", "asymmetric")
            .attr_string("nearest_mode", "floor"))
        .node(nb("Resize", &["x", "", "up_scales"], "skip").attr_string("mode", "linear"))
        .node(nb("Concat", &["u3", "skip"], "cat").attr_int("axis", 1))
        .node(nb("Conv", &["cat", "up_c2"], "u4").attr_ints("pads", &[1, 1, 1, 1]))
        .node(nb("LeakyRelu", &["u4"], "u5").attr_float("alpha", 0.2))
        .node(nb("ConvTranspose", &["u5", "up_t", "up_tb"], "u6").attr_ints("strides", &[2, 2]))
        .node(nb("Sigmoid", &["u6"], "y"))
        .output("y");

    vec![
        Case { name: "family_mobilenet_se_block", model: mobile, inputs: vec![("x", vec![1, 8, 16, 16], false)] },
        Case { name: "family_transformer_encoder", model: enc, inputs: vec![("x", vec![1, t, d], false)] },
        Case { name: "family_upsampling_decoder", model: decoder, inputs: vec![("x", vec![1, 8, 6, 6], false)] },
    ]
}

/// Runs ONNX Runtime on every case directory under `root`; false (with a
/// note) if Python's stack is missing.
fn run_ort(root: &Path) -> bool {
    let script = r#"
import sys, os, json, numpy as np, onnxruntime as ort
root = sys.argv[1]
for d in sorted(os.listdir(root)):
    p = os.path.join(root, d)
    meta = json.load(open(os.path.join(p, "meta.json")))
    o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.log_severity_level = 3
    try:
        s = ort.InferenceSession(os.path.join(p, "model.onnx"), sess_options=o, providers=["CPUExecutionProvider"])
        feeds = {i["name"]: np.fromfile(os.path.join(p, i["name"] + ".bin"), dtype=np.float32).reshape(i["shape"])
                 for i in meta["inputs"]}
        outs = s.run(None, feeds)
    except Exception as e:  # a broken test model: report it against its case
        open(os.path.join(p, "ort_error.txt"), "w").write(str(e))
        continue
    for k, v in enumerate(outs):
        np.asarray(v, dtype=np.float32).tofile(os.path.join(p, "out%d.bin" % k))
    json.dump({"shapes": [list(np.shape(v)) for v in outs]}, open(os.path.join(p, "ort.json"), "w"))
"#;
    match Command::new("python3").arg("-c").arg(script).arg(root).output() {
        Ok(o) if o.status.success() => true,
        Ok(o) => {
            let err = String::from_utf8_lossy(&o.stderr);
            if err.contains("No module named") {
                eprintln!("skipping: {err}");
                return false;
            }
            panic!("ONNX Runtime failed on a test model:\n{err}");
        }
        Err(e) => {
            eprintln!("skipping: cannot run python3: {e}");
            false
        }
    }
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect()
}

fn write_f32(path: &Path, v: &[f32]) {
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

#[test]
fn every_supported_op_matches_onnxruntime() {
    let root: PathBuf = std::env::temp_dir().join(format!("aneforge-onnx-ops-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cases = cases();

    // Every op of the table appears in some case.
    let mut used = BTreeSet::new();
    for case in &cases {
        for node in case.model.clone().build().graph.map(|g| g.node).unwrap_or_default() {
            used.insert(node.op_type);
        }
    }
    let missing: Vec<&str> = SUPPORTED_OPS.iter().map(|o| o.op_type).filter(|o| !used.contains(*o)).collect();
    assert!(missing.is_empty(), "ops without a conformance case: {missing:?}");

    let mut feeds = Vec::new();
    for (k, case) in cases.iter().enumerate() {
        let dir = root.join(format!("{k:03}_{}", case.name));
        std::fs::create_dir_all(&dir).expect("case dir");
        std::fs::write(dir.join("model.onnx"), case.model.clone().build().encode_to_vec()).expect("model");
        let mut meta = Vec::new();
        let mut feed = Vec::new();
        for (i, (name, shape, pos)) in case.inputs.iter().enumerate() {
            let v = values(k as u64 * 31 + i as u64, shape.iter().product(), *pos);
            write_f32(&dir.join(format!("{name}.bin")), &v);
            meta.push(format!("{{\"name\": \"{name}\", \"shape\": {shape:?}}}"));
            feed.push((name.to_string(), v));
        }
        std::fs::write(dir.join("meta.json"), format!("{{\"inputs\": [{}]}}", meta.join(", "))).expect("meta");
        feeds.push((dir, feed));
    }
    if !run_ort(&root) {
        return;
    }

    let mut failures = Vec::new();
    for (case, (dir, feed)) in cases.iter().zip(&feeds) {
        let result = (|| -> Result<(), String> {
            let model = OnnxModel::from_proto(case.model.clone().build(), case.name).map_err(|e| e.to_string())?;
            let imported = import_model(&model, &ImportOptions::default()).map_err(|e| e.to_string())?;
            let outs: Vec<aneforge::Tensor> = imported.outputs.iter().map(|(_, t)| t.clone()).collect();
            let compiled = aneforge::compile(&outs, aneforge::CompileOptions::default()).map_err(|e| e.to_string())?;
            let program = &compiled.program;
            let mut st = program.new_state();
            for (k, name) in compiled.input_names.iter().enumerate() {
                let (_, v) = feed.iter().find(|(n, _)| n == name).ok_or(format!("no feed for input {name}"))?;
                program.input_mut(&mut st, k).copy_from_slice(v);
            }
            program.run(&mut st);
            let got = program.output(&st, 0);
            if let Ok(e) = std::fs::read_to_string(dir.join("ort_error.txt")) {
                return Err(format!("ONNX Runtime rejected the test model: {e}"));
            }
            let want = read_f32(&dir.join("out0.bin"));
            let ort_meta = std::fs::read_to_string(dir.join("ort.json")).map_err(|e| e.to_string())?;
            let shape = format!("{:?}", imported.outputs[0].1.shape()).replace(' ', "");
            if !ort_meta.replace(' ', "").contains(&format!("[{}]", &shape[1..shape.len() - 1])) {
                return Err(format!("shape {shape} but ONNX Runtime says {ort_meta}"));
            }
            let scale = want.iter().fold(1.0f32, |m, &v| m.max(v.abs()));
            let tol = 1e-2 * scale;
            let err = got.iter().zip(&want).fold(0.0f32, |m, (&a, &b)| m.max((a - b).abs()));
            // `max` skips NaN, so look for it explicitly.
            let nan = got.iter().zip(&want).any(|(a, b)| a.is_nan() != b.is_nan());
            if got.len() != want.len() || nan || err > tol {
                return Err(format!("max error {err} (scale {scale}, {} vs {} values)", got.len(), want.len()));
            }
            Ok(())
        })();
        if let Err(e) = result {
            failures.push(format!("{}: {e}", case.name));
        }
    }
    let _ = std::fs::remove_dir_all(&root);
    assert!(failures.is_empty(), "{} of {} cases differ from ONNX Runtime:\n{}", failures.len(), cases.len(), failures.join("\n"));
}
