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
/// local disk or memory filesystem. Not overlayfs or squashfs: Apptainer stacks those on
/// whatever holds the image (an overlay over a sandbox on CVMFS, a SIF loop-mounted from
/// NFS or Lustre), and statfs names only the top. Not on FUSE (CVMFS, squashfuse-mounted SIF images), NFS
/// or anything else unknown: there a dropped code page is read again through a daemon or the
/// network, and with CVMFS broken — the very fault a worker node's health check is there to
/// report — that read fails with SIGBUS or hangs, and PID 1 with it. Pages the kernel reclaims
/// under memory pressure carry that risk anyway; trimming would make it certain, so pilot
/// keeps its code mapped there and pays the RSS.
pub fn program_on_local_storage() -> bool {
    // `as u64 as u32`: the field is signed or unsigned, 32 or 64 bits, by libc and target.
    nix::sys::statfs::statfs("/proc/self/exe").is_ok_and(|fs| local_storage(fs.filesystem_type().0 as u64 as u32))
}

/// Filesystems whose clean file pages the kernel can always read back by itself, by their
/// magic numbers (linux/magic.h; written out because nix names only some of them for musl).
fn local_storage(magic: u32) -> bool {
    [
        0xEF53,      // ext2, ext3, ext4
        0x5846_5342, // xfs
        0x9123_683E, // btrfs
        0x0102_1994, // tmpfs
        0x8584_58F6, // ramfs
    ]
    .contains(&magic)
}

/// One page-aligned range of a read-only segment of the main program.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Range {
    start: usize,
    end: usize,
}

/// The kernel's page size: 4 KiB on x86_64, 4, 16 or 64 KiB on aarch64 kernels; madvise
/// refuses ranges not aligned to it.
fn page_size() -> usize {
    nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |n| n as usize)
}

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
    let page = page_size();
    let relro = phdrs.iter().find(|p| p.p_type == libc::PT_GNU_RELRO).map(|p| {
        let start = base + p.p_vaddr as usize;
        Range { start: start & !(page - 1), end: (start + p.p_memsz as usize).next_multiple_of(page) }
    });
    for p in phdrs.iter().filter(|p| p.p_type == libc::PT_LOAD && p.p_flags & libc::PF_W == 0) {
        let start = (base + p.p_vaddr as usize).next_multiple_of(page);
        // Only what is backed by the file: bss-like tails (memsz > filesz) are anonymous.
        let end = (base + p.p_vaddr as usize + p.p_filesz as usize) & !(page - 1);
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
        assert!(local_storage(0x0102_1994), "tmpfs");
        assert!(!local_storage(0x6573_5546), "FUSE: CVMFS, squashfuse");
        assert!(!local_storage(0x6969), "NFS");
        assert!(!local_storage(0x794C_7630), "overlayfs: its lower layer may be CVMFS");
        assert!(!local_storage(0x7371_7368), "squashfs: the SIF may be on NFS");
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
