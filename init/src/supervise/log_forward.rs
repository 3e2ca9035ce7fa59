//! Passing PID 1's log lines to the log service (brig-logd): each
//! service's output and PID 1's own messages, as RFC 5424 datagrams on the
//! log service's socket for PID 1 (not /dev/log: what comes there is taken
//! as PID 1's), each stamped with the time it was written. Lines wait in
//! a bounded queue while there is no log service (early boot, a restart)
//! and go as soon as it answers: nothing from early boot is lost unless the
//! queue overflows, and then the oldest go first, counted.

use std::collections::{HashMap, VecDeque};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use brig_spec::control::LogLine;
use brig_spec::logs::rfc3339;

use crate::host::console::Level;

/// What the queue holds at most while the log service is away or slow:
/// its datagrams' bytes and `LINE_COST` for each. Bytes, not lines: a
/// flood of 4 KiB lines must cost PID 1 no more memory than one of empty
/// lines (its resident memory has a target, docs/design.md).
pub const QUEUE_BYTES: usize = 256 * 1024;
/// Of which one service's output may hold at most this much.
pub const SERVICE_SHARE: usize = QUEUE_BYTES / 4;
/// What a line costs in the queue beside its bytes: its entry and the
/// allocator's rounding.
pub const LINE_COST: usize = 64;
/// The most a datagram takes beside its text (`rfc5424`: priority, time,
/// an app name of at most 48 characters, message id).
const HEADER_MAX: usize = 104;

pub struct Forwarder {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    /// Datagrams, each with the service whose output it is.
    queue: VecDeque<(Option<String>, Vec<u8>)>,
    /// What the queue holds (`cost` of each datagram).
    bytes: usize,
    /// What each service's lines in the queue cost.
    waiting: HashMap<String, usize>,
    /// Lines the queue had to let go.
    pub dropped: u64,
    /// Services' lines held back by the rate limit.
    pub limit: RateLimit,
}

impl Forwarder {
    pub fn new(path: &str) -> Forwarder {
        Forwarder {
            socket: None,
            path: PathBuf::from(path),
            queue: VecDeque::new(),
            bytes: 0,
            waiting: HashMap::new(),
            dropped: 0,
            limit: RateLimit::default(),
        }
    }

    /// A service's line (or PID 1's note about it), written `age` ago.
    /// One service's output holds at most `SERVICE_SHARE` of the queue: a
    /// flood while the log service is away or slow cannot push out
    /// everyone else's lines and PID 1's notes. Lines beyond it are
    /// counted with those the rate limit held back, before any formatting.
    pub fn push_line(&mut self, line: &LogLine, age: Duration) {
        let service = (line.stream != "brig").then_some(line.service.as_str());
        if let Some(service) = service {
            // Checked before formatting, with the most its datagram can
            // take, so a line held back costs next to nothing.
            let waiting = self.waiting.get(service).copied().unwrap_or(0);
            if waiting + LINE_COST + HEADER_MAX + line.text.len() > SERVICE_SHARE {
                self.limit.held_back(service);
                return;
            }
        }
        // What a service says on stderr is often just its log: notice,
        // not an error.
        let severity = if line.stream == "stderr" { 5 } else { 6 };
        let msgid = if line.stream == "brig" {
            "init"
        } else {
            "service"
        };
        let datagram = rfc5424(severity, &line.service, msgid, &line.text, age);
        self.push(service, datagram);
    }

    /// One of PID 1's own console messages, written `age` ago, at the
    /// severity its level says (error 3, informational 6).
    pub fn push_note(&mut self, level: Level, text: &str, age: Duration) {
        let severity = match level {
            Level::Error => 3,
            Level::Info => 6,
        };
        self.push(None, rfc5424(severity, "brig-init", "init", text, age));
    }

    /// Queues a datagram (of `service`'s output, or PID 1's); the oldest
    /// go while the queue would be over its bytes.
    fn push(&mut self, service: Option<&str>, datagram: Vec<u8>) {
        let cost = LINE_COST + datagram.len();
        while self.bytes + cost > QUEUE_BYTES && !self.queue.is_empty() {
            self.pop();
            self.dropped += 1;
        }
        self.bytes += cost;
        if let Some(service) = service {
            *self.waiting.entry(service.to_string()).or_default() += cost;
        }
        self.queue
            .push_back((service.map(str::to_string), datagram));
    }

    fn pop(&mut self) {
        let Some((service, datagram)) = self.queue.pop_front() else {
            return;
        };
        let cost = LINE_COST + datagram.len();
        self.bytes -= cost;
        if let Some(service) = service {
            if let Some(waiting) = self.waiting.get_mut(&service) {
                *waiting = waiting.saturating_sub(cost);
            }
        }
    }

    /// Lines waiting.
    pub fn pending(&self) -> usize {
        self.queue.len()
    }

    /// What the lines waiting cost (at most `QUEUE_BYTES`).
    pub fn queued_bytes(&self) -> usize {
        self.bytes
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
            match socket.send_to(&datagram.1, &self.path) {
                Ok(_) => self.pop(),
                Err(_) => return,
            }
        }
        // A burst's queue is not kept allocated once it has gone out.
        self.queue.shrink_to_fit();
        self.waiting.retain(|_, cost| *cost > 0);
    }
}

/// How many lines of one service's output go to the log service in one
/// window of `RATE_INTERVAL`; the rest of the window's are counted, and
/// said in one line when it ends (journald's default: 10000 in 30 s). A
/// service that floods its output cannot then keep PID 1, the log service
/// and its compression busy with every line, nor rotate everyone else's
/// lines out of the log. PID 1's own ring (`brigctl logs` without a log
/// service) still takes every line.
pub const RATE_BURST: usize = 10_000;
pub const RATE_INTERVAL: Duration = Duration::from_secs(30);

/// The per-service windows of `RATE_BURST` lines.
#[derive(Default)]
pub struct RateLimit {
    windows: HashMap<String, Window>,
}

struct Window {
    start: Duration,
    sent: usize,
    suppressed: u64,
}

impl RateLimit {
    /// Whether `service`'s next line, at `now` (since boot), may go. A
    /// window that has ended begins anew with this line; what it held
    /// back is said first (`ended`).
    pub fn admit(&mut self, service: &str, now: Duration, said: &mut Vec<(String, u64)>) -> bool {
        let window = match self.windows.get_mut(service) {
            Some(window) => window,
            None => self.windows.entry(service.to_string()).or_insert(Window {
                start: now,
                sent: 0,
                suppressed: 0,
            }),
        };
        if now.saturating_sub(window.start) >= RATE_INTERVAL {
            if window.suppressed > 0 {
                said.push((service.to_string(), window.suppressed));
            }
            *window = Window {
                start: now,
                sent: 0,
                suppressed: 0,
            };
        }
        if window.sent < RATE_BURST {
            window.sent += 1;
            true
        } else {
            window.suppressed += 1;
            false
        }
    }

    /// The windows that have ended with lines held back: each service and
    /// how many, once; its next window begins with its next line.
    pub fn ended(&mut self, now: Duration) -> Vec<(String, u64)> {
        let mut ended: Vec<(String, u64)> = self
            .windows
            .iter()
            .filter(|(_, w)| w.suppressed > 0 && now.saturating_sub(w.start) >= RATE_INTERVAL)
            .map(|(service, w)| (service.clone(), w.suppressed))
            .collect();
        ended.sort();
        for (service, _) in &ended {
            self.windows.remove(service);
        }
        ended
    }

    /// Counts a line of `service`'s held back for another reason (its
    /// share of the queue is full), in its window.
    pub fn held_back(&mut self, service: &str) {
        if let Some(window) = self.windows.get_mut(service) {
            window.suppressed += 1;
        }
    }

    /// When the first window holding lines back ends (since boot): the
    /// loop wakes then to say so, however quiet the machine is.
    pub fn next_end(&self) -> Option<Duration> {
        self.windows
            .values()
            .filter(|w| w.suppressed > 0)
            .map(|w| w.start + RATE_INTERVAL)
            .min()
    }
}

/// The line that says a window held lines back.
pub fn suppressed_note(service: &str, lines: u64) -> String {
    format!(
        "{service}: {lines} lines of output not logged (more than {RATE_BURST} in {} s, or {} KiB waiting for the log service); PID 1 keeps its newest for `brigctl logs {service}` while the log service is stopped",
        RATE_INTERVAL.as_secs(),
        SERVICE_SHARE / 1024
    )
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
    let header = format!(
        "<{}>1 {} - {} - {msgid} - ",
        3 * 8 + severity,
        rfc3339(when),
        if app.is_empty() { "-" } else { &app }
    );
    // Exactly its size: it may wait in the queue a while.
    let mut datagram = Vec::with_capacity(header.len() + text.len());
    datagram.extend_from_slice(header.as_bytes());
    datagram.extend_from_slice(text.as_bytes());
    datagram
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
    fn a_flood_is_cut_at_the_burst_and_said_once_when_its_window_ends() {
        let mut limit = RateLimit::default();
        let mut said = Vec::new();
        let t = Duration::from_secs;
        let admitted = (0..RATE_BURST + 250)
            .filter(|_| limit.admit("flood", t(100), &mut said))
            .count();
        assert_eq!(admitted, RATE_BURST);
        // Another service has a window of its own.
        assert!(limit.admit("network", t(101), &mut said));
        assert_eq!(limit.next_end(), Some(t(130)), "the loop wakes then");
        assert!(limit.ended(t(129)).is_empty(), "the window has not ended");
        assert!(!limit.admit("flood", t(129), &mut said));
        assert_eq!(limit.ended(t(130)), vec![("flood".to_string(), 251)]);
        assert!(limit.ended(t(131)).is_empty(), "said once");
        assert_eq!(limit.next_end(), None);
        // The next window starts with the next line.
        assert!(limit.admit("flood", t(200), &mut said));
        assert!(said.is_empty());
        assert!(suppressed_note("flood", 251)
            .starts_with("flood: 251 lines of output not logged (more than 10000 in 30 s, or 64 KiB waiting for the log service)"));
    }

    #[test]
    fn a_line_after_a_quiet_spell_starts_a_window_and_the_last_one_is_said_first() {
        let mut limit = RateLimit::default();
        let mut said = Vec::new();
        let t = Duration::from_secs;
        for _ in 0..RATE_BURST + 3 {
            limit.admit("flood", t(10), &mut said);
        }
        // No turn said the window's end: the next line, an hour later,
        // goes, and the held-back count is handed over to be said.
        assert!(limit.admit("flood", t(3600), &mut said));
        assert_eq!(said, [("flood".to_string(), 3)]);
        assert!(limit.ended(t(3700)).is_empty(), "said once");
    }

    #[test]
    fn a_quiet_service_is_never_held_back() {
        let mut limit = RateLimit::default();
        let mut said = Vec::new();
        // 10 lines a second for ten minutes: 300 a window.
        for tenth in 0..6000 {
            assert!(limit.admit("chatty", Duration::from_millis(tenth * 100), &mut said));
        }
        assert!(limit.ended(Duration::from_secs(700)).is_empty());
        assert!(said.is_empty());
    }

    #[test]
    fn one_services_lines_cannot_push_the_others_out_of_the_queue() {
        // No log service: everything waits.
        let mut f = Forwarder::new("/nonexistent/dev-log");
        let mut said = Vec::new();
        f.push_note(Level::Info, "brig-init started as PID 1", Duration::ZERO);
        f.push_line(&line("network", "stdout", "bound"), Duration::ZERO);
        let before = f.queued_bytes();
        let sent = 10_000;
        for n in 0..sent {
            assert!(f.limit.admit("flood", Duration::ZERO, &mut said));
            f.push_line(&line("flood", "stdout", &format!("y {n}")), Duration::ZERO);
        }
        let queued = f.pending() - 2;
        assert!(queued > 100, "only {queued} of the flood's lines queued");
        assert!(f.queued_bytes() - before <= SERVICE_SHARE);
        // PID 1's notes about the flood are not its output.
        f.push_line(&line("flood", "brig", "exited"), Duration::ZERO);
        assert_eq!(f.pending(), 2 + queued + 1);
        assert_eq!(f.dropped, 0, "nobody else's line went");
        // The rest of the flood's is said with what the rate limit holds back.
        assert_eq!(
            f.limit.ended(RATE_INTERVAL),
            [("flood".to_string(), (sent - queued) as u64)]
        );
        // 4 KiB lines take no more of it than short ones.
        let long = "x".repeat(4096);
        for _ in 0..100 {
            f.push_line(&line("long", "stdout", &long), Duration::ZERO);
        }
        assert!(f.pending() - (2 + queued + 1) < SERVICE_SHARE / 4096);
        assert!(f.queued_bytes() <= QUEUE_BYTES);
    }

    #[test]
    fn a_datagrams_header_is_never_more_than_its_share_check_counts() {
        let app = "a".repeat(300);
        for age in [Duration::ZERO, Duration::from_secs(u32::MAX.into())] {
            let datagram = rfc5424(7, &app, "service", "text", age);
            assert!(
                datagram.len() - "text".len() <= HEADER_MAX,
                "{}",
                datagram.len()
            );
        }
    }

    #[test]
    fn the_queue_is_bounded_and_counts_what_it_lets_go() {
        let mut f = Forwarder::new("/nonexistent/dev-log");
        let notes = QUEUE_BYTES / LINE_COST;
        for n in 0..notes {
            f.push_note(Level::Info, &format!("note {n}"), Duration::ZERO);
        }
        f.flush();
        assert!(f.queued_bytes() <= QUEUE_BYTES);
        assert!(f.dropped > 0);
        assert_eq!(f.pending() as u64 + f.dropped, notes as u64);
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
