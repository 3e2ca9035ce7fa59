//! The default seccomp filter (`brig_spec::seccomp` lists it by name),
//! built for the architecture this runs on with `seccompiler`: every call
//! not allowed fails with EPERM; `clone` is allowed without namespace
//! flags and `clone3` fails with ENOSYS (so C libraries fall back to
//! `clone`, whose flags a filter can see), unless the container has
//! SYS_ADMIN; `personality` only with the values Docker allows.

use std::collections::BTreeMap;

use brig_spec::seccomp::{
    BY_CAPABILITY, CLONE_NAMESPACE_FLAGS, DEFAULT_ALLOW, DEFAULT_ALLOW_X86_64, PERSONALITIES,
};
use brig_spec::service::{capability_number, ServiceSpec};
use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// The programs to install, in order (all of them apply: the kernel takes
/// the strictest answer); none for a privileged service.
pub fn filters(spec: &ServiceSpec, caps: u64) -> Result<Vec<BpfProgram>, String> {
    if spec.privileged {
        return Ok(Vec::new());
    }
    let has = |cap: &str| capability_number(cap).is_some_and(|n| caps & (1 << n) != 0);
    let mut allowed: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut allow = |name: &str| {
        if let Some(nr) = number(name) {
            allowed.insert(nr, Vec::new());
        }
    };
    DEFAULT_ALLOW.iter().for_each(|n| allow(n));
    if cfg!(target_arch = "x86_64") {
        DEFAULT_ALLOW_X86_64.iter().for_each(|n| allow(n));
    }
    for (cap, names) in BY_CAPABILITY {
        if has(cap) {
            names.iter().for_each(|n| allow(n));
        }
    }
    spec.seccomp_allow.iter().for_each(|n| allow(n));
    let listed = |name: &str| spec.seccomp_allow.iter().any(|n| n == name);
    // Argument checks only where nothing above allows the call outright.
    let clone = number("clone").ok_or("no clone system call")?;
    if !has("SYS_ADMIN") && !listed("clone") {
        let no_namespaces = SeccompCondition::new(
            0,
            SeccompCmpArgLen::Qword,
            SeccompCmpOp::MaskedEq(CLONE_NAMESPACE_FLAGS),
            0,
        )
        .map_err(|e| e.to_string())?;
        allowed.insert(clone, vec![rule(vec![no_namespaces])?]);
    } else {
        allowed.insert(clone, Vec::new());
    }
    let personality = number("personality").ok_or("no personality system call")?;
    if !listed("personality") {
        let rules = PERSONALITIES
            .iter()
            .map(|&p| {
                SeccompCondition::new(0, SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, p)
                    .map_err(|e| e.to_string())
                    .and_then(|c| rule(vec![c]))
            })
            .collect::<Result<Vec<_>, _>>()?;
        allowed.insert(personality, rules);
    }
    let arch = arch()?;
    let mut programs = vec![program(SeccompFilter::new(
        allowed,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch,
    ))?];
    let clone3_allowed = has("SYS_ADMIN") || listed("clone3");
    if !clone3_allowed {
        let clone3 = number("clone3").ok_or("no clone3 system call")?;
        programs.push(program(SeccompFilter::new(
            BTreeMap::from([(clone3, Vec::new())]),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        ))?);
    }
    Ok(programs)
}

fn rule(conditions: Vec<SeccompCondition>) -> Result<SeccompRule, String> {
    SeccompRule::new(conditions).map_err(|e| e.to_string())
}

fn program(filter: Result<SeccompFilter, seccompiler::BackendError>) -> Result<BpfProgram, String> {
    filter
        .and_then(BpfProgram::try_from)
        .map_err(|e| format!("building the seccomp filter: {e}"))
}

fn arch() -> Result<TargetArch, String> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err("seccomp filters are built for x86_64 and aarch64 only".into())
    }
}

/// Installs `programs` on the calling thread (no_new_privs is set first,
/// as the kernel requires of an unprivileged caller). Allocates nothing:
/// it runs in the container's child, which shares PID 1's memory.
pub fn install(programs: &[BpfProgram]) -> Result<(), nix::errno::Errno> {
    for program in programs {
        seccompiler::apply_filter(program).map_err(|e| match e {
            seccompiler::Error::Prctl(e) | seccompiler::Error::Seccomp(e) => {
                nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EINVAL))
            }
            _ => nix::errno::Errno::EINVAL,
        })?;
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

    #[test]
    fn privileged_has_none_and_sys_admin_needs_no_clone3_filter() {
        let caps = |s: &ServiceSpec| crate::plan::capability_mask(s);
        let privileged = spec("privileged = true");
        assert!(filters(&privileged, caps(&privileged)).unwrap().is_empty());
        let plain = spec("");
        assert_eq!(filters(&plain, caps(&plain)).unwrap().len(), 2);
        let admin = spec("capabilities = [\"SYS_ADMIN\"]");
        assert_eq!(filters(&admin, caps(&admin)).unwrap().len(), 1);
    }

    /// Installs the filter of `spec` in a forked child and makes each call
    /// there: what each returned, `Ok` or the errno.
    fn calls_under(spec: &ServiceSpec, calls: &[(i64, [libc::c_long; 2])]) -> Vec<Result<(), i32>> {
        let programs = filters(spec, crate::plan::capability_mask(spec)).unwrap();
        let (read, write) = nix::unistd::pipe().unwrap();
        // SAFETY: the child only makes system calls and writes to a pipe
        // with no locks or allocation, then leaves with _exit.
        match unsafe { nix::unistd::fork() }.unwrap() {
            nix::unistd::ForkResult::Child => {
                if install(&programs).is_err() {
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
