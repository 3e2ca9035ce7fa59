//! The default seccomp filter (`brig_spec::seccomp` lists it by name),
//! compiled to classic BPF for the architecture this runs on: every call
//! not allowed fails with EPERM; `clone` is allowed without namespace
//! flags and `clone3` fails with ENOSYS (so C libraries fall back to
//! `clone`, whose flags a filter can see), unless the container has
//! SYS_ADMIN; `personality` only with the values Docker allows.
//!
//! The allowed numbers are checked as ranges, in a binary search: about
//! 200 instructions, where a linear list of rules (seccompiler's output
//! for the same rules) is 1,500. Size is what a start pays for: the kernel
//! checks and JIT-compiles the program at every install, about 1 ms for
//! the long one on the 2-core test machine.

use std::collections::BTreeSet;

use brig_spec::seccomp::{
    BY_CAPABILITY, CLONE_NAMESPACE_FLAGS, DEFAULT_ALLOW, DEFAULT_ALLOW_X86_64, PERSONALITIES,
};
use brig_spec::service::{capability_number, ServiceSpec};

/// A classic BPF program, as `seccomp(2)` takes it.
pub type Program = Vec<libc::sock_filter>;

const RET_ALLOW: u32 = 0x7fff_0000;
const RET_ERRNO: u32 = 0x0005_0000;
const DENY: u32 = RET_ERRNO | libc::EPERM as u32;
// struct seccomp_data: nr, arch, instruction_pointer, args[6] (u64, the
// low half first on both little-endian architectures).
const NR: u32 = 0;
const ARCH: u32 = 4;
const ARG0_LOW: u32 = 16;
// BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_{JEQ,JGE,JGT,JSET}|BPF_K, BPF_RET|BPF_K.
const LD_ABS: u16 = 0x20;
const JEQ: u16 = 0x15;
const JGE: u16 = 0x35;
const JGT: u16 = 0x25;
const JSET: u16 = 0x45;
const RET: u16 = 0x06;
/// x32 system calls on x86_64 carry this bit; Docker's profile allows
/// none that a 64-bit program needs.
const X32_BIT: u32 = 0x4000_0000;

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

fn op(code: u16, k: u32) -> libc::sock_filter {
    jump(code, k, 0, 0)
}

fn jump(code: u16, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The program for `spec` (with capability mask `caps`); none for a
/// privileged service.
pub fn filters(spec: &ServiceSpec, caps: u64) -> Result<Option<Program>, String> {
    if spec.privileged {
        return Ok(None);
    }
    let has = |cap: &str| capability_number(cap).is_some_and(|n| caps & (1 << n) != 0);
    let listed = |name: &str| spec.seccomp_allow.iter().any(|n| n == name);
    let mut names: Vec<&str> = DEFAULT_ALLOW.to_vec();
    if cfg!(target_arch = "x86_64") {
        names.extend(DEFAULT_ALLOW_X86_64);
    }
    for (cap, allowed) in BY_CAPABILITY {
        if has(cap) {
            names.extend(*allowed);
        }
    }
    names.extend(spec.seccomp_allow.iter().map(String::as_str));
    let mut allowed: BTreeSet<u32> = names
        .iter()
        .filter_map(|n| number(n))
        .map(|n| n as u32)
        .collect();
    let needed = |name: &str| {
        number(name)
            .map(|n| n as u32)
            .ok_or_else(|| format!("no {name} system call on this architecture"))
    };

    let mut program = vec![
        op(LD_ABS, ARCH),
        jump(JEQ, AUDIT_ARCH, 1, 0),
        // Another ABI's calls (i386's int 0x80): their numbers mean other
        // calls.
        op(RET, DENY),
        op(LD_ABS, NR),
    ];
    if cfg!(target_arch = "x86_64") {
        program.extend([jump(JSET, X32_BIT, 0, 1), op(RET, DENY)]);
    }
    // Checked before the ranges, which then leave them out.
    let clone = needed("clone")?;
    if has("SYS_ADMIN") || listed("clone") {
        allowed.insert(clone);
    } else {
        allowed.remove(&clone);
        program.extend([
            jump(JEQ, clone, 0, 4),
            op(LD_ABS, ARG0_LOW),
            jump(JSET, CLONE_NAMESPACE_FLAGS as u32, 1, 0),
            op(RET, RET_ALLOW),
            op(RET, DENY),
        ]);
    }
    if !has("SYS_ADMIN") && !listed("clone3") {
        let clone3 = needed("clone3")?;
        allowed.remove(&clone3);
        program.extend([
            jump(JEQ, clone3, 0, 1),
            op(RET, RET_ERRNO | libc::ENOSYS as u32),
        ]);
    }
    if !listed("personality") {
        let personality = needed("personality")?;
        allowed.remove(&personality);
        let n = PERSONALITIES.len();
        program.push(jump(JEQ, personality, 0, (n + 3) as u8));
        program.push(op(LD_ABS, ARG0_LOW));
        for (i, &value) in PERSONALITIES.iter().enumerate() {
            program.push(jump(JEQ, value as u32, (n - i) as u8, 0));
        }
        program.extend([op(RET, DENY), op(RET, RET_ALLOW)]);
    }
    program.extend(ranges_tree(&ranges(&allowed), 0, u32::MAX)?);
    Ok(Some(program))
}

/// Runs of consecutive numbers.
fn ranges(numbers: &BTreeSet<u32>) -> Vec<(u32, u32)> {
    let mut runs: Vec<(u32, u32)> = Vec::new();
    for &n in numbers {
        match runs.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => runs.push((n, n)),
        }
    }
    runs
}

/// Code that allows the call number in the accumulator when it is in one
/// of `runs`, knowing it lies in `low..=high`; denies it otherwise. A
/// binary search: each node jumps over its lower half when the number is
/// at or above the middle run's start.
fn ranges_tree(runs: &[(u32, u32)], low: u32, high: u32) -> Result<Program, String> {
    let leaf = |tests: Program| {
        let mut code = tests;
        code.extend([op(RET, RET_ALLOW), op(RET, DENY)]);
        code
    };
    Ok(match runs {
        [] => vec![op(RET, DENY)],
        [(first, last)] => match (*first > low, *last < high) {
            (true, true) => leaf(vec![jump(JGE, *first, 0, 2), jump(JGT, *last, 1, 0)]),
            (true, false) => leaf(vec![jump(JGE, *first, 0, 1)]),
            (false, true) => leaf(vec![jump(JGT, *last, 1, 0)]),
            (false, false) => vec![op(RET, RET_ALLOW)],
        },
        _ => {
            let middle = runs.len() / 2;
            let start = runs[middle].0;
            let below = ranges_tree(&runs[..middle], low, start - 1)?;
            let above = ranges_tree(&runs[middle..], start, high)?;
            let over = u8::try_from(below.len()).map_err(|_| {
                "the seccomp filter's search tree is too deep to jump over".to_string()
            })?;
            let mut code = vec![jump(JGE, start, over, 0)];
            code.extend(below);
            code.extend(above);
            code
        }
    })
}

/// Installs `program` on the calling thread, after no_new_privs (which
/// the kernel requires of an unprivileged caller), in the container's
/// child, last before the exec.
pub fn install(program: Option<&Program>) -> Result<(), nix::errno::Errno> {
    let Some(program) = program else {
        return Ok(());
    };
    // SAFETY: prctl with integer arguments only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(nix::errno::Errno::last());
    }
    let fprog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: the kernel copies the program that `fprog` points at, which
    // lives for the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0,
            &fprog as *const libc::sock_fprog,
        )
    };
    if rc != 0 {
        return Err(nix::errno::Errno::last());
    }
    Ok(())
}

/// The number of system call `name` on this architecture.
pub fn number(name: &str) -> Option<i64> {
    #[cfg(target_arch = "x86_64")]
    if let Some(nr) = number_x86_64(name) {
        return Some(nr);
    }
    Some(match name {
        "accept" => libc::SYS_accept,
        "accept4" => libc::SYS_accept4,
        "acct" => libc::SYS_acct,
        "add_key" => libc::SYS_add_key,
        "adjtimex" => libc::SYS_adjtimex,
        "bind" => libc::SYS_bind,
        "bpf" => libc::SYS_bpf,
        "brk" => libc::SYS_brk,
        "cachestat" => 451, // same number on both; not in libc yet
        "capget" => libc::SYS_capget,
        "capset" => libc::SYS_capset,
        "chdir" => libc::SYS_chdir,
        "chroot" => libc::SYS_chroot,
        "clock_adjtime" => libc::SYS_clock_adjtime,
        "clock_getres" => libc::SYS_clock_getres,
        "clock_gettime" => libc::SYS_clock_gettime,
        "clock_nanosleep" => libc::SYS_clock_nanosleep,
        "clock_settime" => libc::SYS_clock_settime,
        "clone" => libc::SYS_clone,
        "clone3" => libc::SYS_clone3,
        "close" => libc::SYS_close,
        "close_range" => libc::SYS_close_range,
        "connect" => libc::SYS_connect,
        "copy_file_range" => libc::SYS_copy_file_range,
        "delete_module" => libc::SYS_delete_module,
        "dup" => libc::SYS_dup,
        "dup3" => libc::SYS_dup3,
        "epoll_create1" => libc::SYS_epoll_create1,
        "epoll_ctl" => libc::SYS_epoll_ctl,
        "epoll_pwait" => libc::SYS_epoll_pwait,
        "epoll_pwait2" => libc::SYS_epoll_pwait2,
        "eventfd2" => libc::SYS_eventfd2,
        "execve" => libc::SYS_execve,
        "execveat" => libc::SYS_execveat,
        "exit" => libc::SYS_exit,
        "exit_group" => libc::SYS_exit_group,
        "faccessat" => libc::SYS_faccessat,
        "faccessat2" => libc::SYS_faccessat2,
        "fadvise64" => libc::SYS_fadvise64,
        "fallocate" => libc::SYS_fallocate,
        "fanotify_init" => libc::SYS_fanotify_init,
        "fanotify_mark" => libc::SYS_fanotify_mark,
        "fchdir" => libc::SYS_fchdir,
        "fchmod" => libc::SYS_fchmod,
        "fchmodat" => libc::SYS_fchmodat,
        "fchmodat2" => 452, // same number on both; not in every libc target yet
        "fchown" => libc::SYS_fchown,
        "fchownat" => libc::SYS_fchownat,
        "fcntl" => libc::SYS_fcntl,
        "fdatasync" => libc::SYS_fdatasync,
        "fgetxattr" => libc::SYS_fgetxattr,
        "finit_module" => libc::SYS_finit_module,
        "flistxattr" => libc::SYS_flistxattr,
        "flock" => libc::SYS_flock,
        "fremovexattr" => libc::SYS_fremovexattr,
        "fsconfig" => libc::SYS_fsconfig,
        "fsetxattr" => libc::SYS_fsetxattr,
        "fsmount" => libc::SYS_fsmount,
        "fsopen" => libc::SYS_fsopen,
        "fspick" => libc::SYS_fspick,
        "fstat" => libc::SYS_fstat,
        "fstatfs" => libc::SYS_fstatfs,
        "fsync" => libc::SYS_fsync,
        "ftruncate" => libc::SYS_ftruncate,
        "futex" => libc::SYS_futex,
        "futex_requeue" => 456, // same number on both; not in libc yet
        "futex_wait" => 455,    // same number on both; not in libc yet
        "futex_waitv" => libc::SYS_futex_waitv,
        "futex_wake" => 454, // same number on both; not in libc yet
        "get_mempolicy" => libc::SYS_get_mempolicy,
        "get_robust_list" => libc::SYS_get_robust_list,
        "getcpu" => libc::SYS_getcpu,
        "getcwd" => libc::SYS_getcwd,
        "getdents64" => libc::SYS_getdents64,
        "getegid" => libc::SYS_getegid,
        "geteuid" => libc::SYS_geteuid,
        "getgid" => libc::SYS_getgid,
        "getgroups" => libc::SYS_getgroups,
        "getitimer" => libc::SYS_getitimer,
        "getpeername" => libc::SYS_getpeername,
        "getpgid" => libc::SYS_getpgid,
        "getpid" => libc::SYS_getpid,
        "getppid" => libc::SYS_getppid,
        "getpriority" => libc::SYS_getpriority,
        "getrandom" => libc::SYS_getrandom,
        "getresgid" => libc::SYS_getresgid,
        "getresuid" => libc::SYS_getresuid,
        "getrlimit" => libc::SYS_getrlimit,
        "getrusage" => libc::SYS_getrusage,
        "getsid" => libc::SYS_getsid,
        "getsockname" => libc::SYS_getsockname,
        "getsockopt" => libc::SYS_getsockopt,
        "gettid" => libc::SYS_gettid,
        "gettimeofday" => libc::SYS_gettimeofday,
        "getuid" => libc::SYS_getuid,
        "getxattr" => libc::SYS_getxattr,
        "init_module" => libc::SYS_init_module,
        "inotify_add_watch" => libc::SYS_inotify_add_watch,
        "inotify_init1" => libc::SYS_inotify_init1,
        "inotify_rm_watch" => libc::SYS_inotify_rm_watch,
        "io_cancel" => libc::SYS_io_cancel,
        "io_destroy" => libc::SYS_io_destroy,
        "io_getevents" => libc::SYS_io_getevents,
        // Not in libc for these targets yet.
        "io_pgetevents" if cfg!(target_arch = "x86_64") => 333,
        "io_pgetevents" => 292,
        "io_setup" => libc::SYS_io_setup,
        "io_submit" => libc::SYS_io_submit,
        "io_uring_enter" => libc::SYS_io_uring_enter,
        "io_uring_register" => libc::SYS_io_uring_register,
        "io_uring_setup" => libc::SYS_io_uring_setup,
        "ioctl" => libc::SYS_ioctl,
        "ioprio_get" => libc::SYS_ioprio_get,
        "ioprio_set" => libc::SYS_ioprio_set,
        "kcmp" => libc::SYS_kcmp,
        "kexec_file_load" if cfg!(target_arch = "x86_64") => 320,
        "kexec_file_load" => 294,
        "kexec_load" => libc::SYS_kexec_load,
        "keyctl" => libc::SYS_keyctl,
        "kill" => libc::SYS_kill,
        "landlock_add_rule" => libc::SYS_landlock_add_rule,
        "landlock_create_ruleset" => libc::SYS_landlock_create_ruleset,
        "landlock_restrict_self" => libc::SYS_landlock_restrict_self,
        "lgetxattr" => libc::SYS_lgetxattr,
        "linkat" => libc::SYS_linkat,
        "listen" => libc::SYS_listen,
        "listxattr" => libc::SYS_listxattr,
        "llistxattr" => libc::SYS_llistxattr,
        "lookup_dcookie" => libc::SYS_lookup_dcookie,
        "lremovexattr" => libc::SYS_lremovexattr,
        "lseek" => libc::SYS_lseek,
        "lsetxattr" => libc::SYS_lsetxattr,
        "madvise" => libc::SYS_madvise,
        "map_shadow_stack" => 453, // same number on both; not in libc yet
        "mbind" => libc::SYS_mbind,
        "membarrier" => libc::SYS_membarrier,
        "memfd_create" => libc::SYS_memfd_create,
        "memfd_secret" => libc::SYS_memfd_secret,
        "mincore" => libc::SYS_mincore,
        "mkdirat" => libc::SYS_mkdirat,
        "mknodat" => libc::SYS_mknodat,
        "mlock" => libc::SYS_mlock,
        "mlock2" => libc::SYS_mlock2,
        "mlockall" => libc::SYS_mlockall,
        "mmap" => libc::SYS_mmap,
        "mount" => libc::SYS_mount,
        "mount_setattr" => libc::SYS_mount_setattr,
        "move_mount" => libc::SYS_move_mount,
        "move_pages" => libc::SYS_move_pages,
        "mprotect" => libc::SYS_mprotect,
        "mq_getsetattr" => libc::SYS_mq_getsetattr,
        "mq_notify" => libc::SYS_mq_notify,
        "mq_open" => libc::SYS_mq_open,
        "mq_timedreceive" => libc::SYS_mq_timedreceive,
        "mq_timedsend" => libc::SYS_mq_timedsend,
        "mq_unlink" => libc::SYS_mq_unlink,
        "mremap" => libc::SYS_mremap,
        "msgctl" => libc::SYS_msgctl,
        "msgget" => libc::SYS_msgget,
        "msgrcv" => libc::SYS_msgrcv,
        "msgsnd" => libc::SYS_msgsnd,
        "msync" => libc::SYS_msync,
        "munlock" => libc::SYS_munlock,
        "munlockall" => libc::SYS_munlockall,
        "munmap" => libc::SYS_munmap,
        "name_to_handle_at" => libc::SYS_name_to_handle_at,
        "nanosleep" => libc::SYS_nanosleep,
        "newfstatat" => libc::SYS_newfstatat,
        "nfsservctl" => libc::SYS_nfsservctl,
        "open_by_handle_at" => libc::SYS_open_by_handle_at,
        "open_tree" => libc::SYS_open_tree,
        "openat" => libc::SYS_openat,
        "openat2" => libc::SYS_openat2,
        "perf_event_open" => libc::SYS_perf_event_open,
        "personality" => libc::SYS_personality,
        "pidfd_getfd" => libc::SYS_pidfd_getfd,
        "pidfd_open" => libc::SYS_pidfd_open,
        "pidfd_send_signal" => libc::SYS_pidfd_send_signal,
        "pipe2" => libc::SYS_pipe2,
        "pivot_root" => libc::SYS_pivot_root,
        "pkey_alloc" => libc::SYS_pkey_alloc,
        "pkey_free" => libc::SYS_pkey_free,
        "pkey_mprotect" => libc::SYS_pkey_mprotect,
        "ppoll" => libc::SYS_ppoll,
        "prctl" => libc::SYS_prctl,
        "pread64" => libc::SYS_pread64,
        "preadv" => libc::SYS_preadv,
        "preadv2" => libc::SYS_preadv2,
        "prlimit64" => libc::SYS_prlimit64,
        "process_madvise" => libc::SYS_process_madvise,
        "process_mrelease" => libc::SYS_process_mrelease,
        "process_vm_readv" => libc::SYS_process_vm_readv,
        "process_vm_writev" => libc::SYS_process_vm_writev,
        "pselect6" => libc::SYS_pselect6,
        "ptrace" => libc::SYS_ptrace,
        "pwrite64" => libc::SYS_pwrite64,
        "pwritev" => libc::SYS_pwritev,
        "pwritev2" => libc::SYS_pwritev2,
        "quotactl" => libc::SYS_quotactl,
        "quotactl_fd" => libc::SYS_quotactl_fd,
        "read" => libc::SYS_read,
        "readahead" => libc::SYS_readahead,
        "readlinkat" => libc::SYS_readlinkat,
        "readv" => libc::SYS_readv,
        "reboot" => libc::SYS_reboot,
        "recvfrom" => libc::SYS_recvfrom,
        "recvmmsg" => libc::SYS_recvmmsg,
        "recvmsg" => libc::SYS_recvmsg,
        "remap_file_pages" => libc::SYS_remap_file_pages,
        "removexattr" => libc::SYS_removexattr,
        "renameat" => libc::SYS_renameat,
        "renameat2" => libc::SYS_renameat2,
        "request_key" => libc::SYS_request_key,
        "restart_syscall" => libc::SYS_restart_syscall,
        "rseq" => libc::SYS_rseq,
        "rt_sigaction" => libc::SYS_rt_sigaction,
        "rt_sigpending" => libc::SYS_rt_sigpending,
        "rt_sigprocmask" => libc::SYS_rt_sigprocmask,
        "rt_sigqueueinfo" => libc::SYS_rt_sigqueueinfo,
        "rt_sigreturn" => libc::SYS_rt_sigreturn,
        "rt_sigsuspend" => libc::SYS_rt_sigsuspend,
        "rt_sigtimedwait" => libc::SYS_rt_sigtimedwait,
        "rt_tgsigqueueinfo" => libc::SYS_rt_tgsigqueueinfo,
        "sched_get_priority_max" => libc::SYS_sched_get_priority_max,
        "sched_get_priority_min" => libc::SYS_sched_get_priority_min,
        "sched_getaffinity" => libc::SYS_sched_getaffinity,
        "sched_getattr" => libc::SYS_sched_getattr,
        "sched_getparam" => libc::SYS_sched_getparam,
        "sched_getscheduler" => libc::SYS_sched_getscheduler,
        "sched_rr_get_interval" => libc::SYS_sched_rr_get_interval,
        "sched_setaffinity" => libc::SYS_sched_setaffinity,
        "sched_setattr" => libc::SYS_sched_setattr,
        "sched_setparam" => libc::SYS_sched_setparam,
        "sched_setscheduler" => libc::SYS_sched_setscheduler,
        "sched_yield" => libc::SYS_sched_yield,
        "seccomp" => libc::SYS_seccomp,
        "semctl" => libc::SYS_semctl,
        "semget" => libc::SYS_semget,
        "semop" => libc::SYS_semop,
        "semtimedop" => libc::SYS_semtimedop,
        "sendfile" => libc::SYS_sendfile,
        "sendmmsg" => libc::SYS_sendmmsg,
        "sendmsg" => libc::SYS_sendmsg,
        "sendto" => libc::SYS_sendto,
        "set_mempolicy" => libc::SYS_set_mempolicy,
        "set_mempolicy_home_node" => libc::SYS_set_mempolicy_home_node,
        "set_robust_list" => libc::SYS_set_robust_list,
        "set_tid_address" => libc::SYS_set_tid_address,
        "setdomainname" => libc::SYS_setdomainname,
        "setfsgid" => libc::SYS_setfsgid,
        "setfsuid" => libc::SYS_setfsuid,
        "setgid" => libc::SYS_setgid,
        "setgroups" => libc::SYS_setgroups,
        "sethostname" => libc::SYS_sethostname,
        "setitimer" => libc::SYS_setitimer,
        "setns" => libc::SYS_setns,
        "setpgid" => libc::SYS_setpgid,
        "setpriority" => libc::SYS_setpriority,
        "setregid" => libc::SYS_setregid,
        "setresgid" => libc::SYS_setresgid,
        "setresuid" => libc::SYS_setresuid,
        "setreuid" => libc::SYS_setreuid,
        "setrlimit" => libc::SYS_setrlimit,
        "setsid" => libc::SYS_setsid,
        "setsockopt" => libc::SYS_setsockopt,
        "settimeofday" => libc::SYS_settimeofday,
        "setuid" => libc::SYS_setuid,
        "setxattr" => libc::SYS_setxattr,
        "shmat" => libc::SYS_shmat,
        "shmctl" => libc::SYS_shmctl,
        "shmdt" => libc::SYS_shmdt,
        "shmget" => libc::SYS_shmget,
        "shutdown" => libc::SYS_shutdown,
        "sigaltstack" => libc::SYS_sigaltstack,
        "signalfd4" => libc::SYS_signalfd4,
        "socket" => libc::SYS_socket,
        "socketpair" => libc::SYS_socketpair,
        "splice" => libc::SYS_splice,
        "statfs" => libc::SYS_statfs,
        "statx" => libc::SYS_statx,
        "swapoff" => libc::SYS_swapoff,
        "swapon" => libc::SYS_swapon,
        "symlinkat" => libc::SYS_symlinkat,
        "sync" => libc::SYS_sync,
        "sync_file_range" => libc::SYS_sync_file_range,
        "syncfs" => libc::SYS_syncfs,
        "sysinfo" => libc::SYS_sysinfo,
        "syslog" => libc::SYS_syslog,
        "tee" => libc::SYS_tee,
        "tgkill" => libc::SYS_tgkill,
        "timer_create" => libc::SYS_timer_create,
        "timer_delete" => libc::SYS_timer_delete,
        "timer_getoverrun" => libc::SYS_timer_getoverrun,
        "timer_gettime" => libc::SYS_timer_gettime,
        "timer_settime" => libc::SYS_timer_settime,
        "timerfd_create" => libc::SYS_timerfd_create,
        "timerfd_gettime" => libc::SYS_timerfd_gettime,
        "timerfd_settime" => libc::SYS_timerfd_settime,
        "times" => libc::SYS_times,
        "tkill" => libc::SYS_tkill,
        "truncate" => libc::SYS_truncate,
        "umask" => libc::SYS_umask,
        "umount2" => libc::SYS_umount2,
        "uname" => libc::SYS_uname,
        "unlinkat" => libc::SYS_unlinkat,
        "unshare" => libc::SYS_unshare,
        "userfaultfd" => libc::SYS_userfaultfd,
        "utimensat" => libc::SYS_utimensat,
        "vhangup" => libc::SYS_vhangup,
        "vmsplice" => libc::SYS_vmsplice,
        "wait4" => libc::SYS_wait4,
        "waitid" => libc::SYS_waitid,
        "write" => libc::SYS_write,
        "writev" => libc::SYS_writev,
        _ => return None,
    })
}

#[cfg(target_arch = "x86_64")]
fn number_x86_64(name: &str) -> Option<i64> {
    Some(match name {
        "access" => libc::SYS_access,
        "alarm" => libc::SYS_alarm,
        "arch_prctl" => libc::SYS_arch_prctl,
        "chmod" => libc::SYS_chmod,
        "chown" => libc::SYS_chown,
        "creat" => libc::SYS_creat,
        "dup2" => libc::SYS_dup2,
        "epoll_create" => libc::SYS_epoll_create,
        "epoll_wait" => libc::SYS_epoll_wait,
        "eventfd" => libc::SYS_eventfd,
        "fork" => libc::SYS_fork,
        "futimesat" => libc::SYS_futimesat,
        "getdents" => libc::SYS_getdents,
        "getpgrp" => libc::SYS_getpgrp,
        "inotify_init" => libc::SYS_inotify_init,
        "ioperm" => libc::SYS_ioperm,
        "iopl" => libc::SYS_iopl,
        "lchown" => libc::SYS_lchown,
        "link" => libc::SYS_link,
        "lstat" => libc::SYS_lstat,
        "mkdir" => libc::SYS_mkdir,
        "mknod" => libc::SYS_mknod,
        "modify_ldt" => libc::SYS_modify_ldt,
        "open" => libc::SYS_open,
        "pause" => libc::SYS_pause,
        "pipe" => libc::SYS_pipe,
        "poll" => libc::SYS_poll,
        "readlink" => libc::SYS_readlink,
        "rename" => libc::SYS_rename,
        "rmdir" => libc::SYS_rmdir,
        "select" => libc::SYS_select,
        "signalfd" => libc::SYS_signalfd,
        "stat" => libc::SYS_stat,
        "symlink" => libc::SYS_symlink,
        "time" => libc::SYS_time,
        "unlink" => libc::SYS_unlink,
        "utime" => libc::SYS_utime,
        "utimes" => libc::SYS_utimes,
        "vfork" => libc::SYS_vfork,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::seccomp::{known, ONLY_WHEN_LISTED};

    fn spec(extra: &str) -> ServiceSpec {
        ServiceSpec::parse(
            "t",
            &format!(
                "command = [\"/bin/true\"]\n{extra}\n[rootfs]\npackages = [\"busybox-static\"]\n"
            ),
        )
        .unwrap()
    }

    #[test]
    fn every_listed_name_has_a_number_here() {
        let x86_only =
            |n: &str| DEFAULT_ALLOW_X86_64.contains(&n) || ["iopl", "ioperm"].contains(&n);
        let all = DEFAULT_ALLOW
            .iter()
            .chain(DEFAULT_ALLOW_X86_64)
            .chain(ONLY_WHEN_LISTED)
            .chain(BY_CAPABILITY.iter().flat_map(|(_, names)| names.iter()));
        for name in all {
            assert!(known(name));
            let expected = cfg!(target_arch = "x86_64") || !x86_only(name);
            assert_eq!(number(name).is_some(), expected, "{name}");
        }
        assert_eq!(number("read"), Some(libc::SYS_read));
        assert_eq!(number("no_such_call"), None);
    }

    /// What the kernel would answer for call `nr` with first argument
    /// `arg0` on `arch`: the program run by a small classic BPF
    /// interpreter (the instructions the compiler emits, nothing more).
    fn verdict(program: &Program, arch: u32, nr: u32, arg0: u32) -> u32 {
        let (mut acc, mut pc) = (0u32, 0usize);
        loop {
            let i = program[pc];
            pc += 1;
            match i.code {
                LD_ABS => {
                    acc = match i.k {
                        NR => nr,
                        ARCH => arch,
                        ARG0_LOW => arg0,
                        k => panic!("a load from offset {k}"),
                    }
                }
                RET => return i.k,
                JEQ | JGE | JGT | JSET => {
                    let taken = match i.code {
                        JEQ => acc == i.k,
                        JGE => acc >= i.k,
                        JGT => acc > i.k,
                        _ => acc & i.k != 0,
                    };
                    pc += usize::from(if taken { i.jt } else { i.jf });
                }
                code => panic!("instruction {code:#x}"),
            }
        }
    }

    #[test]
    fn the_program_allows_exactly_the_listed_numbers() {
        let caps = |s: &ServiceSpec| crate::plan::capability_mask(s);
        let privileged = spec("privileged = true");
        assert!(filters(&privileged, caps(&privileged)).unwrap().is_none());
        for extra in [
            "",
            "capabilities = [\"SYS_ADMIN\", \"SYS_TIME\"]",
            "seccomp_allow = [\"keyctl\", \"clone\"]",
        ] {
            let spec = spec(extra);
            let program = filters(&spec, caps(&spec)).unwrap().unwrap();
            assert!(program.len() < 300, "{} instructions", program.len());
            let mut names: Vec<&str> = DEFAULT_ALLOW.to_vec();
            if cfg!(target_arch = "x86_64") {
                names.extend(DEFAULT_ALLOW_X86_64);
            }
            // The default capabilities (SYS_CHROOT: chroot) and the added.
            for (cap, calls) in BY_CAPABILITY {
                let bit = 1u64 << capability_number(cap).unwrap();
                if caps(&spec) & bit != 0 {
                    names.extend(*calls);
                }
            }
            names.extend(spec.seccomp_allow.iter().map(String::as_str));
            let allowed: BTreeSet<u32> = names
                .iter()
                .filter_map(|n| number(n))
                .map(|n| n as u32)
                .collect();
            let n = |name| number(name).unwrap() as u32;
            let admin = extra.contains("SYS_ADMIN");
            for nr in (0..1024).chain([u32::MAX, 0x8000_0000]) {
                let got = verdict(&program, AUDIT_ARCH, nr, 0);
                let want = if nr == n("clone3") && !admin {
                    RET_ERRNO | libc::ENOSYS as u32
                } else if allowed.contains(&nr) || nr == n("clone") || nr == n("personality") {
                    RET_ALLOW
                } else {
                    DENY
                };
                assert_eq!(got, want, "{extra:?}: call {nr}");
            }
            // Another ABI, x32 numbers: refused.
            assert_eq!(verdict(&program, 0x4000_0003, n("read"), 0), DENY);
            if cfg!(target_arch = "x86_64") {
                assert_eq!(verdict(&program, AUDIT_ARCH, X32_BIT | n("read"), 0), DENY);
            }
            // Arguments: a new user namespace, an unlisted personality.
            let newuser = libc::CLONE_NEWUSER as u32;
            let want = if admin || extra.contains("clone") {
                RET_ALLOW
            } else {
                DENY
            };
            assert_eq!(
                verdict(&program, AUDIT_ARCH, n("clone"), newuser),
                want,
                "{extra:?}"
            );
            assert_eq!(
                verdict(&program, AUDIT_ARCH, n("personality"), 0x0040_0000),
                DENY
            );
            assert_eq!(
                verdict(&program, AUDIT_ARCH, n("personality"), 0xffff_ffff),
                RET_ALLOW
            );
        }
    }

    /// Installs the filter of `spec` in a forked child and makes each call
    /// there: what each returned, `Ok` or the errno.
    fn calls_under(spec: &ServiceSpec, calls: &[(i64, [libc::c_long; 2])]) -> Vec<Result<(), i32>> {
        let program = filters(spec, crate::plan::capability_mask(spec)).unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes system calls and writes to a pipe
        // with no locks or allocation, then leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                if install(program.as_ref()).is_err() {
                    unsafe { libc::_exit(99) };
                }
                let mut results = [0i32; 16];
                for (i, (nr, args)) in calls.iter().enumerate() {
                    // SAFETY: each call is made with integer arguments that
                    // point at nothing; those that succeed change only this
                    // throwaway child.
                    let rc = unsafe { libc::syscall(*nr, args[0], args[1], 0, 0, 0, 0) };
                    results[i] = if rc < 0 {
                        std::io::Error::last_os_error().raw_os_error().unwrap_or(-1)
                    } else {
                        0
                    };
                }
                let bytes: Vec<u8> = results.iter().flat_map(|r| r.to_ne_bytes()).collect();
                let _ = nix::unistd::write(&write, &bytes);
                unsafe { libc::_exit(0) };
            }
            nix::unistd::ForkResult::Parent { child } => {
                drop(write);
                let mut bytes = vec![0u8; 64];
                let mut file = std::fs::File::from(read);
                std::io::Read::read_exact(&mut file, &mut bytes).expect("the child's results");
                let status = nix::sys::wait::waitpid(child, None).unwrap();
                assert_eq!(status, nix::sys::wait::WaitStatus::Exited(child, 0));
                bytes
                    .chunks(4)
                    .take(calls.len())
                    .map(|c| i32::from_ne_bytes(c.try_into().unwrap()))
                    .map(|r| if r == 0 { Ok(()) } else { Err(r) })
                    .collect()
            }
        }
    }

    #[test]
    fn the_filter_refuses_namespaces_the_key_store_and_io_uring_and_clone3_says_enosys() {
        let n = |name| number(name).unwrap();
        let newuser = libc::CLONE_NEWUSER as libc::c_long;
        let calls = [
            (n("getpid"), [0, 0]),
            (n("unshare"), [newuser, 0]),
            (n("keyctl"), [0, 0]),
            (n("io_uring_setup"), [0, 0]),
            (n("clone3"), [0, 0]),
            (n("personality"), [0xffff_ffff, 0]),
            // READ_IMPLIES_EXEC: not among Docker's values.
            (n("personality"), [0x0040_0000, 0]),
            (n("userfaultfd"), [0, 0]),
            // A new process in a new user namespace (a plain fork-like
            // clone would succeed: the root tests' shells fork).
            (n("clone"), [newuser | libc::SIGCHLD as libc::c_long, 0]),
        ];
        let results = calls_under(&spec(""), &calls);
        assert_eq!(
            results,
            [
                Ok(()),
                Err(libc::EPERM),
                Err(libc::EPERM),
                Err(libc::EPERM),
                Err(libc::ENOSYS),
                Ok(()),
                Err(libc::EPERM),
                Err(libc::EPERM),
                Err(libc::EPERM),
            ]
        );
        // Listed in the spec: the call reaches the kernel, which answers
        // for itself (keyctl 0 with no arguments: EINVAL or the like, never
        // the filter's EPERM).
        let listed = calls_under(&spec("seccomp_allow = [\"keyctl\"]"), &calls[2..3]);
        assert_ne!(listed, [Err(libc::EPERM)]);
    }
}
