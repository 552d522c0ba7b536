//! Giving freed heap back to the system after the start-up loads.
//!
//! Opening a large store (sled's recovery) and loading the DHCP engine allocate and free
//! hundreds of MB of short-lived buffers. glibc keeps freed memory in its arenas unless the
//! top of the heap is free, so without a trim the daemon would stay at its start-up peak for
//! its whole life: at 1,000,000 devices and leases, 118 MB of an idle daemon's RSS was memory
//! that sled's open had already freed (benches/README.md, Start-up).

/// Returns the heap's free pages to the system (glibc's `malloc_trim`); a no-op elsewhere.
/// Costs a few ms on a large heap: call it after a load, not on a request path.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
