//! The process's memory allocator: jemalloc, with its background purging thread.
//!
//! Why not the system allocator: a hub's heap is a steady churn of small objects
//! (frames, queue entries, connection buffers) across worker threads. glibc's
//! malloc keeps every freed page that is not at the top of an arena, so a soak with
//! a flat heap (16 MiB in use, measured with heaptrack) still saw RSS creep by
//! ~1.7 %/h. jemalloc returns unused dirty pages to the kernel after a decay time
//! (10 s by default), so RSS follows what is really in use. mimalloc was tried
//! earlier and grew faster. See bench/SOAK.md for the figures.

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Lets jemalloc purge decayed pages from its own thread instead of only when an
/// allocating thread happens to pass by: an idle hub gives memory back too.
pub fn init() {
    if let Err(e) = tikv_jemalloc_ctl::background_thread::write(true) {
        tracing::warn!(error = %e, "jemalloc background purging is unavailable");
    }
}

#[cfg(test)]
mod tests {
    use tikv_jemalloc_ctl::{background_thread, epoch, stats};

    /// The binary really allocates through jemalloc, with purging on its own thread.
    #[test]
    fn jemalloc_is_the_allocator_and_purges_in_the_background() {
        super::init();
        assert!(background_thread::read().unwrap());
        let held = vec![0u8; 8 << 20];
        epoch::advance().unwrap();
        assert!(stats::allocated::read().unwrap() >= held.len());
        drop(held);
    }
}
