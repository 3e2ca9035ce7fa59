//! brig-logd as a process, on sockets in a temporary directory: messages
//! in the forms programs really send (util-linux `logger`, RFC 3164 and
//! RFC 5424, glibc's form, malformed and oversized ones) are stored and
//! read back through the query socket; a sustained burst loses nothing and
//! rotation keeps the store within its bound.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use brig_spec::logs::{Entry, Query};
use common::Logd;

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
    logd.send_as_pid1(b"<13>1 2026-11-22T20:00:00Z h svc 7 service - from PID 1");
    // A container that sends the same on /dev/log does not pass for PID 1.
    logd.send(b"<13>1 2026-11-22T20:00:00Z h forged 7 init - brig: ready");

    let all = logd.wait_for(&Query::default(), 7);
    assert_eq!(all.len(), 7, "{all:#?}");
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
    let forged = &logd.query(&by_app("forged"))[0];
    assert_eq!(forged.source, "syslog", "{forged:?}");
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

/// The query socket is open to the read-only group (`brigctl logs`
/// without sudo): clients that connect and say nothing, or ask for the
/// whole log and never read it, hold up neither logging nor the next
/// client (they cost 2 s and 5 s each when brig-logd waited on them).
#[test]
fn query_clients_that_say_nothing_or_never_read_hold_up_nobody() {
    let logd = Logd::start(1 << 20, 64 << 20);
    let padding = "x".repeat(1000);
    for i in 0..2000 {
        logd.send(format!("<13>bulk: {i} {padding}").as_bytes());
    }
    assert_eq!(logd.wait_for(&by_app("bulk"), 2000).len(), 2000);
    let connect = || UnixStream::connect(logd.path("query.sock")).unwrap();
    let ask = |stream: &mut UnixStream, query: &Query| {
        writeln!(stream, "{}", serde_json::to_string(query).unwrap()).unwrap();
    };
    let silent: Vec<UnixStream> = (0..10).map(|_| connect()).collect();
    let hoarders: Vec<UnixStream> = (0..5)
        .map(|_| {
            let mut stream = connect();
            ask(&mut stream, &Query::default());
            stream
        })
        .collect();
    let mut follower = connect();
    let query = Query {
        service: Some("after".into()),
        follow: true,
        ..Query::default()
    };
    ask(&mut follower, &query);
    logd.send(b"<13>after: still logging");
    follower
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&follower)
        .read_line(&mut line)
        .expect("the new line within 10 s");
    let entry: Entry = serde_json::from_str(&line).unwrap();
    assert_eq!(entry.message, "still logging");
    drop((silent, hoarders));
}

/// Query clients are limited (32), and followers that go make room at
/// once, not when a line for them next comes.
#[test]
fn followers_that_go_leave_room_for_the_next() {
    let logd = Logd::start(1 << 20, 8 << 20);
    logd.send(b"<13>there: once");
    logd.wait_for(&by_app("there"), 1);
    let follow = Query {
        service: Some("there".into()),
        follow: true,
        ..Query::default()
    };
    // The first line each client gets (its history, or the refusal).
    let first_line = |query: &Query| {
        let mut stream = UnixStream::connect(logd.path("query.sock")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        // Turned away, the client may find the socket closed before it
        // writes: the refusal is there to read all the same.
        let _ = writeln!(stream, "{}", serde_json::to_string(query).unwrap());
        let mut line = String::new();
        BufReader::new(&stream).read_line(&mut line).unwrap();
        (stream, line)
    };
    let followers: Vec<UnixStream> = (0..32)
        .map(|_| {
            let (stream, line) = first_line(&follow);
            assert!(line.contains("\"once\""), "{line}");
            stream
        })
        .collect();
    let (_, line) = first_line(&follow);
    assert_eq!(
        line,
        "{\"error\":\"busy: 32 clients of the log at once; try again\"}\n"
    );
    drop(followers);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, line) = first_line(&by_app("there"));
        if line.contains("\"once\"") {
            break;
        }
        assert!(Instant::now() < deadline, "still turned away: {line}");
        std::thread::sleep(Duration::from_millis(50));
    }
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

/// A store on a full filesystem (a 256 KiB tmpfs; mounting it takes root):
/// the bound is far beyond the room, so writes fail with ENOSPC; brig-logd
/// deletes its oldest files and goes on, keeping the newest messages.
#[test]
fn a_full_disk_drops_the_oldest_and_logging_goes_on() {
    assert!(
        nix_is_root(),
        "this test mounts a tmpfs: run it as root (CI does)"
    );
    let disk = tempfile::tempdir().unwrap();
    let status = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "full-disk-test"])
        .arg(disk.path())
        .status()
        .unwrap();
    assert!(status.success(), "mounting a tmpfs at {:?}", disk.path());
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(self.0).status();
        }
    }
    let _unmount = Unmount(disk.path());
    let args: Vec<String> = ["--store", disk.path().to_str().unwrap()]
        .iter()
        .map(|a| a.to_string())
        // Bounds far beyond the 256 KiB there is.
        .chain(["--max-file", "65536", "--max-total", "10485760"].map(String::from))
        .collect();
    let mut logd = Logd::with(&args, None);
    let socket = UnixDatagram::unbound().unwrap();
    socket.connect(logd.path("dev-log")).unwrap();
    const MESSAGES: u64 = 20_000;
    for n in 0..MESSAGES {
        // Noise that gzip cannot squeeze much.
        let noise = n.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        socket
            .send(format!("<14>fill: message {n:06} {noise:016x}").as_bytes())
            .unwrap();
    }
    let newest = format!("message {:06}", MESSAGES - 1);
    let deadline = Instant::now() + Duration::from_secs(60);
    while !logd
        .query(&by_app("fill"))
        .iter()
        .any(|e| e.message.starts_with(&newest))
    {
        assert!(
            Instant::now() < deadline,
            "the newest message never arrived"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(logd.is_running(), "brig-logd died on a full disk");
    let kept = logd.query(&by_app("fill"));
    let number = |e: &Entry| -> u64 { e.message[8..14].parse().unwrap() };
    assert!(
        kept.len() > 100 && (kept.len() as u64) < MESSAGES,
        "{} kept",
        kept.len()
    );
    assert!(kept.windows(2).all(|w| number(&w[0]) < number(&w[1])));
    // A message sent after the disk filled up is kept too.
    logd.send(b"<14>after: still logging");
    assert_eq!(logd.wait_for(&by_app("after"), 1).len(), 1);
    println!(
        "full disk: {} of {MESSAGES} messages kept in a 256 KiB filesystem, the newest last",
        kept.len()
    );
}

fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// `brig.logging.storage: ram`: the logs go to the RAM store, not the
/// (state partition's) store, within `max_size`.
#[test]
fn logs_stay_in_ram_when_the_config_says_so() {
    let ram = tempfile::tempdir().unwrap();
    let args = ["--ram-store".to_string(), ram.path().display().to_string()];
    let logd = Logd::with(&args, Some(r#"{"storage": "ram", "max_size": 131072}"#));
    logd.send(b"<14>sd-card: spared");
    assert_eq!(logd.wait_for(&by_app("sd-card"), 1).len(), 1);
    let current = std::fs::read_to_string(ram.path().join("current.jsonl")).unwrap();
    assert!(current.contains("spared"), "{current}");
    assert!(
        !logd.path("store").exists() || std::fs::read_dir(logd.path("store")).unwrap().count() == 0,
        "written to the disk store"
    );
    let said = logd.stderr();
    assert!(
        said.contains("is in RAM (brig.logging.storage: ram): keeping at most 128 KiB"),
        "{said}"
    );
}

#[test]
fn sigterm_ends_it_at_once_after_storing_what_came() {
    let mut logd = Logd::start(1 << 20, 4 << 20);
    logd.send(b"<13>Dec  6 12:00:00 web: the last words");
    assert_eq!(logd.wait_for(&by_app("web"), 1).len(), 1);
    let started = std::time::Instant::now();
    let status = logd.terminate(std::time::Duration::from_secs(3));
    // Before, SIGTERM was ignored and PID 1 killed it after its 5 s grace.
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}: {}",
        logd.stderr()
    );
    println!("exited {:?} after SIGTERM", started.elapsed());
    assert!(
        logd.stderr().contains("brig-logd: stopping (SIGTERM)"),
        "{}",
        logd.stderr()
    );
}
