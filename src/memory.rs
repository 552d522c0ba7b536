//! Giving freed heap back to the system after the start-up loads.
//!
//! Opening a large store and loading the DHCP engine allocate and free
//! hundreds of MB of short-lived buffers. glibc keeps freed memory in its arenas unless the
//! top of the heap is free, so without a trim the daemon would stay at its start-up peak for
//! its whole life: at 1,000,000 devices and leases, 118 MB of an idle daemon's RSS was memory
//! that sled's open had already freed (benches/README.md, Start-up; the store was on sled then).

/// Returns the heap's free pages to the system (glibc's `malloc_trim`); a no-op elsewhere.
/// Costs a few ms on a large heap: call it after a load, not on a request path.
pub fn release_freed() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim takes no pointer and may be called at any time from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Fixes glibc's thresholds before any thread starts. By default glibc raises its mmap threshold
/// to the size of any large block freed (up to 32 MiB) and its trim threshold to twice that, so
/// after the start-up loads each thread's arena may keep tens of MB of free memory it never
/// gives back: a second listing of a million devices took 19–32 MB more than the daemon held
/// before it, and 0.1–8 MB with fixed thresholds (benches/README.md). A no-op elsewhere than
/// glibc.
pub fn tune_allocator() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt takes plain integers; called from `main` before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 256 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1024 * 1024);
    }
}
