//! Raw system calls for the spawn child, which shares pilot's memory *and its thread-local
//! storage* while the supervisor thread runs on beside it.
//!
//! Why not libc's wrappers: the child of `clone(CLONE_VM)` without `CLONE_SETTLS` runs on
//! the thread pointer of the thread that cloned it, so every libc wrapper that fails writes
//! `errno` into the *supervisor thread's* errno slot, at the same moment that thread may be
//! reading it after a failure of its own; glibc's cancellable wrappers (`open`, `read`,
//! `close`) also update the calling thread's cancellation state in its thread descriptor; the
//! set*id wrappers synchronise every thread of the process. A raw `syscall` instruction
//! touches none of that: the result, or `-errno`, comes back in a register.
//!
//! Only x86_64 and aarch64 are built (`scripts/build-static.sh`); elsewhere the fallback
//! goes through `libc::syscall` and its errno (correct, but with the race described above).

use libc::c_long;

/// A system call's result: its return value, or the errno.
pub type SysResult = Result<usize, i32>;

fn decode(ret: isize) -> SysResult {
    if (-4095..0).contains(&ret) { Err(-ret as i32) } else { Ok(ret as usize) }
}

/// System call `nr` with up to six arguments (unused ones 0).
///
/// # Safety
/// The arguments must be what the kernel expects for `nr` (valid pointers for as long as the
/// call runs); the call's effects are the caller's business.
#[cfg(target_arch = "x86_64")]
pub unsafe fn syscall(nr: c_long, a: [usize; 6]) -> SysResult {
    let ret: isize;
    // SAFETY: the x86_64 Linux system call convention: number in rax, arguments in rdi, rsi,
    // rdx, r10, r8, r9; the kernel clobbers rcx and r11 and returns in rax. No stack is used.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr as isize => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        );
    }
    decode(ret)
}

/// See the x86_64 version.
///
/// # Safety
/// As the x86_64 version.
#[cfg(target_arch = "aarch64")]
pub unsafe fn syscall(nr: c_long, a: [usize; 6]) -> SysResult {
    let ret: isize;
    // SAFETY: the aarch64 Linux system call convention: number in x8, arguments in x0–x5,
    // result in x0. No stack is used.
    unsafe {
        std::arch::asm!(
            "svc 0",
            in("x8") nr,
            inlateout("x0") a[0] => ret,
            in("x1") a[1], in("x2") a[2], in("x3") a[3], in("x4") a[4], in("x5") a[5],
            options(nostack),
        );
    }
    decode(ret)
}

/// Fallback for other architectures (not built by pilot's scripts): correct, but errno is
/// the calling thread's (see the module's note).
///
/// # Safety
/// As the x86_64 version.
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
pub unsafe fn syscall(nr: c_long, a: [usize; 6]) -> SysResult {
    // SAFETY: as the caller promises.
    unsafe {
        let ret = libc::syscall(nr, a[0], a[1], a[2], a[3], a[4], a[5]);
        if ret < 0 { Err(*libc::__errno_location()) } else { Ok(ret as usize) }
    }
}

/// Shorthand: `sys!(SYS_x, a, b, ...)` with every argument cast to `usize`.
macro_rules! sys {
    ($nr:expr $(, $arg:expr)* $(,)?) => {{
        #[allow(unused_mut)]
        let mut a = [0usize; 6];
        #[allow(unused_mut, unused_variables)]
        let mut i = 0;
        $( a[i] = $arg as usize; i += 1; )*
        let _ = i;
        $crate::init::sys::syscall($nr, a)
    }};
}
pub(crate) use sys;

#[cfg(test)]
mod tests {
    #[test]
    fn results_and_errnos_come_back_in_registers() {
        // SAFETY: getpid takes nothing; close of a descriptor that cannot be open fails.
        unsafe {
            assert_eq!(sys!(libc::SYS_getpid), Ok(std::process::id() as usize));
            assert_eq!(sys!(libc::SYS_close, 1_000_000), Err(libc::EBADF));
        }
    }
}
