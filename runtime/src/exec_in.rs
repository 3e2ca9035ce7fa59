//! Running a command inside a service's running container, as the service
//! itself runs: its namespaces (the PID namespace included), its cgroup,
//! its user, its capabilities and nothing more, no_new_privs, a clean
//! signal state. For readiness commands, which come with the service's
//! image: they get no more than the service has.
//!
//! The caller's child joins the namespaces and the cgroup, then forks the
//! command (a PID namespace applies to children only) and waits for it, so
//! the caller reaps one process whose status is the command's.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::AsRawFd;

use brig_spec::service::ServiceSpec;

use crate::child::{account_file, environment, reset_signals, switch_user};
use crate::plan::{capability_mask, resolve_user};
use crate::Error;

/// Namespaces joined, in this order: the mount namespace last but one (it
/// changes what /proc shows), the PID namespace last (for the fork).
const NAMESPACES: [&str; 6] = ["ipc", "uts", "net", "cgroup", "mnt", "pid"];

/// Starts `command` in the container whose main process is `pid` (in the
/// caller's PID namespace), as `spec` runs it; its stdio is /dev/null. The
/// returned process ends with the command's status (or 127 when the
/// command could not be started, 126 when the setup failed).
pub fn exec_in(spec: &ServiceSpec, pid: i32, command: &[String]) -> Result<i32, Error> {
    let argv = command
        .iter()
        .map(|a| CString::new(a.as_str()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| Error::Spec("the readiness command contains a NUL byte".into()))?;
    if argv.is_empty() {
        return Err(Error::Spec("the readiness command is empty".into()));
    }
    let namespaces = NAMESPACES
        .iter()
        .map(|ns| {
            let path = format!("/proc/{pid}/ns/{ns}");
            File::open(&path).map_err(|e| Error::host(format!("opening {path}"), e))
        })
        .collect::<Result<Vec<_>, _>>()?;
    // The service's cgroup, as the kernel names it for its main process.
    let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("0::"))
                .map(|p| format!("/sys/fs/cgroup{}/cgroup.procs", p.trim_end()))
        });
    // SAFETY: the callers (PID 1, brig-container) are single-threaded; the
    // child makes syscalls, forks once more and ends with _exit.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            let code = join_and_run(spec, &namespaces, cgroup.as_deref(), &argv);
            // SAFETY: leave without running the caller's destructors.
            unsafe { libc::_exit(code) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child.as_raw()),
        Err(e) => Err(Error::host("forking for the readiness command", e)),
    }
}

/// In the caller's child: joins, forks the command, relays its status.
fn join_and_run(
    spec: &ServiceSpec,
    namespaces: &[File],
    cgroup: Option<&str>,
    argv: &[CString],
) -> i32 {
    if let Some(procs) = cgroup {
        // Before the mount namespace changes what /sys is. A service
        // without a cgroup (none on the host) runs without one.
        let _ = std::fs::write(procs, std::process::id().to_string());
    }
    for ns in namespaces {
        // SAFETY: setns on a namespace descriptor we opened; 0 = any type.
        if unsafe { libc::setns(ns.as_raw_fd(), 0) } != 0 {
            return 126;
        }
    }
    // SAFETY: as above; the grandchild only sets itself up and execs.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            // Its failure is its status: not ready.
            let _ = become_the_service(spec, argv);
            // SAFETY: leave without running destructors.
            unsafe { libc::_exit(127) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => loop {
            use nix::sys::wait::{waitpid, WaitStatus};
            match waitpid(child, None) {
                Ok(WaitStatus::Exited(_, code)) => return code,
                Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as i32,
                Ok(_) | Err(nix::Error::EINTR) => continue,
                Err(_) => return 126,
            }
        },
        Err(_) => 126,
    }
}

/// In the grandchild, inside the container: the service's user and
/// capabilities, no_new_privs unless privileged, a clean signal state,
/// /dev/null for stdio, then exec. Returns only on failure.
fn become_the_service(spec: &ServiceSpec, argv: &[CString]) -> String {
    let run = || -> Result<std::convert::Infallible, String> {
        let ids = resolve_user(
            &spec.user,
            &account_file("/etc/passwd")?,
            &account_file("/etc/group")?,
        )
        .map_err(|e| e.to_string())?;
        let envp = environment(spec, &ids.home)?;
        let caps = capability_mask(spec);
        let seccomp = crate::seccomp::filters(spec, caps)?;
        switch_user(&ids, caps)?;
        if !spec.privileged {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
                return Err("setting no_new_privs".into());
            }
        }
        reset_signals();
        if let Ok(null) = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/null")
        {
            for fd in 0..3 {
                // SAFETY: dup2 onto this process's standard descriptors.
                unsafe { libc::dup2(null.as_raw_fd(), fd) };
            }
        }
        nix::unistd::chdir(spec.working_dir.as_str()).map_err(|e| e.to_string())?;
        crate::seccomp::install(seccomp.as_ref())
            .map_err(|e| format!("installing the seccomp filter: {e}"))?;
        nix::unistd::execve(&argv[0], argv, &envp).map_err(|e| e.to_string())
    };
    match run() {
        Err(e) => e,
        Ok(never) => match never {},
    }
}
