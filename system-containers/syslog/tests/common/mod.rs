//! brig-logd as a process for the tests, on sockets in a temporary
//! directory, with its standard error kept in a file there.

#![allow(dead_code)] // each test file uses a part

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use brig_spec::logs::{Entry, Query};

pub struct Logd {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl Logd {
    /// A store bounded by `max_file` and `max_total` bytes, no config.
    pub fn start(max_file: u64, max_total: u64) -> Logd {
        Logd::with(
            &[
                "--max-file".into(),
                max_file.to_string(),
                "--max-total".into(),
                max_total.to_string(),
            ],
            None,
        )
    }

    /// `args` after the sockets and the store (a later flag wins);
    /// `logging`: `brig.logging` as PID 1 writes it (JSON), if any.
    pub fn with(args: &[String], logging: Option<&str>) -> Logd {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("logging.json");
        if let Some(json) = logging {
            std::fs::write(&config, json).unwrap();
        }
        let stderr = std::fs::File::create(dir.path().join("stderr")).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_brig-logd"))
            .arg("run")
            .arg("--config")
            .arg(&config)
            .arg("--syslog-socket")
            .arg(dir.path().join("dev-log"))
            .arg("--init-socket")
            .arg(dir.path().join("init.sock"))
            .arg("--query-socket")
            .arg(dir.path().join("query.sock"))
            .arg("--store")
            .arg(dir.path().join("store"))
            .args(["--kmsg", "none"])
            .args(args)
            .stderr(Stdio::from(stderr))
            .spawn()
            .unwrap();
        let mut logd = Logd { child, dir };
        let deadline = Instant::now() + Duration::from_secs(10);
        // Started once its query socket takes connections (the file is
        // there a moment before brig-logd listens on it).
        while UnixStream::connect(logd.path("query.sock")).is_err() {
            if let Ok(Some(status)) = logd.child.try_wait() {
                panic!("brig-logd exited ({status}): {}", logd.stderr());
            }
            assert!(Instant::now() < deadline, "brig-logd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        logd
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// What brig-logd wrote to its standard error so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(self.path("stderr")).unwrap_or_default()
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// Sends SIGTERM, as PID 1 stops the service; how it exited, if it
    /// did within `within`.
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }

    pub fn send(&self, message: &[u8]) {
        let socket = UnixDatagram::unbound().unwrap();
        socket.send_to(message, self.path("dev-log")).unwrap();
    }

    /// As PID 1 sends its lines and the services' output: on its own socket.
    pub fn send_as_pid1(&self, message: &[u8]) {
        let socket = UnixDatagram::unbound().unwrap();
        socket.send_to(message, self.path("init.sock")).unwrap();
    }

    pub fn query(&self, query: &Query) -> Vec<Entry> {
        let mut stream = UnixStream::connect(self.path("query.sock")).unwrap();
        writeln!(stream, "{}", serde_json::to_string(query).unwrap()).unwrap();
        BufReader::new(stream)
            .lines()
            .map(|l| serde_json::from_str(&l.unwrap()).unwrap())
            .collect()
    }

    /// Waits until `count` entries match `query`.
    pub fn wait_for(&self, query: &Query, count: usize) -> Vec<Entry> {
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
