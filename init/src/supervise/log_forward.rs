//! Passing PID 1's log lines to the log service (brig-logd): each
//! service's output and PID 1's own messages, as RFC 5424 datagrams on the
//! log service's socket for PID 1 (not /dev/log: what comes there is taken
//! as PID 1's), each stamped with the time it was written. Lines wait in
//! a bounded queue while there is no log service (early boot, a restart)
//! and go as soon as it answers: nothing from early boot is lost unless the
//! queue overflows, and then the oldest go first, counted.

use std::collections::VecDeque;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use brig_spec::control::LogLine;
use brig_spec::logs::rfc3339;

use crate::host::console::Level;

/// Lines kept while the log service is away.
pub const QUEUE_LINES: usize = 4096;

pub struct Forwarder {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    queue: VecDeque<Vec<u8>>,
    /// Lines the queue had to let go.
    pub dropped: u64,
}

impl Forwarder {
    pub fn new(path: &str) -> Forwarder {
        Forwarder {
            socket: None,
            path: PathBuf::from(path),
            queue: VecDeque::new(),
            dropped: 0,
        }
    }

    /// A service's line (or PID 1's note about it), written `age` ago.
    pub fn push_line(&mut self, line: &LogLine, age: Duration) {
        // What a service says on stderr is often just its log: notice,
        // not an error.
        let severity = if line.stream == "stderr" { 5 } else { 6 };
        let msgid = if line.stream == "brig" {
            "init"
        } else {
            "service"
        };
        self.push(rfc5424(severity, &line.service, msgid, &line.text, age));
    }

    /// One of PID 1's own console messages, written `age` ago, at the
    /// severity its level says (error 3, informational 6).
    pub fn push_note(&mut self, level: Level, text: &str, age: Duration) {
        let severity = match level {
            Level::Error => 3,
            Level::Info => 6,
        };
        self.push(rfc5424(severity, "brig-init", "init", text, age));
    }

    fn push(&mut self, datagram: Vec<u8>) {
        if self.queue.len() >= QUEUE_LINES {
            self.queue.pop_front();
            self.dropped += 1;
        }
        self.queue.push_back(datagram);
    }

    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// Sends what is queued, until the log service stops taking it (not
    /// there, or its queue full: the rest waits for the next call).
    pub fn flush(&mut self) {
        while let Some(datagram) = self.queue.front() {
            let socket = match &self.socket {
                Some(s) => s,
                None => match UnixDatagram::unbound() {
                    Ok(s) => {
                        let _ = s.set_nonblocking(true);
                        self.socket.insert(s)
                    }
                    Err(_) => return,
                },
            };
            match socket.send_to(datagram, &self.path) {
                Ok(_) => {
                    self.queue.pop_front();
                }
                Err(_) => return,
            }
        }
    }
}

/// `<PRI>1 TIME - APP - MSGID - TEXT`, facility daemon.
fn rfc5424(severity: u8, app: &str, msgid: &str, text: &str, age: Duration) -> Vec<u8> {
    let when = SystemTime::now()
        .checked_sub(age)
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let app: String = app
        .chars()
        .filter(|c| c.is_ascii_graphic())
        .take(48)
        .collect();
    format!(
        "<{}>1 {} - {} - {msgid} - {text}",
        3 * 8 + severity,
        rfc3339(when),
        if app.is_empty() { "-" } else { &app }
    )
    .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(service: &str, stream: &str, text: &str) -> LogLine {
        LogLine {
            time: 1.0,
            service: service.into(),
            stream: stream.into(),
            text: text.into(),
        }
    }

    #[test]
    fn lines_wait_for_the_log_service_and_then_go_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev-log");
        let mut f = Forwarder::new(path.to_str().unwrap());
        f.push_note(
            Level::Info,
            "brig-init started as PID 1",
            Duration::from_secs(5),
        );
        f.push_line(
            &line("network", "stdout", "bound 10.0.2.15"),
            Duration::ZERO,
        );
        f.flush();
        assert_eq!(f.pending(), 2, "no log service yet: kept");
        let logd = UnixDatagram::bind(&path).unwrap();
        f.push_line(&line("network", "stderr", "warning: x"), Duration::ZERO);
        f.flush();
        assert_eq!(f.pending(), 0);
        let mut buf = [0u8; 512];
        let mut got = Vec::new();
        for _ in 0..3 {
            let n = logd.recv(&mut buf).unwrap();
            got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        assert!(
            got[0].starts_with("<30>1 ")
                && got[0].ends_with(" - brig-init - init - brig-init started as PID 1"),
            "{}",
            got[0]
        );
        assert!(
            got[1].ends_with(" - network - service - bound 10.0.2.15"),
            "{}",
            got[1]
        );
        assert!(got[2].starts_with("<29>1 "), "stderr is notice: {}", got[2]);
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_lets_go() {
        let mut f = Forwarder::new("/nonexistent/dev-log");
        for n in 0..QUEUE_LINES + 10 {
            f.push_note(Level::Info, &format!("note {n}"), Duration::ZERO);
        }
        f.flush();
        assert_eq!((f.pending(), f.dropped), (QUEUE_LINES, 10));
    }

    #[test]
    fn a_notes_severity_is_its_level_whatever_its_words() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dev-log");
        let logd = UnixDatagram::bind(&path).unwrap();
        let mut f = Forwarder::new(path.to_str().unwrap());
        f.push_note(Level::Info, "error-correcting memory found", Duration::ZERO);
        f.push_note(Level::Error, "cannot mount /data", Duration::ZERO);
        f.flush();
        let mut buf = [0u8; 512];
        let mut priority = || {
            let n = logd.recv(&mut buf).unwrap();
            String::from_utf8_lossy(&buf[..n])
                .split('>')
                .next()
                .unwrap()
                .to_string()
        };
        // daemon facility (3): informational 6, error 3.
        assert_eq!(priority(), "<30");
        assert_eq!(priority(), "<27");
    }
}
