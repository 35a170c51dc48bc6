//! How the sim splits one kernel's work across the pool's threads.
//!
//! Into one contiguous part per thread, the first part to the thread that
//! runs the step. Kernels that split their output this way leave each part
//! in the cache of the core that wrote it, and the next kernel, split the
//! same way, finds it there. Finer tasks let rayon balance the load, but
//! each steal and each part another core wrote costs a cache-line round
//! trip between the cores, and on the 2-vCPU VMs this was measured on the
//! host sometimes places the vCPUs far apart (round trips of 0.4-1 us
//! instead of 0.1-0.3). There, layer norm over [197, 768] in 16K-value
//! tasks was 16% slower than in halves, softmax 14%, and attention's
//! [12, 197, 64] product 27% slower with its port conversions in 32K-value
//! tasks; ViT-B/16 as a whole ran 1% faster in halves with the vCPUs close
//! or apart.

/// Values below which an elementwise pass runs on one thread: a port
/// conversion, a unary or binary op, `where`, `cast`. Inside a run the
/// other worker is already awake, so splitting costs about a microsecond:
/// a 256-channel 14x14 map's port conversions, split, made its 1x1 conv
/// 5% faster (9% while the host kept the vCPUs apart) than at the former
/// 128K. One bound for all of them, because a pass that stays on one
/// thread between two split ones reads the half the other core wrote and
/// leaves it half of its own to read back: a relu over 50K values (its
/// conversions split, itself not, at twice this bound) took 9.2 us with
/// the vCPUs close and 39 apart, and 4.7 and 9.7 split; gelu 27 and 52 us,
/// then 15 and 22.
pub(crate) const SPLIT_MIN: usize = 1 << 15;

/// Items per task so that `items` make at most one task per thread (for
/// `with_min_len`, or as a chunk length).
pub(crate) fn per_thread(items: usize) -> usize {
    items.div_ceil(rayon::current_num_threads()).max(1)
}

/// An output buffer that parallel tasks write through, each to parts no
/// other task writes (a band of rows in every plane, say) that a slice
/// split cannot express without allocating.
#[derive(Clone, Copy)]
pub(crate) struct SendPtr(pub *mut f32);

impl SendPtr {
    /// # Safety
    /// `i` must be in bounds of the buffer the pointer came from.
    pub unsafe fn at(self, i: usize) -> *mut f32 {
        self.0.add(i)
    }
}
// SAFETY: used only for disjoint writes from parallel tasks (see call sites).
unsafe impl Send for SendPtr {}
unsafe impl Sync for SendPtr {}
