//! Hostile inputs never panic: random attribute and shape-input values on
//! every shape-sensitive op (negative, zero, huge, i64::MIN/MAX), and random
//! byte corruption of a serialised model. Import may refuse; it must not crash.

use aneforge_onnx::builder::{ModelBuilder, NodeBuilder};
use aneforge_onnx::*;

/// A small value, or now and then an extreme one.
fn r(s: &mut u64) -> i64 {
    *s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    let pick = (*s >> 60) as i64;
    let v = ((*s >> 20) % 9) as i64 - 3;
    match pick { 0 => i64::MAX, 1 => i64::MIN, 2 => 1 << 40, _ => v }
}
fn rv(s: &mut u64, n: usize) -> Vec<i64> {
    (0..n).map(|_| r(s)).collect()
}

#[test]
fn hostile_attribute_and_shape_values_never_panic() {
    let mut s: u64 = std::env::var("ANEFORGE_FUZZ_SEED").ok().and_then(|v| v.parse().ok()).unwrap_or(99);
    let mut panics = 0;
    let mut oks = 0;
    for it in 0..4000usize {
        let nl = 1 + (r(&mut s).unsigned_abs() % 5) as usize;
        let ops: Vec<NodeBuilder> = vec![
            NodeBuilder::new("Conv", &["x", "w"], &["y"]).attr_ints("pads", &rv(&mut s, 4)).attr_ints("strides", &rv(&mut s, 2)).attr_ints("dilations", &rv(&mut s, 2)).attr_int("group", r(&mut s)),
            NodeBuilder::new("MaxPool", &["x"], &["y"]).attr_ints("kernel_shape", &rv(&mut s, 2)).attr_ints("pads", &rv(&mut s, 4)).attr_ints("strides", &rv(&mut s, 2)).attr_int("ceil_mode", r(&mut s)),
            NodeBuilder::new("AveragePool", &["x"], &["y"]).attr_ints("kernel_shape", &rv(&mut s, 2)),
            NodeBuilder::new("Transpose", &["x"], &["y"]).attr_ints("perm", &rv(&mut s, 4)),
            NodeBuilder::new("Reshape", &["x", "v"], &["y"]),
            NodeBuilder::new("Slice", &["x", "v", "v2", "v3"], &["y"]),
            NodeBuilder::new("Squeeze", &["x", "v"], &["y"]),
            NodeBuilder::new("Unsqueeze", &["x", "v"], &["y"]),
            NodeBuilder::new("Expand", &["x", "v"], &["y"]),
            NodeBuilder::new("Tile", &["x", "v"], &["y"]),
            NodeBuilder::new("Pad", &["x", "v8"], &["y"]),
            NodeBuilder::new("Gather", &["x", "v"], &["y"]).attr_int("axis", r(&mut s)),
            NodeBuilder::new("Split", &["x", "v"], &["y", "z"]).attr_int("axis", r(&mut s)),
            NodeBuilder::new("ReduceMean", &["x", "v"], &["y"]),
            NodeBuilder::new("Softmax", &["x"], &["y"]).attr_int("axis", r(&mut s)),
            NodeBuilder::new("Concat", &["x", "x"], &["y"]).attr_int("axis", r(&mut s)),
            NodeBuilder::new("DepthToSpace", &["x"], &["y"]).attr_int("blocksize", r(&mut s)),
            NodeBuilder::new("SpaceToDepth", &["x"], &["y"]).attr_int("blocksize", r(&mut s)),
            NodeBuilder::new("Flatten", &["x"], &["y"]).attr_int("axis", r(&mut s)),
            NodeBuilder::new("LayerNormalization", &["x", "g"], &["y"]).attr_int("axis", r(&mut s)),
            NodeBuilder::new("ConstantOfShape", &["v"], &["y"]),
            NodeBuilder::new("Range", &["sc", "sc2", "sc3"], &["y"]),
            NodeBuilder::new("Resize", &["x", "", "", "v"], &["y"]),
            NodeBuilder::new("ConvTranspose", &["x", "w"], &["y"]).attr_ints("pads", &rv(&mut s, 4)).attr_ints("strides", &rv(&mut s, 2)).attr_ints("output_padding", &rv(&mut s, 2)),
            NodeBuilder::new("Einsum", &["x", "x"], &["y"]).attr_string("equation", ["nchw,nchw->nc", "ab,bc", "...i,...i->...", "nc..,->", "ii->i"][it % 5]),
        ];
        let k = (r(&mut s).unsigned_abs() as usize + it) % ops.len();
        let op = ops[k].clone();
        let m = ModelBuilder::new(17)
            .input("x", DType::F32, &[1, 4, 6, 6])
            .initializer("w", &Array::new(vec![8, 4, 3, 3], ArrayData::F32(vec![0.1; 288])).expect("w"))
            .initializer("g", &Array::from_f32s(vec![1.0; 6]))
            .initializer("v", &Array::from_i64s(rv(&mut s, nl)))
            .initializer("v2", &Array::from_i64s(rv(&mut s, nl)))
            .initializer("v3", &Array::from_i64s(rv(&mut s, nl)))
            .initializer("v8", &Array::from_i64s(rv(&mut s, 8)))
            .initializer("sc", &Array::scalar_i64(r(&mut s)))
            .initializer("sc2", &Array::scalar_i64(r(&mut s)))
            .initializer("sc3", &Array::scalar_i64(r(&mut s)))
            .node(op.clone())
            .output("y")
            .build();
        let res = std::panic::catch_unwind(|| match OnnxModel::from_proto(m.clone(), "f.onnx") {
            Ok(m) => import_model(&m, &ImportOptions::default()).is_ok(),
            Err(_) => false,
        });
        match res {
            Err(_) => {
                panics += 1;
                eprintln!("panic on case {it}: {:?}", op.build());
            }
            Ok(true) => oks += 1,
            _ => {}
        }
    }
    assert_eq!(panics, 0, "import panicked instead of returning an error");
    assert!(oks > 100, "the generator should also produce valid models ({oks} imported)");
}

#[test]
fn corrupted_bytes_never_panic() {
    let base = ModelBuilder::new(17)
        .input("x", DType::F32, &[1, 4, 6, 6])
        .initializer("w", &Array::new(vec![8, 4, 3, 3], ArrayData::F32(vec![0.1; 288])).expect("w"))
        .initializer("shape", &Array::from_i64s(vec![1, -1]))
        .node(NodeBuilder::new("Conv", &["x", "w"], &["c"]).attr_ints("pads", &[1, 1, 1, 1]))
        .node(NodeBuilder::new("MaxPool", &["c"], &["p"]).attr_ints("kernel_shape", &[2, 2]))
        .node(NodeBuilder::new("Reshape", &["p", "shape"], &["y"]))
        .output("y")
        .to_bytes();
    let mut s: u64 = 12345;
    for it in 0..4000usize {
        let mut b = base.clone();
        for _ in 0..1 + it % 4 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let pos = (s >> 33) as usize % b.len();
            b[pos] = (s >> 13) as u8;
        }
        let r = std::panic::catch_unwind(|| {
            if let Ok(m) = OnnxModel::from_bytes(b.clone(), "f.onnx") {
                let _ = coverage(&m);
                let _ = import_model(&m, &ImportOptions::default());
            }
        });
        assert!(r.is_ok(), "panic on corruption {it}");
    }
}
