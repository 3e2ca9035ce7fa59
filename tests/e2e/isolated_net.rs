//! A network namespace of its own for each guest: QEMU's user networking
//! inside it can reach nothing but the test peers here, whatever the guest
//! tries (chrony's default pool, say). The peers, on the namespace's
//! loopback, which the guest sees as 10.0.2.2 (and its DNS proxy 10.0.2.3
//! forwards to):
//! - dnsmasq, DNS only: `brig-e2e.test` is 192.0.2.77; the NTP pool
//!   (pool.ntp.org, the ntp container's default) and `ntp.brig-e2e.test` are
//!   10.0.2.2;
//! - chronyd as an NTP server (serving the host's clock, never setting it).

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::guest::source_dir;

pub struct IsolatedNet {
    pub name: String,
    peers: Vec<Child>,
    _dir: tempfile::TempDir,
}

fn ip(args: &[&str]) {
    let status = Command::new("ip")
        .args(args)
        .status()
        .expect("ip (iproute2)");
    assert!(status.success(), "ip {}", args.join(" "));
}

fn netns_etc(name: &str) -> PathBuf {
    PathBuf::from("/etc/netns").join(name)
}

impl IsolatedNet {
    pub fn new() -> IsolatedNet {
        static COUNT: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "brig-e2e-{}-{}",
            std::process::id(),
            COUNT.fetch_add(1, Ordering::Relaxed)
        );
        ip(&["netns", "add", &name]);
        ip(&["-n", &name, "link", "set", "lo", "up"]);
        // `ip netns exec` shows this file as /etc/resolv.conf, which QEMU's
        // DNS proxy forwards to.
        std::fs::create_dir_all(netns_etc(&name)).unwrap();
        std::fs::write(
            netns_etc(&name).join("resolv.conf"),
            "nameserver 127.0.0.1\n",
        )
        .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut net = IsolatedNet {
            name,
            peers: Vec::new(),
            _dir: dir,
        };
        let pid_file = net._dir.path().join("dnsmasq.pid");
        let dnsmasq = net
            .command("dnsmasq")
            .args([
                "--keep-in-foreground",
                "--no-resolv",
                "--no-hosts",
                "--listen-address=127.0.0.1",
                "--bind-interfaces",
                "--address=/brig-e2e.test/192.0.2.77",
                "--address=/ntp.brig-e2e.test/10.0.2.2",
                "--address=/pool.ntp.org/10.0.2.2",
            ])
            .arg(format!("--pid-file={}", pid_file.display()))
            .stderr(Stdio::null())
            .spawn()
            .expect("dnsmasq (Debian package dnsmasq-base)");
        net.peers.push(dnsmasq);
        let conf = net._dir.path().join("chrony.conf");
        std::fs::write(
            &conf,
            format!(
                "local stratum 8\nallow all\nbindaddress 127.0.0.1\nport 123\ncmdport 0\n\
                 bindcmdaddress /\npidfile {}/chronyd.pid\n",
                net._dir.path().display()
            ),
        )
        .unwrap();
        let chronyd = source_dir().join("target/host-tools/chrony/usr/sbin/chronyd");
        assert!(
            chronyd.exists(),
            "{} missing: run scripts/setup-host",
            chronyd.display()
        );
        let server = net
            .command(chronyd.to_str().unwrap())
            .args(["-x", "-d", "-u", "root", "-f"])
            .arg(&conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        net.peers.push(server);
        net
    }

    /// rsyslogd (Debian's, unpacked by scripts/setup-host) receiving syslog
    /// over TCP on `port` of the namespace's loopback (the guest's
    /// 10.0.2.2): returns the file where it writes each message as
    /// `hostname|app|msgid|facility.severity|message`.
    pub fn syslog_receiver(&mut self, port: u16) -> PathBuf {
        let tools = source_dir().join("target/host-tools/rsyslog");
        let rsyslogd = tools.join("usr/sbin/rsyslogd");
        assert!(
            rsyslogd.exists(),
            "{} missing: run scripts/setup-host",
            rsyslogd.display()
        );
        let dir = self._dir.path();
        let received = dir.join("syslog-received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{dir}\")\n\
                 module(load=\"imtcp\")\n\
                 input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")\n\
                 template(name=\"fields\" type=\"string\" \
                 string=\"%hostname%|%app-name%|%msgid%|%syslogfacility-text%.%syslogseverity-text%|%msg%\\n\")\n\
                 action(type=\"omfile\" file=\"{received}\" template=\"fields\")\n",
                dir = dir.display(),
                received = received.display(),
            ),
        )
        .unwrap();
        let libraries = tools.join("usr/lib/x86_64-linux-gnu");
        let receiver = self
            .command("env")
            .arg(format!("LD_LIBRARY_PATH={}", libraries.display()))
            .arg(&rsyslogd)
            .arg("-n")
            .arg("-M")
            .arg(libraries.join("rsyslog"))
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        self.peers.push(receiver);
        received
    }

    /// `program` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }
}

impl Drop for IsolatedNet {
    fn drop(&mut self) {
        for peer in &mut self.peers {
            let _ = peer.kill();
            let _ = peer.wait();
        }
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
        let _ = std::fs::remove_dir_all(netns_etc(&self.name));
    }
}
