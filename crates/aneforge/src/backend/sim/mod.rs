//! The sim backend: runs a [`Graph`] on the CPU with the engine's numerics.
//!
//! Compiling produces a [`SimProgram`]: steps over numbered buffer slots,
//! with slots reused once their value is dead (a liveness plan), and
//! per-step scratch sized up front. A [`SimState`] holds the slots; once it
//! exists, a call allocates nothing.
//!
//! Resident state (training): a program planned with
//! [`SimProgram::new_resident`] keeps every parameter in a slot of its own
//! that no other value reuses. The slot is filled from the parameter once,
//! when the state is created, and after each run the parameter's update
//! output (new weights, new optimizer moments) is copied into it. So
//! between steps parameters and moments stay in the program's buffers and
//! the host feeds only the batch; [`SimProgram::state`] reads them back on
//! demand.

mod pinning;
pub use pinning::{adopt_calling_thread, core_round_trip_ns};

use crate::aligned::Buf;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::fact::{human_bytes, Fact};
use crate::graph::Graph;
use crate::numerics::{copy_f32, f16_to_f32, f32_to_f16, round_f16_slice};
use half::f16;
use crate::ops::{EvalCtx, Op, Param, View};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Loc {
    Slot(usize),
    Const(usize),
}

#[derive(Clone, Debug)]
struct Step {
    op: Op,
    ins: Vec<Loc>,
    in_shapes: Vec<Vec<usize>>,
    out: usize,
    out_shape: Vec<usize>,
    round: bool,
}

#[derive(Clone, Debug)]
pub struct Port {
    pub name: String,
    pub fact: Fact,
    pub loc: Loc,
}

/// A parameter held in a program's buffers between runs.
#[derive(Clone, Debug)]
pub struct StateSlot {
    pub param: Param,
    pub slot: usize,
    /// The output whose value replaces the parameter after each run.
    pub update: Option<usize>,
}

#[derive(Clone, Debug)]
pub struct SimProgram {
    steps: Vec<Step>,
    pub state: Vec<StateSlot>,
    slot_sizes: Vec<usize>,
    scratch: usize,
    consts: Vec<ConstData>,
    pub inputs: Vec<Port>,
    pub outputs: Vec<Port>,
    pub ctx: EvalCtx,
    /// Every step is small enough to run on one thread: the run stays on
    /// the caller's thread (see [`SimProgram::run`]).
    inline: bool,
}

/// A program whose every step stays below both bounds (values in any
/// input or output, and flops) runs on the caller's thread: its kernels
/// would not split across threads anyway (their own thresholds are at or
/// above these), and handing the run to the pool costs two thread
/// wake-ups, 7 µs of a 10 µs call of a small net on the 2-CPU VM.
const INLINE_MAX_VALUES: usize = 1 << 14;
const INLINE_MAX_FLOPS: f64 = (1u64 << 19) as f64;

/// A constant's values: the graph's own, shared rather than copied, or
/// made while compiling (rounded values, parameters, prepared weight
/// transforms), which start on a cache line for the kernels' vector loads.
#[derive(Clone, Debug)]
enum ConstData {
    Shared(Arc<Vec<f32>>),
    Made(Arc<Buf>),
}

impl ConstData {
    fn made(v: &[f32]) -> ConstData {
        ConstData::Made(Arc::new(Buf::from_slice(v)))
    }
}

impl std::ops::Deref for ConstData {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        match self {
            ConstData::Shared(v) => v,
            ConstData::Made(b) => b,
        }
    }
}

/// The buffers of one program instance.
pub struct SimState {
    slots: Vec<Buf>,
    scratch: Buf,
    /// Room for the widest step's input views. Views borrow the slots, so
    /// they cannot outlive a step; between steps this holds no view, only
    /// the capacity (see [`with_views`]).
    views: Vec<View<'static>>,
}

/// Host memory the sim may plan for one program (bytes).
fn memory_limit() -> u128 {
    std::env::var("ANEFORGE_SIM_MAX_BYTES").ok().and_then(|v| v.parse().ok()).unwrap_or(16u128 << 30)
}

impl SimProgram {
    /// Plans buffers for `g`. `names` gives each input and output its port name.
    pub fn new(g: &Graph, input_names: &[String], output_names: &[String], ctx: EvalCtx) -> Result<SimProgram> {
        Self::plan(g, input_names, output_names, ctx, None)
    }

    /// Plans `g` with its parameters resident: each gets a private slot,
    /// and `updates` (parameter, output index) say which output overwrites
    /// it after every run. Parameters without an update stay constant but
    /// resident (their values can still be read and written).
    pub fn new_resident(
        g: &Graph,
        input_names: &[String],
        output_names: &[String],
        ctx: EvalCtx,
        updates: &[(Param, usize)],
    ) -> Result<SimProgram> {
        for (p, o) in updates {
            if *o >= g.outputs.len() {
                return Err(Error::Compile(format!("internal: update output {o} does not exist")));
            }
            let out = &g.nodes[g.outputs[*o]].fact;
            if out.shape != p.cell.fact.shape {
                return Err(Error::shape(
                    "train",
                    format!("the update of parameter {:?} has shape {:?} but the parameter is {:?}", p.cell.name, out.shape, p.cell.fact.shape),
                ));
            }
        }
        Self::plan(g, input_names, output_names, ctx, Some(updates))
    }

    fn plan(
        g: &Graph,
        input_names: &[String],
        output_names: &[String],
        ctx: EvalCtx,
        resident: Option<&[(Param, usize)]>,
    ) -> Result<SimProgram> {
        let n = g.nodes.len();
        // A reshape is no step: its value is its input's buffer under
        // another shape (a copy of every row-major reshape cost ViT 2% of
        // its time). `root[i]` is the value whose buffer node i lives in.
        let root: Vec<usize> = {
            let mut root: Vec<usize> = (0..n).collect();
            for (i, node) in g.nodes.iter().enumerate() {
                if matches!(node.op, Op::Reshape(_)) {
                    root[i] = root[node.inputs[0]];
                }
            }
            root
        };
        // Last step index at which each buffer is read (through any alias);
        // program outputs never die.
        let mut last_use = vec![0usize; n];
        for (i, node) in g.nodes.iter().enumerate() {
            for &j in &node.inputs {
                last_use[root[j]] = last_use[root[j]].max(i);
            }
        }
        for &o in &g.outputs {
            last_use[root[o]] = usize::MAX;
        }
        if resident.is_some() {
            for (i, node) in g.nodes.iter().enumerate() {
                if matches!(node.op, Op::Param(_)) {
                    last_use[i] = usize::MAX;
                }
            }
        }
        let mut state: Vec<StateSlot> = vec![];
        let mut loc: Vec<Option<Loc>> = vec![None; n];
        let mut consts: Vec<ConstData> = vec![];
        let mut slot_sizes: Vec<usize> = vec![];
        let mut free: Vec<usize> = vec![];
        let mut steps = vec![];
        let mut inline = true;
        let mut scratch = 0usize;
        let mut inputs = vec![];
        let input_ids = g.inputs();
        let alloc = |need: usize, slot_sizes: &mut Vec<usize>, free: &mut Vec<usize>| -> usize {
            // Best fit among free slots, else grow the largest free one, else a new slot.
            let best = free
                .iter()
                .enumerate()
                .filter(|(_, &s)| slot_sizes[s] >= need)
                .min_by_key(|(_, &s)| slot_sizes[s])
                .map(|(k, _)| k)
                .or_else(|| free.iter().enumerate().max_by_key(|(_, &s)| slot_sizes[s]).map(|(k, _)| k));
            match best {
                Some(k) => {
                    let s = free.swap_remove(k);
                    slot_sizes[s] = slot_sizes[s].max(need);
                    s
                }
                None => {
                    slot_sizes.push(need);
                    slot_sizes.len() - 1
                }
            }
        };
        for (k, &i) in input_ids.iter().enumerate() {
            let s = alloc(g.nodes[i].fact.numel(), &mut slot_sizes, &mut free);
            loc[i] = Some(Loc::Slot(s));
            inputs.push(Port { name: input_names[k].clone(), fact: g.nodes[i].fact.clone(), loc: Loc::Slot(s) });
        }
        // Resident parameters get slots of their own before any step is
        // planned: a slot that an earlier step used and freed would be
        // overwritten on every run before the parameter is read.
        if let Some(updates) = resident {
            for (i, node) in g.nodes.iter().enumerate() {
                let Op::Param(p) = &node.op else { continue };
                if let Some(k) = state.iter().position(|s| s.param == *p) {
                    loc[i] = Some(Loc::Slot(state[k].slot));
                    continue;
                }
                slot_sizes.push(node.fact.numel());
                let s = slot_sizes.len() - 1;
                let update = updates.iter().find(|(q, _)| q == p).map(|(_, o)| *o);
                state.push(StateSlot { param: p.clone(), slot: s, update });
                loc[i] = Some(Loc::Slot(s));
            }
        }
        for (i, node) in g.nodes.iter().enumerate() {
            match &node.op {
                Op::Input(_) => continue,
                Op::Const(c) => {
                    // Data that needs no rounding is shared, not copied: the
                    // programs a loader builds from one set of weights (an
                    // encoder's sequence buckets, say) then hold them once.
                    let round = ctx.fp16
                        && c.fact.dtype == DType::F16
                        && !c.data.iter().all(|&x| crate::numerics::round_f16_fast(x).to_bits() == x.to_bits());
                    if round {
                        let mut v = Buf::from_slice(&c.data);
                        round_f16_slice(&mut v);
                        consts.push(ConstData::Made(Arc::new(v)));
                    } else {
                        consts.push(ConstData::Shared(c.data.clone()));
                    }
                    loc[i] = Some(Loc::Const(consts.len() - 1));
                    continue;
                }
                Op::Param(_) if resident.is_some() => continue, // placed up front
                Op::Reshape(_) => {
                    loc[i] = loc[node.inputs[0]];
                    if loc[i].is_none() {
                        return Err(Error::Compile(format!("internal: value %{} used before it is computed", node.inputs[0])));
                    }
                    continue;
                }
                Op::Param(p) => {
                    let mut v = p.values();
                    if ctx.fp16 && p.cell.fact.dtype == DType::F16 {
                        round_f16_slice(&mut v);
                    }
                    consts.push(ConstData::made(&v));
                    loc[i] = Some(Loc::Const(consts.len() - 1));
                    continue;
                }
                _ => {}
            }
            let ins: Vec<Loc> = node
                .inputs
                .iter()
                .map(|&j| loc[j].ok_or_else(|| Error::Compile(format!("internal: value %{j} used before it is computed"))))
                .collect::<Result<_>>()?;
            let facts = g.facts(node);
            scratch = scratch.max(node.op.scratch_len(&facts, &node.fact));
            let mut ins = ins;
            let mut in_shapes: Vec<Vec<usize>> = facts.iter().map(|f| f.shape.clone()).collect();
            let const_data: Vec<Option<&[f32]>> =
                ins.iter().map(|l| if let Loc::Const(c) = l { Some(&consts[*c][..]) } else { None }).collect();
            let extra = node.op.prepare(&facts, &const_data, &node.fact);
            if let Some(extra) = extra {
                in_shapes.push(vec![extra.len()]);
                consts.push(ConstData::made(&extra));
                ins.push(Loc::Const(consts.len() - 1));
            }
            inline &= node.fact.numel() < INLINE_MAX_VALUES
                && facts.iter().all(|f| f.numel() < INLINE_MAX_VALUES)
                && node.op.cost(&facts, &node.fact).flops < INLINE_MAX_FLOPS;
            let out = alloc(node.fact.numel(), &mut slot_sizes, &mut free);
            loc[i] = Some(Loc::Slot(out));
            steps.push(Step {
                op: node.op.clone(),
                ins,
                in_shapes,
                out,
                out_shape: node.fact.shape.clone(),
                round: ctx.fp16 && node.fact.dtype == DType::F16 && !node.op.is_exact() && !node.op.rounds_output(),
            });
            // Free the slots of inputs whose last reader is this step.
            let mut dead: Vec<usize> = node.inputs.iter().map(|&j| root[j]).filter(|&j| last_use[j] == i).collect();
            dead.sort_unstable();
            dead.dedup();
            for j in dead {
                if let Some(Loc::Slot(s)) = loc[j] {
                    free.push(s);
                }
            }
        }
        let outputs = g
            .outputs
            .iter()
            .zip(output_names)
            .map(|(&o, name)| Port { name: name.clone(), fact: g.nodes[o].fact.clone(), loc: loc[o].unwrap_or(Loc::Const(0)) })
            .collect();
        let bytes: u128 = (slot_sizes.iter().sum::<usize>() + scratch) as u128 * 4
            + consts.iter().map(|c| c.len() as u128 * 4).sum::<u128>();
        if bytes > memory_limit() {
            return Err(Error::Memory {
                op: "compile".into(),
                msg: format!(
                    "the program needs {} of host memory to simulate (limit {}, set ANEFORGE_SIM_MAX_BYTES to change it); use smaller shapes",
                    human_bytes(bytes),
                    human_bytes(memory_limit())
                ),
            });
        }
        if let Some(u) = resident {
            for (p, _) in u {
                if !state.iter().any(|s| s.param == *p) {
                    return Err(Error::value("train", format!("parameter {:?} has an update but is not used by the program", p.cell.name)));
                }
            }
        }
        let const_bytes: usize = consts.iter().map(|c| c.len() * 4).sum();
        let ctx = EvalCtx { weights_cached: const_bytes <= last_level_cache_bytes() / 2, ..ctx };
        Ok(SimProgram { steps, state, slot_sizes, scratch, consts, inputs, outputs, ctx, inline })
    }

    /// Allocates the buffers for one instance.
    /// Allocates the buffers for one instance; resident parameters start
    /// from the values their parameter objects hold now.
    pub fn new_state(&self) -> SimState {
        let widest = self.steps.iter().map(|s| s.ins.len()).max().unwrap_or(0);
        let mut st = SimState {
            slots: self.slot_sizes.iter().map(|&s| Buf::zeroed(s)).collect(),
            scratch: Buf::zeroed(self.scratch),
            views: Vec::with_capacity(widest),
        };
        for k in 0..self.state.len() {
            let v = self.state[k].param.values();
            self.set_state(&mut st, k, &v);
        }
        // Kernels run on the pool's threads (see `run`); their per-thread
        // GEMM buffers reach full size now rather than on whichever later
        // call first hands a thread its largest GEMM.
        if pinning::may_broadcast() {
            rayon::broadcast(|_| crate::sgemm::reserve_packing());
        }
        pinning::pin_workers_once();
        st
    }

    /// The current value of resident parameter `k`.
    pub fn state<'a>(&self, st: &'a SimState, k: usize) -> &'a [f32] {
        let s = &self.state[k];
        &st.slots[s.slot][..s.param.cell.fact.numel()]
    }

    /// Overwrites resident parameter `k` (rounded to its storage type).
    /// `v` must hold exactly the parameter's element count.
    pub fn set_state(&self, st: &mut SimState, k: usize, v: &[f32]) {
        let s = &self.state[k];
        let n = s.param.cell.fact.numel();
        let dst = &mut st.slots[s.slot][..n];
        dst.copy_from_slice(&v[..n]);
        if self.ctx.fp16 && s.param.cell.fact.dtype == DType::F16 {
            round_f16_slice(dst);
        }
    }

    /// Where input `k` must be written before `run` (length = numel).
    pub fn input_mut<'a>(&self, st: &'a mut SimState, k: usize) -> &'a mut [f32] {
        let p = &self.inputs[k];
        match p.loc {
            Loc::Slot(s) => &mut st.slots[s][..p.fact.numel()],
            Loc::Const(_) => unreachable!("inputs always live in slots"),
        }
    }

    /// Converts a host array into input `k`'s slot (`input` holds exactly
    /// the port's element count).
    pub fn write_input(&self, st: &mut SimState, k: usize, input: HostInput) {
        let slot = self.input_mut(st, k);
        match input {
            HostInput::F16(src) => f16_to_f32(src, slot),
            HostInput::F32 { data, round } => copy_f32(data, slot, round),
        }
    }

    pub fn output<'a>(&'a self, st: &'a SimState, k: usize) -> &'a [f32] {
        let p = &self.outputs[k];
        self.read(&st.slots, p.loc, p.fact.numel())
    }

    fn read<'a>(&'a self, slots: &'a [Buf], l: Loc, n: usize) -> &'a [f32] {
        match l {
            Loc::Slot(s) => &slots[s][..n],
            Loc::Const(c) => &self.consts[c][..n],
        }
    }

    /// Runs every step. Inputs must already be in place (`input_mut`).
    pub fn run(&self, st: &mut SimState) {
        self.run_io(st, &[], &mut [])
    }

    /// [`run`](Self::run) with the host's arrays: each input converted into
    /// its slot, and the fp16 outputs given in `outs` (one entry per
    /// output port; `None` to read it with [`output`](Self::output) after)
    /// converted out, inside the same hand-off to the pool. Converting
    /// outside it cost a second and third hand-off, or a serial pass on
    /// the caller's thread, per call: more than the kernels of a small net.
    ///
    /// `ins` must hold one entry per input port, each of its element count,
    /// and each `Some` in `outs` its output's.
    pub fn run_io(&self, st: &mut SimState, ins: &[HostInput], outs: &mut [Option<&mut [f16]>]) {
        let mut body = |st: &mut SimState| {
            for (k, &input) in ins.iter().enumerate() {
                self.write_input(st, k, input);
            }
            self.run_steps(st);
            for (k, dst) in outs.iter_mut().enumerate() {
                if let Some(dst) = dst {
                    f32_to_f16(self.output(st, k), dst);
                }
            }
        };
        if self.inline {
            return body(st);
        }
        // The whole run goes to the thread pool at once (a scope's body runs
        // on a worker; on the caller itself when it is the pool's adopted
        // worker 0): every parallel kernel is then a cheap fork inside
        // the pool rather than a hand-off from a foreign thread, which
        // blocks the caller on a latch and pushes a job onto rayon's shared
        // queue, whose blocks are heap-allocated. One hand-off per run
        // instead of one per kernel: faster, and nearly allocation-free.
        //
        // A second worker stays with the run until it ends, taking each
        // kernel's parallel work as it appears: left to itself it falls
        // asleep in the serial stretches between kernels, and waking a
        // sleeping vCPU costs tens of microseconds. (Any further workers
        // still steal as usual.)
        pinning::make_room_for_caller();
        assisted(|| body(st))
    }

    fn run_steps(&self, st: &mut SimState) {
        let profile = profiling();
        for step in &self.steps {
            let t0 = profile.then(std::time::Instant::now);
            let mut out = std::mem::take(&mut st.slots[step.out]);
            let n: usize = step.out_shape.iter().product();
            {
                let (slots, scratch) = (&st.slots, &mut st.scratch);
                with_views(&mut st.views, |views| {
                    for (&l, shape) in step.ins.iter().zip(&step.in_shapes) {
                        views.push(View { data: self.read(slots, l, shape.iter().product()), shape });
                    }
                    step.op.eval(views, &mut out[..n], &step.out_shape, scratch, &self.ctx);
                });
            }
            let t1 = profile.then(std::time::Instant::now);
            if step.round {
                round_f16_slice(&mut out[..n]);
            }
            st.slots[step.out] = out;
            if let (Some(t0), Some(t1)) = (t0, t1) {
                record(step, t1 - t0, t1.elapsed());
            }
        }
        // Resident updates: the new values replace the state for the next run.
        for s in &self.state {
            let Some(o) = s.update else { continue };
            let Loc::Slot(src) = self.outputs[o].loc else { continue };
            if src == s.slot {
                continue;
            }
            let n = s.param.cell.fact.numel();
            let v = std::mem::take(&mut st.slots[src]);
            st.slots[s.slot][..n].copy_from_slice(&v[..n]);
            st.slots[src] = v;
        }
    }

    /// Whether runs stay on the caller's thread (every step is small).
    pub fn runs_inline(&self) -> bool {
        self.inline
    }

    pub fn num_steps(&self) -> usize {
        self.steps.len()
    }

    /// Bytes of buffers the plan uses (after slot reuse).
    pub fn planned_bytes(&self) -> usize {
        (self.slot_sizes.iter().sum::<usize>() + self.scratch) * 4
    }
}

/// Bytes of the host's last-level cache as one core sees it (Linux's
/// sysfs; 8 MiB where unknown). Half of it is what a program's weights may
/// take and still be expected in cache between calls: the rest is for the
/// activations and whatever else the process does.
fn last_level_cache_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        let size = |dir: std::path::PathBuf| -> Option<(u32, usize)> {
            let level = std::fs::read_to_string(dir.join("level")).ok()?.trim().parse().ok()?;
            let text = std::fs::read_to_string(dir.join("size")).ok()?;
            let text = text.trim();
            let (digits, scale) = match text.strip_suffix('K') {
                Some(d) => (d, 1 << 10),
                None => match text.strip_suffix('M') {
                    Some(d) => (d, 1 << 20),
                    None => (text, 1),
                },
            };
            Some((level, digits.parse::<usize>().ok()? * scale))
        };
        let caches = std::fs::read_dir("/sys/devices/system/cpu/cpu0/cache").into_iter().flatten().flatten();
        caches.filter_map(|e| size(e.path())).max().map_or(8 << 20, |(_, bytes)| bytes)
    })
}

/// An input array as the host holds it, for [`SimProgram::run_io`].
#[derive(Clone, Copy, Debug)]
pub enum HostInput<'a> {
    /// fp16 values, widened into the slot.
    F16(&'a [f16]),
    /// f32 values, copied, and rounded to fp16 when `round` (an fp16 port
    /// of an fp16 program fed float32).
    F32 { data: &'a [f32], round: bool },
}

/// Lends `buf`'s allocation to `f` as an empty list of views of any
/// lifetime, and takes it back empty: a kernel's argument list then costs
/// no allocation, however many inputs the step has.
fn with_views<'a>(buf: &mut Vec<View<'static>>, f: impl FnOnce(&mut Vec<View<'a>>)) {
    let mut lent = {
        let mut v = std::mem::ManuallyDrop::new(std::mem::take(buf));
        // SAFETY: View<'static> and View<'a> differ only in lifetime, so
        // they have one layout, and the vector is empty: no view is ever
        // read at a lifetime it was not made with.
        unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<View<'a>>(), 0, v.capacity()) }
    };
    f(&mut lent);
    lent.clear();
    let mut v = std::mem::ManuallyDrop::new(lent);
    // SAFETY: as above, and the views borrowed for 'a are cleared first.
    *buf = unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast::<View<'static>>(), 0, v.capacity()) };
}

/// `ANEFORGE_PROFILE=1`: time every kernel the sim runs, by op name, and
/// print the totals when the process exits (to find where a training step
/// spends its time). `ANEFORGE_PROFILE=shapes` keys the table by op and
/// input shapes instead, to tell apart the layers of one op kind. The fp16
/// rounding pass after a kernel is counted on a row of its own.
fn profiling() -> bool {
    profile_mode() != ProfileMode::Off
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum ProfileMode {
    Off,
    ByOp,
    ByShape,
}

fn profile_mode() -> ProfileMode {
    static MODE: std::sync::OnceLock<ProfileMode> = std::sync::OnceLock::new();
    *MODE.get_or_init(|| match std::env::var("ANEFORGE_PROFILE").as_deref() {
        Err(_) | Ok("") | Ok("0") => ProfileMode::Off,
        Ok("shapes") => ProfileMode::ByShape,
        Ok(_) => ProfileMode::ByOp,
    })
}

type ProfileTable = std::collections::HashMap<String, (f64, u64)>;
static PROFILE: std::sync::Mutex<Option<ProfileTable>> = std::sync::Mutex::new(None);

fn record(step: &Step, kernel: std::time::Duration, round: std::time::Duration) {
    let op = match profile_mode() {
        ProfileMode::ByShape => format!("{} {:?}", step.op.name(), step.in_shapes),
        _ => step.op.name().to_string(),
    };
    if let Ok(mut g) = PROFILE.lock() {
        let first = g.is_none();
        let t = g.get_or_insert_with(Default::default);
        let e = t.entry(op).or_default();
        e.0 += kernel.as_secs_f64();
        e.1 += 1;
        if step.round {
            let e = t.entry("(fp16 rounding)".to_string()).or_default();
            e.0 += round.as_secs_f64();
            e.1 += 1;
        }
        if first {
            extern "C" fn report() {
                eprintln!("{}", profile_report());
            }
            // SAFETY: registering a plain extern "C" fn with libc's atexit.
            unsafe { atexit(report) };
        }
    }
}

extern "C" {
    fn atexit(f: extern "C" fn()) -> i32;
}

/// The kernel-time table collected under `ANEFORGE_PROFILE=1`.
pub fn profile_report() -> String {
    let Ok(g) = PROFILE.lock() else { return String::new() };
    let Some(t) = g.as_ref() else { return "no kernels profiled (set ANEFORGE_PROFILE=1)".into() };
    let mut v: Vec<_> = t.iter().collect();
    v.sort_by(|a, b| b.1 .0.total_cmp(&a.1 .0));
    let total: f64 = v.iter().map(|e| e.1 .0).sum();
    let mut s = format!("[aneforge] sim kernel time by op (total {:.1} ms)\n", total * 1e3);
    for (name, (secs, n)) in v {
        s += &format!("  {name:<40} {:9.2} ms {:5.1}%  {n} calls\n", secs * 1e3, 100.0 * secs / total.max(1e-12));
    }
    s
}

/// Runs `f` on a pool worker with a second worker assisting until it
/// returns (see `SimProgram::run`).
fn assisted(f: impl FnOnce() + Send) {
    /// Sets the flag when dropped: also when `f` panics, or the assisting
    /// worker would wait for it forever and the panic never reach the caller.
    struct Done<'a>(&'a AtomicBool);
    impl Drop for Done<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Release);
        }
    }
    rayon::scope(|_| {
        let done = AtomicBool::new(false);
        rayon::join(
            || {
                let _done = Done(&done);
                f()
            },
            || assist_until(&done),
        );
    })
}

/// Runs the pool's pending jobs on this worker until `done` is set.
fn assist_until(done: &AtomicBool) {
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() != Some(rayon::Yield::Executed) {
            std::hint::spin_loop();
        }
    }
}

#[cfg(test)]
mod tests {
    /// A kernel that panics must not leave its assisting worker waiting
    /// for a run that will never finish: the panic reaches the caller.
    #[test]
    fn a_panic_in_a_run_reaches_the_caller_and_the_pool_survives() {
        let r = std::panic::catch_unwind(|| super::assisted(|| panic!("a kernel failed")));
        assert!(r.is_err());
        let mut ran = false;
        super::assisted(|| ran = true);
        assert!(ran);
    }
}
