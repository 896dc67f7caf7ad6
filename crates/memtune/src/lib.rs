//! Hands the heap's free pages back to the OS, for a long-running process that frees large
//! blocks now and then.
//!
//! glibc serves a block of 128 KiB or more with a mapping of its own only until the first such
//! block is freed; from then on blocks up to that size come from the heap, and a freed heap
//! block stays resident. The embedded store's dedup index frees large blocks by design: each
//! merge of its event-id runs replaces the merged runs' Bloom filters with one bigger filter,
//! so without this its resident memory kept every filter a merge freed. Fixing glibc's
//! threshold instead was measured and not kept: every transient block over 128 KiB (a plugin's
//! batch buffer) then cost a mapping, and the open-loop tail grew threefold.
//!
//! The one call here is the binary's only FFI outside the plugin host and the SQLite VFS.
#![cfg_attr(all(target_os = "linux", target_env = "gnu"), allow(unsafe_code))]

/// Returns the free pages of every arena of the allocator to the OS (glibc's `malloc_trim(0)`):
/// each arena is locked in turn while its free chunks' whole pages are given back, so call it
/// off the hot path, after large blocks were freed. True when memory was released; always
/// false off glibc, where there is nothing to call.
pub fn release_free_memory() -> bool {
    imp::trim()
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod imp {
    pub(super) fn trim() -> bool {
        // SAFETY: `malloc_trim` takes a plain integer and only returns free memory of glibc's own
        // arenas to the OS, under each arena's lock; no memory in use is touched, and it is
        // safe to call from any thread at any time.
        unsafe { libc::malloc_trim(0) == 1 }
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
mod imp {
    pub(super) fn trim() -> bool {
        false
    }
}

#[cfg(all(test, target_os = "linux", target_env = "gnu"))]
mod tests {
    use super::*;

    /// Resident memory of this process, from `/proc/self/statm` (pages).
    fn resident_pages() -> usize {
        let statm = std::fs::read_to_string("/proc/self/statm").expect("statm");
        statm
            .split_whitespace()
            .nth(1)
            .and_then(|n| n.parse().ok())
            .expect("resident field")
    }

    /// Large blocks freed into the heap stay resident; after the call they do not. Run in a
    /// child process, so the test's allocations do not meet the other tests'.
    #[test]
    fn freed_heap_blocks_leave_the_process() {
        if std::env::var_os("MEMTUNE_CHILD").is_some() {
            return;
        }
        let out = std::process::Command::new(std::env::current_exe().expect("exe"))
            .args(["--exact", "tests::child", "--nocapture", "--test-threads=1"])
            .env("MEMTUNE_CHILD", "1")
            .output()
            .expect("child");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(out.status.success(), "{text}");
        let figure = |name: &str| {
            text.split(&format!("{name}="))
                .nth(1)
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        };
        assert!(figure("kept_mb") >= 32, "{text}");
        assert!(figure("after_trim_mb") <= 8, "{text}");
    }

    /// The child: frees one 8 MiB mapped block (which raises glibc's threshold past 4 MiB, so
    /// the next blocks are heap blocks), then allocates, touches and frees 16 blocks of 4 MiB
    /// held at once (the last one allocated first freed, so no free block ends the heap), and
    /// prints how much of them stayed resident before and after the call.
    #[test]
    fn child() {
        if std::env::var_os("MEMTUNE_CHILD").is_none() {
            return;
        }
        let page = 4096;
        drop(std::hint::black_box(vec![1u8; 8 << 20]));
        let before = resident_pages();
        let mut blocks: Vec<Vec<u8>> = (0..16).map(|i| vec![i as u8 | 1; 4 << 20]).collect();
        // A small block after them, still in use, pins the heap's end.
        let pin = std::hint::black_box(vec![7u8; 64]);
        std::hint::black_box(&blocks);
        blocks.clear();
        let kept = (resident_pages().saturating_sub(before) * page) >> 20;
        assert!(release_free_memory());
        let after = (resident_pages().saturating_sub(before) * page) >> 20;
        drop(pin);
        println!("kept_mb={kept} after_trim_mb={after}");
    }
}
