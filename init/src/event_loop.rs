//! PID 1's event loop: one single-threaded epoll loop over a signalfd
//! (children, Ctrl-Alt-Del, power requests), kernel uevents (hotplug),
//! power-button input devices, service output pipes, the control socket and
//! a config fetch, with the supervisor's deadlines as its timeout. Nothing
//! here may panic the process or make it exit: every step reports its
//! errors and the loop carries on. The handlers live with their concern
//! (`control`, `config::apply`, `host::hotplug`); this file has the loop,
//! the reaper, power and the services' output.

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::time::{Duration, Instant};

use brig_spec::control::{LogLine, Response};
use nix::sys::epoll::{Epoll, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::Signal;
use nix::sys::signalfd::SignalFd;

use crate::boot::state;
use crate::config::network::Remote;
use crate::control::Client;
use crate::host::coldplug::Coldplug;
use crate::host::console::{self, say, say_error, Level};
use crate::host::shutdown;
use crate::host::system::{Linux, PowerAction, System};
use crate::supervise::log_forward;
use crate::supervise::services::{Pipe, Services};
use crate::supervise::supervisor::Action;

/// The system container that brings the network up (network datasources
/// wait for it).
pub(crate) const NETWORK_SERVICE: &str = "network";
/// The watchdog's timeout for the shutdown's last steps (drivers cap it:
/// bcm2835-wdt at 15 s).
const SHUTDOWN_WATCHDOG_TIMEOUT: u32 = 120;

/// The most of one output pipe read in one turn of the loop.
pub(crate) const OUTPUT_PER_TURN: usize = 16 * 1024;
/// Read and published at a time (at most this many lines).
const OUTPUT_PER_READ: usize = 1024;

/// How long services get to stop at shutdown before the rest goes ahead.
pub(crate) const SERVICES_STOP_LIMIT: Duration = Duration::from_secs(30);

/// What an fd in the epoll set is.
pub(crate) enum Source {
    Signals,
    Uevents,
    Button(String, File),
    Output(Pipe),
    Listener(UnixListener),
    Client(Box<Client>),
    /// The helper fetching config over the network, and what it wrote.
    Datasource {
        remote: Remote,
        fd: OwnedFd,
        data: Vec<u8>,
    },
}

/// PID 1 at run time; `S` is the seam to the kernel (the recording fake in
/// the unit tests).
pub struct Init<S: System = Linux> {
    pub(crate) sys: S,
    pub(crate) epoll: Epoll,
    pub(crate) signals: SignalFd,
    pub(crate) uevents: Option<OwnedFd>,
    pub(crate) sources: HashMap<RawFd, Source>,
    pub(crate) coldplug: Coldplug,
    pub(crate) services: Services,
    /// Echo service output on the console (`brig.service_output=console`).
    pub(crate) echo_output: bool,
    pub(crate) announced_ready: bool,
    /// A power action waiting for services to stop, and until when.
    pub(crate) pending_power: Option<(PowerAction, Instant)>,
    /// How this boot reached PID 1, for `brigctl status`.
    pub(crate) boot: String,
    pub(crate) state: state::State,
    /// Service output and PID 1's messages on their way to the log service.
    pub(crate) forward: log_forward::Forwarder,
    /// The hardware watchdog, fed each turn when due.
    pub(crate) watchdog: Option<crate::host::watchdog::Watchdog>,
    /// The system slot this boot runs from, if it runs from one.
    pub(crate) machine: Option<crate::update::boot_partition::Machine>,
    /// The process installing an update or rolling back, while it runs.
    pub(crate) update_child: Option<i32>,
    /// This boot's version on trial after an update, while it is judged.
    pub(crate) trial: Option<crate::update::trial::Trial>,
    /// The system containers the image brought (not `brig.services`): all
    /// must be up for a version on trial to be healthy.
    pub(crate) system_containers: Vec<String>,
    /// Updates this machine looks for by itself (`brig.update.url`).
    pub(crate) fleet: crate::update::fleet::Fleet,
}

pub(crate) fn watch(epoll: &Epoll, fd: BorrowedFd) -> nix::Result<()> {
    epoll.add(
        fd,
        EpollEvent::new(EpollFlags::EPOLLIN, fd.as_raw_fd() as u64),
    )
}

/// How long the loop pauses after its `panics`-th turn in a row that
/// panicked: nothing after one, then 10 ms doubling up to a second, so a
/// bug that strikes every turn costs little CPU and floods nothing.
pub fn pause_after_panics(panics: u32) -> Duration {
    match panics {
        0 | 1 => Duration::ZERO,
        n => (Duration::from_millis(10) * 2u32.saturating_pow(n - 2)).min(Duration::from_secs(1)),
    }
}

/// Seconds since boot, for log lines.
pub(crate) fn uptime() -> f64 {
    console::since_boot().as_secs_f64()
}

impl<S: System> Init<S> {
    /// One turn of the event loop: act on what is due, wait, handle events.
    pub fn turn(&mut self) {
        self.supervise();
        let watchdog_due = self.feed_watchdog();
        let timeout = match self.next_wakeup(watchdog_due) {
            Some(deadline) => {
                let ms = deadline
                    .saturating_duration_since(self.sys.now())
                    .as_millis()
                    .min(60_000) as u16;
                EpollTimeout::from(ms.max(1))
            }
            None if self.pending_power.is_some() => EpollTimeout::from(100u16),
            None => EpollTimeout::NONE,
        };
        let mut events = [EpollEvent::empty(); 32];
        let n = match self.epoll.wait(&mut events, timeout) {
            Ok(n) => n,
            Err(nix::Error::EINTR) => return,
            Err(e) => {
                say_error(&format!("waiting for events: {e}"));
                self.sys.sleep(Duration::from_secs(1));
                return;
            }
        };
        for event in &events[..n] {
            self.handle(event.data() as RawFd);
        }
        self.forward_logs();
    }

    /// The earliest moment something is due: a service's deadline, the
    /// watchdog, a trial's check, an update check.
    pub(crate) fn next_wakeup(&self, watchdog_due: Option<Instant>) -> Option<Instant> {
        // Neither a trial nor an update check acts while the machine
        // shuts down: their due times must not keep the loop spinning.
        let updates = match self.pending_power {
            None => [self.trial_wakeup(), self.fleet.wakeup()],
            Some(_) => [None, None],
        };
        // A rate limit's window that held lines back ends: say so then.
        let held_back = self
            .forward
            .limit
            .next_end()
            .map(|end| self.sys.now() + end.saturating_sub(console::since_boot()));
        [
            self.services.supervisor.next_deadline(self.sys.now()),
            watchdog_due,
            held_back,
        ]
        .into_iter()
        .chain(updates)
        .flatten()
        .min()
    }

    /// Feeds the hardware watchdog if due; when it is next due. A watchdog
    /// that cannot be fed is said once and let go: the machine then resets
    /// at its timeout, which is what a watchdog that fails should do.
    fn feed_watchdog(&mut self) -> Option<Instant> {
        let watchdog = self.watchdog.as_mut()?;
        match watchdog.feed(self.sys.now()) {
            Ok(due) => Some(due),
            Err(e) => {
                say_error(&format!("watchdog: {e}"));
                self.watchdog = None;
                None
            }
        }
    }

    /// PID 1's messages and the lines published since the last turn, to
    /// the log service if it is there (they wait for it otherwise).
    pub(crate) fn forward_logs(&mut self) {
        let now = console::since_boot();
        for (at, level, text) in console::take_notes() {
            self.forward.push_note(level, &text, now.saturating_sub(at));
        }
        let ended = self.forward.limit.ended(now);
        self.say_held_back(ended);
        if self.forward.pending() > 0 {
            self.forward.flush();
        }
    }

    /// Tells the log service how many lines of each service's output
    /// its rate limit held back in a window that has ended.
    fn say_held_back(&mut self, ended: Vec<(String, u64)>) {
        for (service, lines) in ended {
            let note = log_forward::suppressed_note(&service, lines);
            self.forward.push_note(Level::Info, &note, Duration::ZERO);
        }
    }

    /// Lets the supervisor act, announces readiness, finishes a pending shutdown.
    pub(crate) fn supervise(&mut self) {
        let now = self.sys.now();
        let actions = self.services.supervisor.tick(now);
        self.act(actions);
        if self.pending_power.is_none() {
            if let Some(e) = self.services.prepare_ahead() {
                say_error(&e);
            }
        }
        if !self.announced_ready && self.services.settled() {
            self.announced_ready = true;
            let not_up: Vec<String> = self
                .services
                .status(now)
                .into_iter()
                .filter(|s| !matches!(s.state.as_str(), "running" | "done" | "stopped"))
                .map(|s| format!("{} ({}: {})", s.name, s.state, s.detail.unwrap_or_default()))
                .collect();
            if not_up.is_empty() {
                say("ready");
            } else {
                say(&format!("ready; not running: {}", not_up.join(", ")));
            }
            if let Some(kib) = fs::read_to_string("/proc/self/status")
                .ok()
                .and_then(|s| console::resident_kib(&s))
            {
                say(&format!("PID 1 resident memory {kib} KiB"));
            }
        }
        self.watch_trial();
        self.follow_updates();
        if let Some((action, deadline)) = self.pending_power {
            if self.services.supervisor.all_stopped() || now >= deadline {
                self.pending_power = None;
                let mounts = self
                    .sys
                    .read_file(Path::new("/proc/self/mounts"))
                    .unwrap_or_default();
                let mounts = String::from_utf8_lossy(&mounts);
                // The last steps run outside the loop: the longest timeout
                // the driver allows, fed between them. A shutdown that
                // hangs still ends in a reset.
                let now = self.sys.now();
                if let Some(watchdog) = self.watchdog.as_mut() {
                    if let Err(e) = watchdog.stretch(SHUTDOWN_WATCHDOG_TIMEOUT, now) {
                        say_error(&format!("watchdog: {e}"));
                    }
                }
                let (sys, watchdog) = (&self.sys, &mut self.watchdog);
                let mut feed = || {
                    if let Some(watchdog) = watchdog.as_mut() {
                        let _ = watchdog.feed_now(sys.now());
                    }
                };
                let error =
                    shutdown::shut_down(&self.sys, action, &mounts, &mut |m| say(m), &mut feed);
                say_error(&format!(
                    "the kernel refused {}: {error}; still running",
                    action.verb()
                ));
            }
        }
    }

    pub(crate) fn handle(&mut self, fd: RawFd) {
        match self.sources.get(&fd) {
            Some(Source::Signals) => self.handle_signals(),
            Some(Source::Uevents) => self.drain_uevents(),
            Some(Source::Button(..)) => self.handle_button(fd),
            Some(Source::Output(_)) => self.handle_output(fd),
            Some(Source::Listener(_)) => self.accept_clients(fd),
            Some(Source::Client(_)) => self.handle_client(fd),
            Some(Source::Datasource { .. }) => self.handle_datasource(fd),
            None => {}
        }
    }

    pub(crate) fn forget(&mut self, fd: RawFd) -> Option<Source> {
        let source = self.sources.remove(&fd)?;
        // SAFETY: fd is open: its owner (in `source`) is dropped only below.
        let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) });
        Some(source)
    }

    pub(crate) fn handle_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let request = match Signal::try_from(info.ssi_signo as i32).ok() {
                Some(Signal::SIGCHLD) => {
                    self.reap();
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

    /// The one central reaper: every exited child goes through here.
    pub(crate) fn reap(&mut self) {
        while let Some((pid, code)) = self.sys.reap() {
            if self.os_request_ended(pid, code) {
                continue;
            }
            if let Some(line) = self.services.exited(pid, code, self.sys.now(), uptime()) {
                self.publish(vec![line]);
            }
        }
    }

    /// The one way to power off, reboot or halt; the control API calls it too.
    /// Services are stopped in order first; the rest happens in `supervise`.
    pub(crate) fn power(&mut self, action: PowerAction, reason: &str) {
        if self.pending_power.is_some() {
            return;
        }
        say(&format!("{} ({reason})", action.verb()));
        let now = self.sys.now();
        let actions = self.services.supervisor.shut_down(now);
        self.act(actions);
        self.pending_power = Some((action, now + SERVICES_STOP_LIMIT));
    }

    /// Carries out supervisor actions: new output pipes join the epoll set,
    /// PID 1's notes about the services are published.
    pub(crate) fn act(&mut self, actions: Vec<Action>) {
        for action in actions {
            // A start may wait for its setup (`SETUP_DEADLINE`), and a turn
            // may start several services: each gets a whole timeout.
            if matches!(action, Action::Start(_)) {
                if let Some(watchdog) = self.watchdog.as_mut() {
                    let _ = watchdog.feed_now(self.sys.now());
                }
            }
            let sys = &self.sys;
            let (pipes, notes) = self.services.perform(action, &|| sys.now(), uptime());
            for pipe in pipes {
                if let Err(e) = watch(&self.epoll, pipe.fd.as_fd()) {
                    say_error(&format!("watching output of {}: {e}", pipe.service));
                    continue;
                }
                self.sources
                    .insert(pipe.fd.as_raw_fd(), Source::Output(pipe));
            }
            self.publish(notes);
        }
    }

    /// New log lines: to followers, and to the console if asked.
    pub(crate) fn publish(&mut self, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        if self.echo_output {
            for line in &lines {
                console::echo(&format!("[{}] {}", line.service, line.text));
            }
        }
        let now = console::since_boot();
        // A service's output within its rate limit (PID 1's notes about it
        // always); the rest is counted without being formatted.
        let mut ended = Vec::new();
        let limit = &mut self.forward.limit;
        let admitted: Vec<&LogLine> = lines
            .iter()
            .filter(|l| l.stream == "brig" || limit.admit(&l.service, now, &mut ended))
            .collect();
        self.say_held_back(ended);
        for line in admitted {
            let age = now.saturating_sub(Duration::from_secs_f64(line.time.max(0.0)));
            self.forward.push_line(line, age);
        }
        let mut gone = Vec::new();
        for (fd, source) in &mut self.sources {
            if let Source::Client(client) = source {
                if let Some(service) = &client.follow {
                    let mine: Vec<LogLine> = lines
                        .iter()
                        .filter(|l| &l.service == service)
                        .cloned()
                        .collect();
                    if !mine.is_empty() && !client.send(&Response::Log { lines: mine }) {
                        gone.push(*fd);
                    }
                }
            }
        }
        for fd in gone {
            self.forget(fd);
        }
    }

    pub(crate) fn handle_output(&mut self, fd: RawFd) {
        let Some(Source::Output(pipe)) = self.sources.get(&fd) else {
            return;
        };
        let (service, stream) = (pipe.service.clone(), pipe.stream);
        // Small reads, each published at once: a kilobyte of empty lines
        // is a thousand lines, and a turn's share of them all at once would
        // be megabytes of PID 1's memory for a moment.
        let mut buf = [0u8; OUTPUT_PER_READ];
        let mut closed = false;
        // A bounded share per turn: a service that writes without pause
        // (`yes`) is read again next turn, after everything else.
        let mut budget = OUTPUT_PER_TURN;
        while budget > 0 {
            let Some(Source::Output(pipe)) = self.sources.get(&fd) else {
                return;
            };
            match nix::unistd::read(&pipe.fd, &mut buf[..budget.min(OUTPUT_PER_READ)]) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => {
                    budget -= n;
                    let lines = self.services.output(&service, stream, &buf[..n], uptime());
                    self.publish(lines);
                }
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            let lines = self.services.output_closed(&service, stream, uptime());
            self.forget(fd);
            self.publish(lines);
        }
    }
}

#[cfg(test)]
mod tests;
