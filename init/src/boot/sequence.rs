//! The boot sequence: early mounts, switch from the initramfs into a tmpfs
//! root, console, hostname, module coldplug, power button, the system and
//! state partitions, config, the control socket; then the event loop takes
//! over. `emergency` keeps PID 1 alive when even that fails.

use std::collections::HashMap;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brig_runtime::cgroup;
use brig_spec::failed::Failed;
use nix::sys::epoll::{Epoll, EpollCreateFlags};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

use crate::boot::disk;
use crate::boot::{state, switch_root};
use crate::config;
use crate::config::apply::read_config;
use crate::config::ec2::Dmi;
use crate::event_loop::watch;
use crate::event_loop::{Init, Source};
use crate::host::coldplug::{Coldplug, Outcome};
use crate::host::console::{say, say_error};
use crate::host::hotplug::report_modules;
use crate::host::kernel_cmdline::Cmdline;
use crate::host::system::{Linux, System};
use crate::host::{block_devices, modprobe, mounts, power_button, uevent};
use crate::supervise::containers::Containers;
use crate::supervise::log_forward;
use crate::supervise::services;
use crate::supervise::services::Services;
use crate::VERSION;

pub(crate) const DEFAULT_HOSTNAME: &str = "brig";

pub(crate) const SIGNALS: &[Signal] = &[
    Signal::SIGCHLD,
    Signal::SIGINT, // Ctrl-Alt-Del, once the kernel is told to send it to us
    Signal::SIGTERM,
    Signal::SIGUSR1,
    Signal::SIGUSR2,
    Signal::SIGPWR,
    Signal::SIGHUP,
];

/// The system container with the filesystem tools (e2fsck) PID 1 runs
/// before the services.
pub(crate) const STORAGE_TOOLS: &str = "storage";

/// Modules no device asks for but system containers need, and FAT's (the
/// first filesystem PID 1 reads on most machines: a config seed, a disk's
/// boot partition). Loaded with coldplug's first pass, side by side with
/// the devices' modules, rather than the kernel asking for FAT's three at
/// the mount, one modprobe process each.
pub(crate) const FIRST_MODULES: &[&str] = &[
    "loop",
    "squashfs",
    "overlay",
    "vfat",
    "nls_cp437",
    "nls_ascii",
];

/// How long PID 1 waits for the system partition the command line names
/// (a USB disk can take seconds to appear).
pub(crate) const SYSTEM_PARTITION_WAIT: Duration = Duration::from_secs(15);

/// The system containers in the image (`services::IMAGES`), run with the
/// real runtime.
fn system_services(cgroups: Option<PathBuf>) -> Services {
    let images = Path::new(services::IMAGES);
    Services::new(images, Box::new(Containers::new(images, cgroups)))
}

/// The running kernel's modules in the image.
pub fn modules_dir() -> PathBuf {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    Path::new("/lib/modules").join(release)
}

/// Boots the machine as far as the event loop; an error means the loop
/// itself could not be set up (PID 1 then goes on in `emergency`).
pub fn boot() -> Result<Init, Failed> {
    let sys = Linux;
    say(&format!("brig-init {VERSION} started as PID 1"));

    // Signals are taken through a signalfd in the event loop; children get a
    // clean mask when they are spawned.
    let mut mask = SigSet::empty();
    for &s in SIGNALS {
        mask.add(s);
    }
    mask.thread_block()
        .map_err(|source| Failed::new("blocking signals", source))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|source| Failed::new("creating signalfd", source))?;
    // Ctrl-Alt-Del sends us SIGINT instead of an immediate reboot.
    if let Err(e) = nix::sys::reboot::set_cad_enabled(false) {
        say_error(&format!("cannot take over Ctrl-Alt-Del: {e}"));
    }

    let mounted = fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    for error in mounts::mount_early(&sys, &mounts::parse_mount_points(&mounted)) {
        say_error(&error.to_string());
    }
    ensure_console();
    say("mounted /proc /sys /dev /dev/pts /dev/shm /run /sys/fs/cgroup");
    let on_initramfs =
        switch_root::on_initramfs(&fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
    if on_initramfs {
        match switch_root::switch(&["/proc", "/sys", "/dev", "/run"]) {
            Ok(()) => say("switched root: the initramfs bound on itself"),
            Err(e) => say_error(&format!(
                "switching root: {e}; system containers cannot start"
            )),
        }
    }

    // Names in config URLs resolve with the network container's DNS.
    let resolv = format!("{}/resolv.conf", brig_spec::paths::DNS_DIR);
    if let Err(e) = sys.symlink(&resolv, "/etc/resolv.conf") {
        say_error(&format!("linking /etc/resolv.conf to {resolv}: {e}"));
    }

    // syslog(3) in PID 1's own root and in privileged containers (which
    // see this /dev) reaches the log service.
    if let Err(e) = sys.symlink(brig_spec::paths::SYSLOG_SOCKET, "/dev/log") {
        say_error(&format!("linking /dev/log: {e}"));
    }

    // Modules the kernel asks for later (a bond, a bridge) come through us.
    let _ = fs::create_dir_all("/sbin");
    let _ = sys.remove_file(Path::new(modprobe::PATH));
    if let Err(e) = sys.symlink("/proc/1/exe", modprobe::PATH) {
        say_error(&format!("creating {}: {e}", modprobe::PATH));
    }

    let cmdline = Cmdline::parse(&fs::read_to_string("/proc/cmdline").unwrap_or_default());
    let hostname = cmdline
        .value("brig.hostname")
        .filter(|h| !h.is_empty())
        .unwrap_or(DEFAULT_HOSTNAME);
    match sys.set_hostname(hostname) {
        Ok(()) => say(&format!("hostname {hostname}")),
        Err(e) => say_error(&format!("setting hostname {hostname:?}: {e}")),
    }

    let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC)
        .map_err(|source| Failed::new("creating epoll", source))?;
    let mut sources = HashMap::new();
    watch(&epoll, signals.as_fd()).map_err(|source| Failed::new("watching signalfd", source))?;
    sources.insert(signals.as_raw_fd(), Source::Signals);
    // Subscribe before coldplug so no device added meanwhile is missed.
    let uevents = match uevent::open_socket() {
        Ok(fd) => match watch(&epoll, fd.as_fd()) {
            Ok(()) => {
                sources.insert(fd.as_raw_fd(), Source::Uevents);
                Some(fd)
            }
            Err(e) => {
                say_error(&format!(
                    "watching uevents: {e}; hotplugged devices get no modules"
                ));
                None
            }
        },
        Err(e) => {
            say_error(&format!(
                "opening the uevent socket: {e}; hotplugged devices get no modules"
            ));
            None
        }
    };

    let (coldplug, problems) = Coldplug::from_dir(&modules_dir());
    for p in problems {
        say_error(&format!("module index: {p}"));
    }
    let cgroup_root = PathBuf::from(cgroup::ROOT);
    let cgroups = cgroup::is_v2(&cgroup_root).then_some(cgroup_root);
    // Directories system containers share through bind mounts.
    for (dir, mode, group) in services::SHARED_DIRS {
        let made = fs::create_dir_all(dir)
            .and_then(|()| std::os::unix::fs::chown(dir, Some(0), Some(*group)))
            .and_then(|()| fs::set_permissions(dir, fs::Permissions::from_mode(*mode)));
        if let Err(e) = made {
            say_error(&format!("creating {dir}: {e}"));
        }
    }
    // Each config consumer's own directory, bound by its container only.
    for consumer in brig_spec::paths::CONFIG_CONSUMERS {
        let dir = Path::new(brig_spec::paths::CONFIG_DIR).join(consumer);
        let made = fs::create_dir_all(&dir)
            .and_then(|()| fs::set_permissions(&dir, fs::Permissions::from_mode(0o700)));
        if let Err(e) = made {
            say_error(&format!("creating {}: {e}", dir.display()));
        }
    }
    // Where the user's disks go (cloud-config `mounts`); containers bind them.
    for dir in brig_spec::mounts::MOUNT_ROOTS {
        if let Err(e) = fs::create_dir_all(dir) {
            say_error(&format!("creating {dir}: {e}"));
        }
    }
    let mut init = Init {
        sys,
        epoll,
        signals,
        uevents,
        sources,
        coldplug,
        services: system_services(cgroups.clone()),
        echo_output: cmdline.value("brig.service_output") == Some("console"),
        announced_ready: false,
        machine: None,
        update_child: None,
        trial: None,
        system_containers: Vec::new(),
        fleet: Default::default(),
        pending_power: None,
        boot: if on_initramfs {
            "kernel and initramfs"
        } else {
            "a root filesystem"
        }
        .into(),
        state: state::State::Absent,
        forward: log_forward::Forwarder::new(brig_spec::paths::INIT_LOG_SOCKET),
        watchdog: None,
    };

    let mut outcome = init
        .coldplug
        .scan_with(&init.sys, Path::new("/sys"), FIRST_MODULES);
    report_modules("coldplug", &outcome);
    init.drain_uevents();
    for event in power_button::event_devices(Path::new("/sys")) {
        init.watch_power_button(&event);
    }
    say(&format!("network interfaces: {}", describe_interfaces()));

    match &cgroups {
        Some(root) => {
            for e in cgroup::prepare(root) {
                say_error(&format!("cgroups: {e}"));
            }
        }
        None => say_error("no cgroup2 hierarchy: services run without limits"),
    }
    // A disk image: the system containers are on its system partition.
    let boot_disk = init.mount_system_partition(&cmdline, cgroups.clone());
    init.system_containers = init
        .services
        .supervisor
        .services
        .iter()
        .map(|s| s.spec.name.clone())
        .collect();
    let rolled_back = init.begin_trial();
    // Before the config: the saved config and datasource live on it.
    let scan = || {
        block_devices::scan().unwrap_or_else(|e| {
            say_error(&e.to_string());
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
        init.coldplug
            .load_all_named(&init.sys, &["ext4"], &mut outcome);
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
    init.state.announce();
    if let Some(rollback) = &rolled_back {
        crate::update::install::record_rollback(rollback);
    }
    let found = config::find(&init.sys, &cmdline, &volumes, &Dmi::read(), &mut |e| {
        say_error(&format!("config: {e}"))
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
    // Last, as the loop is about to turn: the steps above may take long
    // on a big disk (e2fsck, mke2fs), and nothing would feed it meanwhile.
    init.open_watchdog(&cmdline);
    Ok(init)
}

impl<S: System> Init<S> {
    /// Opens the hardware watchdog coldplug found a driver for, if any.
    pub(crate) fn open_watchdog(&mut self, cmdline: &Cmdline) {
        use crate::host::watchdog::{timeout_from, Watchdog};
        let timeout = match timeout_from(cmdline.value("brig.watchdog")) {
            Ok(timeout) => timeout,
            Err(e) => {
                say_error(&format!("{e}; the watchdog keeps its default"));
                crate::host::watchdog::DEFAULT_TIMEOUT
            }
        };
        match Watchdog::open(timeout, self.sys.now()) {
            Ok(Some(watchdog)) => {
                say(&format!(
                    "watchdog: {} ({}), timeout {} s, fed every {} ms",
                    "/dev/watchdog",
                    watchdog.identity,
                    watchdog.schedule.timeout.as_secs(),
                    watchdog.schedule.interval.as_millis()
                ));
                self.watchdog = Some(watchdog);
            }
            Ok(None) if timeout == 0 => say("watchdog: off (brig.watchdog=0)"),
            Ok(None) => {}
            Err(e) => say_error(&format!("watchdog: {e}; not used")),
        }
    }

    /// With `brig.system=PARTUUID=` on the command line (a disk image's boot
    /// entry, or a kernel booted with a system disk): waits for that
    /// partition, mounts it over /lib/brig and reads the system containers
    /// from it. Returns the disk's name (`vda`) if the state partition may
    /// be made on it (a disk image; not a read-only system disk).
    pub(crate) fn mount_system_partition(
        &mut self,
        cmdline: &Cmdline,
        cgroups: Option<PathBuf>,
    ) -> Option<String> {
        let wanted = match disk::wanted_system(cmdline.value("brig.system")) {
            Ok(Some(wanted)) => wanted,
            Ok(None) => return None,
            Err(e) => {
                say_error(&format!("{e}; no system containers"));
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
                    say_error(&format!(
                        "the system partition ({} PARTUUID={wanted}) did not appear within {} s: no system containers",
                        disk::SYSTEM_LABEL,
                        SYSTEM_PARTITION_WAIT.as_secs()
                    ));
                    return None;
                }
                Err(e) => {
                    say_error(&format!("{e}; no system containers"));
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
            say_error(&format!(
                "mounting the system partition {device} on {}: {e}; no system containers",
                disk::SYSTEM_MOUNT
            ));
            return None;
        }
        say(&format!(
            "system partition {device} mounted on {}",
            disk::SYSTEM_MOUNT
        ));
        self.services = system_services(cgroups);
        if disk::is_read_only(&partition.disk) {
            // A system disk beside a directly booted kernel (`brig build
            // --format kernel`): nothing to make on it.
            self.boot = format!(
                "kernel and initramfs, system disk /dev/{} (read-only)",
                partition.disk
            );
            return None;
        }
        self.machine = crate::update::boot_partition::Machine::of(&partition);
        self.boot = match &self.machine {
            Some(m) => format!(
                "disk /dev/{} (system partition {device}, slot {})",
                partition.disk, m.slot
            ),
            None => format!("disk /dev/{} (system partition {device})", partition.disk),
        };
        Some(partition.disk)
    }

    /// On the boot disk: makes the state partition in the free space on
    /// first boot, or grows it to the disk's end. True if a partition was
    /// made or changed (the volumes must be scanned again).
    pub(crate) fn prepare_state_partition(
        &mut self,
        disk: &str,
        volumes: &[(String, block_devices::Volume)],
    ) -> bool {
        let (sectors, found) = match disk::read_table(disk) {
            Ok(t) => t,
            Err(e) => {
                say_error(&format!("state: {e}; the disk is left as it is"));
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
        let mut changed = false;
        if let Some(device) = &ours {
            if !elsewhere && !volumes.iter().any(|(d, _)| d == device) {
                changed = self.format_unformatted_state(device);
            }
        }
        let plan = disk::plan_state(&found.table, sectors, elsewhere);
        let mib = |sectors: u64| (sectors * brig_spec::gpt::SECTOR) >> 20;
        match &plan {
            disk::StatePlan::Leave(why) => {
                if ours.is_none() {
                    say(&format!("state: {why}"));
                }
                return changed;
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
                say_error(&format!("state: {e}"));
                return changed;
            }
        };
        if let disk::StatePlan::Create { .. } = plan {
            return self.format_state(&device);
        }
        true
    }

    /// Our state partition without a filesystem: the power went between
    /// making it and formatting it. Formatted now, unless something another
    /// tool made is there (then it is left for its owner).
    fn format_unformatted_state(&mut self, device: &str) -> bool {
        let head = match block_devices::read_head(device, block_devices::SIGNATURE_HEAD) {
            Ok(head) if head.len() == block_devices::SIGNATURE_HEAD => head,
            Ok(head) => {
                say_error(&format!(
                    "state: {device} ({}) is only {} bytes; it is left as it is",
                    state::LABEL,
                    head.len()
                ));
                return false;
            }
            Err(e) => {
                say_error(&format!(
                    "state: reading {device} ({}): {e}; it is left as it is",
                    state::LABEL
                ));
                return false;
            }
        };
        if let Some(what) = block_devices::other_filesystem(&head) {
            say_error(&format!(
                "state: {device} ({}) holds {what}, which Brig did not make; it is left as it is and settings are not kept",
                state::LABEL
            ));
            return false;
        }
        say(&format!(
            "state: {device} ({}) has no filesystem: it was made but not formatted (the power went during first boot?); formatting it now",
            state::LABEL
        ));
        self.format_state(device)
    }

    /// ext4, labelled for `state` to find.
    fn format_state(&mut self, device: &str) -> bool {
        let made = self.services.run_tool(
            STORAGE_TOOLS,
            &[
                "/usr/sbin/mke2fs",
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                state::LABEL,
                device,
            ],
        );
        match made {
            Ok((0, _)) => {
                say(&format!(
                    "state: {device} formatted (ext4, {})",
                    state::LABEL
                ));
                true
            }
            Ok((code, output)) => {
                say_error(&format!(
                    "state: mke2fs {device} failed (exit {code}): {}",
                    output.trim()
                ));
                false
            }
            Err(e) => {
                say_error(&format!("state: formatting {device}: {e}"));
                false
            }
        }
    }
}

/// `eth0 (virtio_net)`, … for every interface but loopback.
pub(crate) fn describe_interfaces() -> String {
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
pub(crate) fn ensure_console() {
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
pub fn emergency(why: &str) -> ! {
    say(&format!(
        "emergency: {why}; the system stays up without supervision"
    ));
    let sys = Linux;
    loop {
        sys.reap_children();
        sys.sleep(Duration::from_secs(1));
    }
}
