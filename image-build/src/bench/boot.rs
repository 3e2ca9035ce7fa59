//! One measured boot: `brig run` starts QEMU; the time runs until
//! `ssh brig@… true` succeeds. ssh is tried only once QEMU's capture of
//! the network shows the guest's DHCP ACK: before it has an address, a
//! connection through QEMU's user network waits and arrives late, which
//! would measure QEMU rather than the guest. Then bare connections wait
//! for sshd's banner (`wait_for_banner`), and only then the ssh client
//! runs (until it succeeds): a client started every few milliseconds would
//! take the host CPU the guest's vCPUs run on.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use brig_image_build::pcap;

use super::figures::{self, Memory};

/// A system to boot: `brig run` arguments besides the common ones.
pub struct System {
    /// For file names and progress lines.
    pub name: String,
    /// For the results.
    pub label: String,
    /// `brig run --board`.
    pub board: String,
    pub artifacts: PathBuf,
    pub run_args: Vec<String>,
    /// A Debian baseline (the others are measured against it).
    pub baseline: bool,
    /// A card image, copied afresh for each boot (every boot a first boot)
    /// and attached with `--disk`: the Raspberry Pi's.
    pub card: Option<PathBuf>,
    /// A boot that has not reached each network stage by then has stalled.
    pub timeout: Duration,
    /// How the bare connections wait for sshd's banner.
    pub banner_wait: BannerWait,
}

/// A new bare connection `every` so often, at most `at_most` waiting (the
/// oldest goes). Each that reaches sshd and closes unauthenticated costs
/// the bench's one source address a second of OpenSSH's
/// `PerSourcePenalties` (`noauth:1`); past 15 s sshd refuses the address
/// for a while, logins included.
#[derive(Debug, Clone, Copy)]
pub struct BannerWait {
    pub every: Duration,
    pub at_most: usize,
}

impl BannerWait {
    /// For x86_64 guests, whose sshd greets within a few seconds of the
    /// lease: a fine grain (connections that reach the guest before it
    /// has its address are retried by QEMU only seconds later).
    pub const QUICK: BannerWait = BannerWait {
        every: Duration::from_millis(200),
        at_most: 50,
    };
    /// For the Pi, whose sshd answers a minute and more after its lease,
    /// each greeting taking seconds: ten in flight, 10 s each, at most ten
    /// penalty seconds.
    pub const SLOW: BannerWait = BannerWait {
        every: Duration::from_secs(1),
        at_most: 10,
    };
}

/// What one boot measured.
#[derive(Debug, Clone)]
pub struct Sample {
    pub to_ssh: Duration,
    /// When the guest had its DHCP ACK, and when sshd first greeted.
    pub to_dhcp_ack: Duration,
    pub to_banner: Duration,
    pub memory: Memory,
    pub pid1_name: String,
    pub pid1_resident_kib: u64,
    /// Brig only: PID 1's start to `brig: ready`, from its boot log.
    pub pid1_to_ready: Option<Duration>,
    /// How QEMU ran (from `brig run`'s own line): KVM or TCG.
    pub accel: String,
    /// When each of `figures::SERIAL_STAGES` showed on the serial console.
    pub serial_stages: Vec<Option<Duration>>,
}

/// The stages after the serial console's, measured from the network.
pub const NETWORK_STAGES: [&str; 3] = ["DHCP ACK", "sshd greets", "ssh done"];

impl Sample {
    /// When each stage was reached: `figures::SERIAL_STAGES`, then
    /// `NETWORK_STAGES`.
    pub fn stages(&self) -> Vec<Option<Duration>> {
        let network = [self.to_dhcp_ack, self.to_banner, self.to_ssh];
        let mut stages = self.serial_stages.clone();
        stages.extend(network.map(Some));
        stages
    }
}

pub struct Ssh<'a> {
    pub key: &'a Path,
    pub port: u16,
}

impl Ssh<'_> {
    fn command(&self, remote: &str) -> Command {
        let mut command = Command::new("ssh");
        command
            .arg("-i")
            .arg(self.key)
            .args(["-p", &self.port.to_string()])
            .args([
                "-o",
                "BatchMode=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "LogLevel=ERROR",
                "-o",
                "ConnectTimeout=10",
                "brig@127.0.0.1",
                remote,
            ])
            .stdin(Stdio::null());
        command
    }
}

/// Long enough for the slowest x86_64 system here several times over
/// (Debian takes ~40 s); a guest that has not answered by then has stalled.
pub const TIMEOUT: Duration = Duration::from_secs(120);

/// Where a boot of `system` logs its serial console.
pub fn serial_log(work: &Path, system: &System) -> PathBuf {
    work.join(format!("{}-serial.log", system.name))
}

/// Boots `system` once with `brig` (this program) and measures it.
pub fn measure(
    brig: &Path,
    source: &Path,
    system: &System,
    ssh: &Ssh,
    work: &Path,
) -> Result<Sample> {
    let serial = serial_log(work, system);
    let capture = work.join(format!("{}-net0.pcap", system.name));
    let qmp = work.join(format!("{}-qmp.sock", system.name));
    for file in [&serial, &capture, &qmp] {
        let _ = std::fs::remove_file(file);
    }
    let run_log = work.join(format!("{}-brig-run.log", system.name));
    let mut command = Command::new(brig);
    let mut card_arg = None;
    if let Some(card) = &system.card {
        let copy = work.join(format!("{}-card.img", system.name));
        crate::host_tools::run(
            Command::new("cp")
                .arg("--sparse=always")
                .arg(card)
                .arg(&copy),
            &format!("copying {} for a first boot", card.display()),
        )?;
        card_arg = Some(format!("--disk={}", copy.display()));
    }
    command
        .arg("--source")
        .arg(source)
        .args(["run", "--board", &system.board, "--out"])
        .arg(&system.artifacts)
        .args(["--headless", "--ssh-port", &ssh.port.to_string()])
        .arg("--serial-log")
        .arg(&serial)
        .arg("--qmp")
        .arg(&qmp)
        .args(&system.run_args)
        .args(card_arg)
        .arg("--qemu-arg=-object")
        .arg(format!(
            "--qemu-arg=filter-dump,id=bench,netdev=net0,file={}",
            capture.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(
            std::fs::File::create(&run_log)
                .with_context(|| format!("creating {}", run_log.display()))?,
        );
    let start = Instant::now();
    let mut child = command.spawn().context("starting brig run")?;
    let stamper = SerialStamper::start(&serial, start);
    let result = wait_for_ssh(
        &mut child,
        start,
        &capture,
        ssh,
        &run_log,
        system.timeout,
        system.banner_wait,
    );
    let sample = result.and_then(|(to_dhcp_ack, to_banner, to_ssh)| {
        let report = report_over_ssh(ssh)?;
        // systemd may reach its target after ssh answers: a little longer
        // for every stage to show.
        let deadline = Instant::now() + Duration::from_secs(10);
        let serial_stages = loop {
            let stages = figures::serial_stages(&stamper.lines());
            if stages.iter().all(Option::is_some) || Instant::now() > deadline {
                break stages;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let (meminfo, status) = report
            .split_once("PID1\n")
            .context("the guest's report has no PID 1 part")?;
        let serial_text = std::fs::read_to_string(&serial).unwrap_or_default();
        let run_text = std::fs::read_to_string(&run_log).unwrap_or_default();
        Ok(Sample {
            to_ssh,
            to_dhcp_ack,
            to_banner,
            memory: figures::memory(meminfo)
                .with_context(|| format!("reading the guest's /proc/meminfo:\n{meminfo}"))?,
            pid1_name: status
                .lines()
                .find_map(|l| l.strip_prefix("Name:"))
                .unwrap_or("?")
                .trim()
                .to_string(),
            pid1_resident_kib: figures::resident_kib(status)
                .context("no VmRSS in the guest's /proc/1/status")?,
            pid1_to_ready: figures::pid1_to_ready(&serial_text),
            accel: if run_text.contains("(KVM)") {
                "KVM"
            } else {
                "TCG"
            }
            .to_string(),
            serial_stages,
        })
    });
    drop(stamper);
    quit(&mut child, &qmp);
    sample.with_context(|| {
        format!(
            "booting {} (serial log {}, brig run's output {})",
            system.name,
            serial.display(),
            run_log.display()
        )
    })
}

/// Stamps each line of a serial log with the time since QEMU started, as
/// QEMU appends it: a thread reads the file every 10 ms.
struct SerialStamper {
    lines: std::sync::Arc<std::sync::Mutex<Vec<(Duration, String)>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl SerialStamper {
    fn start(path: &Path, start: Instant) -> SerialStamper {
        use std::io::Read;
        use std::sync::atomic::Ordering;
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (path, out, done) = (path.to_path_buf(), lines.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut file = None;
            let mut pending = Vec::new();
            while !done.load(Ordering::Relaxed) {
                if file.is_none() {
                    file = std::fs::File::open(&path).ok();
                }
                let mut new = Vec::new();
                if let Some(f) = &mut file {
                    let _ = f.read_to_end(&mut new);
                }
                let at = start.elapsed();
                pending.extend_from_slice(&new);
                while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = pending.drain(..=end).collect();
                    let text = String::from_utf8_lossy(&line).trim_end().to_string();
                    if let Ok(mut lines) = out.lock() {
                        lines.push((at, text));
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        });
        SerialStamper {
            lines,
            stop,
            thread: Some(thread),
        }
    }

    fn lines(&self) -> Vec<(Duration, String)> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }
}

impl Drop for SerialStamper {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn wait_for_ssh(
    child: &mut Child,
    start: Instant,
    capture: &Path,
    ssh: &Ssh,
    run_log: &Path,
    timeout: Duration,
    banner_wait: BannerWait,
) -> Result<(Duration, Duration, Duration)> {
    let exited = |child: &mut Child| -> Result<()> {
        if let Some(status) = child.try_wait()? {
            bail!(
                "brig run ended ({status}) before ssh answered: {}",
                std::fs::read_to_string(run_log).unwrap_or_default().trim()
            );
        }
        Ok(())
    };
    while !std::fs::read(capture).is_ok_and(|pcap| pcap::first_dhcp_ack(&pcap).is_some()) {
        exited(child)?;
        if start.elapsed() > timeout {
            bail!("no DHCP ACK within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let to_dhcp_ack = start.elapsed();
    // Until sshd answers, a bare connection and its banner: an ssh client
    // started every few milliseconds would take host CPU from the guest.
    wait_for_banner(ssh.port, banner_wait, || {
        exited(child)?;
        if start.elapsed() > timeout {
            bail!("sshd did not answer within {timeout:?}");
        }
        Ok(())
    })?;
    let to_banner = start.elapsed();
    loop {
        exited(child)?;
        let status = ssh
            .command("true")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if status.success() {
            return Ok((to_dhcp_ack, to_banner, start.elapsed()));
        }
        if start.elapsed() > timeout {
            bail!("ssh did not answer within {timeout:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until sshd greets a connection to `port` on 127.0.0.1. QEMU's
/// forwarding accepts every connection at once and then tries the guest;
/// a try that reaches the guest before its address is configured is
/// dropped there, and QEMU tries again only seconds later. So new
/// connections are opened as `banner_wait` says, the older ones kept
/// waiting, and the first greeting counts.
fn wait_for_banner(
    port: u16,
    banner_wait: BannerWait,
    mut alive: impl FnMut() -> Result<()>,
) -> Result<()> {
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let mut waiting: Vec<TcpStream> = Vec::new();
    let mut last_opened: Option<Instant> = None;
    loop {
        alive()?;
        if last_opened.is_none_or(|at| at.elapsed() >= banner_wait.every) {
            if let Ok(stream) = TcpStream::connect_timeout(&address, Duration::from_secs(1)) {
                stream.set_nonblocking(true)?;
                waiting.push(stream);
                // Enough in flight: the oldest goes.
                if waiting.len() > banner_wait.at_most {
                    waiting.remove(0);
                }
            }
            last_opened = Some(Instant::now());
        }
        let mut greeted = false;
        waiting.retain_mut(|stream| {
            let mut buffer = [0u8; 4];
            match stream.peek(&mut buffer) {
                Ok(4) => {
                    greeted |= &buffer == b"SSH-";
                    false
                }
                // Not all of it yet, or nothing yet: keep waiting.
                Ok(n) if n > 0 => true,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => true,
                // Closed or reset: the guest refused it.
                _ => false,
            }
        });
        if greeted {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The guest's memory and PID 1's status, over ssh. ssh answered already;
/// a connection refused now is sshd's penalty for the bare connections
/// that waited for its banner (`BannerWait`), so a few more tries, over
/// more than its 15 s, before the boot counts as stuck.
fn report_over_ssh(ssh: &Ssh) -> Result<String> {
    let mut tries = 0;
    loop {
        match ssh_output(ssh, "cat /proc/meminfo; echo PID1; cat /proc/1/status") {
            Err(e) if tries < 4 => {
                tries += 1;
                eprintln!("the guest's report over ssh, try {tries}: {e:#}");
                std::thread::sleep(Duration::from_secs(5));
            }
            result => return result,
        }
    }
}

fn ssh_output(ssh: &Ssh, remote: &str) -> Result<String> {
    let output = ssh.command(remote).output().context("running ssh")?;
    if !output.status.success() {
        bail!(
            "ssh {remote:?} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// Ends QEMU through its QMP socket (so `brig run` cleans up after it),
/// killing `brig run` and QEMU only if that fails.
fn quit(child: &mut Child, qmp: &Path) {
    let asked = (|| -> std::io::Result<()> {
        let stream = UnixStream::connect(qmp)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut reader = BufReader::new(stream.try_clone()?);
        let mut line = String::new();
        reader.read_line(&mut line)?; // the greeting
        let mut writer = stream;
        writer.write_all(b"{\"execute\":\"qmp_capabilities\"}\n")?;
        line.clear();
        reader.read_line(&mut line)?;
        writer.write_all(b"{\"execute\":\"quit\"}\n")?;
        Ok(())
    })();
    let deadline = Instant::now() + Duration::from_secs(30);
    while asked.is_ok() && Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    // QEMU is brig run's child: the QMP socket's path names it.
    let _ = Command::new("pkill")
        .arg("-f")
        .arg(format!("unix:{}", qmp.display()))
        .status();
    let _ = child.kill();
    let _ = child.wait();
}
