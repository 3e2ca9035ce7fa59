//! Forwarding to remote syslog servers, against rsyslog (Debian's, unpacked
//! by scripts/setup-host into target/host-tools/rsyslog) as the receiver on
//! loopback: what rsyslog parses out of each forwarded message is what was
//! sent, over UDP, TCP (octet counting) and TLS with client certificates;
//! a receiver restarted mid-stream gets what was queued meanwhile; a full
//! queue keeps the newest and the receiver is told how many were dropped;
//! a server whose certificate is not trusted gets nothing and the reason
//! is said.

mod common;

use std::net::{TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::Logd;
use serde_json::json;

/// One rsyslog field list per message: `|`-separated, so that each field
/// rsyslog parsed can be checked.
const FIELDS: &str = "%inputname%|%hostname%|%app-name%|%procid%|%msgid%|%syslogfacility-text%.%syslogseverity-text%|%timereported:::date-rfc3339%|%msg%";

fn host_tools() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/host-tools/rsyslog")
}

/// A port on loopback that nothing listens on now.
fn free_port() -> u16 {
    let tcp = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = tcp.local_addr().unwrap().port();
    // The same number free for UDP too.
    UdpSocket::bind(("127.0.0.1", port)).map_or_else(|_| free_port(), |_| port)
}

/// rsyslogd in the foreground with `inputs`, writing what it receives to
/// `received.log` in `dir`, one line of `FIELDS` a message.
struct Rsyslog {
    child: Child,
    dir: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, inputs: &str) -> Rsyslog {
        let tools = host_tools();
        assert!(
            tools.join("usr/sbin/rsyslogd").exists(),
            "no rsyslogd in {}: run scripts/setup-host",
            tools.display()
        );
        let work = dir.join("work");
        std::fs::create_dir_all(&work).unwrap();
        let received = dir.join("received.log");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                "global(workDirectory=\"{work}\" maxMessageSize=\"64k\" processInternalMessages=\"on\")\n\
                 {inputs}\n\
                 template(name=\"fields\" type=\"string\" string=\"{FIELDS}\\n\")\n\
                 action(type=\"omfile\" file=\"{received}\" template=\"fields\")\n",
                work = work.display(),
                received = received.display(),
            ),
        )
        .unwrap();
        let libraries = tools.join("usr/lib/x86_64-linux-gnu");
        let child = Command::new(tools.join("usr/sbin/rsyslogd"))
            .arg("-n")
            .arg("-M")
            .arg(libraries.join("rsyslog"))
            .arg("-f")
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .env("LD_LIBRARY_PATH", &libraries)
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("rsyslogd.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut rsyslog = Rsyslog {
            child,
            dir: dir.to_path_buf(),
        };
        // rsyslogd logs its own start once its inputs are listening.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !rsyslog.lines().iter().any(|l| l.contains("] start")) {
            if let Ok(Some(status)) = rsyslog.child.try_wait() {
                panic!("rsyslogd exited: {status}");
            }
            assert!(Instant::now() < deadline, "rsyslogd did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        rsyslog
    }

    /// What rsyslogd wrote, a message a line.
    fn lines(&self) -> Vec<String> {
        std::fs::read_to_string(self.dir.join("received.log"))
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// Waits until a line contains each of `needles`; returns all lines.
    fn wait_for(&self, needles: &[String], timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            let missing = needles
                .iter()
                .filter(|n| !lines.iter().any(|l| l.contains(n.as_str())))
                .count();
            if missing == 0 {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{missing} of {} messages did not reach rsyslog within {timeout:?}; it has:\n{}",
                needles.len(),
                lines.join("\n")
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, as a server restart begins.
    fn stop(mut self) {
        // SAFETY: kill with a pid of our own child and a signal number.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn imudp(port: u16) -> String {
    format!("module(load=\"imudp\")\ninput(type=\"imudp\" address=\"127.0.0.1\" port=\"{port}\")")
}

fn imtcp(port: u16) -> String {
    format!("module(load=\"imtcp\")\ninput(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")")
}

/// TLS (GnuTLS) that accepts only clients with a certificate from the CA.
fn imtcp_tls(port: u16, certs: &Certs) -> String {
    format!(
        "global(defaultNetstreamDriver=\"gtls\" defaultNetstreamDriverCAFile=\"{ca}\" \
         defaultNetstreamDriverCertFile=\"{cert}\" defaultNetstreamDriverKeyFile=\"{key}\")\n\
         module(load=\"imtcp\" streamDriver.name=\"gtls\" streamDriver.mode=\"1\" \
         streamDriver.authMode=\"x509/certvalid\")\n\
         input(type=\"imtcp\" address=\"127.0.0.1\" port=\"{port}\")",
        ca = certs.dir.join("ca.pem").display(),
        cert = certs.dir.join("server.pem").display(),
        key = certs.dir.join("server.key").display(),
    )
}

/// A CA, a server certificate for localhost and 127.0.0.1, and a client
/// certificate, made with openssl(1).
struct Certs {
    dir: PathBuf,
}

impl Certs {
    fn make(dir: &Path, ca_name: &str) -> Certs {
        std::fs::create_dir_all(dir).unwrap();
        let openssl = |args: &[&str]| {
            let out = Command::new("openssl")
                .args(args)
                .current_dir(dir)
                .output()
                .expect("openssl (scripts/setup-host installs it)");
            assert!(
                out.status.success(),
                "openssl {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"];
        openssl(
            &[
                &["req", "-x509", "-nodes", "-days", "2"][..],
                &ec,
                &["-subj", &format!("/CN={ca_name}"), "-keyout", "ca.key"],
                &[
                    "-out",
                    "ca.pem",
                    "-addext",
                    "basicConstraints=critical,CA:TRUE",
                ],
                &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
            ]
            .concat(),
        );
        for (name, extensions) in [
            (
                "server",
                "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            ),
            (
                "client",
                "subjectAltName=DNS:brig-client\nextendedKeyUsage=clientAuth\n",
            ),
        ] {
            let ext = format!("{name}.ext");
            std::fs::write(
                dir.join(&ext),
                format!("basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n{extensions}"),
            )
            .unwrap();
            let key = format!("{name}.key");
            let csr = format!("{name}.csr");
            let pem = format!("{name}.pem");
            openssl(
                &[
                    &["req", "-nodes"][..],
                    &ec,
                    &[
                        "-subj",
                        &format!("/CN={name}"),
                        "-keyout",
                        &key,
                        "-out",
                        &csr,
                    ],
                ]
                .concat(),
            );
            openssl(&[
                "x509",
                "-req",
                "-in",
                &csr,
                "-CA",
                "ca.pem",
                "-CAkey",
                "ca.key",
                "-CAcreateserial",
                "-days",
                "2",
                "-extfile",
                &ext,
                "-out",
                &pem,
            ]);
        }
        Certs {
            dir: dir.to_path_buf(),
        }
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join(name)).unwrap()
    }
}

/// A logd forwarding to `remotes` (the `brig.logging.remote` list).
fn logd_forwarding(remotes: serde_json::Value) -> Logd {
    let config = json!({ "remote": remotes });
    // The config as PID 1 writes it: parsed and checked by brig-spec.
    let (parsed, problems) = brig_spec::log_config::parse(&config);
    assert_eq!(problems, [], "the test's config");
    Logd::with(&[], Some(&serde_json::to_string(&parsed).unwrap()))
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn rsyslog_parses_what_is_forwarded_over_udp_tcp_and_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (udp, tcp, tls) = (free_port(), free_port(), free_port());
    let plain = Rsyslog::start(
        &dir.path().join("plain"),
        &format!("{}\n{}", imudp(udp), imtcp(tcp)),
    );
    let certs = Certs::make(&dir.path().join("certs"), "brig test CA");
    let secure = Rsyslog::start(&dir.path().join("tls"), &imtcp_tls(tls, &certs));
    let logd = logd_forwarding(json!([
        format!("udp://127.0.0.1:{udp}"),
        format!("tcp://127.0.0.1:{tcp}"),
        {
            "url": format!("tls://localhost:{tls}"),
            "ca": certs.read("ca.pem"),
            "cert": certs.read("client.pem"),
            "key": certs.read("client.key"),
        },
    ]));
    // RFC 5424 with its own time, BSD syslog as sshd writes it, a
    // non-ASCII message, and one longer than the 8 KiB brig-logd keeps.
    logd.send(b"<30>1 2026-11-22T20:00:00.123456Z - webapp 77 - - hello in 5424");
    logd.send(b"<38>Nov 22 21:39:35 sshd[412]: Accepted publickey for brig");
    logd.send("<14>1 - - lang - - - grüße, ça va".as_bytes());
    let long = format!("<14>long: {}", "x".repeat(9000));
    logd.send(long.as_bytes());
    let host = hostname();
    let expected = [
        format!("|{host}|webapp|77|-|daemon.info|2026-11-22T20:00:00.123456Z|hello in 5424"),
        format!("|{host}|sshd|412|-|auth.info|"),
        format!("|{host}|lang|-|-|user.info|"),
        format!("|{host}|long|-|-|user.info|"),
    ];
    // The lines that came in through `input`, rsyslogd's own left out.
    let from = |lines: &[String], input: &str| -> Vec<String> {
        lines
            .iter()
            .filter(|l| l.starts_with(&format!("{input}|")) && !l.contains("|rsyslogd|"))
            .cloned()
            .collect()
    };
    for (rsyslog, inputs) in [
        (&plain, ["imudp", "imtcp"].as_slice()),
        (&secure, &["imtcp"]),
    ] {
        let deadline = Instant::now() + Duration::from_secs(20);
        let lines = loop {
            let lines = rsyslog.lines();
            if inputs.iter().all(|i| from(&lines, i).len() >= 4) {
                break lines;
            }
            assert!(Instant::now() < deadline, "not all arrived: {lines:#?}");
            std::thread::sleep(Duration::from_millis(50));
        };
        for input in inputs {
            let from = from(&lines, input);
            assert_eq!(from.len(), 4, "{input}: {lines:#?}");
            for (line, want) in from.iter().zip(&expected) {
                assert!(
                    line.contains(want.as_str()),
                    "{input}: {line:?} lacks {want:?}"
                );
            }
            assert!(
                from[1].ends_with("|Accepted publickey for brig"),
                "{}",
                from[1]
            );
            assert!(from[2].ends_with("|grüße, ça va"), "{}", from[2]);
            // Cut at 8 KiB by brig-logd, then carried whole.
            let kept = from[3].rsplit('|').next().unwrap();
            assert!(
                kept.len() > 8000 && kept.len() <= 8192,
                "{} bytes",
                kept.len()
            );
            assert!(kept.bytes().all(|b| b == b'x'));
        }
    }
    let said = logd.stderr();
    assert!(said.contains(&format!(
        "forwarding to tls://localhost:{tls} (queue 1024 KiB)"
    )));
}

/// Stops the receiver, sends while it is away, starts it again on the
/// same port: everything sent meanwhile arrives, in order.
fn restarted_receiver_gets_what_was_queued(tls: bool) {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let certs = Certs::make(&dir.path().join("certs"), "brig test CA");
    let inputs = if tls {
        imtcp_tls(port, &certs)
    } else {
        imtcp(port)
    };
    let remote = if tls {
        json!({
            "url": format!("tls://127.0.0.1:{port}"),
            "ca": certs.read("ca.pem"),
            "cert": certs.read("client.pem"),
            "key": certs.read("client.key"),
        })
    } else {
        json!(format!("tcp://127.0.0.1:{port}"))
    };
    let logd = logd_forwarding(json!([remote]));
    let receiver = Rsyslog::start(&dir.path().join("first"), &inputs);
    let before: Vec<String> = (0..20)
        .map(|n| format!("before the restart {n:03}"))
        .collect();
    for m in &before {
        logd.send(format!("<14>steady: {m}").as_bytes());
    }
    receiver.wait_for(&before, Duration::from_secs(20));
    receiver.stop();
    let during: Vec<String> = (0..300).map(|n| format!("while away {n:03}")).collect();
    for m in &during {
        logd.send(format!("<14>steady: {m}").as_bytes());
    }
    // brig-logd finds the server gone (and retries) before it is back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let gone = |said: &str| {
        said.contains("the server closed the connection") || said.contains("Connection refused")
    };
    while !gone(&logd.stderr()) {
        assert!(
            Instant::now() < deadline,
            "brig-logd did not notice the server gone: {}",
            logd.stderr()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let receiver = Rsyslog::start(&dir.path().join("second"), &inputs);
    let lines = receiver.wait_for(&during, Duration::from_secs(60));
    let got: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.rsplit('|').next())
        .filter(|m| m.starts_with("while away"))
        .collect();
    let mut unique = got.clone();
    unique.dedup();
    assert_eq!(unique, during, "out of order or with gaps");
    println!(
        "{}: receiver restarted; {} messages sent while it was away arrived after the reconnect",
        if tls { "tls" } else { "tcp" },
        during.len()
    );
}

#[test]
fn a_restarted_tcp_receiver_gets_what_was_queued() {
    restarted_receiver_gets_what_was_queued(false);
}

#[test]
fn a_restarted_tls_receiver_gets_what_was_queued() {
    restarted_receiver_gets_what_was_queued(true);
}

#[test]
fn a_full_queue_keeps_the_newest_and_says_how_many_were_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    const QUEUE: u64 = 8 << 10;
    let logd = logd_forwarding(json!([
        {"url": format!("tcp://127.0.0.1:{port}"), "queue_size": QUEUE},
    ]));
    // No receiver yet: 500 messages of about 100 bytes wait, in 8 KiB.
    let sent: Vec<String> = (0..500).map(|n| format!("queued {n:03}")).collect();
    for m in &sent {
        logd.send(format!("<14>1 - - burst - - - {m}").as_bytes());
    }
    // All stored locally before the receiver appears.
    let stored = logd.wait_for(
        &brig_spec::logs::Query {
            service: Some("burst".into()),
            ..Default::default()
        },
        500,
    );
    assert_eq!(stored.len(), 500);
    let receiver = Rsyslog::start(&dir.path().join("rsyslog"), &imtcp(port));
    let lines = receiver.wait_for(&["queued 499".to_string()], Duration::from_secs(60));
    let got: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.rsplit('|').next())
        .filter(|m| m.starts_with("queued"))
        .collect();
    let first: usize = got[0][7..].parse().unwrap();
    assert!(first > 0, "nothing was dropped: {} arrived", got.len());
    assert_eq!(got, sent[first..], "the newest, whole and in order");
    // The RFC 5424 messages that arrived, put together again from their
    // fields: what the queue held.
    let forwarded: usize = lines
        .iter()
        .map(|l| l.split('|').collect::<Vec<_>>())
        .filter(|f| f[2] == "burst")
        .map(|f| format!("<14>1 {} {} burst - - - {}", f[6], f[1], f[7]).len())
        .sum();
    assert!(forwarded as u64 <= QUEUE, "{forwarded} bytes arrived");
    let note = format!("{first} messages were dropped while the server could not be reached");
    assert!(
        lines
            .iter()
            .any(|l| l.contains("|brig-logd|") && l.contains(&note)),
        "no note of {first} dropped: {lines:#?}"
    );
    println!(
        "queue of {QUEUE} bytes: {} of 500 arrived (the newest), {first} dropped and reported",
        got.len()
    );
}

#[test]
fn a_server_with_an_untrusted_certificate_gets_nothing_and_the_reason_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let server_certs = Certs::make(&dir.path().join("server"), "brig test CA");
    let other = Certs::make(&dir.path().join("other"), "another CA");
    let receiver = Rsyslog::start(&dir.path().join("rsyslog"), &{
        // Clients are not asked for certificates here: the refusal is the
        // client's.
        imtcp_tls(port, &server_certs).replace("x509/certvalid", "anon")
    });
    let logd = logd_forwarding(json!([
        {"url": format!("tls://localhost:{port}"), "ca": other.read("ca.pem")},
    ]));
    logd.send(b"<14>secret: not for strangers");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !logd.stderr().contains("TLS handshake") {
        assert!(Instant::now() < deadline, "nothing said: {}", logd.stderr());
        std::thread::sleep(Duration::from_millis(50));
    }
    let said = logd.stderr();
    assert!(
        said.contains(&format!("forwarding to tls://localhost:{port}: "))
            && said.contains("UnknownIssuer"),
        "{said}"
    );
    // A client that trusts the server sends a marker after that: once the
    // server has written it, it would have written the secret too.
    let marker = "<14>marker: sent after the refused handshake\n";
    let mut client = Command::new("openssl")
        .args(["s_client", "-quiet", "-no_ign_eof", "-connect"])
        .arg(format!("127.0.0.1:{port}"))
        .args(["-servername", "localhost", "-CAfile"])
        .arg(server_certs.dir.join("ca.pem"))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl s_client");
    std::io::Write::write_all(&mut client.stdin.take().unwrap(), marker.as_bytes()).unwrap();
    assert!(client.wait().unwrap().success(), "openssl s_client failed");
    let lines = receiver.wait_for(
        &["sent after the refused handshake".to_string()],
        Duration::from_secs(20),
    );
    assert!(!lines.iter().any(|l| l.contains("secret")), "{lines:?}");
    // Still logging locally.
    assert!(logd
        .query(&Default::default())
        .iter()
        .any(|e| e.message == "not for strangers"));
}
