//! The allocator's settings and its free memory. glibc's malloc gives threads arenas of
//! their own (up to eight per CPU) and keeps what is freed in each: with a dozen mostly
//! idle threads that is megabytes of RSS holding nothing.

/// Share two malloc arenas among all threads. Call before any thread starts.
pub fn limit_arenas() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; no thread runs yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

/// Give the allocator's free pages back to the system, so that a transient peak (a large
/// /metrics render, a history query) does not stay in the RSS.
pub fn trim() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim takes no pointers and may be called from any thread.
    unsafe {
        libc::malloc_trim(0);
    }
}
