//! A Brig guest in QEMU, started with `brig run --headless`, and the images
//! the tests share.
//!
//! Longer than 600 lines because it is the one harness every end-to-end
//! test drives a guest through (boot, serial console, ssh, QMP, power,
//! shared images); the tests themselves stay short because of it.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use brig_image_build::pcap;
use serde_json::{json, Value};

use crate::isolated_net::IsolatedNet;

pub const BRIG: &str = env!("CARGO_BIN_EXE_brig");

pub fn source_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .unwrap()
}

/// Runs `brig` with `args`, returning its output.
pub fn brig(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(BRIG);
    command.args(args).current_dir(source_dir());
    for (k, v) in env {
        command.env(k, v);
    }
    crate::cpu::output(&mut command).expect("running brig")
}

/// Runs `command`, which must succeed; returns its standard output.
pub fn run(command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|e| panic!("running {command:?}: {e}"));
    assert!(
        output.status.success(),
        "{command:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A fresh ed25519 key pair in `dir`: the private key's path and the public key.
pub fn key_pair(dir: &Path, name: &str) -> (PathBuf, String) {
    let path = dir.join(name);
    run(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", name, "-f"])
        .arg(&path));
    let public = std::fs::read_to_string(path.with_extension("pub")).unwrap();
    (path, public.trim().to_string())
}

/// The artifacts directory of `board`, built once per test run. The shared
/// images leave the docker container out (`--without docker`): the tests
/// of Docker (tests/e2e/docker/) boot the full default image, the others boot
/// lighter and faster without dockerd.
pub fn built(board: &str) -> PathBuf {
    built_as(board, "kernel")
}

/// As `built`, in a `brig build --format` (`kernel`, `raw`, `qcow2`), each
/// in a directory of its own.
pub fn built_as(board: &str, format: &str) -> PathBuf {
    // Raw images come with their update bundle (a few seconds more): the
    // update tests offer one to a machine of another board.
    let extra: &[&str] = match format {
        "raw" => &["--without", "docker", "--bundle"],
        _ => &["--without", "docker"],
    };
    built_variant(board, format, "", extra)
}

/// As `built_as`, a variant of the image named `variant` (its directory's
/// suffix), made with `extra` build arguments instead of leaving docker out
/// (none: the board's default image). Each distinct image is built once
/// per test run, whichever test asks first; the others wait for it.
pub fn built_variant(board: &str, format: &str, variant: &str, extra: &[&str]) -> PathBuf {
    type Slot = Arc<(OnceLock<Result<PathBuf, String>>, String)>;
    static BUILDS: Mutex<Option<HashMap<String, Slot>>> = Mutex::new(None);
    let mut dir = match format {
        "kernel" => board.to_string(),
        _ => format!("{board}-{format}"),
    };
    if !variant.is_empty() {
        dir += &format!("-{variant}");
    }
    let slot = {
        let mut builds = BUILDS.lock().unwrap();
        let slot = builds
            .get_or_insert_with(HashMap::new)
            .entry(dir.clone())
            .or_insert_with(|| Arc::new((OnceLock::new(), extra.join(" "))));
        // One directory, one image: the same name with other arguments
        // would overwrite what another test boots.
        assert_eq!(slot.1, extra.join(" "), "two variants named {dir}");
        slot.clone()
    };
    slot.0
        .get_or_init(|| {
            let out = source_dir().join("target/e2e").join(&dir);
            let output = build_into_with(board, format, &out, extra);
            if output.status.success() {
                Ok(out)
            } else {
                Err(format!(
                    "brig build --board {board} --format {format} {} failed:\n{}",
                    extra.join(" "),
                    String::from_utf8_lossy(&output.stderr)
                ))
            }
        })
        .clone()
        .unwrap_or_else(|e| panic!("{e}"))
}

/// How the tests' images are compressed: fast (zstd level 3; Brig ships
/// 19 and 15). The reproducibility test builds at the shipped levels.
pub const FAST: [&str; 2] = ["--zstd-level", "3"];

/// `brig build --board B --format F --out OUT` with `extra`, compressed fast.
fn build_into_with(board: &str, format: &str, out: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "build",
        "--board",
        board,
        "--format",
        format,
        "--out",
        out.to_str().unwrap(),
        FAST[0],
        FAST[1],
    ];
    args.extend(extra);
    brig(&args, &[])
}

/// Fails naming the first of `lines` that `text` (a console, a command's
/// output) does not contain.
pub fn assert_says(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(text.contains(line), "{line:?} not in:\n{text}");
    }
}

/// How many guests run at once: one a core, as QEMU under TCG keeps a core
/// busy while its guest works (`BRIG_E2E_GUESTS` sets another number).
pub fn slots() -> usize {
    std::env::var("BRIG_E2E_GUESTS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()))
        .max(1)
}

/// The slots: how many are free, the single-slot tests' turns (tickets in
/// the order they asked), how many of those wait, and whether the light
/// slot is taken.
struct Pool {
    free: usize,
    next_ticket: u64,
    serving: u64,
    waiting: usize,
    light_taken: bool,
}

fn pool() -> &'static (Mutex<Pool>, Condvar) {
    static POOL: OnceLock<(Mutex<Pool>, Condvar)> = OnceLock::new();
    POOL.get_or_init(|| {
        let pool = Pool {
            free: slots(),
            next_ticket: 0,
            serving: 0,
            waiting: 0,
            light_taken: false,
        };
        (Mutex::new(pool), Condvar::new())
    })
}

/// Slots for running guests, given back when dropped. A test waits for a
/// free one before it boots its first guest (the scheduler runs more tests
/// than there are cores, so that one can build while others boot), in
/// turn, and keeps it until it ends: a test that boots again and again (the
/// power cuts) is not sent to the back of the queue each time.
///
/// A test that wants every slot (the Swarm's) gives way to those waiting
/// for one: were it served in turn, it would stop every later test while
/// a long one (the Pi's chain) kept the last slot, and a core would idle
/// for that test's whole rest. It runs once nobody else waits.
///
/// Beside the cores' slots there is one light slot, for the test the
/// scheduler runs as light (`harness::Share::Light`): its guests leave
/// most of a core idle, so it runs beside the others rather than keep a
/// core's slot from them.
pub struct Slot {
    cores: usize,
    light: bool,
}

impl Slot {
    fn take_light() -> Slot {
        let (pool, changed) = pool();
        let mut state = pool.lock().unwrap_or_else(|p| p.into_inner());
        while state.light_taken {
            state = changed.wait(state).unwrap_or_else(|p| p.into_inner());
        }
        state.light_taken = true;
        Slot {
            cores: 0,
            light: true,
        }
    }

    fn take(wanted: usize) -> Slot {
        let wanted = wanted.min(slots());
        let whole = wanted == slots();
        let (pool, changed) = pool();
        let mut state = pool.lock().unwrap_or_else(|p| p.into_inner());
        if whole {
            while state.free < wanted || state.waiting > 0 {
                state = changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        } else {
            let ticket = state.next_ticket;
            state.next_ticket += 1;
            state.waiting += 1;
            while state.serving != ticket || state.free < wanted {
                state = changed.wait(state).unwrap_or_else(|p| p.into_inner());
            }
            state.serving += 1;
            state.waiting -= 1;
        }
        state.free -= wanted;
        changed.notify_all();
        Slot {
            cores: wanted,
            light: false,
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let (pool, changed) = pool();
        let mut state = pool.lock().unwrap_or_else(|p| p.into_inner());
        state.free += self.cores;
        if self.light {
            state.light_taken = false;
        }
        changed.notify_all();
    }
}

thread_local! {
    /// This test holds every slot (`whole_machine`): its guests take none.
    static WHOLE_MACHINE: Cell<bool> = const { Cell::new(false) };
    /// The scheduler runs this test as light: its guests take the light slot.
    static LIGHT: Cell<bool> = const { Cell::new(false) };
    /// The slot this test took for its first guest, given back when its
    /// thread ends (the scheduler runs each test on a thread of its own).
    static HELD: RefCell<Option<Slot>> = const { RefCell::new(None) };
}

/// A slot for this test's guests, unless it holds one already (or all).
/// Taken with its first guest, or earlier by a test that must not wait
/// for one later.
pub fn hold_a_slot() {
    if WHOLE_MACHINE.get() {
        return;
    }
    HELD.with(|held| {
        let mut held = held.borrow_mut();
        if held.is_none() {
            *held = Some(if LIGHT.get() {
                Slot::take_light()
            } else {
                Slot::take(1)
            });
        }
    });
}

/// Marks this thread's test as light (the scheduler does, as it starts it).
pub fn light_test() {
    LIGHT.set(true);
}

/// Every slot, for a test that runs several guests at once (the Swarm's
/// three): held while the returned value lives, and the guests this
/// thread boots meanwhile take none of their own.
pub fn whole_machine() -> WholeMachine {
    // A slot of its own first given back: it is waiting for all of them.
    HELD.with(|held| held.borrow_mut().take());
    let slot = Slot::take(slots());
    WHOLE_MACHINE.set(true);
    WholeMachine(slot)
}

pub struct WholeMachine(#[allow(dead_code)] Slot);

impl Drop for WholeMachine {
    fn drop(&mut self) {
        WHOLE_MACHINE.set(false);
    }
}

/// A free TCP port on loopback for ssh forwarding.
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Says once per run whether the guests run under KVM or TCG, as `brig
/// accel` decides it for the first board booted (with KVM where it works,
/// `brig run` uses it: the same tests, faster).
fn say_how_guests_run(board: &str, artifacts: &Path) {
    static SAID: OnceLock<()> = OnceLock::new();
    SAID.get_or_init(|| {
        let out = brig(
            &[
                "accel",
                "--board",
                board,
                "--out",
                artifacts.to_str().unwrap(),
            ],
            &[],
        );
        let _ = writeln!(
            std::io::stderr(),
            "==> guests run under {}",
            String::from_utf8_lossy(&out.stdout).trim()
        );
    });
}

/// PID 1's first line on the console.
const PID1_STARTED: &str = "started as PID 1";
/// PID 1 starts within 12 s here even with three guests booting at once
/// on two cores; the rest is room for firmware (UEFI, disk images).
const PID1_WITHIN: Duration = Duration::from_secs(90);

/// How long the first ssh waits for the guest's DHCP ACK. Its client
/// retransmits with backoff, so a lost exchange costs tens of seconds.
const LEASE_WITHIN: Duration = Duration::from_secs(180);

/// What a guest is asked to do when it goes down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Power {
    Reboot,
    PowerOff,
}

impl Power {
    /// `brigctl`'s word for it.
    fn word(self) -> &'static str {
        match self {
            Power::Reboot => "reboot",
            Power::PowerOff => "poweroff",
        }
    }

    /// PID 1's word for it on the console.
    fn verb(self) -> &'static str {
        match self {
            Power::Reboot => "rebooting",
            Power::PowerOff => "powering off",
        }
    }
}

pub struct Guest {
    child: Child,
    /// How `brig run` ended, once it has (reaped: its pid is no longer ours).
    ended: Option<ExitStatus>,
    serial: PathBuf,
    qmp: PathBuf,
    /// QEMU's capture of the first NIC's frames (`filter-dump`), where the
    /// guest's DHCP ACK shows.
    capture: PathBuf,
    /// When QEMU started, to say when the lease came.
    started: SystemTime,
    /// How long after QEMU started the capture showed the ACK, once it has
    /// (checked before each ssh until then).
    lease_after: Cell<Option<Duration>>,
    /// Host port (in `net`) forwarded to the guest's port 22.
    ssh_port: String,
    _dir: tempfile::TempDir,
    /// Dropped after QEMU is gone.
    net: IsolatedNet,
    /// The machine cannot power itself off (`halts_on_power_off`).
    halts: bool,
}

impl Guest {
    /// Boots `board` from `artifacts`; QEMU exits when the guest powers off or
    /// reboots (`--no-reboot`).
    pub fn boot(board: &str, artifacts: &Path, append: &[&str]) -> Guest {
        Guest::boot_with(board, artifacts, append, &[])
    }

    /// As `boot`, with more `brig run` options.
    ///
    /// Under TCG on a loaded host the guest kernel, rarely, stalls before
    /// it runs PID 1 (a vCPU's timer interrupt lost: RCU stall reports,
    /// nothing else, for minutes). No code of ours has run by then, so such
    /// a boot is started again, once, said on stderr and its console kept
    /// in target/e2e/retried-boots/; a second one is the test's to report.
    pub fn boot_with(board: &str, artifacts: &Path, append: &[&str], options: &[&str]) -> Guest {
        let mut guest = Guest::start(board, artifacts, append, options);
        if guest.reaches_pid1(PID1_WITHIN) {
            return guest;
        }
        guest.give_up(
            board,
            &format!("the kernel did not start PID 1 within {PID1_WITHIN:?}"),
        );
        Guest::start(board, artifacts, append, options)
    }

    /// As `boot_with`, for a boot that may never reach PID 1 (a kernel
    /// that panics, a boot loader that picks another version): not retried.
    pub fn boot_unwatched(board: &str, artifacts: &Path, options: &[&str]) -> Guest {
        Guest::start(board, artifacts, &[], options)
    }

    /// Ends a boot that is to be started again: keeps its console in
    /// target/e2e/retried-boots/ and says on stderr why it is retried.
    pub fn give_up(self, board: &str, why: &str) {
        static RETRIED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = RETRIED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let kept = source_dir()
            .join("target/e2e/retried-boots")
            .join(format!("{board}-{}-{n}.log", std::process::id()));
        let _ = std::fs::create_dir_all(kept.parent().unwrap());
        let _ = std::fs::copy(&self.serial, &kept);
        let _ = writeln!(
            std::io::stderr(),
            "==> {board}: {why} (console kept in {}); booting it again",
            kept.display()
        );
    }

    /// Whether this boot shows the stall `boot_with` retries: `PID1_WITHIN`
    /// since QEMU started and PID 1 has not said it started (`serial` is
    /// the console so far). For loops that follow a machine's own reboots.
    pub fn stalled_before_pid1(&self, serial: &str) -> bool {
        !serial.contains(PID1_STARTED) && self.started.elapsed().unwrap_or_default() > PID1_WITHIN
    }

    /// Whether PID 1 said it started within `timeout` (false also when
    /// QEMU exited before).
    fn reaches_pid1(&mut self, timeout: Duration) -> bool {
        self.poll_for(PID1_STARTED, timeout).is_ok()
    }

    /// Polls the console until it shows `needle` (the console so far), or
    /// says why not: QEMU exited, or `timeout` passed.
    fn poll_for(&mut self, needle: &str, timeout: Duration) -> Result<String, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let serial = self.serial();
            if serial.contains(needle) {
                return Ok(serial);
            }
            if let Some(status) = self.exited() {
                return Err(format!(
                    "QEMU exited ({status}) before {needle:?} appeared; {}",
                    report(&serial)
                ));
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "{needle:?} did not appear within {timeout:?}; {}",
                    report(&serial)
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn start(board: &str, artifacts: &Path, append: &[&str], options: &[&str]) -> Guest {
        hold_a_slot();
        say_how_guests_run(board, artifacts);
        let dir = tempfile::tempdir().unwrap();
        let serial = dir.path().join("serial.log");
        let qmp = dir.path().join("qmp.sock");
        let capture = dir.path().join("net0.pcap");
        let dump = format!(
            "filter-dump,id=e2e-net0,netdev=net0,file={}",
            capture.display()
        );
        let port = free_port().to_string();
        let mut args = vec![
            "run",
            "--board",
            board,
            "--out",
            artifacts.to_str().unwrap(),
            "--headless",
            "--no-reboot",
            "--ssh-port",
            &port,
            "--serial-log",
            serial.to_str().unwrap(),
            "--qmp",
            qmp.to_str().unwrap(),
            "--qemu-arg",
            "-object",
            "--qemu-arg",
            &dump,
        ];
        // Kernel info messages could split the console lines tests read;
        // warnings and worse (panics, "reboot: Power down") still show.
        args.extend(["--append", "loglevel=4"]);
        for word in append {
            args.extend(["--append", word]);
        }
        args.extend(options);
        let net = IsolatedNet::new();
        let started = SystemTime::now();
        let child = net
            .command(BRIG)
            .args(&args)
            .current_dir(source_dir())
            .stdin(Stdio::null())
            .spawn()
            .expect("starting brig run");
        Guest {
            child,
            ended: None,
            serial,
            qmp,
            capture,
            started,
            lease_after: Cell::new(None),
            ssh_port: port,
            _dir: dir,
            net,
            halts: false,
        }
    }

    /// Runs `command` over ssh as `user` with the private key `key`,
    /// trusting the host keys in `known_hosts` (added there on first use).
    /// The first waits for the guest's DHCP ACK: before the guest has its
    /// lease, QEMU delivers the connection late. `brig: ready` does not
    /// wait for a lease, and a Raspberry Pi's USB network adapter comes
    /// up well after it on a loaded host.
    pub fn ssh(&self, user: &str, key: &Path, known_hosts: &Path, command: &str) -> Output {
        self.ssh_with(user, key, known_hosts, &[], command)
    }

    /// As `ssh`, with more ssh options.
    pub fn ssh_with(
        &self,
        user: &str,
        key: &Path,
        known_hosts: &Path,
        options: &[&str],
        command: &str,
    ) -> Output {
        self.ssh_command(user, key, known_hosts, options, command)
            .stdin(Stdio::null())
            .output()
            .expect("running ssh")
    }

    /// The ssh command `ssh_with` runs, to start in the background.
    pub fn ssh_command(
        &self,
        user: &str,
        key: &Path,
        known_hosts: &Path,
        options: &[&str],
        command: &str,
    ) -> Command {
        self.lease_before_ssh();
        let mut ssh = self.net.command("ssh");
        ssh.args(["-p", &self.ssh_port, "-i"])
            .arg(key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=accept-new",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=30",
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .args(options)
            .arg(format!("{user}@127.0.0.1"))
            .arg(command);
        ssh
    }

    /// Before the first ssh: the guest's DHCP ACK, or the test fails.
    fn lease_before_ssh(&self) {
        if self.lease_after.get().is_some() {
            return;
        }
        if let Err(why) = self.wait_for_lease(LEASE_WITHIN) {
            panic!("{why}\n{}", self.console_report());
        }
    }

    /// Waits up to `timeout` for QEMU's capture to show the guest's DHCP
    /// ACK: how long after QEMU started it came, or why not.
    pub fn wait_for_lease(&self, timeout: Duration) -> Result<Duration, String> {
        let deadline = Instant::now() + timeout;
        let after = loop {
            if let Some(after) = self.read_lease_after() {
                break after;
            }
            if Instant::now() > deadline {
                let frames = std::fs::read(&self.capture)
                    .map_or(0, |capture| pcap::frames(&capture).count());
                // None at all: the guest's network card never sent a frame.
                return Err(format!(
                    "no DHCP ACK to the guest within {timeout:?}: the capture of its \
                     network ({}) holds {frames} frames",
                    self.capture.display()
                ));
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        self.lease_after.set(Some(after));
        // Past the test harness's capture: in CI's log as it happens.
        let _ = writeln!(
            std::io::stderr(),
            "==> the guest with ssh on port {} had its DHCP ACK {:.1} s after QEMU started",
            self.ssh_port,
            after.as_secs_f64()
        );
        Ok(after)
    }

    /// How long after QEMU started the guest's first DHCP ACK went by, from
    /// the capture.
    fn read_lease_after(&self) -> Option<Duration> {
        let capture = std::fs::read(&self.capture).ok()?;
        let ack = pcap::first_dhcp_ack(&capture)?;
        Some(ack.duration_since(self.started).unwrap_or_default())
    }

    /// As `ssh`, for a command that must succeed: its standard output.
    pub fn ssh_ok(&self, user: &str, key: &Path, known_hosts: &Path, command: &str) -> String {
        let out = self.ssh(user, key, known_hosts, command);
        assert!(
            out.status.success(),
            "ssh {user}: {command:?} failed ({}): {}{}\nthe guest's DHCP ACK came {:?} after QEMU started\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.lease_after.get().unwrap_or_default(),
            self.console_report()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Copies `file` into `user`'s home with scp.
    pub fn scp_to(&self, user: &str, key: &Path, known_hosts: &Path, file: &Path) {
        let status = self
            .net
            .command("scp")
            .args(["-q", "-P", &self.ssh_port, "-i"])
            .arg(key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", known_hosts.display()))
            .args(["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes"])
            .arg(file)
            .arg(format!("{user}@127.0.0.1:"))
            .status()
            .expect("running scp");
        assert!(status.success(), "scp {} failed: {status}", file.display());
    }

    /// The guest's network namespace, for peers a test adds.
    pub fn net(&mut self) -> &mut IsolatedNet {
        &mut self.net
    }

    /// The serial console so far, with kernel messages that cut into
    /// another line moved out of it (see `unsplice_kernel_messages`).
    pub fn serial(&self) -> String {
        let raw = std::fs::read(&self.serial).unwrap_or_default();
        unsplice_kernel_messages(&String::from_utf8_lossy(&raw))
    }

    /// The serial console for a failure message: its last lines first (a
    /// CI summary shows only the head of a message), then all of it.
    pub fn console_report(&self) -> String {
        report(&self.serial())
    }

    /// Waits until the serial console shows `needle`; returns the console so far.
    pub fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        self.poll_for(needle, timeout)
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// As `wait_for`, and then until the line `needle` is on has ended:
    /// QEMU writes the console as the guest's UART sends it, so a line
    /// read just as `needle` appears may not be whole yet.
    pub fn wait_for_line(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        let mut serial = self.wait_for(needle, timeout);
        loop {
            let at = serial.find(needle).expect("wait_for found it");
            if serial[at..].contains('\n') {
                return serial;
            }
            assert!(
                Instant::now() < deadline,
                "the line with {needle:?} did not end within {timeout:?}; {}",
                report(&serial)
            );
            std::thread::sleep(Duration::from_millis(50));
            serial = self.serial();
        }
    }

    /// Sends one QMP command and returns its `return` value.
    pub fn qmp(&self, command: &str, arguments: Value) -> Value {
        // The socket is there once QEMU has started.
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = UnixStream::connect(&self.qmp) {
            assert!(
                Instant::now() < deadline,
                "connecting to QMP {}: {e}",
                self.qmp.display()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        // A QEMU that stops answering fails the test, not the whole run.
        qmp_command(&self.qmp, command, arguments, Duration::from_secs(60))
            .unwrap_or_else(|why| panic!("{why}"))
    }

    /// `sudo brigctl reboot` or `poweroff` (`power`) over ssh, then the
    /// checks of `goes_down`; the console so far.
    pub fn brigctl_power(&mut self, key: &Path, known_hosts: &Path, power: Power) -> String {
        let command = match power {
            Power::Reboot => "sudo brigctl reboot",
            Power::PowerOff => "sudo brigctl poweroff",
        };
        // The connection may end before brigctl's answer comes back: what
        // PID 1 did is on the console, and `goes_down` checks it.
        let _ = self.ssh("brig", key, known_hosts, command);
        self.goes_down(power, &format!("brigctl {}", power.word()))
    }

    /// This machine model cannot power itself off (QEMU's raspi3ap models no
    /// power management block): a power-off ends in the kernel's halt and
    /// QEMU runs on, so `goes_down` ends QEMU itself once the kernel has
    /// said so ("Power off not available: System halted instead").
    pub fn halts_on_power_off(&mut self) {
        self.halts = true;
    }

    /// Presses the power button (QMP `system_powerdown`), then the checks
    /// of `goes_down`; the console so far.
    pub fn press_power_button(&mut self) -> String {
        self.qmp("system_powerdown", json!({}));
        self.goes_down(Power::PowerOff, "power button")
    }

    /// After the guest was asked to reboot or power off for `reason` (PID
    /// 1's words: "brigctl reboot", "power button", "Ctrl-Alt-Del"): QEMU
    /// exits (`--no-reboot`) with success, and the console shows PID 1's
    /// ordered shutdown — the request, every process stopped, the last
    /// word — then the kernel's own, and no panic (a panic on the way down
    /// also ends QEMU with success, after `panic=10`). The console.
    pub fn goes_down(&mut self, power: Power, reason: &str) -> String {
        // With nothing to cut the power, the kernel halts instead (the
        // reboot syscall turns a power-off into a halt).
        let halts = self.halts && power == Power::PowerOff;
        let kernel = match power {
            Power::Reboot => "reboot: Restarting system",
            Power::PowerOff if halts => "reboot: Power off not available: System halted instead",
            Power::PowerOff => "reboot: Power down",
        };
        if halts {
            // The plug is pulled once the kernel has said its last word.
            self.wait_for(kernel, Duration::from_secs(120));
            self.qmp("quit", json!({}));
        }
        let status = self.wait_exit(Duration::from_secs(120));
        let serial = self.serial();
        let report = || report(&serial);
        assert!(status.success(), "QEMU exited with {status}; {}", report());
        let verb = power.verb();
        let mut from = 0;
        for step in [
            format!("brig: {verb} ({reason})"),
            format!("brig: {verb}: stopping all processes"),
            format!("brig: {verb} now"),
            kernel.to_string(),
        ] {
            match serial[from..].find(&step) {
                Some(at) => from += at + step.len(),
                None => panic!("{step:?} not on the console (in this order); {}", report()),
            }
        }
        for bad in ["Kernel panic", "brig: shutdown: ", "internal error"] {
            assert!(
                !serial.contains(bad),
                "the console shows {bad:?}; {}",
                report()
            );
        }
        serial
    }

    /// How `brig run` (and so QEMU) ended, if it has; its CPU time is
    /// charged to the test when it is reaped.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        if self.ended.is_none() {
            self.ended = crate::cpu::reap(&self.child, false);
        }
        self.ended
    }

    /// The power cable pulled: QEMU is killed where it stands (SIGKILL),
    /// with no chance to drain or flush its disks, and brig run, its
    /// parent, reaped. (QMP `quit` drains the disks first: with the one
    /// behind a dead write cache, a cold CI run saw QEMU still running
    /// 30 s after it, its guest writing on.)
    pub fn pull_the_plug(&mut self) {
        if let Err(e) = signal_qemu(&self.qmp, "KILL") {
            panic!("killing QEMU: {e}; {}", self.console_report());
        }
        self.wait_exit(Duration::from_secs(30));
    }

    /// Waits for QEMU to exit.
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.exited() {
                return status;
            }
            if Instant::now() > deadline {
                panic!(
                    "QEMU still running after {timeout:?}; {}",
                    self.console_report()
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Guest {
    fn drop(&mut self) {
        // QEMU is brig's child: killing brig would orphan it (and leave its
        // NoCloud seed behind), so QEMU is ended first — told to quit over
        // QMP, then, if it is still there, terminated, then killed — and
        // brig, having cleaned up after it, exits.
        let qmp = self.qmp.clone();
        let quit = || drop(qmp_command(&qmp, "quit", json!({}), Duration::from_secs(5)));
        let term = || drop(signal_qemu(&qmp, "TERM"));
        let kill = || drop(signal_qemu(&qmp, "KILL"));
        let steps: [&dyn Fn(); 3] = [&quit, &term, &kill];
        for end_qemu in steps {
            if self.exited().is_some() {
                break;
            }
            end_qemu();
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && self.exited().is_none() {
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        if self.exited().is_none() {
            let _ = self.child.kill();
            crate::cpu::reap(&self.child, true);
        }
    }
}

/// Sends `signal` to a guest's QEMU, found as the QEMU with the QMP socket
/// `qmp` (brig's own command line names the socket too).
fn signal_qemu(qmp: &Path, signal: &str) -> std::io::Result<()> {
    let qemu = format!("qemu-system.*{}", qmp.display());
    let status = Command::new("pkill")
        .arg(format!("-{signal}"))
        .arg("-f")
        .arg(&qemu)
        .status()?;
    if !status.success() {
        return Err(std::io::Error::other(format!(
            "pkill -{signal} -f {qemu:?}: {status} (no such process?)"
        )));
    }
    Ok(())
}

/// One QMP command on a connection of its own to `socket`: its `return`
/// value, or why not (QEMU gone, silent for `patience`, or the command
/// refused).
fn qmp_command(
    socket: &Path,
    command: &str,
    arguments: Value,
    patience: Duration,
) -> Result<Value, String> {
    let what = |e: std::io::Error| format!("QMP {}: {e}", socket.display());
    let stream = UnixStream::connect(socket).map_err(what)?;
    stream.set_read_timeout(Some(patience)).map_err(what)?;
    let mut reader = BufReader::new(stream.try_clone().map_err(what)?);
    let mut writer = stream;
    let mut line = String::new();
    reader.read_line(&mut line).map_err(what)?; // greeting
    let mut send = |cmd: Value| -> Result<Value, String> {
        writeln!(writer, "{cmd}").map_err(|e| format!("QMP {cmd}: {e}"))?;
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) => return Err(format!("QMP {cmd}: QEMU closed the connection")),
                Ok(_) => {}
                Err(e) => return Err(format!("QMP {cmd}: no reply: {e}")),
            }
            let reply: Value =
                serde_json::from_str(&line).map_err(|e| format!("QMP reply {line:?}: {e}"))?;
            if reply.get("event").is_some() {
                continue;
            }
            if let Some(error) = reply.get("error") {
                return Err(format!("QMP {cmd} failed: {error}"));
            }
            return Ok(reply["return"].clone());
        }
    };
    send(json!({"execute": "qmp_capabilities"}))?;
    send(json!({"execute": command, "arguments": arguments}))
}

/// `serial` for a failure message: its last 40 lines, then all of it.
pub fn report(serial: &str) -> String {
    let lines: Vec<&str> = serial.lines().collect();
    let tail = lines[lines.len().saturating_sub(40)..].join("\n");
    format!("the serial console ends with:\n{tail}\n\nthe whole serial console:\n{serial}")
}

/// The kernel prints to the console whenever it likes, also in the middle of
/// a line PID 1 is writing ("brig: system con[    7.508792] loop1: ...\r\n
/// tainers: 5"). Such a message is taken out of the line it cut and put
/// on a line of its own after it, so the line reads whole again.
pub fn unsplice_kernel_messages(console: &str) -> String {
    let mut out = String::with_capacity(console.len());
    // A line cut by the kernel, waiting for its end, and the messages
    // that cut it.
    let mut cut = String::new();
    let mut moved = String::new();
    for line in console.split_inclusive('\n') {
        let line = cut.clone() + line;
        let stamp = line
            .match_indices('[')
            .map(|(i, _)| i)
            .find(|&i| i > 0 && is_kernel_stamp(&line[i..]));
        match stamp {
            Some(at) => {
                moved.push_str(&line[at..]);
                cut = line[..at].to_string();
            }
            None => {
                out.push_str(&line);
                out.push_str(&moved);
                cut.clear();
                moved.clear();
            }
        }
    }
    out + &cut + &moved
}

/// Whether `text` starts with a kernel time stamp such as "[    7.508792] ".
fn is_kernel_stamp(text: &str) -> bool {
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    text.strip_prefix('[')
        .and_then(|inner| inner.split_once("] "))
        .and_then(|(stamp, _)| stamp.trim_start().split_once('.'))
        .is_some_and(|(seconds, micros)| digits(seconds) && micros.len() == 6 && digits(micros))
}

pub fn kernel_messages_cutting_into_a_line_are_moved_after_it() {
    let console = "brig: hostname diskful [t=7.549s]\r\n\
        brig: system con[    7.508792] loop1: detected capacity change\r\n\
        tainers: 5 [t=7.559s]\r\n\
        [    7.626561] loop2: detected capacity change\r\n\
        brig: ready [t=12.574s]\r\n";
    assert_eq!(
        unsplice_kernel_messages(console),
        "brig: hostname diskful [t=7.549s]\r\n\
        brig: system containers: 5 [t=7.559s]\r\n\
        [    7.508792] loop1: detected capacity change\r\n\
        [    7.626561] loop2: detected capacity change\r\n\
        brig: ready [t=12.574s]\r\n"
    );
    // Two messages before the line goes on.
    let twice = "brig: re[    1.000000] a\n[    1.100000] b\nady\n";
    assert_eq!(
        unsplice_kernel_messages(twice),
        "brig: ready\n[    1.000000] a\n[    1.100000] b\n"
    );
    // Brackets that are not a kernel stamp, and stamps at a line's start,
    // stay where they are.
    let plain = "[console] ready [t=1.0s]\n[    0.000000] Linux\nx [1.5] y\n";
    assert_eq!(unsplice_kernel_messages(plain), plain);
}
