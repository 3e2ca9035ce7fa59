//! Starting a child the way `posix_spawn` does: `clone3` with `CLONE_VM |
//! CLONE_VFORK`, the child on a stack of its own, in this process's memory,
//! while the calling thread waits until the child has exec'd or exited.
//!
//! Why: a fork copies the page tables and then takes a copy-on-write fault
//! for every page either process writes before the exec; on a virtual
//! machine that is the larger part of starting a container
//! (docs/benchmarks.md). Sharing the memory for the few hundred
//! microseconds until exec costs nothing.
//!
//! The price is a contract on the child closure, which the types enforce
//! where they can: it cannot return (it must exec or `_exit`), and whatever
//! it allocates and does not free before exec stays allocated in this
//! process, so it hands such values back through `&mut` slots its caller
//! owns and frees.

use std::convert::Infallible;
use std::ffi::c_void;
use std::io;

/// Start the child in the cgroup given by `CloneArgs::cgroup` (Linux 5.7).
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// `struct clone_args` (Linux 5.7+, with `cgroup`).
#[repr(C)]
#[derive(Debug, Default, Clone)]
pub struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// Room for the child's Rust code up to exec (paths, messages, a panic).
const STACK_SIZE: usize = 256 * 1024;

/// Runs `child` in a new process made with `args` plus `CLONE_VM |
/// CLONE_VFORK` (`args.stack` is set here). Returns the child's pid once it
/// has exec'd or exited; the error if the clone itself failed.
///
/// The calling thread must be the only one touching what `child` borrows
/// (as with any `&mut`), and `child` must not rely on signal handlers: it
/// runs with this process's memory but its own signal dispositions.
pub fn spawn<F: FnOnce() -> Infallible>(args: &CloneArgs, child: F) -> io::Result<i32> {
    let stack = Stack::new()?;
    let mut args = args.clone();
    args.flags |= (libc::CLONE_VM | libc::CLONE_VFORK) as u64;
    args.stack = stack.lowest as u64;
    args.stack_size = stack.usable as u64;
    // The child takes the closure out of this slot, so it is not dropped
    // twice; if the clone fails, it is dropped here as usual.
    let mut slot = Some(child);
    // SAFETY: `args` describes a stack mapped for the child that stays
    // mapped until the call returns, which with CLONE_VFORK is after the
    // child has exec'd or exited; `trampoline::<F>` receives a pointer to
    // `slot`, which lives in this frame for as long.
    let pid = unsafe {
        raw_clone3(
            &args,
            trampoline::<F>,
            &mut slot as *mut Option<F> as *mut c_void,
        )
    };
    drop(stack);
    if pid < 0 {
        return Err(io::Error::from_raw_os_error(-pid as i32));
    }
    Ok(pid as i32)
}

extern "C" fn trampoline<F: FnOnce() -> Infallible>(slot: *mut c_void) -> ! {
    // SAFETY: `slot` is the `Option<F>` in `spawn`'s frame, whose thread
    // waits until this child execs or exits.
    let child = unsafe { &mut *(slot as *mut Option<F>) }.take();
    if let Some(child) = child {
        match child() {}
    }
    // SAFETY: ending the child without touching the parent's state.
    unsafe { libc::_exit(127) }
}

/// The child's stack: an anonymous mapping with a guard page below it.
struct Stack {
    mapping: *mut c_void,
    lowest: *mut c_void,
    usable: usize,
}

impl Stack {
    fn new() -> io::Result<Stack> {
        let page = 4096usize.max(
            // SAFETY: sysconf has no preconditions.
            unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as usize,
        );
        let length = STACK_SIZE + page;
        // SAFETY: a fresh private anonymous mapping; nothing else refers to it.
        let mapping = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                length,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if mapping == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let stack = Stack {
            mapping,
            // SAFETY: `page` is inside the mapping just made.
            lowest: unsafe { mapping.cast::<u8>().add(page).cast() },
            usable: STACK_SIZE,
        };
        // A stack overflow faults here instead of running into other memory.
        // SAFETY: the first page of our own mapping.
        if unsafe { libc::mprotect(mapping, page, libc::PROT_NONE) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(stack)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let length = self.usable + (self.lowest as usize - self.mapping as usize);
        // SAFETY: unmapping exactly the mapping `new` made, no longer in use.
        unsafe { libc::munmap(self.mapping, length) };
    }
}

/// clone3 in assembly: the child starts on the new stack, where no Rust
/// frame of the parent exists, so it must call `entry` straight away.
/// Returns the pid or a negative errno.
///
/// SAFETY (for callers): `args.stack` must describe a mapped stack that
/// stays valid until the child has exec'd or exited (CLONE_VFORK), and
/// `entry(arg)` must be sound to call in the child.
#[cfg(target_arch = "x86_64")]
unsafe fn raw_clone3(
    args: &CloneArgs,
    entry: extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> isize {
    let ret: isize;
    // SAFETY: as documented above; the syscall clobbers only rax, rcx and
    // r11 in the parent; the child never comes back into this function.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r13",
            "call r12",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 as isize => ret,
            in("rdi") args as *const CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") entry as usize,
            in("r13") arg,
            lateout("rcx") _,
            lateout("r11") _,
        );
    }
    ret
}

/// As the x86_64 version; on aarch64 the syscall clobbers only x0.
#[cfg(target_arch = "aarch64")]
unsafe fn raw_clone3(
    args: &CloneArgs,
    entry: extern "C" fn(*mut c_void) -> !,
    arg: *mut c_void,
) -> isize {
    let ret: isize;
    // SAFETY: as documented on the x86_64 version.
    unsafe {
        std::arch::asm!(
            "svc #0",
            "cbnz x0, 2f",
            "mov x0, x10",
            "blr x9",
            "brk #1",
            "2:",
            inlateout("x0") args as *const CloneArgs as isize => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x9") entry as usize,
            in("x10") arg,
        );
    }
    ret
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_child_shares_memory_until_exit_and_the_parent_waits_for_it() {
        let mut seen = 0u32;
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let pid = spawn(&args, || {
            // With CLONE_VM this write lands in the parent's `seen`.
            seen = 42;
            // SAFETY: ending the child.
            unsafe { libc::_exit(7) }
        })
        .unwrap();
        // CLONE_VFORK: by now the child has exited; reap it.
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 7)
        );
        assert_eq!(seen, 42);
    }

    #[test]
    fn a_child_that_execs_leaves_the_parent_intact() {
        let mut message: Option<String> = None;
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let program = std::ffi::CString::new("/bin/sh").unwrap();
        let argv = [
            program.clone(),
            std::ffi::CString::new("-c").unwrap(),
            std::ffi::CString::new("exit 3").unwrap(),
        ];
        let pid = spawn(&args, || {
            let error = nix::unistd::execv(&program, &argv).unwrap_err();
            message = Some(format!("exec: {error}"));
            // SAFETY: ending the child.
            unsafe { libc::_exit(127) }
        })
        .unwrap();
        let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(message, None);
        assert_eq!(
            status,
            nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 3)
        );
    }

    #[test]
    fn a_failed_exec_reports_through_the_shared_slot() {
        let mut message: Option<String> = None;
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let program = std::ffi::CString::new("/nonexistent/program").unwrap();
        let pid = spawn(&args, || {
            let error = nix::unistd::execv(&program, &[&program]).unwrap_err();
            message = Some(format!("exec: {error}"));
            // SAFETY: ending the child.
            unsafe { libc::_exit(127) }
        })
        .unwrap();
        nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
        assert_eq!(
            message.as_deref(),
            Some("exec: ENOENT: No such file or directory")
        );
    }
}
