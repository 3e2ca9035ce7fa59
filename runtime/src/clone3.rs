//! Starting a child with `clone3` straight into its namespaces and cgroup:
//! the child is a copy of this process (as after `fork`), started on a
//! stack of its own by the closure it runs, which cannot return (it must
//! exec or `_exit`).
//!
//! Why not `CLONE_VM | CLONE_VFORK`, as `posix_spawn` does: the parent
//! would then sleep, unkillably, until the child execs, and the child runs
//! what a container controls (its paths, the images it mounts); one that
//! blocks (a FUSE server that never answers) would hold PID 1 for ever.
//! As a copy, the child can be waited for with a deadline and killed
//! (spawn.rs), and what it does cannot touch PID 1's memory. A fork costs
//! page tables and copy-on-write faults: for PID 1, whose memory is a few
//! MiB, little (docs/benchmarks.md has the container-start figures).
//!
//! The caller must be single-threaded while it calls `spawn` (PID 1 is;
//! brig-container starts its threads after): a lock another thread held
//! at the clone would stay held for ever in the child.

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

/// Runs `child` in a new process, a copy of this one, made with `args`
/// (`args.stack` is set here). Returns the child's pid at once, the child
/// running; the error if the clone itself failed.
pub fn spawn<F: FnOnce() -> Infallible>(args: &CloneArgs, child: F) -> io::Result<i32> {
    let stack = Stack::new()?;
    let mut args = args.clone();
    // A copy, never a child sharing this memory (see above).
    args.flags &= !((libc::CLONE_VM | libc::CLONE_VFORK) as u64);
    args.stack = stack.lowest as u64;
    args.stack_size = stack.usable as u64;
    // The child takes the closure out of this slot, so it is not dropped
    // twice; if the clone fails, it is dropped here as usual.
    let mut slot = Some(child);
    // SAFETY: `args` describes a stack mapped here, which the child gets
    // its own copy of with the rest of this memory; `trampoline::<F>`
    // receives a pointer to `slot`, which is in the child's copy of this
    // frame too.
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
    // SAFETY: `slot` is the `Option<F>` in the child's copy of `spawn`'s
    // frame, which no one else touches.
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
/// SAFETY (for callers): `args.stack` must describe a mapped stack, and
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
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::Pid;

    #[test]
    fn the_child_is_a_copy_and_the_parent_goes_on_while_it_runs() {
        let mut seen = 0u32;
        let (read, write) = nix::unistd::pipe().unwrap();
        let args = CloneArgs {
            exit_signal: libc::SIGCHLD as u64,
            ..Default::default()
        };
        let pid = spawn(&args, || {
            // Lands in the child's copy only.
            seen = 42;
            // Waits for the parent: the parent is not waiting for it.
            let mut byte = [0u8];
            let _ = nix::unistd::read(&read, &mut byte);
            // SAFETY: ending the child.
            unsafe { libc::_exit(if seen == 42 { 7 } else { 1 }) }
        })
        .unwrap();
        assert_eq!(seen, 0);
        nix::unistd::write(&write, b"x").unwrap();
        let status = waitpid(Pid::from_raw(pid), None).unwrap();
        assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 7));
    }

    #[test]
    fn a_child_that_execs_runs_the_program() {
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
            let _ = nix::unistd::execv(&program, &argv);
            // SAFETY: ending the child.
            unsafe { libc::_exit(127) }
        })
        .unwrap();
        let status = waitpid(Pid::from_raw(pid), None).unwrap();
        assert_eq!(status, WaitStatus::Exited(Pid::from_raw(pid), 3));
    }
}
