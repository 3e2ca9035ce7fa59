//! brig-init: Brig's PID 1.
//!
//! Boot: early mounts, console, hostname, module coldplug, power button; then
//! one single-threaded epoll loop over a signalfd (children, Ctrl-Alt-Del,
//! power requests), kernel uevents (hotplug) and power-button input devices.
//! Nothing here may panic the process or make it exit: every step reports its
//! errors and the loop carries on.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::panic::{self, AssertUnwindSafe};
use std::path::Path;

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use brig_init::cmdline::Cmdline;
use brig_init::coldplug::{Coldplug, Outcome};
use brig_init::console::{self, say};
use brig_init::system::{Linux, PowerAction, System};
use brig_init::{mounts, power_button, shutdown, uevent};

const VERSION: &str = env!("CARGO_PKG_VERSION");
const DEFAULT_HOSTNAME: &str = "brig";
const SIGNALS: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGINT, // Ctrl-Alt-Del, once the kernel is told to send it to us
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGHUP,
];
const TOKEN_SIGNALS: u64 = u64::MAX;
const TOKEN_UEVENTS: u64 = u64::MAX - 1;

struct Init {
    sys: Linux,
    epoll: Epoll,
    signals: SignalFd,
    uevents: Option<OwnedFd>,
    coldplug: Coldplug,
    /// Power-button input devices (`event0`, …), by raw fd (their epoll token).
    buttons: HashMap<u64, (String, File)>,
}

fn main() {
    if std::process::id() != 1 {
        eprintln!("brig-init: this is Brig's PID 1 and only runs as the kernel's init");
        std::process::exit(1);
    }
    panic::set_hook(Box::new(|info| {
        say(&format!("internal error (a bug in brig-init): {info}"))
    }));
    let mut init = match panic::catch_unwind(boot) {
        Ok(Ok(init)) => init,
        Ok(Err(e)) => emergency(&e),
        Err(_) => emergency("boot step crashed"),
    };
    loop {
        if panic::catch_unwind(AssertUnwindSafe(|| init.wait_and_handle())).is_err() {
            say("recovered from an internal error; still serving");
        }
    }
}

fn boot() -> Result<Init, String> {
    let sys = Linux;
    say(&format!("brig-init {VERSION} started as PID 1"));

    // Signals are taken through a signalfd in the event loop; children will
    // get a clean mask when they are spawned.
    let mut mask = SigSet::empty();
    for &s in SIGNALS {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|e| format!("blocking signals: {e}"))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| format!("creating signalfd: {e}"))?;
    // Ctrl-Alt-Del sends us SIGINT instead of an immediate reboot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        say(&format!("error: cannot take over Ctrl-Alt-Del: {e}"));
    }

    let mounted = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for error in mounts::mount_early(&sys, &mounts::parse_mount_points(&mounted)) {
        say(&format!("error: {error}"));
    }
    ensure_console();
    say("mounted /proc /sys /dev /dev/pts /dev/shm /run /sys/fs/cgroup");

    let cmdline = Cmdline::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let hostname = cmdline
        .value("brig.hostname")
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_HOSTNAME);
    match sys.set_hostname(hostname) {
        Ok(()) => say(&format!("hostname {hostname}")),
        Err(e) => say(&format!("error: setting hostname {hostname:?}: {e}")),
    }

    let epoll =
        Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).map_err(|e| format!("creating epoll: {e}"))?;
    epoll
        .add(
            signals.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_SIGNALS),
        )
        .map_err(|e| format!("watching signalfd: {e}"))?;
    // Subscribe before coldplug so no device added meanwhile is missed.
    let uevents = match uevent::open_socket() {
        Ok(fd) => match epoll.add(
            fd.as_fd(),
            EpollEvent::new(EpollFlags::EPOLLIN, TOKEN_UEVENTS),
        ) {
            Ok(()) => Some(fd),
            Err(e) => {
                say(&format!(
                    "error: watching uevents: {e}; hotplugged devices get no modules"
                ));
                None
            }
        },
        Err(e) => {
            say(&format!(
                "error: opening the uevent socket: {e}; hotplugged devices get no modules"
            ));
            None
        }
    };

    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    let modules_dir = Path::new("/lib/modules").join(&release);
    let (coldplug, problems) = Coldplug::from_dir(&modules_dir);
    for p in problems {
        say(&format!("error: module index: {p}"));
    }
    let mut init = Init {
        sys,
        epoll,
        signals,
        uevents,
        coldplug,
        buttons: HashMap::new(),
    };

    let outcome = init.coldplug.scan(&init.sys, Path::new("/sys"));
    report_modules("coldplug", &outcome);
    init.drain_uevents();
    for event in power_button::event_devices(Path::new("/sys")) {
        init.watch_power_button(&event);
    }
    say(&format!("network interfaces: {}", describe_interfaces()));
    say("ready");
    if let Some(kib) = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| console::resident_kib(&s))
    {
        say(&format!("PID 1 resident memory {kib} KiB"));
    }
    Ok(init)
}

impl Init {
    fn wait_and_handle(&mut self) {
        let mut events = [EpollEvent::empty(); 16];
        let n = match self.epoll.wait(&mut events, EpollTimeout::NONE) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => return,
            Err(e) => {
                say(&format!("error: waiting for events: {e}"));
                self.sys.sleep(std::time::Duration::from_secs(1));
                return;
            }
        };
        for event in &events[..n] {
            match event.data() {
                TOKEN_SIGNALS => self.handle_signals(),
                TOKEN_UEVENTS => self.drain_uevents(),
                token => self.handle_button(token),
            }
        }
    }

    fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signal = Signal::try_from(info.ssi_signo as i32).ok();
            let request = match signal {
                Some(Signal::SIGCHLD) => {
                    self.sys.reap_children();
                    None
                }
                Some(Signal::SIGINT) => Some((PowerAction::Reboot, "Ctrl-Alt-Del")),
                Some(Signal::SIGTERM) => Some((PowerAction::Reboot, "SIGTERM")),
                Some(Signal::SIGUSR1) => Some((PowerAction::Halt, "SIGUSR1")),
                Some(Signal::SIGUSR2) | Some(Signal::SIGPWR) => {
                    Some((PowerAction::PowerOff, "power signal"))
                }
                _ => None,
            };
            if let Some((action, reason)) = request {
                self.power(action, reason);
            }
        }
    }

    /// The one way to power off, reboot or halt; the control API calls this too.
    fn power(&mut self, action: PowerAction, reason: &str) {
        say(&format!("{} ({reason})", action.verb()));
        let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
        let error = shutdown::shut_down(&self.sys, action, &mounts, &mut |m| say(m));
        say(&format!(
            "error: the kernel refused {}: {error}; still running",
            action.verb()
        ));
    }

    fn drain_uevents(&mut self) {
        let Some(fd) = &self.uevents else { return };
        let mut buf = vec![0u8; 8192];
        let mut outcome = Outcome::default();
        let mut new_inputs = Vec::new();
        while let Some(n) = uevent::receive(fd, &mut buf) {
            let Some(event) = uevent::Uevent::parse(&buf[..n]) else {
                continue;
            };
            if !event.is_add() {
                continue;
            }
            if let Some(modalias) = event.get("MODALIAS") {
                self.coldplug
                    .handle_modalias(&self.sys, modalias, &mut outcome);
            }
            if let Some(name) = event.get("DEVNAME").and_then(|d| d.strip_prefix("input/")) {
                new_inputs.push(name.to_string());
            }
        }
        if !outcome.loaded.is_empty() || !outcome.errors.is_empty() {
            report_modules("hotplug", &outcome);
        }
        for name in new_inputs {
            self.watch_power_button(&name);
        }
    }

    fn watch_power_button(&mut self, event: &str) {
        // Boot both drains uevents and scans /sys: the same device may come twice.
        if self.buttons.values().any(|(name, _)| name == event) {
            return;
        }
        let sysfs = Path::new("/sys");
        let Some(file) = power_button::open_if_power_button(sysfs, event) else {
            return;
        };
        let token = file.as_raw_fd() as u64;
        if let Err(e) = self
            .epoll
            .add(file.as_fd(), EpollEvent::new(EpollFlags::EPOLLIN, token))
        {
            say(&format!("error: watching power button {event}: {e}"));
            return;
        }
        let name = fs::read_to_string(sysfs.join("class/input").join(event).join("device/name"))
            .unwrap_or_default();
        say(&format!(
            "power button: /dev/input/{event} ({})",
            name.trim()
        ));
        self.buttons.insert(token, (event.to_string(), file));
    }

    fn handle_button(&mut self, token: u64) {
        let Some((_, file)) = self.buttons.get_mut(&token) else {
            return;
        };
        let mut buf = [0u8; power_button::EVENT_SIZE * 16];
        let mut pressed = false;
        loop {
            match file.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => pressed |= power_button::power_pressed(&buf[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    // The device went away (ENODEV): stop watching it.
                    if let Some((_, file)) = self.buttons.remove(&token) {
                        let _ = self.epoll.delete(file.as_fd());
                    }
                    break;
                }
            }
        }
        if pressed {
            self.power(PowerAction::PowerOff, "power button");
        }
    }
}

fn report_modules(when: &str, outcome: &Outcome) {
    say(&format!(
        "{when}: loaded {} modules: {}",
        outcome.loaded.len(),
        outcome.loaded.join(" ")
    ));
    for error in &outcome.errors {
        say(&format!("error: {when}: {error}"));
    }
}

/// `eth0 (virtio_net)`, … for every interface but loopback.
fn describe_interfaces() -> String {
    let Ok(entries) = fs::read_dir("/sys/class/net") else {
        return "none".into();
    };
    let mut names: Vec<String> = entries
        .flatten()
        .filter_map(|e| e.file_name().into_string().ok())
        .filter(|n| n != "lo")
        .collect();
    names.sort();
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| {
            let driver = fs::read_link(format!("/sys/class/net/{n}/device/driver"))
                .ok()
                .and_then(|p| p.file_name().map(|f| f.to_string_lossy().into_owned()))
                .unwrap_or_else(|| "no driver".into());
            format!("{n} ({driver})")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The kernel gives init /dev/console as fds 0-2 only if the initramfs has the
/// node; otherwise open it from devtmpfs now.
fn ensure_console() {
    if nix::fcntl::fcntl(std::io::stdout(), nix::fcntl::FcntlArg::F_GETFD).is_ok() {
        return;
    }
    if let Ok(console) = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 on a file descriptor we own onto the standard fds,
            // which are closed (F_GETFD failed); no Rust object owns them.
            unsafe { libc::dup2(console.as_raw_fd(), fd) };
        }
    }
}

/// Boot could not set up the event loop: keep PID 1 alive, reaping orphans,
/// so the console stays usable and the machine can be reset from outside.
fn emergency(why: &str) -> ! {
    say(&format!(
        "emergency: {why}; the system stays up without supervision"
    ));
    let sys = Linux;
    loop {
        sys.reap_children();
        sys.sleep(std::time::Duration::from_secs(1));
    }
}
