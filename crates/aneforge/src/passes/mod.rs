//! Graph → graph rewrites, each small and separately tested, run by
//! [`optimize`] until nothing changes. `AF_DEBUG=1` prints the graph after
//! each pass that changed it.

mod dce;
mod fold_constants;
mod fuse_epilogues;
mod fuse_gelu;

pub use dce::eliminate_dead_code;
pub use fold_constants::fold_constants;
pub use fuse_epilogues::fuse_epilogues;
pub use fuse_gelu::fuse_gelu;

use crate::error::Result;
use crate::graph::Graph;

type Pass = fn(Graph) -> Result<Graph>;

const PASSES: [(&str, Pass); 4] = [
    ("fold_constants", fold_constants),
    ("fuse_gelu", fuse_gelu),
    ("fuse_epilogues", fuse_epilogues),
    ("eliminate_dead_code", eliminate_dead_code),
];

fn debug_level() -> u32 {
    std::env::var("AF_DEBUG").ok().and_then(|v| v.parse().ok()).unwrap_or(0)
}

/// Runs every pass to a fixpoint (bounded, in case two passes fight).
pub fn optimize(mut g: Graph) -> Result<Graph> {
    let debug = debug_level();
    for _round in 0..8 {
        let before = signature(&g);
        for (name, pass) in PASSES {
            let n = g.nodes.len();
            g = pass(g)?;
            if debug >= 1 && (g.nodes.len() != n || debug >= 2) {
                eprintln!("[aneforge] after {name}: {} nodes\n{g}", g.nodes.len());
            }
        }
        if signature(&g) == before {
            break;
        }
    }
    Ok(g)
}

fn signature(g: &Graph) -> (usize, Vec<String>) {
    (g.nodes.len(), g.nodes.iter().map(|n| n.op.name()).collect())
}
