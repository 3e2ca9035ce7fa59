//! Messages on the console, each stamped with the time since the kernel
//! started (CLOCK_BOOTTIME, the clock printk uses).

use std::io::{IsTerminal, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::stat::Mode;
use nix::time::{clock_gettime, ClockId};

pub fn since_boot() -> Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// PID 1's messages since the log service last took them, with when they
/// were said (bounded: the oldest go).
static NOTES: std::sync::Mutex<Vec<(Duration, Level, String)>> = std::sync::Mutex::new(Vec::new());
const NOTES_KEPT: usize = 1024;

/// The messages said since the last call, oldest first.
pub fn take_notes() -> Vec<(Duration, Level, String)> {
    NOTES
        .lock()
        .map(|mut notes| std::mem::take(&mut *notes))
        .unwrap_or_default()
}

/// How much one of PID 1's messages matters: the log service gets it at
/// this severity (an error, or information).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Error,
}

/// Says `message` on the console and keeps it for the log service.
pub fn say(message: &str) {
    note(Level::Info, message.to_string());
}

/// Says that something went wrong: `error: <message>` on the console, at
/// severity error in the log.
pub fn say_error(message: &str) {
    note(Level::Error, format!("error: {message}"));
}

fn note(level: Level, text: String) {
    if let Ok(mut notes) = NOTES.lock() {
        if notes.len() >= NOTES_KEPT {
            notes.remove(0);
        }
        notes.push((since_boot(), level, text.clone()));
    }
    echo(&text);
}

/// As `say`, on the console only (a service's line echoed there, which
/// reaches the log service as that service's).
pub fn echo(message: &str) {
    let t = since_boot();
    let line = format!(
        "brig: {message} [t={}.{:03}s]\n",
        t.as_secs(),
        t.subsec_millis()
    );
    let Ok(mut console) = CONSOLE.lock() else {
        return;
    };
    let stdout = std::io::stdout();
    if console.is_none() && stdout.is_terminal() {
        *console = reopen_nonblocking(stdout.as_fd()).ok();
    }
    match &*console {
        Some(fd) => {
            write_line(fd.as_fd(), &line, &CONSOLE_STALLED);
        }
        // Not a terminal (a file or pipe a tool's output goes to), or
        // before /proc is mounted (PID 1's first line): as it is.
        None => {
            let _ = stdout.lock().write_all(line.as_bytes());
        }
    }
}

/// PID 1's own non-blocking handle on its console (its stdout when that is
/// a terminal), made once /proc is there.
static CONSOLE: Mutex<Option<OwnedFd>> = Mutex::new(None);
/// Set once a line has waited `ROOM_WAIT_MS` for the console in vain; until
/// the console takes a line at once again, lines are dropped unwaited.
static CONSOLE_STALLED: AtomicBool = AtomicBool::new(false);
/// How long a line waits for room: a 115200 baud serial line empties a
/// full 4 KiB buffer in 0.4 s.
const ROOM_WAIT_MS: u16 = 1000;

/// The descriptor `say` writes to, if it has one: a child of PID 1 that
/// closes what it inherited keeps this one (its number, reused, would
/// take the console's lines).
pub fn console_fd() -> Option<RawFd> {
    CONSOLE.lock().ok()?.as_ref().map(|fd| fd.as_raw_fd())
}

/// A new open file of what `fd` is open on (a terminal), non-blocking:
/// setting O_NONBLOCK on `fd` itself would change it for every process
/// sharing it.
fn reopen_nonblocking(fd: BorrowedFd) -> nix::Result<OwnedFd> {
    nix::fcntl::open(
        format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
        OFlag::O_WRONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
}

/// Writes `line` to the non-blocking console `fd`, waiting at most
/// `ROOM_WAIT_MS` for room (not at all while `stalled`); says whether the
/// whole line went. A console that stops taking output (a serial line held
/// by flow control, an interrupt lost in an emulator) must not stop PID 1:
/// what it says stays in its notes for the log service.
fn write_line(fd: BorrowedFd, line: &str, stalled: &AtomicBool) -> bool {
    let mut bytes = line.as_bytes();
    let mut wait = if stalled.load(Ordering::Relaxed) {
        Duration::ZERO
    } else {
        Duration::from_millis(ROOM_WAIT_MS.into())
    };
    while !bytes.is_empty() {
        match nix::unistd::write(fd, bytes) {
            Ok(n) => bytes = &bytes[n..],
            Err(Errno::EINTR) => {}
            Err(Errno::EAGAIN) if !wait.is_zero() => {
                let started = Instant::now();
                let mut fds = [PollFd::new(fd, PollFlags::POLLOUT)];
                let ms = u16::try_from(wait.as_millis()).unwrap_or(ROOM_WAIT_MS);
                let _ = poll(&mut fds, PollTimeout::from(ms));
                wait = wait.saturating_sub(started.elapsed());
            }
            Err(Errno::EAGAIN) => {
                stalled.store(true, Ordering::Relaxed);
                return false;
            }
            Err(_) => return false,
        }
    }
    stalled.store(false, Ordering::Relaxed);
    true
}

/// `VmRSS` in KiB from the text of `/proc/<pid>/status`.
pub fn resident_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::{reopen_nonblocking, write_line};

    #[test]
    fn a_console_that_stops_taking_output_does_not_stop_pid_1() {
        // A pseudo-terminal whose other end nobody reads: its buffer fills
        // as a serial line's does when its transmitter stops.
        let pty = nix::pty::openpty(None, None).unwrap();
        let console = reopen_nonblocking(pty.slave.as_fd()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let stalled = AtomicBool::new(false);
            let line = format!("brig: {} [t=1.000s]\n", "x".repeat(100));
            let mut written = 0;
            while write_line(console.as_fd(), &line, &stalled) {
                written += 1;
            }
            let stalled_after_refusal = stalled.load(Ordering::Relaxed);
            // While stalled a line does not wait: it goes at once, if the
            // terminal has made room meanwhile, or not at all.
            write_line(console.as_fd(), &line, &stalled);
            // The other end reads again: lines go out again.
            let mut buffer = [0u8; 4096];
            let mut read = 0;
            while read < written * line.len() / 2 {
                read += nix::unistd::read(&pty.master, &mut buffer).unwrap();
            }
            let resumed = write_line(console.as_fd(), &line, &stalled);
            done.send((
                written,
                stalled_after_refusal,
                resumed,
                stalled.into_inner(),
            ))
            .unwrap();
        });
        // A generous bound only so a regression fails instead of hanging.
        let (written, stalled_after_refusal, resumed, stalled_after) = finished
            .recv_timeout(std::time::Duration::from_secs(60))
            .expect("writing to a console that takes nothing blocked");
        assert!(
            written > 10,
            "only {written} lines before the buffer was full"
        );
        assert!(stalled_after_refusal);
        assert!(resumed && !stalled_after);
    }

    #[test]
    fn reads_vmrss() {
        let status = "Name:\tinit\nVmHWM:\t    1200 kB\nVmRSS:\t     964 kB\nThreads:\t1\n";
        assert_eq!(super::resident_kib(status), Some(964));
        assert_eq!(super::resident_kib("Name: x\n"), None);
    }
}
