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

/// Items per task so that `items` make at most one task per thread (for
/// `with_min_len`, or as a chunk length).
pub(crate) fn per_thread(items: usize) -> usize {
    items.div_ceil(rayon::current_num_threads()).max(1)
}
