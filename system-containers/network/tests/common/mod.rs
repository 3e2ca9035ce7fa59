//! Test peers for brig-netd: two network namespaces joined by a veth pair,
//! dnsmasq as the DHCP server in one, brig-netd in the other. Root only;
//! nothing leaves the namespaces these helpers create.
#![allow(dead_code)] // each test file uses part of it

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const NETD: &str = env!("CARGO_BIN_EXE_brig-netd");

pub fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (Debian package iproute2)");
    assert!(status.success(), "ip {}", args.join(" "));
}

/// Two namespaces joined by a veth pair, removed on drop.
pub struct Link {
    pub server: String,
    pub client: String,
    dnsmasq: Option<Child>,
    log: tempfile::NamedTempFile,
}

impl Link {
    pub fn new(tag: &str) -> Link {
        assert!(
            nix_is_root(),
            "these tests create network namespaces: run them as root (CI does)"
        );
        let id = std::process::id();
        let (server, client) = (format!("bn-s-{tag}-{id}"), format!("bn-c-{tag}-{id}"));
        ip(&["netns", "add", &server]);
        ip(&["netns", "add", &client]);
        ip(&[
            "link", "add", "veth-s", "netns", &server, "type", "veth", "peer", "name", "veth-c",
            "netns", &client,
        ]);
        ip(&[
            "-n",
            &server,
            "addr",
            "add",
            "192.168.77.1/24",
            "dev",
            "veth-s",
        ]);
        ip(&["-n", &server, "link", "set", "veth-s", "up"]);
        ip(&["-n", &client, "link", "set", "veth-c", "up"]);
        Link {
            server,
            client,
            dnsmasq: None,
            log: tempfile::NamedTempFile::new().unwrap(),
        }
    }

    /// `command` run in the client namespace, its output.
    pub fn client_output(&self, command: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.client])
            .args(command)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn start_dnsmasq(&mut self, extra: &[&str]) {
        let leases = format!("{}.leases", self.log.path().display());
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.server,
                "dnsmasq",
                "--no-daemon",
                "--conf-file=/dev/null",
                "--port=0",
            ])
            .args([
                "--interface=veth-s",
                "--bind-interfaces",
                "--no-ping",
                "--log-dhcp",
            ])
            .arg(format!("--dhcp-leasefile={leases}"))
            .args(extra)
            .stdout(Stdio::null())
            .stderr(self.log.reopen().unwrap())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        self.dnsmasq = Some(child);
        // dnsmasq is ready once it has said where it serves.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.server_log().contains("DHCP, sockets bound") {
            assert!(
                Instant::now() < deadline,
                "dnsmasq did not start:\n{}",
                self.server_log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop_dnsmasq(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
    }

    /// Gives the server side another address instead of `from` (removed
    /// first: removing a primary address takes its secondaries with it).
    pub fn move_server(&self, from: &str, to: &str) {
        ip(&["-n", &self.server, "addr", "del", from, "dev", "veth-s"]);
        ip(&["-n", &self.server, "addr", "add", to, "dev", "veth-s"]);
    }

    /// The "cable": the server side of the pair; the client sees carrier go.
    pub fn cable(&self, plugged: bool) {
        let state = if plugged { "up" } else { "down" };
        ip(&["-n", &self.server, "link", "set", "veth-s", state]);
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.log.path()).unwrap_or_default()
    }

    /// Runs `brig-netd lease` in the client namespace; it must succeed.
    pub fn lease_ok(&self, args: &[&str]) -> String {
        let out = self.lease(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success(),
            "{stdout}\n{stderr}\nserver:\n{}",
            self.server_log()
        );
        stdout
    }

    pub fn lease(&self, args: &[&str]) -> std::process::Output {
        Command::new("ip")
            .args(["netns", "exec", &self.client, NETD, "lease", "veth-c"])
            .args(args)
            .output()
            .unwrap()
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        if let Some(mut d) = self.dnsmasq.take() {
            let _ = d.kill();
            let _ = d.wait();
        }
        for ns in [&self.server, &self.client] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

pub fn nix_is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

pub fn ip_output(args: &[&str]) -> String {
    let out = Command::new("ip").args(args).output().unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// brig-netd's daemon in the client namespace, with its own directories.
pub struct Netd {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    log: PathBuf,
}

impl Netd {
    pub fn start(link: &Link, config: &str) -> Netd {
        Netd::start_in(link, config, tempfile::tempdir().unwrap())
    }

    /// Starts with `dir` (kept across restarts: the remembered leases).
    pub fn start_in(link: &Link, config: &str, dir: tempfile::TempDir) -> Netd {
        let path = |name: &str| dir.path().join(name);
        std::fs::write(path("network.yaml"), config).unwrap();
        let log = path(&format!("netd-{}.log", std::process::id()));
        let _ = std::fs::remove_file(&log);
        let child = Command::new("ip")
            .args(["netns", "exec", &link.client, NETD, "run"])
            .arg("--config")
            .arg(path("network.yaml"))
            .arg("--state")
            .arg(path("state"))
            .arg("--dns")
            .arg(path("dns"))
            .arg("--ntp")
            .arg(path("ntp"))
            .arg("--socket")
            .arg(path("netd.sock"))
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::options().append(true).open(&log).unwrap())
            .spawn()
            .unwrap();
        let netd = Netd {
            child: Some(child),
            dir,
            log,
        };
        netd.wait_for("brig-netd: running", 1, Duration::from_secs(10));
        netd
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `text` has appeared `count` times in the daemon's output.
    pub fn wait_for(&self, text: &str, count: usize, within: Duration) {
        let deadline = Instant::now() + within;
        while self.log().matches(text).count() < count {
            assert!(
                Instant::now() < deadline,
                "waited {within:?} for {count}x {text:?}; brig-netd said:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The status socket, `brigctl network`'s source.
    pub fn status_socket(&self) -> PathBuf {
        self.dir.path().join("netd.sock")
    }

    /// The status socket's answer.
    pub fn status(&self) -> serde_json::Value {
        use std::io::{BufRead, BufReader};
        let stream = std::os::unix::net::UnixStream::connect(self.status_socket()).unwrap();
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line).unwrap();
        serde_json::from_str(&line).unwrap()
    }

    pub fn interface(&self, name: &str) -> serde_json::Value {
        let status = self.status();
        status["interfaces"]
            .as_array()
            .unwrap()
            .iter()
            .find(|i| i["name"] == name)
            .cloned()
            .unwrap_or_else(|| panic!("no {name} in {status}"))
    }

    pub fn resolv_conf(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("dns/resolv.conf")).unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().unwrap().is_none())
    }

    /// SIGTERM, as PID 1 stops the service; returns the exit status.
    pub fn terminate(mut self) -> (std::process::ExitStatus, tempfile::TempDir) {
        let mut child = self.child.take().unwrap();
        // `ip netns exec` execs brig-netd: the child is brig-netd itself.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let status = child.wait().unwrap();
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        (status, dir)
    }
}

impl Drop for Netd {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// chrony from Debian, unpacked by scripts/setup-host (a test peer, never a
/// host service).
pub fn chrony_dir() -> PathBuf {
    let dir = PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../target/host-tools/chrony"
    ));
    assert!(
        dir.join("usr/sbin/chronyd").exists(),
        "no chronyd in {}: run scripts/setup-host",
        dir.display()
    );
    dir
}

/// chronyd in namespace `netns` as the ntp container runs it, except that it
/// never touches the clock (-x): reads `ntp_dir` as its sourcedir and
/// listens for commands on `<ntp_dir>/chronyd.sock`.
pub struct Chronyd {
    child: Child,
    socket: PathBuf,
    netns: String,
    _conf: tempfile::NamedTempFile,
}

impl Chronyd {
    pub fn start(netns: &str, ntp_dir: &std::path::Path) -> Chronyd {
        let socket = ntp_dir.join("chronyd.sock");
        let mut conf = tempfile::NamedTempFile::new().unwrap();
        use std::io::Write;
        write!(
            conf,
            "cmdport 0\nport 0\nbindcmdaddress {socket}\npidfile {dir}/chronyd.pid\nsourcedir {dir}\n",
            socket = socket.display(),
            dir = ntp_dir.display()
        )
        .unwrap();
        let child = Command::new("ip")
            .args(["netns", "exec", netns])
            .arg(chrony_dir().join("usr/sbin/chronyd"))
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(conf.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while !socket.exists() {
            assert!(Instant::now() < deadline, "chronyd did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Chronyd {
            child,
            socket,
            netns: netns.into(),
            _conf: conf,
        }
    }

    /// `chronyc sources` (numeric).
    pub fn sources(&self) -> String {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.netns])
            .arg(chrony_dir().join("usr/bin/chronyc"))
            .arg("-h")
            .arg(&self.socket)
            .args(["-n", "sources"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

impl Drop for Chronyd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
