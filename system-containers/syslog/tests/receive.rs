//! brig-logd as a process, on sockets in a temporary directory: messages
//! in the forms programs really send (util-linux `logger`, RFC 3164 and
//! RFC 5424, glibc's form, malformed and oversized ones) are stored and
//! read back through the query socket; a sustained burst loses nothing and
//! rotation keeps the store within its bound.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use brig_spec::logs::{Entry, Query};

struct Logd {
    child: Child,
    dir: tempfile::TempDir,
}

impl Logd {
    fn start(max_file: u64, max_total: u64) -> Logd {
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_brig-logd"))
            .arg("run")
            .arg("--syslog-socket")
            .arg(dir.path().join("dev-log"))
            .arg("--query-socket")
            .arg(dir.path().join("query.sock"))
            .arg("--store")
            .arg(dir.path().join("store"))
            .args(["--max-file", &max_file.to_string()])
            .args(["--max-total", &max_total.to_string(), "--kmsg", "none"])
            .spawn()
            .unwrap();
        let logd = Logd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !logd.path("query.sock").exists() {
            assert!(Instant::now() < deadline, "brig-logd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        logd
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn send(&self, message: &[u8]) {
        let socket = UnixDatagram::unbound().unwrap();
        socket.send_to(message, self.path("dev-log")).unwrap();
    }

    fn query(&self, query: &Query) -> Vec<Entry> {
        let mut stream = UnixStream::connect(self.path("query.sock")).unwrap();
        writeln!(stream, "{}", serde_json::to_string(query).unwrap()).unwrap();
        BufReader::new(stream)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    }

    /// Waits until `count` entries match `query`.
    fn wait_for(&self, query: &Query, count: usize) -> Vec<Entry> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let found = self.query(query);
            if found.len() >= count || Instant::now() > deadline {
                return found;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Logd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn logger(socket: &Path, args: &[&str]) {
    let status = Command::new("logger")
        .arg("--socket")
        .arg(socket)
        .args(args)
        .status()
        .expect("util-linux logger");
    assert!(status.success());
}

fn by_app(app: &str) -> Query {
    Query {
        service: Some(app.into()),
        ..Query::default()
    }
}

#[test]
fn messages_in_every_form_are_kept_and_read_back() {
    let logd = Logd::start(1 << 20, 8 << 20);
    let socket = logd.path("dev-log");
    logger(
        &socket,
        &[
            "--rfc3164",
            "-t",
            "legacy",
            "-p",
            "mail.warning",
            "from 3164",
        ],
    );
    logger(
        &socket,
        &[
            "--rfc5424",
            "-t",
            "modern",
            "-p",
            "local3.err",
            "--msgid",
            "ID7",
            "--sd-id",
            "meta@32473",
            "--sd-param",
            "k=\"v\"",
            "from 5424",
        ],
    );
    logd.send(b"<30>Nov 22 21:39:35 sshd[412]: Accepted publickey for brig");
    logd.send(b"no priority, no header");
    logd.send(format!("<14>big: {}", "x".repeat(20_000)).as_bytes());
    logd.send(b"<13>1 2026-11-22T20:00:00Z h svc 7 service - from PID 1");

    let all = logd.wait_for(&Query::default(), 6);
    assert_eq!(all.len(), 6, "{all:#?}");
    let legacy = &logd.query(&by_app("legacy"))[0];
    assert_eq!(
        (legacy.priority, legacy.message.as_str()),
        (2 * 8 + 4, "from 3164")
    );
    let modern = &logd.query(&by_app("modern"))[0];
    assert_eq!(
        (modern.priority, modern.message.as_str()),
        (19 * 8 + 3, "from 5424")
    );
    let sshd = &logd.query(&by_app("sshd"))[0];
    assert_eq!(sshd.pid.as_deref(), Some("412"));
    assert!(all
        .iter()
        .any(|e| e.message == "no priority, no header" && e.priority == 13));
    let big = &logd.query(&by_app("big"))[0];
    assert!(
        big.message.len() <= 8192 && big.message.starts_with("xxx"),
        "{}",
        big.message.len()
    );
    let svc = &logd.query(&by_app("svc"))[0];
    assert_eq!(
        (svc.source.as_str(), svc.time.as_str()),
        ("service", "2026-11-22T20:00:00Z")
    );
    // The last two, and a bad query answered with an error, not a crash.
    let tail = logd.query(&Query {
        tail: Some(2),
        ..Query::default()
    });
    assert_eq!(tail.len(), 2);
    let mut bad = UnixStream::connect(logd.path("query.sock")).unwrap();
    writeln!(bad, "{{\"nonsense\": 1}}").unwrap();
    let mut reply = String::new();
    BufReader::new(bad).read_line(&mut reply).unwrap();
    assert!(reply.contains("bad query"), "{reply}");
    logd.send(b"<13>still: alive");
    assert_eq!(logd.wait_for(&by_app("still"), 1).len(), 1);
}

#[test]
fn followers_get_new_messages() {
    let logd = Logd::start(1 << 20, 8 << 20);
    logd.send(b"<13>before: old");
    logd.wait_for(&by_app("before"), 1);
    let mut stream = UnixStream::connect(logd.path("query.sock")).unwrap();
    let query = Query {
        service: Some("after".into()),
        follow: true,
        ..Query::default()
    };
    writeln!(stream, "{}", serde_json::to_string(&query).unwrap()).unwrap();
    logd.send(b"<13>after: new one");
    let mut line = String::new();
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    BufReader::new(stream).read_line(&mut line).unwrap();
    let entry: Entry = serde_json::from_str(&line).unwrap();
    assert_eq!(entry.message, "new one");
}

#[test]
fn a_sustained_burst_loses_nothing_and_rotation_keeps_the_bound() {
    const MESSAGES: usize = 100_000;
    let (max_file, max_total) = (64 << 10, 256 << 10);
    let logd = Logd::start(max_file, max_total);
    let socket = UnixDatagram::unbound().unwrap();
    socket.connect(logd.path("dev-log")).unwrap();
    let started = Instant::now();
    for n in 0..MESSAGES {
        // A blocking send waits while logd's queue is full: nothing is dropped.
        socket
            .send(format!("<14>burst[1]: message {n:06}").as_bytes())
            .unwrap();
    }
    // Everything sent is in the store once the last one is.
    let last = format!("message {:06}", MESSAGES - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logd
        .query(&Query {
            tail: Some(1),
            ..Query::default()
        })
        .iter()
        .any(|e| e.message == last)
    {
        assert!(Instant::now() < deadline, "the burst never arrived whole");
        std::thread::sleep(Duration::from_millis(50));
    }
    let elapsed = started.elapsed();
    let kept = logd.query(&by_app("burst"));
    // The bound drops the oldest files whole: what is left is contiguous
    // and ends with the last message.
    let number = |e: &Entry| -> usize { e.message[8..14].parse().unwrap() };
    let first = number(&kept[0]);
    assert!(
        first > 0,
        "the bound was never reached: nothing rotated away"
    );
    assert_eq!(kept.len(), MESSAGES - first, "a gap in what was kept");
    assert!(kept.iter().zip(first..).all(|(e, n)| number(e) == n));
    let stored: u64 = std::fs::read_dir(logd.path("store"))
        .unwrap()
        .flatten()
        .map(|e| e.metadata().unwrap().len())
        .sum();
    assert!(stored <= max_total + max_file, "{stored} bytes stored");
    println!(
        "burst: {MESSAGES} messages in {:.2} s ({:.0} messages/s sustained), {} kept in {stored} bytes (bound {max_total})",
        elapsed.as_secs_f64(),
        MESSAGES as f64 / elapsed.as_secs_f64(),
        kept.len()
    );
}
