//! The event loop driven as the kernel would drive it, without root: the
//! recording `System` fake stands in for the kernel (files, hostname,
//! sysctls, reaping, the clock, power) and a fake `Runtime` for the
//! containers, so each test calls the same handlers the loop calls (a
//! readable fd, SIGCHLD's reap, a request, a turn's supervision) and reads
//! back what PID 1 did.

use std::cell::RefCell;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use brig_runtime::Started;
use brig_spec::control::{Request, Response};
use brig_spec::paths::{self, LOCAL_FILE};
use brig_spec::service::ServiceSpec;
use nix::sys::epoll::{Epoll, EpollCreateFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use super::*;
use crate::config::network::Remote;
use crate::config::Seed;
use crate::host::coldplug::Coldplug;
use crate::host::system::fake::Recorder;
use crate::supervise::containers::Runtime;
use crate::supervise::log_ring;
use crate::supervise::supervisor::{BACKOFF_START, STABLE_AFTER};

/// What the fake runtime was asked to do, in order, and the write ends of
/// its containers' output pipes (stdout, stderr, in start order).
#[derive(Default)]
struct Seen {
    calls: RefCell<Vec<String>>,
    writers: RefCell<Vec<OwnedFd>>,
    /// How long each start takes on PID 1's clock (its setup, under TCG).
    start_takes: std::cell::Cell<Duration>,
}

type Log = Rc<Seen>;

/// Containers that only say they started: each gets the next pid and real
/// pipes (their write ends are kept, so the loop sees no end of output).
struct FakeRuntime {
    log: Log,
    next_pid: i32,
    /// Why a start fails, if it does (by service name).
    refuse: fn(&str) -> Option<brig_runtime::Error>,
    mounted_ahead: Vec<String>,
    /// PID 1's (fake) clock, which a start moves on by `Seen::start_takes`.
    clock: Rc<RefCell<Option<std::time::Instant>>>,
}

impl Runtime for FakeRuntime {
    fn prepare_ahead(&mut self) -> Result<(), String> {
        Ok(())
    }
    fn mount_ahead(&mut self, spec: &ServiceSpec) -> bool {
        let line = format!("mount ahead {}", spec.name);
        let mut calls = self.log.calls.borrow_mut();
        if self.mounted_ahead.contains(&spec.name) {
            return false;
        }
        self.mounted_ahead.push(spec.name.clone());
        calls.push(line);
        true
    }
    fn start(&mut self, spec: &ServiceSpec) -> Result<Started, brig_runtime::Error> {
        if let Some(error) = (self.refuse)(&spec.name) {
            self.log
                .calls
                .borrow_mut()
                .push(format!("refused {}", spec.name));
            return Err(error);
        }
        let mut clock = self.clock.borrow_mut();
        let now = clock.get_or_insert_with(std::time::Instant::now);
        *now += self.log.start_takes.get();
        self.next_pid += 1;
        let pid = self.next_pid;
        self.log
            .calls
            .borrow_mut()
            .push(format!("start {} {pid}", spec.name));
        let pipe = || nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        let ((stdout, out_w), (stderr, err_w)) = (pipe(), pipe());
        self.log.writers.borrow_mut().extend([out_w, err_w]);
        Ok(Started {
            pid,
            stdout,
            stderr,
        })
    }
    fn wait(&mut self, pid: i32) -> Result<i32, String> {
        Err(format!("no tool runs here (pid {pid})"))
    }
    fn signal(&mut self, pid: i32, signal: Signal) {
        self.log
            .calls
            .borrow_mut()
            .push(format!("signal {pid} {}", signal.as_str()));
    }
    fn kill_all(&mut self, name: &str, _: Option<i32>) {
        self.log.calls.borrow_mut().push(format!("kill-all {name}"));
    }
    fn kill_leftovers(&mut self, name: &str) {
        self.log
            .calls
            .borrow_mut()
            .push(format!("kill-leftovers {name}"));
    }
    fn has_path(&self, _: i32, _: &str) -> bool {
        false
    }
    fn start_check(&mut self, _: &ServiceSpec, _: i32, _: &[String]) -> Option<i32> {
        None
    }
    fn memory(&self, _: &str) -> Option<u64> {
        None
    }
}

/// PID 1 with these service specs (`name`, TOML), on the fakes; the
/// temporary directory holds the specs and the log socket's path.
fn pid1(specs: &[(&str, &str)]) -> (Init<Recorder>, Log, tempfile::TempDir) {
    pid1_refusing(specs, |_| None)
}

/// As `pid1`, with starts failing as `refuse` says.
fn pid1_refusing(
    specs: &[(&str, &str)],
    refuse: fn(&str) -> Option<brig_runtime::Error>,
) -> (Init<Recorder>, Log, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    for (name, toml) in specs {
        let text = format!("{toml}\n[rootfs]\npackages = [\"busybox\"]\n");
        // As `brig build` writes it into the image.
        let json = brig_spec::service::ServiceSpec::parse(name, &text)
            .map(|spec| spec.to_json())
            .unwrap_or_else(|_| "not a spec".into());
        std::fs::write(dir.path().join(format!("{name}.json")), json).unwrap();
    }
    let log = Log::default();
    let sys = Recorder::default();
    let runtime = FakeRuntime {
        log: log.clone(),
        next_pid: 100,
        refuse,
        mounted_ahead: Vec::new(),
        clock: sys.clock.clone(),
    };
    let flags = SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK;
    let socket = dir.path().join("log.sock");
    let init = Init {
        sys,
        epoll: Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).unwrap(),
        signals: SignalFd::with_flags(&SigSet::empty(), flags).unwrap(),
        uevents: None,
        sources: HashMap::new(),
        coldplug: Coldplug::from_dir(&dir.path().join("no-modules")).0,
        services: Services::new(dir.path(), Box::new(runtime)),
        echo_output: false,
        announced_ready: false,
        machine: None,
        update_child: None,
        trial: None,
        system_containers: Vec::new(),
        fleet: Default::default(),
        pending_power: None,
        boot: "the tests".into(),
        state: state::State::Absent,
        forward: log_forward::Forwarder::new(socket.to_str().unwrap()),
        watchdog: None,
    };
    (init, log, dir)
}

fn taken(log: &Log) -> Vec<String> {
    std::mem::take(&mut *log.calls.borrow_mut())
}

fn state(init: &Init<Recorder>, name: &str) -> &'static str {
    init.services.supervisor.get(name).unwrap().state.name()
}

const NETWORK: (&str, &str) = (
    "network",
    "command = [\"/usr/bin/brig-netd\"]\nhost_namespaces = [\"net\"]\nrestart = \"always\"",
);

#[test]
fn a_config_fetched_by_the_helper_is_planned_applied_and_releases_the_services() {
    let ntp = (
        "ntp",
        "command = [\"/usr/sbin/chronyd\"]\nrestart = \"always\"",
    );
    let (mut init, log, _dir) = pid1(&[NETWORK, ntp]);
    // As `fetch_config` leaves it: only the network may start.
    init.services.supervisor.hold_all_but(NETWORK_SERVICE);
    init.supervise();
    // The held one's image is mounted meanwhile, once.
    assert_eq!(taken(&log), ["start network 101", "mount ahead ntp"]);
    init.supervise();
    assert!(taken(&log).is_empty());

    // The helper writes its answer to a pipe and exits.
    let user_data = "#cloud-config\nhostname: fetched\nntp: {servers: [ntp.example.com]}\n\
                     brig: {sysctl: {vm.swappiness: 10}}\n\
                     network: {version: 2, ethernets: {eth0: {dhcp4: true}}}\n";
    let seed = Seed {
        source: "http://10.0.2.2:8000/ (NoCloud seed URL)".into(),
        user_data: Some(user_data.as_bytes().to_vec()),
        ..Seed::default()
    };
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let answer = serde_json::to_vec(&Ok::<_, String>(seed)).unwrap();
    nix::unistd::write(&write_end, &answer).unwrap();
    drop(write_end);
    let fd = read_end.as_raw_fd();
    let remote = Remote::NoCloud(crate::config::http::Url::parse("http://10.0.2.2:8000/").unwrap());
    init.sources.insert(
        fd,
        Source::Datasource {
            remote,
            fd: read_end,
            data: Vec::new(),
        },
    );
    init.handle(fd); // the answer
    assert!(init.sources.contains_key(&fd), "read, not yet at its end");
    init.handle(fd); // its end: applied

    assert!(!init.sources.contains_key(&fd));
    let calls = init.sys.calls();
    assert!(calls.contains(&"hostname fetched".into()), "{calls:?}");
    assert!(
        calls.contains(&"sysctl /proc/sys/vm/swappiness 10".into()),
        "{calls:?}"
    );
    let saved_user_data = Path::new(paths::SAVED_DIR).join("user-data");
    assert_eq!(
        init.sys.file(saved_user_data.to_str().unwrap()).as_deref(),
        Some(user_data),
        "the datasource is saved for boots without it"
    );
    let network = init
        .sys
        .file(paths::NETWORK_CONFIG)
        .expect("network config written");
    assert!(network.contains("\"eth0\""), "{network}");
    assert!(
        calls.contains(&format!("write {} 600", paths::NETWORK_CONFIG)),
        "{calls:?}"
    );
    let ntp_servers = init.sys.file(paths::NTP_SERVERS_FILE).unwrap();
    assert!(
        ntp_servers.contains("server ntp.example.com iburst"),
        "{ntp_servers}"
    );
    // The network config changed: the network container is restarted with
    // it (stopped first); the held services may start.
    assert_eq!(taken(&log), ["signal 101 SIGTERM"]);
    init.sys.exited.borrow_mut().push_back((101, 0));
    init.reap();
    init.supervise();
    let mut started = taken(&log);
    started.sort();
    assert_eq!(
        started,
        [
            "kill-leftovers network",
            "start network 102",
            "start ntp 103"
        ]
    );
}

#[test]
fn brigctl_config_set_saves_the_setting_and_replans_the_file_its_service_reads() {
    let docker = ("docker", "command = [\"/usr/bin/dockerd\"]");
    let (mut init, _log, _dir) = pid1(&[docker]);
    let set = Request::ConfigSet {
        key: "brig.docker.debug".into(),
        value: serde_json::json!(true),
    };
    let Some(Response::Ok { message }) = init.answer(-1, set) else {
        panic!("config set refused");
    };
    assert!(
        message.contains("`sudo brigctl restart docker` applies it now"),
        "{message}"
    );
    let local: serde_json::Value =
        serde_json::from_str(&init.sys.file(LOCAL_FILE).expect("local settings saved")).unwrap();
    assert_eq!(local["brig"]["docker"]["debug"], true);
    let config = init
        .sys
        .file(brig_spec::paths::DOCKER_CONFIG)
        .expect("docker's file written anew");
    let config: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(config["daemon"]["debug"], true, "{config}");

    // Unset: the section is gone from the config, and so is the file.
    let unset = Request::ConfigUnset {
        key: "brig.docker".into(),
    };
    assert!(matches!(init.answer(-1, unset), Some(Response::Ok { .. })));
    assert_eq!(init.sys.file(brig_spec::paths::DOCKER_CONFIG), None);
    // A value that is not valid there is refused, and nothing is written.
    let writes = init.sys.calls().len();
    let bad = Request::ConfigSet {
        key: "brig.docker.debug".into(),
        value: serde_json::json!("very"),
    };
    assert!(matches!(init.answer(-1, bad), Some(Response::Error { .. })));
    assert_eq!(init.sys.calls().len(), writes);
}

#[test]
fn a_crashed_service_is_reaped_and_restarted_after_a_backoff_that_grows() {
    let web = ("web", "command = [\"/bin/httpd\"]\nrestart = \"always\"");
    let (mut init, log, _dir) = pid1(&[web]);
    init.supervise();
    assert_eq!(taken(&log), ["start web 101"]);
    assert_eq!(state(&init, "web"), "running");

    // It crashes: SIGCHLD's reap hands it to the supervisor.
    init.sys.exited.borrow_mut().push_back((101, 1));
    init.reap();
    assert_eq!(taken(&log), ["kill-leftovers web"]);
    assert_eq!(state(&init, "web"), "backoff");
    let lines = init.services.rings["web"].tail(None);
    assert!(
        lines
            .iter()
            .any(|l| l.text == "exited with status 1; now backoff"),
        "{lines:?}"
    );
    // Not before the backoff, then again.
    init.sys.advance(BACKOFF_START - Duration::from_millis(1));
    init.supervise();
    assert!(taken(&log).is_empty());
    init.sys.advance(Duration::from_millis(1));
    init.supervise();
    assert_eq!(taken(&log), ["start web 102"]);

    // A second crash waits twice as long.
    init.sys.exited.borrow_mut().push_back((102, 1));
    init.reap();
    taken(&log);
    init.sys
        .advance(2 * BACKOFF_START - Duration::from_millis(1));
    init.supervise();
    assert!(taken(&log).is_empty());
    init.sys.advance(Duration::from_millis(1));
    init.supervise();
    assert_eq!(taken(&log), ["start web 103"]);
    // A run long enough to be stable resets it.
    init.sys.advance(STABLE_AFTER);
    init.sys.exited.borrow_mut().push_back((103, 1));
    init.reap();
    init.sys.advance(BACKOFF_START);
    init.supervise();
    assert_eq!(taken(&log), ["kill-leftovers web", "start web 104"]);
}

#[test]
fn a_readiness_timeout_counts_from_when_the_process_runs_not_from_the_turn() {
    // Three services started in one turn, each start taking 1.5 s of setup
    // (a slow board under load): the last runs 4.5 s after the turn began,
    // and each still gets its whole 5 s.
    let slow = "command = [\"/bin/daemon\"]\n\
                readiness = { type = \"path\", path = \"/run/up\", timeout_seconds = 5 }";
    let (mut init, log, _dir) = pid1(&[("a", slow), ("b", slow), ("c", slow)]);
    log.start_takes.set(Duration::from_millis(1500));
    init.supervise();
    assert_eq!(taken(&log), ["start a 101", "start b 102", "start c 103"]);
    log.start_takes.set(Duration::ZERO);
    // 5.5 s after the turn began: 4 s since a ran, 1 s since c did.
    init.sys.advance(Duration::from_secs(1));
    init.supervise();
    init.supervise();
    assert!(taken(&log).is_empty(), "stopped before their time");
    assert_eq!(state(&init, "c"), "starting");
    // 5 s after a ran: one last look at a, then a is stopped, with SIGTERM
    // (its grace to clean up), and only a.
    init.sys.advance(Duration::from_secs(1));
    init.supervise();
    init.supervise();
    assert_eq!(taken(&log), ["signal 101 SIGTERM"]);
    assert_eq!(
        ["a", "b", "c"].map(|name| state(&init, name)),
        ["stopping", "starting", "starting"]
    );
}

#[test]
fn power_off_stops_dependents_first_then_the_rest_and_only_then_the_machine() {
    let console = (
        "console",
        "command = [\"/usr/sbin/sshd\"]\ndepends_on = [\"network\"]\nrestart = \"always\"",
    );
    let (mut init, log, _dir) = pid1(&[NETWORK, console]);
    init.supervise();
    assert_eq!(
        taken(&log),
        ["start network 101", "mount ahead console"],
        "dependencies first, the console's image mounted while they start"
    );
    init.supervise();
    assert_eq!(taken(&log), ["start console 102"]);

    init.power(PowerAction::PowerOff, "brigctl poweroff");
    assert_eq!(taken(&log), ["signal 102 SIGTERM"], "the console first");
    // Another request while going down is not a second shutdown.
    init.power(PowerAction::Reboot, "Ctrl-Alt-Del");
    assert!(taken(&log).is_empty());
    init.supervise();
    assert!(taken(&log).is_empty(), "the network waits for the console");
    assert!(!init.sys.calls().iter().any(|c| c.starts_with("power")));

    init.sys.exited.borrow_mut().push_back((102, 0));
    init.reap();
    init.supervise();
    assert_eq!(
        taken(&log),
        ["kill-leftovers console", "signal 101 SIGTERM"],
        "then the network"
    );
    assert!(!init.sys.calls().iter().any(|c| c.starts_with("power")));

    init.sys.exited.borrow_mut().push_back((101, 0));
    init.reap();
    init.supervise();
    let calls = init.sys.calls();
    let at = |call: &str| calls.iter().position(|c| c == call);
    let (term, sync, power) = (at("kill-all SIGTERM"), at("sync"), at("power PowerOff"));
    assert!(
        term.is_some() && term < sync && sync < power && power == Some(calls.len() - 1),
        "what is left is told to stop, the disks synced, then the power cut: {calls:?}"
    );
}

#[test]
fn a_spec_that_cannot_run_fails_at_once_and_a_host_failure_is_retried() {
    let web = ("web", "command = [\"/bin/httpd\"]\nrestart = \"always\"");
    let db = ("db", "command = [\"/bin/db\"]\nrestart = \"always\"");
    let (mut init, log, _dir) = pid1_refusing(&[web, db], |name| match name {
        "web" => Some(brig_runtime::Error::Spec(
            "user \"www\" is not in the image".into(),
        )),
        _ => Some(brig_runtime::Error::host(
            "opening /dev/loop-control",
            std::io::Error::from_raw_os_error(libc::ENOENT),
        )),
    });
    init.supervise();
    let mut refused = taken(&log);
    refused.sort();
    assert_eq!(refused, ["refused db", "refused web"]);
    assert_eq!(
        state(&init, "web"),
        "failed",
        "a spec problem is no reason to retry"
    );
    assert_eq!(
        state(&init, "db"),
        "backoff",
        "the host may be ready next time"
    );
    let detail = init.services.supervisor.get("web").unwrap().detail.clone();
    assert_eq!(detail.as_deref(), Some("user \"www\" is not in the image"));
    init.sys.advance(STABLE_AFTER);
    init.supervise();
    assert_eq!(
        taken(&log),
        ["refused db"],
        "only the host failure is tried again"
    );
}

#[test]
fn a_service_that_writes_without_pause_gets_a_bounded_share_of_each_turn() {
    let yes = ("yes", "command = [\"/usr/bin/yes\"]");
    let (mut init, log, _dir) = pid1(&[yes]);
    init.supervise();
    assert_eq!(taken(&log), ["start yes 101"]);
    // More output waiting than one turn takes: a pipe made larger, filled
    // with empty lines (`yes ''`).
    let stdout = &log.writers.borrow()[0];
    let waiting = 4 * OUTPUT_PER_TURN;
    nix::fcntl::fcntl(stdout, nix::fcntl::FcntlArg::F_SETPIPE_SZ(waiting as i32)).unwrap();
    nix::unistd::write(stdout, &vec![b'\n'; waiting]).unwrap();
    let fd = *init
        .sources
        .iter()
        .find(|(_, s)| matches!(s, Source::Output(p) if p.stream == log_ring::STDOUT))
        .unwrap()
        .0;
    init.handle(fd);
    let ring = &init.services.rings["yes"];
    assert_eq!(
        ring.total,
        1 + OUTPUT_PER_TURN as u64,
        "its note, then one turn's share"
    );
    init.handle(fd);
    assert_eq!(
        init.services.rings["yes"].total,
        1 + 2 * OUTPUT_PER_TURN as u64
    );
    // However much it wrote, the ring holds its budget.
    init.handle(fd);
    init.handle(fd);
    let ring = &init.services.rings["yes"];
    assert_eq!(ring.total, 1 + waiting as u64);
    assert!(ring.tail(None).len() <= log_ring::RING_BYTES / log_ring::LINE_COST);
    // No log service here: its share of the queue waits for one, and the
    // rest is counted, to be said once the rate limit's window ends.
    let queued = init.forward.pending() - 1;
    assert!(queued > 0 && init.forward.queued_bytes() <= log_forward::SERVICE_SHARE + 1024);
    let later = console::since_boot() + log_forward::RATE_INTERVAL;
    assert_eq!(
        init.forward.limit.ended(later),
        [("yes".to_string(), (waiting - queued) as u64)]
    );
}

#[test]
fn a_panic_every_turn_is_paused_after_more_and_more_up_to_a_second() {
    let pauses: Vec<u128> = (0..12).map(|n| pause_after_panics(n).as_millis()).collect();
    assert_eq!(
        pauses,
        [0, 0, 10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]
    );
    assert_eq!(pause_after_panics(u32::MAX), Duration::from_secs(1));
}

#[test]
fn an_update_check_held_back_never_leaves_a_past_due_time_to_spin_on() {
    let (mut init, _log, _dir) = pid1(&[]);
    init.fleet.config.url = Some("http://server/b".into());
    init.announced_ready = true;
    // Another OS job runs when the check falls due: the check waits.
    init.update_child = Some(4242);
    let now = init.sys.now();
    init.fleet.postpone(now);
    assert_eq!(init.fleet.wakeup(), Some(now));
    init.follow_updates();
    assert!(init.fleet.checking.is_none(), "no check beside another job");
    let at = init.fleet.wakeup().expect("a check to come");
    assert!(at > now, "due time {at:?} not after {now:?}");
    // While the machine shuts down, no update due time wakes the loop.
    init.power(crate::host::system::PowerAction::Reboot, "the test");
    init.update_child = None;
    init.fleet.postpone(now);
    assert!(
        init.next_wakeup(None).is_none_or(|at| at > now),
        "{:?}",
        init.next_wakeup(None)
    );
}
