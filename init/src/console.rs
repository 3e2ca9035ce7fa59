//! Messages on the console, each stamped with the time since the kernel
//! started (CLOCK_BOOTTIME, the clock printk uses).

use std::io::Write;
use std::time::Duration;

use nix::time::{clock_gettime, ClockId};

pub fn since_boot() -> Duration {
    clock_gettime(ClockId::CLOCK_BOOTTIME)
        .map(Duration::from)
        .unwrap_or_default()
}

/// PID 1's messages since the log service last took them, with when they
/// were said (bounded: the oldest go).
static NOTES: std::sync::Mutex<Vec<(Duration, String)>> = std::sync::Mutex::new(Vec::new());
const NOTES_KEPT: usize = 1024;

/// The messages said since the last call, oldest first.
pub fn take_notes() -> Vec<(Duration, String)> {
    NOTES
        .lock()
        .map(|mut notes| std::mem::take(&mut *notes))
        .unwrap_or_default()
}

/// `brig: <message> [t=1.234s]` on the console, and kept for the log
/// service. Errors writing are ignored: a missing console must not take
/// PID 1 down.
pub fn say(message: &str) {
    if let Ok(mut notes) = NOTES.lock() {
        if notes.len() >= NOTES_KEPT {
            notes.remove(0);
        }
        notes.push((since_boot(), message.to_string()));
    }
    echo(message);
}

/// As `say`, on the console only (a service's line echoed there, which
/// reaches the log service as that service's).
pub fn echo(message: &str) {
    let t = since_boot();
    let _ = writeln!(
        std::io::stdout().lock(),
        "brig: {message} [t={}.{:03}s]",
        t.as_secs(),
        t.subsec_millis()
    );
}

/// `VmRSS` in KiB from the text of /proc/<pid>/status.
pub fn resident_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_vmrss() {
        let status = "Name:\tinit\nVmHWM:\t    1200 kB\nVmRSS:\t     964 kB\nThreads:\t1\n";
        assert_eq!(super::resident_kib(status), Some(964));
        assert_eq!(super::resident_kib("Name: x\n"), None);
    }
}
