//! `aneforge`: the command-line face of ANEForge. Its own crate so that clap
//! stays out of the Python extension.
//!
//! Subcommands: `targets`, `info`, `validate`, `estimate`, `compile`, `run`.
//! Estimates are projections from a calibrated cost model, and say so.

mod npy;

use aneforge::graph::Graph;
use aneforge::Tensor;
use aneforge_onnx::{coverage_of_file, import_file, ImportOptions, Imported};
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// `println!` that hands a failed write back to the caller (`?`) instead of
/// panicking, so a reader that stops early (`aneforge targets | head -1`)
/// ends the command quietly in `main`.
macro_rules! outln {
    ($($arg:tt)*) => {
        writeln!(std::io::stdout().lock(), $($arg)*)?
    };
}

#[derive(Parser)]
#[command(name = "aneforge", version, about = "Compile tensor graphs for the Apple Neural Engine; run them anywhere on the sim")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// List the 28 compiler targets with their engine numbers.
    Targets,
    /// Every op in an ONNX model with counts and whether it is supported.
    Info { model: PathBuf },
    /// Check that a model compiles for a target; lists every violation at once.
    Validate {
        model: PathBuf,
        #[arg(long)]
        target: String,
    },
    /// Per-op latency projection and total for a target.
    Estimate {
        model: PathBuf,
        #[arg(long)]
        target: Option<String>,
        /// Show only the N slowest ops (0 = all).
        #[arg(long, default_value_t = 0)]
        top: usize,
    },
    /// Write model.mil, the weights and model.mlpackage into a directory.
    Compile {
        model: PathBuf,
        #[arg(long)]
        target: String,
        #[arg(short = 'o', long = "output")]
        out: PathBuf,
    },
    /// Run a model on the sim with random or .npy inputs; print outputs and latency.
    Run {
        model: PathBuf,
        /// One .npy per graph input, in the model's input order.
        #[arg(long = "input")]
        inputs: Vec<PathBuf>,
        /// Timed repetitions after one warm-up.
        #[arg(long, default_value_t = 10)]
        repeat: usize,
        /// Write each output as OUTDIR/<name>.npy.
        #[arg(long)]
        save: Option<PathBuf>,
        #[arg(long, default_value = "fp16")]
        precision: String,
    },
}

fn main() {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Targets => targets(),
        Cmd::Info { model } => info(&model),
        Cmd::Validate { model, target } => validate(&model, &target),
        Cmd::Estimate { model, target, top } => estimate(&model, target.as_deref(), top),
        Cmd::Compile { model, target, out } => compile(&model, &target, &out),
        Cmd::Run { model, inputs, repeat, save, precision } => run(&model, &inputs, repeat, save.as_deref(), &precision),
    };
    if let Err(e) = r {
        // The reader has gone: nothing left to say and no one to say it to
        // (what ripgrep does), not a failure of the command.
        if is_broken_pipe(&e) {
            std::process::exit(0);
        }
        eprintln!("aneforge: {e:#}");
        std::process::exit(1);
    }
}

fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| c.downcast_ref::<std::io::Error>().is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe))
}

fn targets() -> Result<()> {
    outln!(
        "{:<6} {:<7} {:<5} {:>5} {:>6} {:>8} {:>8} {:>8} {:>9}  chips",
        "name", "family", "mil", "cores", "GHz", "fp16 TF", "wt GB/s", "floor µs", "SRAM MB"
    );
    for t in aneforge_target::targets() {
        outln!(
            "{:<6} {:<7} {:<5} {:>5} {:>6.3} {:>8.2} {:>8.0} {:>8.0} {:>9.1}  {}",
            t.name.to_lowercase(),
            t.family,
            if t.mil_supported { "yes" } else { "no" },
            t.cores,
            t.fmax_ghz,
            t.fp16_tflops,
            t.weight_gbs,
            t.floor_us,
            t.sram_bytes as f64 / 1048576.0,
            t.chips.join(", ")
        );
    }
    Ok(())
}

fn info(model: &Path) -> Result<()> {
    let c = coverage_of_file(model)?;
    outln!("{}: {} nodes, opset {}, IR {}, from {}", c.path, c.node_count, c.opset, c.ir_version, c.producer);
    if !c.opset_supported {
        outln!("  opset {} is outside the importable range {}–{}", c.opset, aneforge_onnx::MIN_OPSET, aneforge_onnx::MAX_OPSET);
    }
    outln!("  {:<28} {:>6}  supported", "op", "count");
    for op in &c.ops {
        let s = if op.supported { "yes" } else { "NO" };
        let limit = op.limit.map(|l| format!("  ({l})")).unwrap_or_default();
        outln!("  {:<28} {:>6}  {s}{limit}", op.qualified_name(), op.count);
    }
    let missing = c.unsupported().count();
    if missing == 0 {
        outln!("every op is supported");
    } else {
        outln!("{missing} op type(s) unsupported");
    }
    Ok(())
}

fn load(model: &Path) -> Result<Imported> {
    Ok(import_file(model, &ImportOptions::default())?)
}

fn graph_of(imp: &Imported) -> Result<Graph> {
    let outs: Vec<Tensor> = imp.outputs.iter().map(|(_, t)| t.clone()).collect();
    Ok(Graph::from_outputs(&outs)?)
}

fn validate(model: &Path, target: &str) -> Result<()> {
    let t = aneforge::target::resolve(target)?;
    let g = graph_of(&load(model)?)?;
    let (_, report) = aneforge::target::check(g, &t)?;
    for w in &report.warnings {
        outln!("rewrite: {w}");
    }
    if report.ok() {
        outln!("{}: compiles for {} ({} rewrite(s))", model.display(), report.target, report.warnings.len());
        return Ok(());
    }
    for v in &report.violations {
        outln!("violation: {v}");
    }
    bail!("{} violation(s) for {}", report.violations.len(), report.target)
}

fn estimate(model: &Path, target: Option<&str>, top: usize) -> Result<()> {
    let t = aneforge::target::estimate_target(target)?;
    let g = aneforge::passes::optimize(graph_of(&load(model)?)?)?;
    let e = aneforge::target::estimate_graph(&g, &t);
    let mut ops: Vec<_> = e.per_op.iter().collect();
    if top > 0 {
        ops.sort_by(|a, b| b.time_us.total_cmp(&a.time_us));
        ops.truncate(top);
    }
    outln!("{:<24} {:>12} {:>12} {:>10} {:>10}", "op", "MFLOP", "KB", "bound", "µs");
    for o in ops {
        outln!("{:<24} {:>12.2} {:>12.1} {:>10} {:>10.2}", o.name, o.flops / 1e6, o.bytes / 1024.0, format!("{:?}", o.bound), o.time_us);
    }
    outln!("total {:.1} µs ({:.3} ms) on {} — {}", e.latency_us, e.latency_us / 1e3, e.target, e.label());
    Ok(())
}

fn compile(model: &Path, target: &str, out: &Path) -> Result<()> {
    let t = aneforge::target::resolve(target)?;
    let imp = load(model)?;
    let t0 = Instant::now();
    let outs: Vec<Tensor> = imp.outputs.iter().map(|(_, t)| t.clone()).collect();
    let opts = aneforge::CompileOptions { target: Some(t), ..Default::default() };
    let compiled = aneforge::compile_graph(&outs, opts)?;
    std::fs::create_dir_all(out).with_context(|| format!("{}: cannot create", out.display()))?;
    let program = aneforge::backend::mil::lower_compiled_graph(&compiled)?;
    let package = out.join("model.mlpackage");
    program.save(&package, true)?;
    outln!("compiled for {} in {:.1} ms", target.to_lowercase(), t0.elapsed().as_secs_f64() * 1e3);
    for p in ["model.mil", "model.weights", "model.mlpackage"] {
        if out.join(p).exists() {
            outln!("wrote {}", out.join(p).display());
        }
    }
    Ok(())
}

fn run(model: &Path, inputs: &[PathBuf], repeat: usize, save: Option<&Path>, precision: &str) -> Result<()> {
    let imp = load(model)?;
    let outs: Vec<Tensor> = imp.outputs.iter().map(|(_, t)| t.clone()).collect();
    let opts = aneforge::CompileOptions { precision: aneforge::Precision::parse(precision)?, ..Default::default() };
    let t0 = Instant::now();
    let c = aneforge::compile(&outs, opts)?;
    let compile_ms = t0.elapsed().as_secs_f64() * 1e3;
    let prog = &c.program;
    if !inputs.is_empty() && inputs.len() != prog.inputs.len() {
        bail!("the model has {} input(s) ({}); {} --input file(s) given", prog.inputs.len(), names(&prog.inputs), inputs.len());
    }
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut data = vec![];
    for (k, port) in prog.inputs.iter().enumerate() {
        let mut v = if let Some(p) = inputs.get(k) {
            let a = npy::read(p)?;
            if a.shape != port.fact.shape {
                bail!("{}: shape {:?} but input {:?} expects {:?}", p.display(), a.shape, port.name, port.fact.shape);
            }
            a.data
        } else {
            // Uniform [0, 1) from a fixed xorshift: repeatable runs.
            (0..port.fact.numel())
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed >> 40) as f32 / (1u64 << 24) as f32
                })
                .collect()
        };
        if prog.ctx.fp16 {
            aneforge::numerics::round_f16_slice(&mut v);
        }
        data.push(v);
    }
    let mut st = prog.new_state();
    // Input slots are reused for intermediates once read, so every run
    // writes its inputs again (as the Python Net does per call).
    let once = |st: &mut aneforge::backend::sim::SimState| {
        for (k, v) in data.iter().enumerate() {
            prog.input_mut(st, k).copy_from_slice(v);
        }
        prog.run(st);
    };
    once(&mut st);
    let mut times = vec![];
    for _ in 0..repeat.max(1) {
        let t = Instant::now();
        once(&mut st);
        times.push(t.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    for (k, port) in prog.outputs.iter().enumerate() {
        let v = prog.output(&st, k);
        let (mn, mx) = v.iter().fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| (a.min(x), b.max(x)));
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        let argmax = v.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|(i, _)| i).unwrap_or(0);
        outln!("output {:?} {:?}: min {mn:.4} max {mx:.4} mean {mean:.4} argmax {argmax}", port.name, port.fact.shape);
        if let Some(dir) = save {
            std::fs::create_dir_all(dir)?;
            let file = dir.join(format!("{}.npy", port.name.replace(['/', ':'], "_")));
            npy::write_f16(&file, &port.fact.shape, v)?;
            outln!("  saved {}", file.display());
        }
    }
    outln!(
        "sim latency: median {:.3} ms, min {:.3} ms over {} runs (compile {:.1} ms)",
        times[times.len() / 2],
        times[0],
        times.len(),
        compile_ms
    );
    Ok(())
}

fn names(ports: &[aneforge::backend::sim::Port]) -> String {
    ports.iter().map(|p| p.name.clone()).collect::<Vec<_>>().join(", ")
}
