//! Regenerates the committed prost bindings in `crates/aneforge-mil/src/proto/`.
//!
//! Why a separate program: the normal build must not need a protobuf
//! compiler, so the bindings are generated once with protox (a pure-Rust
//! protobuf compiler) and prost-build, then committed. Run it from anywhere:
//!
//!     cargo run --manifest-path crates/aneforge-mil/gen/Cargo.toml
//!
//! `Model.proto` imports every model kind Core ML has ever shipped; ANEForge
//! writes ML Programs only, so the descriptor set is pruned to the files an
//! ML Program package needs before code generation. Pruning drops fields, it
//! never renumbers them, so the wire format of what remains is unchanged.

use std::collections::BTreeSet;
use std::path::PathBuf;

use prost_types::FileDescriptorSet;

/// Files whose messages an `.mlpackage` with an ML Program uses.
const KEEP_FILES: &[&str] = &["Model.proto", "FeatureTypes.proto", "MIL.proto"];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .ok_or("gen/ has no parent directory")?
        .to_path_buf();
    let proto_dir = crate_dir.join("proto");
    let out_dir = crate_dir.join("src").join("proto");

    let mut fds: FileDescriptorSet = protox::Compiler::new([&proto_dir])?
        .include_imports(true)
        .include_source_info(false)
        .open_file("Model.proto")?
        .file_descriptor_set();

    prune(&mut fds)?;

    std::fs::create_dir_all(&out_dir)?;
    prost_build::Config::new()
        .out_dir(&out_dir)
        .include_file("mod.rs")
        // BTreeMap, not HashMap: protobuf maps are encoded in iteration
        // order, and a package must be byte-for-byte reproducible (content
        // hashes key the ANE compile cache).
        .btree_map(["."])
        // The proto comments hold indented prose that rustdoc would run as
        // doctests; the vendored .proto files remain the documentation.
        .disable_comments(["."])
        .compile_fds(fds)?;
    println!("wrote {}", out_dir.display());
    Ok(())
}

/// Keeps only `KEEP_FILES`, and removes from their messages every field whose
/// type lives in a dropped file (in practice: the other model kinds in
/// `Model.Type`).
fn prune(fds: &mut FileDescriptorSet) -> Result<(), Box<dyn std::error::Error>> {
    fds.file.retain(|f| KEEP_FILES.contains(&f.name()));
    if fds.file.len() != KEEP_FILES.len() {
        return Err(format!("expected {KEEP_FILES:?} in the descriptor set").into());
    }

    // Fully qualified names of every type defined in the kept files.
    let mut known = BTreeSet::new();
    for f in &fds.file {
        let pkg = f.package();
        for m in &f.message_type {
            collect_message(&format!(".{pkg}"), m, &mut known);
        }
        for e in &f.enum_type {
            known.insert(format!(".{pkg}.{}", e.name()));
        }
    }

    for f in &mut fds.file {
        let deps = std::mem::take(&mut f.dependency);
        f.dependency = deps
            .into_iter()
            .filter(|d| KEEP_FILES.contains(&d.as_str()))
            .collect();
        f.public_dependency = (0..f.dependency.len() as i32).collect();
        f.weak_dependency.clear();
        for m in &mut f.message_type {
            prune_message(m, &known);
        }
    }
    Ok(())
}

fn collect_message(scope: &str, m: &prost_types::DescriptorProto, known: &mut BTreeSet<String>) {
    let name = format!("{scope}.{}", m.name());
    for n in &m.nested_type {
        collect_message(&name, n, known);
    }
    for e in &m.enum_type {
        known.insert(format!("{name}.{}", e.name()));
    }
    known.insert(name);
}

fn prune_message(m: &mut prost_types::DescriptorProto, known: &BTreeSet<String>) {
    m.field
        .retain(|fld| fld.type_name.as_deref().is_none_or(|t| known.contains(t)));
    for n in &mut m.nested_type {
        prune_message(n, known);
    }
}
