//! The CPU time each test costs: its builds' (`brig build`, with cargo,
//! mmdebstrap and tar2sqfs under it) and its guests' (`brig run` and
//! QEMU), as the kernel counts a child and the children it waited for
//! (wait4's resource usage). The harness prints it beside each test's
//! time: with every core busy, this, not the time, is what a test adds to
//! a run.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Mutex;

static SPENT: Mutex<BTreeMap<String, f64>> = Mutex::new(BTreeMap::new());

/// Adds `seconds` to the test this thread runs (the thread's name).
fn charge(seconds: f64) {
    let name = std::thread::current().name().unwrap_or("main").to_string();
    *SPENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .entry(name)
        .or_default() += seconds;
}

/// The CPU seconds charged to test `name`.
pub fn spent(name: &str) -> f64 {
    SPENT
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .get(name)
        .copied()
        .unwrap_or(0.0)
}

/// Reaps `child` if it has ended (or waits for it, with `block`), charging
/// its CPU time to this test. Once this returned a status, `child` must
/// not be waited for or signalled again: its pid may be another's.
pub fn reap(child: &Child, block: bool) -> Option<ExitStatus> {
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value for wait4 to fill in.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let flags = if block { 0 } else { libc::WNOHANG };
    let reaped = loop {
        // SAFETY: wait4 on our own child with valid pointers to locals.
        let reaped = unsafe { libc::wait4(pid, &mut status, flags, &mut usage) };
        if reaped != -1 || std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted
        {
            break reaped;
        }
    };
    if reaped != pid {
        return None;
    }
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    charge(seconds(usage.ru_utime) + seconds(usage.ru_stime));
    Some(ExitStatus::from_raw(status))
}

/// `command.output()`, charging the command's CPU time to this test.
pub fn output(command: &mut Command) -> std::io::Result<Output> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Both pipes read at once, so neither fills while the other is read.
    let mut stdout = child.stdout.take().expect("piped");
    let mut stderr = child.stderr.take().expect("piped");
    let err = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = stderr.read_to_end(&mut buf);
        buf
    });
    let mut out = Vec::new();
    stdout.read_to_end(&mut out)?;
    let err = err.join().unwrap_or_default();
    let status = reap(&child, true).expect("a blocking wait reaps the child");
    Ok(Output {
        status,
        stdout: out,
        stderr: err,
    })
}
