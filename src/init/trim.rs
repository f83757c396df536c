//! Giving back the start-up code's pages. Most of pilot's resident memory is its own
//! program text, not data: each page fault maps the 64 KiB around it (the kernel's
//! fault-around), so parsing the command line, the config and the environment at start
//! leaves about 2.5 MiB of code mapped that a running pilot never executes again (measured:
//! 2.6 MiB of a 2.9 MiB RSS for `pilot run -- sleep`).
//!
//! [`release_code`] drops the process's mappings of the read-only segments of its own
//! program (`MADV_DONTNEED`). Those pages are clean and file-backed: they stay in the page
//! cache (shared with every other process of the same binary), and the next instruction or
//! constant read from one maps it back with a minor fault. Writable segments and the RELRO
//! region (relocated at start, so their pages are private copies) are never touched:
//! dropping those would lose the relocations.

use std::ffi::c_void;

/// Whether pilot's own program file is on storage that can always give its pages back: a
/// local disk or memory filesystem. Not on FUSE (CVMFS, squashfuse-mounted SIF images), NFS
/// or anything else unknown: there a dropped code page is read again through a daemon or the
/// network, and with CVMFS broken — the very fault a worker node's health check is there to
/// report — that read fails with SIGBUS or hangs, and PID 1 with it. Pages the kernel reclaims
/// under memory pressure carry that risk anyway; trimming would make it certain, so pilot
/// keeps its code mapped there and pays the RSS.
pub fn program_on_local_storage() -> bool {
    nix::sys::statfs::statfs("/proc/self/exe").is_ok_and(|fs| local_storage(fs.filesystem_type()))
}

/// Filesystems whose clean file pages the kernel can always read back by itself.
fn local_storage(fs: nix::sys::statfs::FsType) -> bool {
    use nix::sys::statfs::{BTRFS_SUPER_MAGIC, EXT4_SUPER_MAGIC, FsType, OVERLAYFS_SUPER_MAGIC, TMPFS_MAGIC};
    // Not named by nix (XFS only on glibc: it is absent from the static musl build, the
    // release artifact): linux/magic.h's values.
    const XFS_SUPER_MAGIC: FsType = FsType(0x5846_5342_u32 as _);
    const RAMFS_MAGIC: FsType = FsType(0x8584_58f6_u32 as _);
    const SQUASHFS_MAGIC: FsType = FsType(0x7371_7368_u32 as _);
    [
        EXT4_SUPER_MAGIC, // also ext2 and ext3: one magic
        XFS_SUPER_MAGIC,
        BTRFS_SUPER_MAGIC,
        TMPFS_MAGIC,
        RAMFS_MAGIC,
        OVERLAYFS_SUPER_MAGIC,
        SQUASHFS_MAGIC, // the kernel's own squashfs on a loop device, not squashfuse
    ]
    .contains(&fs)
}

/// One page-aligned range of a read-only segment of the main program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

const PAGE: usize = 4096;

/// The main program's read-only segments, minus the RELRO region, page-aligned inwards.
fn read_only_segments() -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    // SAFETY: dl_iterate_phdr calls `collect` with a valid dl_phdr_info for each loaded
    // object; `collect` only reads it and writes to `out`, passed as the data pointer.
    unsafe { libc::dl_iterate_phdr(Some(collect), (&mut out as *mut Vec<Range>).cast()) };
    out
}

unsafe extern "C" fn collect(info: *mut libc::dl_phdr_info, _size: libc::size_t, data: *mut c_void) -> libc::c_int {
    // SAFETY: dl_iterate_phdr passes a valid info and our data pointer; the program headers
    // it points to are the loaded program's, valid while the program runs.
    let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Range>)) };
    // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers.
    let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
    let base = info.dlpi_addr as usize;
    let relro = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_RELRO).map(|p| {
        let start = base + p.p_vaddr as usize;
        Range { start: start & !(PAGE - 1), end: (start + p.p_memsz as usize).next_multiple_of(PAGE) }
    });
    for p in phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0) {
        let start = (base + p.p_vaddr as usize).next_multiple_of(PAGE);
        // Only what is backed by the file: bss-like tails (memsz > filesz) are anonymous.
        let end = (base + p.p_vaddr as usize + p.p_filesz as usize) & !(PAGE - 1);
        if start >= end {
            continue;
        }
        let seg = Range { start, end };
        match relro {
            Some(r) if r.start < seg.end && seg.start < r.end => {
                // Keep the parts outside RELRO only.
                if seg.start < r.start {
                    out.push(Range { start: seg.start, end: r.start });
                }
                if r.end < seg.end {
                    out.push(Range { start: r.end, end: seg.end });
                }
            }
            _ => out.push(seg),
        }
    }
    // The first object is the main program: stop there.
    1
}

/// Drop this process's mappings of its program's read-only pages (see the module doc).
/// Returns the bytes advised. Safe to call at any time from any thread: a page another
/// thread needs is faulted back in.
pub fn release_code() -> usize {
    let mut total = 0;
    for r in read_only_segments() {
        // SAFETY: the range lies in a read-only, file-backed, private mapping of our own
        // program outside RELRO: none of its pages was ever written (no private copies to
        // lose), so MADV_DONTNEED only unmaps them and a later access maps the same bytes
        // from the page cache. No Rust reference is invalidated: the contents never change.
        let rc = unsafe { libc::madvise(r.start as *mut c_void, r.end - r.start, libc::MADV_DONTNEED) };
        if rc == 0 {
            total += r.end - r.start;
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The code of this very test is in a released range; it keeps running (the pages
    /// come back), and no range overlaps a writable segment.
    /// The test binary lives in cargo's target directory on this machine's disk.
    #[test]
    fn a_program_on_a_local_disk_may_be_trimmed() {
        assert!(program_on_local_storage());
        use nix::sys::statfs::{FUSE_SUPER_MAGIC, NFS_SUPER_MAGIC, TMPFS_MAGIC};
        assert!(local_storage(TMPFS_MAGIC));
        // "XFSB": named here, since nix has no XFS_SUPER_MAGIC for musl.
        assert!(local_storage(nix::sys::statfs::FsType(0x5846_5342_u32 as _)));
        assert!(!local_storage(FUSE_SUPER_MAGIC), "CVMFS, squashfuse");
        assert!(!local_storage(NFS_SUPER_MAGIC));
    }

    #[test]
    fn released_code_comes_back() {
        let ranges = read_only_segments();
        assert!(!ranges.is_empty());
        let here = released_code_comes_back as *const () as usize;
        assert!(ranges.iter().any(|r| (r.start..r.end).contains(&here)), "{ranges:x?}");
        assert!(release_code() > 0);
        let s: String = std::hint::black_box(vec!["still", "running"]).join(" ");
        assert_eq!(s, "still running");
        static WRITABLE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(7);
        let w = &WRITABLE as *const _ as usize;
        assert!(!ranges.iter().any(|r| (r.start..r.end).contains(&w)));
        assert_eq!(WRITABLE.load(std::sync::atomic::Ordering::Relaxed), 7);
    }
}
