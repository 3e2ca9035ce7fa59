//! brig-init: Brig's PID 1.
//!
//! Boot: early mounts, switch from the initramfs into a tmpfs root, console,
//! hostname, module coldplug, power button, system containers; then one
//! single-threaded epoll loop over a signalfd (children, Ctrl-Alt-Del, power
//! requests), kernel uevents (hotplug), power-button input devices, service
//! output pipes and the control socket, with supervisor deadlines as the
//! timeout. Nothing here may panic the process or make it exit: every step
//! reports its errors and the loop carries on.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brig_init::boot::disk;
use brig_init::boot::{state, switch_root};
use brig_init::config::ec2::Dmi;
use brig_init::config::network::{self, Remote};
use brig_init::config::{self, local_settings, plan, saved};
use brig_init::control::{self, Client, Input};
use brig_init::host::coldplug::{Coldplug, Outcome};
use brig_init::host::console::{self, say};
use brig_init::host::kernel_cmdline::Cmdline;
use brig_init::host::system::{Linux, PowerAction, System};
use brig_init::host::{
    block_devices, modprobe, mounts, power_button, shutdown, uevent, user_mounts,
};
use brig_init::supervise::log_forward;
use brig_init::supervise::services;
use brig_init::supervise::services::{Pipe, Services};
use brig_init::supervise::supervisor::Action;
use brig_runtime::cgroup;
use brig_spec::cloud_config::{DEFAULT_FILE, LOCAL_FILE};
use brig_spec::control::{LogLine, Request, Response, SystemStatus, SOCKET};
use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};

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
/// The system container that brings the network up (network datasources
/// wait for it).
const NETWORK_SERVICE: &str = "network";
/// The system container with the filesystem tools (e2fsck) PID 1 runs
/// before the services.
const STORAGE_TOOLS: &str = "storage";
/// Modules no device asks for but system containers need.
const CONTAINER_MODULES: &[&str] = &["loop", "squashfs", "overlay"];
/// How long services get to stop at shutdown before the rest goes ahead.
const SERVICES_STOP_LIMIT: Duration = Duration::from_secs(30);

/// What an fd in the epoll set is.
enum Source {
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

struct Init {
    sys: Linux,
    epoll: Epoll,
    signals: SignalFd,
    uevents: Option<OwnedFd>,
    sources: HashMap<RawFd, Source>,
    coldplug: Coldplug,
    services: Services,
    /// Echo service output on the console (`brig.service_output=console`).
    echo_output: bool,
    announced_ready: bool,
    /// A power action waiting for services to stop, and until when.
    pending_power: Option<(PowerAction, Instant)>,
    /// How this boot reached PID 1, for `brigctl status`.
    boot: String,
    state: state::State,
    /// Service output and PID 1's messages on their way to the log service.
    forward: log_forward::Forwarder,
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.first().is_some_and(|a| a.ends_with("modprobe")) {
        // Run by the kernel as its module loader, not as init.
        std::process::exit(modprobe::main(&Linux, &modules_dir(), &args[1..]));
    }
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
        if panic::catch_unwind(AssertUnwindSafe(|| init.turn())).is_err() {
            say("recovered from an internal error; still serving");
        }
    }
}

/// The running kernel's modules in the image.
fn modules_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

fn boot() -> Result<Init, String> {
    let sys = Linux;
    say(&format!("brig-init {VERSION} started as PID 1"));

    // Signals are taken through a signalfd in the event loop; children get a
    // clean mask when they are spawned.
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
    let on_initramfs =
        switch_root::on_initramfs(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    if on_initramfs {
        match switch_root::switch(&["/proc", "/sys", "/dev", "/run"]) {
            Ok(()) => say("switched from the initramfs to a tmpfs root"),
            Err(e) => say(&format!(
                "error: switching root: {e}; system containers cannot start"
            )),
        }
    }

    // Names in config URLs resolve with the network container's DNS.
    let resolv = format!("{}/resolv.conf", brig_spec::network::DNS_DIR);
    if let Err(e) = std::os::unix::fs::symlink(&resolv, "/etc/resolv.conf") {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            say(&format!("error: linking /etc/resolv.conf to {resolv}: {e}"));
        }
    }

    // syslog(3) in PID 1's own root and in privileged containers (which
    // see this /dev) reaches the log service.
    if let Err(e) = std::os::unix::fs::symlink(brig_spec::logs::SYSLOG_SOCKET, "/dev/log") {
        if e.kind() != std::io::ErrorKind::AlreadyExists {
            say(&format!("error: linking /dev/log: {e}"));
        }
    }

    // Modules the kernel asks for later (a bond, a bridge) come through us.
    let _ = fs::create_dir_all("/sbin");
    let _ = fs::remove_file(modprobe::PATH);
    if let Err(e) = std::os::unix::fs::symlink("/init", modprobe::PATH) {
        say(&format!("error: creating {}: {e}", modprobe::PATH));
    }

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
    let mut sources = HashMap::new();
    watch(&epoll, signals.as_fd()).map_err(|e| format!("watching signalfd: {e}"))?;
    sources.insert(signals.as_raw_fd(), Source::Signals);
    // Subscribe before coldplug so no device added meanwhile is missed.
    let uevents = match uevent::open_socket() {
        Ok(fd) => match watch(&epoll, fd.as_fd()) {
            Ok(()) => {
                sources.insert(fd.as_raw_fd(), Source::Uevents);
                Some(fd)
            }
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

    let (coldplug, problems) = Coldplug::from_dir(&modules_dir());
    for p in problems {
        say(&format!("error: module index: {p}"));
    }
    let cgroup_root = PathBuf::from(cgroup::ROOT);
    let cgroups = cgroup::is_v2(&cgroup_root).then_some(cgroup_root);
    // Directories system containers share through bind mounts.
    for (dir, mode, group) in services::SHARED_DIRS {
        let made = fs::create_dir_all(dir)
            .and_then(|()| std::os::unix::fs::chown(dir, Some(0), Some(*group)))
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(*mode)));
        if let Err(e) = made {
            say(&format!("error: creating {dir}: {e}"));
        }
    }
    // Where the user's disks go (cloud-config `mounts`); containers bind them.
    for dir in brig_spec::mounts::MOUNT_ROOTS {
        if let Err(e) = fs::create_dir_all(dir) {
            say(&format!("error: creating {dir}: {e}"));
        }
    }
    let mut init = Init {
        sys,
        epoll,
        signals,
        uevents,
        sources,
        coldplug,
        services: Services::new(Path::new(services::IMAGES), cgroups.clone()),
        echo_output: cmdline.value("brig.service_output") == Some("console"),
        announced_ready: false,
        pending_power: None,
        boot: if on_initramfs {
            "kernel and initramfs"
        } else {
            "a root filesystem"
        }
        .into(),
        state: state::State::Absent,
        forward: log_forward::Forwarder::new(brig_spec::logs::SYSLOG_SOCKET),
    };

    let mut outcome = init.coldplug.scan(&init.sys, Path::new("/sys"));
    report_modules("coldplug", &outcome);
    init.drain_uevents();
    for event in power_button::event_devices(Path::new("/sys")) {
        init.watch_power_button(&event);
    }
    say(&format!("network interfaces: {}", describe_interfaces()));

    outcome = Outcome::default();
    for module in CONTAINER_MODULES {
        init.coldplug.load_named(&init.sys, module, &mut outcome);
    }
    report_modules("container modules", &outcome);
    match &cgroups {
        Some(root) => {
            for e in cgroup::prepare(root) {
                say(&format!("error: cgroups: {e}"));
            }
        }
        None => say("error: no cgroup2 hierarchy: services run without limits"),
    }
    // A disk image: the system containers are on its system partition.
    let boot_disk = init.mount_system_partition(&cmdline, cgroups.clone());
    // Before the config: the saved config and datasource live on it.
    let scan = || {
        block_devices::scan().unwrap_or_else(|e| {
            say(&format!("error: {e}"));
            Vec::new()
        })
    };
    let mut volumes = scan();
    if let Some(disk) = &boot_disk {
        if init.prepare_state_partition(disk, &volumes) {
            volumes = scan();
        }
    }
    if volumes
        .iter()
        .any(|(_, v)| v.label.as_deref() == Some(state::LABEL))
    {
        outcome = Outcome::default();
        init.coldplug.load_named(&init.sys, "ext4", &mut outcome);
        if !outcome.loaded.is_empty() || !outcome.errors.is_empty() {
            report_modules("state partition", &outcome);
        }
    }
    let services = &mut init.services;
    init.state = state::mount(&init.sys, &volumes, &mut |device| {
        let (code, output) =
            services.run_tool(STORAGE_TOOLS, &["/usr/sbin/e2fsck", "-p", device])?;
        state::fsck_verdict(code, &output).map(|said| format!("e2fsck: {said}"))
    });
    say(&init.state.describe());
    let found = config::find(&init.sys, &cmdline, &volumes, &Dmi::read(), &mut |e| {
        say(&format!("error: config: {e}"))
    });
    match found {
        config::Found::Here(seed) => {
            if let Some(plan) = read_config(&init.sys, Ok(seed)) {
                init.apply_config(plan);
            }
        }
        config::Found::Network(remote) => init.fetch_config(remote),
    }
    init.open_control_socket();
    let count = init.services.supervisor.services.len();
    say(&format!("system containers: {count}"));
    init.load_service_modules();
    Ok(init)
}

/// cloud-init config from what the datasource gave (or the saved one when
/// it gave nothing): the host name now, files under /run/brig/config for
/// the system containers. Problems are reported and the rest applies.
fn read_config(
    sys: &dyn System,
    found: Result<Option<config::Seed>, String>,
) -> Option<plan::Plan> {
    let saved_dir = Path::new(saved::SAVED_DIR);
    let seed = match found {
        Ok(Some(seed)) => {
            if let Err(e) = saved::save(&seed, saved_dir) {
                say(&format!("error: config: {e}"));
            }
            Some(seed)
        }
        Ok(None) => saved::saved(saved_dir),
        Err(e) => {
            say(&format!("error: config: {e}"));
            saved::saved(saved_dir)
        }
    };
    let local = local_settings::read(Path::new(LOCAL_FILE)).unwrap_or_else(|e| {
        say(&format!(
            "error: config: {e}; those settings are not applied"
        ));
        Default::default()
    });
    let default = match fs::read(DEFAULT_FILE) {
        Ok(data) => {
            say(&format!(
                "config: the image's default config ({DEFAULT_FILE}) applies under the datasource"
            ));
            Some(data)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            say(&format!("error: config: reading {DEFAULT_FILE}: {e}"));
            None
        }
    };
    let seed = match seed {
        Some(seed) => seed,
        None if local.is_empty() && default.is_none() => {
            say("config: no datasource found; defaults apply");
            return None;
        }
        None => config::Seed {
            source: "no datasource".into(),
            ..Default::default()
        },
    };
    if !local.is_empty() {
        say(&format!(
            "config: {} settings from `brigctl config set` ({LOCAL_FILE}) apply over the datasource",
            local.len()
        ));
    }
    say(&format!("config: from {}", seed.source));
    let plan = plan::plan(&seed, default.as_deref(), &local);
    for problem in &plan.problems {
        say(&format!("config: {problem}"));
    }
    if let Some(name) = &plan.hostname {
        match sys.set_hostname(name) {
            Ok(()) => say(&format!("hostname {name} (from config)")),
            Err(e) => say(&format!("error: setting hostname {name:?}: {e}")),
        }
    }
    for (path, text) in &plan.files {
        if let Err(e) = write_config_file(path, text) {
            say(&format!("error: config: {e}"));
        }
    }
    Some(plan)
}

/// Writes a config file for the containers, root's only: config can hold
/// password hashes and keys.
fn write_config_file(path: &Path, text: &str) -> Result<(), String> {
    path.parent()
        .map_or(Ok(()), fs::create_dir_all)
        .and_then(|()| {
            use std::os::unix::fs::OpenOptionsExt;
            fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(path)
        })
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The answer to a config change of `key`, also said on the console. A
/// change to a section a service reads at each start is written to its
/// file now, for a restart of that service to apply.
fn config_change(result: Result<String, String>, key: &str) -> Response {
    let mut message = match result {
        Ok(message) => message,
        Err(error) => return Response::Error { error },
    };
    if let Some((_, file, service)) = local_settings::applied_by_restart(key) {
        if let Err(e) = rewrite_service_config(Path::new(file)) {
            message = format!("{message}; but {e}, so restarting {service} will not apply it");
        }
    }
    say(&format!("config: {message}"));
    Response::Ok { message }
}

/// Writes `file` anew from the config as it is now (the saved datasource,
/// the image's default, the local settings), or removes it when the
/// config no longer has that section.
fn rewrite_service_config(file: &Path) -> Result<(), String> {
    let local = local_settings::read(Path::new(LOCAL_FILE))?;
    let plan = plan::replan(Path::new(saved::SAVED_DIR), Path::new(DEFAULT_FILE), &local);
    match plan.files.iter().find(|(path, _)| path == file) {
        Some((_, text)) => write_config_file(file, text),
        None => match fs::remove_file(file) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(format!("removing {}: {e}", file.display())),
        },
    }
}

fn watch(epoll: &Epoll, fd: BorrowedFd) -> nix::Result<()> {
    epoll.add(
        fd,
        EpollEvent::new(EpollFlags::EPOLLIN, fd.as_raw_fd() as u64),
    )
}

/// Seconds since boot, for log lines.
fn uptime() -> f64 {
    console::since_boot().as_secs_f64()
}

/// How long PID 1 waits for the system partition the command line names
/// (a USB disk can take seconds to appear).
const SYSTEM_PARTITION_WAIT: Duration = Duration::from_secs(15);

impl Init {
    /// With `brig.system=PARTUUID=` on the command line (a disk image's boot
    /// entry): waits for that partition, mounts it over /lib/brig and reads
    /// the system containers from it. Returns the disk's name (`vda`).
    fn mount_system_partition(
        &mut self,
        cmdline: &Cmdline,
        cgroups: Option<PathBuf>,
    ) -> Option<String> {
        let wanted = match disk::wanted_system(cmdline.value("brig.system")) {
            Ok(Some(wanted)) => wanted,
            Ok(None) => return None,
            Err(e) => {
                say(&format!("error: {e}; no system containers"));
                return None;
            }
        };
        let deadline = Instant::now() + SYSTEM_PARTITION_WAIT;
        let partition = loop {
            let partitions = disk::partitions();
            match disk::choose_system(&partitions, Some(wanted), &mut disk::partition_guid) {
                Ok(Some(p)) => break p.clone(),
                Ok(None) if Instant::now() < deadline => {
                    // New devices' modules load as their uevents come in.
                    self.drain_uevents();
                    std::thread::sleep(Duration::from_millis(20));
                }
                Ok(None) => {
                    say(&format!(
                        "error: the system partition ({} PARTUUID={wanted}) did not appear within {} s: no system containers",
                        disk::SYSTEM_LABEL,
                        SYSTEM_PARTITION_WAIT.as_secs()
                    ));
                    return None;
                }
                Err(e) => {
                    say(&format!("error: {e}; no system containers"));
                    return None;
                }
            }
        };
        let device = format!("/dev/{}", partition.name);
        use nix::mount::MsFlags;
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID;
        let mounted = self.sys.create_dir_all(disk::SYSTEM_MOUNT).and_then(|()| {
            self.sys
                .mount(&device, disk::SYSTEM_MOUNT, "squashfs", flags, "")
        });
        if let Err(e) = mounted {
            say(&format!(
                "error: mounting the system partition {device} on {}: {e}; no system containers",
                disk::SYSTEM_MOUNT
            ));
            return None;
        }
        say(&format!(
            "system partition {device} mounted on {}",
            disk::SYSTEM_MOUNT
        ));
        self.services = Services::new(Path::new(services::IMAGES), cgroups);
        self.boot = format!("disk /dev/{} (system partition {device})", partition.disk);
        Some(partition.disk)
    }

    /// On the boot disk: makes the state partition in the free space on
    /// first boot, or grows it to the disk's end. True if a partition was
    /// made or changed (the volumes must be scanned again).
    fn prepare_state_partition(
        &mut self,
        disk: &str,
        volumes: &[(String, block_devices::Volume)],
    ) -> bool {
        let (sectors, found) = match disk::read_table(disk) {
            Ok(t) => t,
            Err(e) => {
                say(&format!("error: state: {e}; the disk is left as it is"));
                return false;
            }
        };
        if let Some(note) = &found.note {
            say(&format!("disk /dev/{disk}: {note}"));
        }
        let ours = found
            .table
            .find(disk::STATE_LABEL)
            .map(|(n, _)| disk::partition_device(disk, n));
        let elsewhere = volumes.iter().any(|(device, v)| {
            v.label.as_deref() == Some(state::LABEL) && Some(device) != ours.as_ref()
        });
        let plan = disk::plan_state(&found.table, sectors, elsewhere);
        let mib = |sectors: u64| (sectors * brig_spec::gpt::SECTOR) >> 20;
        match &plan {
            disk::StatePlan::Leave(why) => {
                if ours.is_none() {
                    say(&format!("state: {why}"));
                }
                return false;
            }
            disk::StatePlan::Create { first, last } => say(&format!(
                "state: making the state partition in /dev/{disk}'s free space ({} MiB)",
                mib(last + 1 - first)
            )),
            disk::StatePlan::Grow { number, from, last } => say(&format!(
                "state: growing partition {number} of /dev/{disk} to the end of the disk (+{} MiB)",
                mib(last - from)
            )),
        }
        let device = match disk::apply(disk, sectors, &found.table, &plan) {
            Ok(device) => device,
            Err(e) => {
                say(&format!("error: state: {e}"));
                return false;
            }
        };
        if let disk::StatePlan::Create { .. } = plan {
            let made = self.services.run_tool(
                STORAGE_TOOLS,
                &[
                    "/usr/sbin/mke2fs",
                    "-q",
                    "-t",
                    "ext4",
                    "-L",
                    state::LABEL,
                    &device,
                ],
            );
            match made {
                Ok((0, _)) => say(&format!(
                    "state: {device} formatted (ext4, {})",
                    state::LABEL
                )),
                Ok((code, output)) => {
                    say(&format!(
                        "error: state: mke2fs {device} failed (exit {code}): {}",
                        output.trim()
                    ));
                    return false;
                }
                Err(e) => {
                    say(&format!("error: state: formatting {device}: {e}"));
                    return false;
                }
            }
        }
        true
    }

    fn status(&self) -> SystemStatus {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        SystemStatus {
            version: VERSION.to_string(),
            board: fs::read_to_string("/etc/brig/board")
                .map(|b| b.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            kernel,
            boot: self.boot.clone(),
            uptime_seconds: console::since_boot().as_secs(),
            state: self.state.status(),
        }
    }

    /// Applies what config asks of PID 1 itself: sysctls, modules, mounts
    /// and the user's services (the rest went to files for the containers).
    fn apply_config(&mut self, plan: plan::Plan) {
        // Before the services they concern start: host-wide settings.
        for (name, value) in &plan.sysctl {
            let path = plan::sysctl_path(name);
            match fs::write(&path, value) {
                Ok(()) => say(&format!("sysctl {name} = {value} (from config)")),
                Err(e) => say(&format!("error: config: sysctl {name} = {value}: {e}")),
            }
        }
        if !plan.modules.is_empty() {
            let wanted: Vec<(String, String)> = plan
                .modules
                .iter()
                .map(|m| (m.clone(), String::new()))
                .collect();
            let outcome = self.load_modules(&wanted);
            report_modules("modules from config", &outcome);
        }
        if !plan.mounts.is_empty() {
            let volumes = block_devices::scan().unwrap_or_else(|e| {
                say(&format!("error: mounts: {e}"));
                Vec::new()
            });
            for line in user_mounts::mount_all(&self.sys, &plan.mounts, &volumes) {
                match line {
                    Ok(done) => say(&done),
                    Err(e) => say(&format!("error: {e}")),
                }
            }
        }
        for spec in plan.services {
            let name = spec.name.clone();
            match self.services.supervisor.add(spec) {
                Ok(()) => say(&format!("config: service {name} added (brig.services)")),
                Err(e) => say(&format!(
                    "error: config: `brig.services.{name}`: {e}; not added"
                )),
            }
        }
    }

    /// Loads the kernel modules services name in `kernel_modules` (those
    /// the kernel never asks for), before any of them starts. Modules
    /// already loaded are skipped, so a second call loads only new ones.
    fn load_service_modules(&mut self) {
        let wanted: Vec<(String, String)> = self
            .services
            .supervisor
            .services
            .iter()
            .flat_map(|s| {
                let whom = format!(" (for {})", s.spec.name);
                s.spec
                    .kernel_modules
                    .iter()
                    .map(move |m| (m.clone(), whom.clone()))
            })
            .collect();
        let outcome = self.load_modules(&wanted);
        if !outcome.loaded.is_empty() || !outcome.errors.is_empty() {
            report_modules("service modules", &outcome);
        }
    }

    /// Loads each (module or alias, " (for whom)") of `wanted`; one the image
    /// lacks is an error in the outcome.
    fn load_modules(&mut self, wanted: &[(String, String)]) -> Outcome {
        let mut outcome = Outcome::default();
        for (module, whom) in wanted {
            if !self
                .coldplug
                .load_alias_or_name(&self.sys, module, &mut outcome)
            {
                outcome.errors.push(format!(
                    "module {module}{whom} is not in this image (kernel-config/ selects the modules images carry)"
                ));
            }
        }
        outcome
    }

    /// Starts only the network container, fetches the config in a helper
    /// process, and goes on in `config_fetched`.
    fn fetch_config(&mut self, remote: Remote) {
        say(&format!(
            "config: no local datasource; fetching from {remote} once the network is up"
        ));
        match network::spawn(&remote) {
            Ok(fd) => match watch(&self.epoll, fd.as_fd()) {
                Ok(()) => {
                    self.services.supervisor.hold_all_but(NETWORK_SERVICE);
                    self.sources.insert(
                        fd.as_raw_fd(),
                        Source::Datasource {
                            remote,
                            fd,
                            data: Vec::new(),
                        },
                    );
                }
                Err(e) => self
                    .config_fetched(&remote, Err(format!("watching the datasource helper: {e}"))),
            },
            Err(e) => self.config_fetched(&remote, Err(e)),
        }
    }

    /// The network datasource answered (or not): configure as a local one
    /// would have, restart the network container if its config changed,
    /// and let the other services start.
    fn config_fetched(&mut self, remote: &Remote, found: Result<config::Seed, String>) {
        let found = found.map(Some).map_err(|e| format!("{remote}: {e}"));
        let network_before = fs::read(plan::NETWORK_FILE).ok();
        if let Some(plan) = read_config(&self.sys, found) {
            self.apply_config(plan);
            // The user's services, added just now.
            self.load_service_modules();
        }
        if fs::read(plan::NETWORK_FILE).ok() != network_before {
            say("config: the network config changed; restarting the network container");
            let now = Instant::now();
            match self.services.supervisor.restart(NETWORK_SERVICE, now) {
                Ok(actions) => self.act(actions, now),
                Err(e) => say(&format!("error: restarting {NETWORK_SERVICE}: {e}")),
            }
        }
        self.services.supervisor.release();
    }

    fn handle_datasource(&mut self, fd: RawFd) {
        let Some(Source::Datasource { data, fd: pipe, .. }) = self.sources.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; 16384];
        match nix::unistd::read(&*pipe, &mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                return;
            }
        }
        if let Some(Source::Datasource { remote, data, .. }) = self.forget(fd) {
            self.config_fetched(&remote, network::outcome(&data));
        }
    }

    /// One turn of the event loop: act on what is due, wait, handle events.
    fn turn(&mut self) {
        self.supervise();
        let timeout = match self.services.supervisor.next_deadline() {
            Some(deadline) => {
                let ms = deadline
                    .saturating_duration_since(Instant::now())
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
                say(&format!("error: waiting for events: {e}"));
                self.sys.sleep(Duration::from_secs(1));
                return;
            }
        };
        for event in &events[..n] {
            self.handle(event.data() as RawFd);
        }
        self.forward_logs();
    }

    /// PID 1's messages and the lines published since the last turn, to
    /// the log service if it is there (they wait for it otherwise).
    fn forward_logs(&mut self) {
        let now = console::since_boot();
        for (at, text) in console::take_notes() {
            self.forward.push_note(&text, now.saturating_sub(at));
        }
        if self.forward.pending() > 0 {
            self.forward.flush();
        }
    }

    /// Lets the supervisor act, announces readiness, finishes a pending shutdown.
    fn supervise(&mut self) {
        let now = Instant::now();
        let actions = self.services.supervisor.tick(now);
        self.act(actions, now);
        if self.pending_power.is_none() {
            if let Some(e) = self.services.prepare_ahead() {
                say(&format!("error: {e}"));
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
        if let Some((action, deadline)) = self.pending_power {
            if self.services.supervisor.all_stopped() || now >= deadline {
                self.pending_power = None;
                let mounts = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
                let error = shutdown::shut_down(&self.sys, action, &mounts, &mut |m| say(m));
                say(&format!(
                    "error: the kernel refused {}: {error}; still running",
                    action.verb()
                ));
            }
        }
    }

    fn handle(&mut self, fd: RawFd) {
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

    fn forget(&mut self, fd: RawFd) -> Option<Source> {
        let source = self.sources.remove(&fd)?;
        // SAFETY: fd is open: its owner (in `source`) is dropped only below.
        let _ = self.epoll.delete(unsafe { BorrowedFd::borrow_raw(fd) });
        Some(source)
    }

    fn handle_signals(&mut self) {
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
    fn reap(&mut self) {
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid.as_raw(), code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid.as_raw(), 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(_) => return,
                Ok(_) => continue,
            };
            if let Some(line) = self.services.exited(pid, code, Instant::now(), uptime()) {
                self.publish(vec![line]);
            }
        }
    }

    /// The one way to power off, reboot or halt; the control API calls it too.
    /// Services are stopped in order first; the rest happens in `supervise`.
    fn power(&mut self, action: PowerAction, reason: &str) {
        if self.pending_power.is_some() {
            return;
        }
        say(&format!("{} ({reason})", action.verb()));
        let now = Instant::now();
        let actions = self.services.supervisor.shut_down(now);
        self.act(actions, now);
        self.pending_power = Some((action, now + SERVICES_STOP_LIMIT));
    }

    /// Carries out supervisor actions: new output pipes join the epoll set,
    /// PID 1's notes about the services are published.
    fn act(&mut self, actions: Vec<Action>, now: Instant) {
        for action in actions {
            let (pipes, notes) = self.services.perform(action, now, uptime());
            for pipe in pipes {
                if let Err(e) = watch(&self.epoll, pipe.fd.as_fd()) {
                    say(&format!("error: watching output of {}: {e}", pipe.service));
                    continue;
                }
                self.sources
                    .insert(pipe.fd.as_raw_fd(), Source::Output(pipe));
            }
            self.publish(notes);
        }
    }

    /// New log lines: to followers, and to the console if asked.
    fn publish(&mut self, lines: Vec<LogLine>) {
        if lines.is_empty() {
            return;
        }
        if self.echo_output {
            for line in &lines {
                console::echo(&format!("[{}] {}", line.service, line.text));
            }
        }
        let now = console::since_boot();
        for line in &lines {
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

    fn handle_output(&mut self, fd: RawFd) {
        let Some(Source::Output(pipe)) = self.sources.get(&fd) else {
            return;
        };
        let (service, stream) = (pipe.service.clone(), pipe.stream);
        let mut buf = [0u8; 8192];
        let mut lines = Vec::new();
        let mut closed = false;
        loop {
            match nix::unistd::read(&pipe.fd, &mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => lines.extend(self.services.output(&service, stream, &buf[..n], uptime())),
                Err(nix::Error::EINTR) => continue,
                Err(nix::Error::EAGAIN) => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
        }
        if closed {
            lines.extend(self.services.output_closed(&service, stream, uptime()));
            self.forget(fd);
        }
        self.publish(lines);
    }

    fn open_control_socket(&mut self) {
        let path = Path::new(SOCKET);
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let _ = fs::remove_file(path);
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) => return say(&format!("error: control socket {SOCKET}: {e}")),
        };
        // Root, and the read-only group: each request is checked against
        // the peer's credentials (only root may change anything).
        if let Err(e) = brig_spec::control::open_to_read_only_group(path) {
            say(&format!(
                "error: control socket {SOCKET}: setting its owner and mode: {e}"
            ));
        }
        let _ = listener.set_nonblocking(true);
        if let Err(e) = watch(&self.epoll, listener.as_fd()) {
            return say(&format!("error: watching the control socket: {e}"));
        }
        self.sources
            .insert(listener.as_raw_fd(), Source::Listener(listener));
    }

    fn accept_clients(&mut self, fd: RawFd) {
        let Some(Source::Listener(listener)) = self.sources.get(&fd) else {
            return;
        };
        let mut accepted = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            accepted.push(stream);
        }
        for stream in accepted {
            let Ok(mut client) = Client::new(stream) else {
                continue;
            };
            let read_only = self
                .sources
                .values()
                .filter(|s| matches!(s, Source::Client(c) if !c.root))
                .count();
            if let Some(refusal) = control::turned_away(client.root, read_only) {
                client.send(&refusal);
                continue;
            }
            if watch(&self.epoll, client.stream.as_fd()).is_ok() {
                self.sources
                    .insert(client.stream.as_raw_fd(), Source::Client(Box::new(client)));
            }
        }
    }

    fn handle_client(&mut self, fd: RawFd) {
        let Some(Source::Client(client)) = self.sources.get_mut(&fd) else {
            return;
        };
        let inputs = client.read();
        for input in inputs {
            let root = match self.sources.get(&fd) {
                Some(Source::Client(client)) => client.root,
                _ => false,
            };
            let (response, close) = match input {
                Input::Request(request) => match control::refused(&request, root) {
                    Some(refusal) => (Some(refusal), false),
                    None => (self.answer(fd, request), false),
                },
                Input::Bad(error) => (Some(Response::Error { error }), false),
                Input::Fatal(error) => (Some(Response::Error { error }), true),
                Input::Closed => (None, true),
            };
            let sent = match (response, self.sources.get_mut(&fd)) {
                (Some(response), Some(Source::Client(client))) => client.send(&response),
                _ => true,
            };
            if close || !sent {
                self.forget(fd);
                return;
            }
        }
    }

    fn answer(&mut self, fd: RawFd, request: Request) -> Option<Response> {
        let now = Instant::now();
        let ok = |message: String| Response::Ok { message };
        let known = |services: &Services, name: &str| services.supervisor.get(name).is_some();
        Some(match request {
            Request::Status => Response::Status {
                status: self.status(),
            },
            Request::Ps => Response::Services {
                services: self.services.status(now),
            },
            Request::Logs {
                service,
                tail,
                follow,
            } => {
                if !known(&self.services, &service) {
                    return Some(Response::Error {
                        error: format!("no service {service:?}"),
                    });
                }
                let lines = self
                    .services
                    .rings
                    .get(&service)
                    .map(|r| r.tail(tail))
                    .unwrap_or_default();
                if follow {
                    if let Some(Source::Client(client)) = self.sources.get_mut(&fd) {
                        client.follow = Some(service);
                    }
                }
                Response::Log { lines }
            }
            Request::Start { service } => match self.services.supervisor.start(&service) {
                Ok(()) => ok(format!("starting {service}")),
                Err(error) => Response::Error { error },
            },
            Request::Stop { service } => {
                let actions = self.services.supervisor.stop(&service, now);
                self.carry_out(actions, now, format!("stopping {service}"))
            }
            Request::Restart { service } => {
                let actions = self.services.supervisor.restart(&service, now);
                self.carry_out(actions, now, format!("restarting {service}"))
            }
            Request::Reboot => {
                self.power(PowerAction::Reboot, "brigctl reboot");
                ok("rebooting".into())
            }
            Request::Poweroff => {
                self.power(PowerAction::PowerOff, "brigctl poweroff");
                ok("powering off".into())
            }
            Request::ConfigSet { key, value } => config_change(
                local_settings::change(Path::new(LOCAL_FILE), &key, Some(value)),
                &key,
            ),
            Request::ConfigUnset { key } => config_change(
                local_settings::change(Path::new(LOCAL_FILE), &key, None),
                &key,
            ),
        })
    }

    /// Performs the supervisor's answer to a request, or reports its error.
    fn carry_out(
        &mut self,
        actions: Result<Vec<Action>, String>,
        now: Instant,
        done: String,
    ) -> Response {
        match actions {
            Ok(actions) => {
                self.act(actions, now);
                Response::Ok { message: done }
            }
            Err(error) => Response::Error { error },
        }
    }

    fn drain_uevents(&mut self) {
        let Some(socket) = &self.uevents else { return };
        let mut buf = vec![0u8; 8192];
        let mut outcome = Outcome::default();
        let mut new_inputs = Vec::new();
        while let Some(n) = uevent::receive(socket, &mut buf) {
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
        if self
            .sources
            .values()
            .any(|s| matches!(s, Source::Button(name, _) if name == event))
        {
            return;
        }
        let sysfs = Path::new("/sys");
        let Some(file) = power_button::open_if_power_button(sysfs, event) else {
            return;
        };
        if let Err(e) = watch(&self.epoll, file.as_fd()) {
            return say(&format!("error: watching power button {event}: {e}"));
        }
        let name = fs::read_to_string(sysfs.join("class/input").join(event).join("device/name"))
            .unwrap_or_default();
        say(&format!(
            "power button: /dev/input/{event} ({})",
            name.trim()
        ));
        self.sources
            .insert(file.as_raw_fd(), Source::Button(event.to_string(), file));
    }

    fn handle_button(&mut self, fd: RawFd) {
        let Some(Source::Button(_, file)) = self.sources.get_mut(&fd) else {
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
                    self.forget(fd);
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
        let console: OwnedFd = console.into();
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
        sys.sleep(Duration::from_secs(1));
    }
}
