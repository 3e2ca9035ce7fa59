//! `brig run`: boots built artifacts in QEMU. KVM is used only when it really
//! works here (a probe boot, not just an openable /dev/kvm), otherwise TCG.
//!
//! Longer than 600 lines because one QEMU command line is assembled here
//! for every board and boot method (kernel, UEFI disk, Pi card) from one
//! profile; apart, the boards' differences would be harder to see side by
//! side. Its tests are in qemu/tests.rs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::board::{Arch, Board, QemuProfile, RaspberryPiMachine};
use crate::boot_partition;
use crate::host_tools;
use crate::progress::step;
use brig_spec::uboot;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Accel {
    /// KVM if a probe boot works, else TCG.
    Auto,
    Kvm,
    Tcg,
}

/// How to run QEMU; also the options of `brig run`.
#[derive(Debug, Clone, clap::Args)]
pub struct RunOptions {
    /// Host port (on 127.0.0.1) forwarded to the guest's ssh port 22.
    #[arg(long, default_value_t = 2222)]
    pub ssh_port: u16,
    /// Also write the serial console to this file.
    #[arg(long)]
    pub serial_log: Option<PathBuf>,
    /// No interactive console and no stdin: for scripts and tests.
    #[arg(long)]
    pub headless: bool,
    /// QMP control socket (e.g. to press the power button).
    #[arg(long)]
    pub qmp: Option<PathBuf>,
    #[arg(long, value_enum, default_value = "auto")]
    pub accel: Accel,
    /// Exit QEMU when the guest reboots.
    #[arg(long)]
    pub no_reboot: bool,
    /// Extra kernel command line words (e.g. brig.hostname=node1).
    #[arg(long, value_name = "WORD")]
    pub append: Vec<String>,
    /// Start the guest's clock at this UTC date (2001-01-01 or
    /// 2001-01-01T12:00:00) instead of now: to watch NTP set it.
    #[arg(long, value_name = "DATE")]
    pub rtc_base: Option<String>,
    /// Network cards, each on its own QEMU user network (netdevs net0,
    /// net1, ...; MACs 52:54:00:12:34:56 upwards); ssh goes to the first.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=8))]
    pub nics: u8,
    /// cloud-init user data for the guest, on a NoCloud seed disk (a FAT
    /// volume labelled CIDATA) made from this file.
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// The seed's meta-data (default: an instance id from the user data).
    #[arg(long, value_name = "FILE")]
    pub meta_data: Option<PathBuf>,
    /// The seed's network-config (network config version 2).
    #[arg(long, value_name = "FILE")]
    pub network_config: Option<PathBuf>,
    /// An option for the first card's user network, as QEMU spells it
    /// (repeat for several): `net=169.254.169.0/24`,
    /// `guestfwd=tcp:169.254.169.254:80-cmd:my-metadata-server`.
    #[arg(long, value_name = "KEY=VALUE")]
    pub user_net: Vec<String>,
    /// An extra QEMU argument, as is (repeat for several).
    #[arg(long, value_name = "ARG", allow_hyphen_values = true)]
    pub qemu_arg: Vec<String>,
    /// Boot this disk image (raw or qcow2, by its name) with UEFI instead
    /// of the one `brig build --format raw|qcow2` made: e.g. a copy, or one
    /// made larger with `qemu-img resize`.
    #[arg(long, value_name = "FILE")]
    pub disk: Option<PathBuf>,
    /// Boot the built kernel and initramfs directly (no firmware, faster),
    /// with the disk image attached if the build made one.
    #[arg(long)]
    pub kernel_boot: bool,
    /// Another QEMU profile (`qemu/<NAME>.toml`) than the board's: e.g.
    /// `raspi3ap`, the Pi 3 A+ with 512 MiB, for an rpi3 card.
    #[arg(long, value_name = "NAME")]
    pub machine: Option<String>,
}

/// How the guest boots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// QEMU loads the kernel and initramfs, with this command line; the
    /// disk image, if the build made one, is attached, else its system
    /// disk (read-only, last: the guest finds it by its partition's GUID,
    /// and the user's disks keep the names they would have without it).
    Kernel {
        cmdline: String,
        disk: Option<PathBuf>,
        system: Option<PathBuf>,
    },
    /// UEFI firmware boots the disk image (systemd-boot on its ESP);
    /// `vars` is this boot's copy of the firmware's variable store.
    Uefi { disk: PathBuf, vars: PathBuf },
    /// A Raspberry Pi card: QEMU does not run the Pi's GPU firmware, so
    /// `brig run` does its part — U-Boot and the device tree come off the
    /// card's boot partition into `files`, and `cmdline` goes into the
    /// device tree as the firmware puts `cmdline.txt` there — and the card
    /// is the machine's SD card. U-Boot's script then boots a slot.
    RaspberryPi {
        card: PathBuf,
        files: PathBuf,
        device_tree: String,
        cmdline: String,
    },
}

/// A disk image's QEMU format, from its name.
fn disk_format(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()) {
        Some("qcow2") => "qcow2",
        _ => "raw",
    }
}

/// The disk image a build made, from its manifest.
pub fn built_disk(artifacts: &Path) -> Option<PathBuf> {
    built_file(artifacts, "disk")
}

/// The file a build's manifest names under `section` (`disk`,
/// `system_disk`), in `artifacts`.
fn built_file(artifacts: &Path, section: &str) -> Option<PathBuf> {
    let manifest = std::fs::read(artifacts.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
    let name = manifest[section]["path"].as_str()?;
    Some(artifacts.join(name))
}

/// This boot's copy of the UEFI variable store, in the artifacts directory
/// (named by the process, as the NoCloud seed).
fn vars_path(artifacts: &Path) -> PathBuf {
    artifacts.join(format!("uefi-vars-{}.fd", std::process::id()))
}

impl RunOptions {
    fn wants_seed(&self) -> bool {
        self.user_data.is_some() || self.meta_data.is_some() || self.network_config.is_some()
    }
}

/// The QEMU command line (without the binary).
pub fn arguments(
    profile: &QemuProfile,
    artifacts: &Path,
    opts: &RunOptions,
    kvm: bool,
    boot: &Boot,
) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "-machine".into(),
        profile.machine.clone(),
        "-accel".into(),
        match (kvm, profile.tcg_single_thread) {
            (true, _) => "kvm",
            (false, false) => "tcg",
            (false, true) => "tcg,thread=single",
        }
        .into(),
        "-cpu".into(),
        if kvm {
            &profile.cpu_kvm
        } else {
            &profile.cpu_tcg
        }
        .clone(),
        "-m".into(),
        profile.memory.clone(),
        "-smp".into(),
        profile.smp.to_string(),
        "-display".into(),
        "none".into(),
    ];
    let drive = |disk: &Path| {
        format!(
            "file={},format={},if=virtio",
            disk.display(),
            disk_format(disk)
        )
    };
    let with_appended = |cmdline: &str| {
        let mut cmdline = cmdline.to_string();
        for word in &opts.append {
            cmdline.push(' ');
            cmdline.push_str(word);
        }
        cmdline
    };
    match boot {
        Boot::Kernel { cmdline, disk, .. } => {
            args.extend([
                "-kernel".into(),
                kernel_file(artifacts).display().to_string(),
                "-initrd".into(),
                artifacts.join("initramfs.img").display().to_string(),
                "-append".into(),
                with_appended(cmdline),
            ]);
            if let Some(disk) = disk {
                args.extend(["-drive".into(), drive(disk)]);
            }
        }
        Boot::Uefi { disk, vars } => {
            if let Some(uefi) = &profile.uefi {
                args.extend([
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=0,readonly=on,file={}", uefi.code),
                    "-drive".into(),
                    format!("if=pflash,format=raw,unit=1,file={}", vars.display()),
                ]);
            }
            args.extend(["-drive".into(), drive(disk)]);
        }
        Boot::RaspberryPi {
            card,
            files,
            device_tree,
            cmdline,
        } => {
            args.extend([
                "-kernel".into(),
                files.join(uboot::UBOOT_FILE).display().to_string(),
                "-dtb".into(),
                files.join(device_tree).display().to_string(),
                "-append".into(),
                with_appended(cmdline),
                "-drive".into(),
                format!("file={},format=raw,if=sd", card.display()),
            ]);
        }
    }
    // User networking; ssh reachable on the host's loopback only.
    for n in 0..opts.nics {
        let forward = if n == 0 {
            let mut text = format!(",hostfwd=tcp:127.0.0.1:{}-:22", opts.ssh_port);
            for option in &opts.user_net {
                text += ",";
                // QEMU reads a doubled comma as a comma inside a value.
                text += &option.replace(',', ",,");
            }
            text
        } else {
            String::new()
        };
        args.extend([
            "-netdev".into(),
            format!("user,id=net{n}{forward}"),
            "-device".into(),
            format!(
                "{},netdev=net{n},mac=52:54:00:12:34:{:02x}",
                profile.nic,
                0x56 + n
            ),
        ]);
    }
    if opts.wants_seed() && !matches!(boot, Boot::RaspberryPi { .. }) {
        let seed = crate::seed::path(artifacts);
        args.extend([
            "-drive".into(),
            format!("file={},format=raw,if=virtio,readonly=on", seed.display()),
        ]);
    }
    if let Some(date) = &opts.rtc_base {
        args.extend(["-rtc".into(), format!("base={date}")]);
    }
    let log = opts.serial_log.as_ref().map(|p| p.display().to_string());
    // The ports before the console's are left unconnected.
    for _ in 0..profile.serial_port {
        args.extend(["-serial".into(), "null".into()]);
    }
    if opts.headless {
        // Without a log, the serial output is discarded.
        let path = log.unwrap_or_else(|| "/dev/null".into());
        args.extend([
            "-chardev".into(),
            format!("file,id=console,path={path}"),
            "-serial".into(),
            "chardev:console".into(),
        ]);
        args.extend(["-monitor".into(), "none".into()]);
    } else {
        // Serial console and QEMU monitor multiplexed on the terminal
        // (Ctrl-A X quits, Ctrl-A C switches to the monitor).
        let mut chardev = "stdio,id=console,mux=on,signal=off".to_string();
        if let Some(path) = log {
            chardev.push_str(&format!(",logfile={path}"));
        }
        args.extend([
            "-chardev".into(),
            chardev,
            "-serial".into(),
            "chardev:console".into(),
        ]);
        args.extend(["-mon".into(), "chardev=console,mode=readline".into()]);
    }
    if let Some(qmp) = &opts.qmp {
        args.extend([
            "-qmp".into(),
            format!("unix:{},server=on,wait=off", qmp.display()),
        ]);
    }
    if opts.no_reboot {
        args.push("-no-reboot".into());
    }
    args.extend(profile.extra_args.iter().cloned());
    // The user's last, so they can add to (or override) all of the above.
    args.extend(opts.qemu_arg.iter().cloned());
    if let Boot::Kernel {
        system: Some(system),
        ..
    } = boot
    {
        args.extend([
            "-drive".into(),
            format!("file={},format=raw,if=virtio,readonly=on", system.display()),
        ]);
    }
    args
}

/// The kernel QEMU loads: the uncompressed one for PVH if the build made
/// it (x86_64, pvh.rs), else `vmlinuz`.
fn kernel_file(artifacts: &Path) -> PathBuf {
    let elf = artifacts.join(crate::pvh::VMLINUX);
    if elf.is_file() {
        elf
    } else {
        artifacts.join("vmlinuz")
    }
}

/// The system disk a `--format kernel` build made, from its manifest: an
/// error if the manifest names one that is not there.
pub fn built_system_disk(artifacts: &Path) -> Result<Option<PathBuf>> {
    match built_file(artifacts, "system_disk") {
        Some(path) if !path.is_file() => bail!(
            "{} has no {}, the system disk its kernel boots with: build again",
            artifacts.display(),
            crate::build::SYSTEM_DISK
        ),
        found => Ok(found),
    }
}

/// The QEMU profile `opts` names (`--machine`), else the board's, with its
/// name, and the QEMU binary it runs (an error names the package to install).
fn profile_and_qemu<'a>(
    source: &Path,
    board: &'a Board,
    opts: &'a RunOptions,
) -> Result<(&'a str, QemuProfile, PathBuf)> {
    let name = opts.machine.as_ref().unwrap_or(&board.qemu_profile);
    let profile = QemuProfile::load(source, name)?;
    let qemu = host_tools::require(&profile.binary, &profile.package)?;
    Ok((name, profile, qemu))
}

pub fn run(
    source: &Path,
    board: &Board,
    artifacts: &Path,
    opts: &RunOptions,
) -> Result<ExitStatus> {
    let (profile_name, profile, qemu) = profile_and_qemu(source, board, opts)?;
    let disk = opts.disk.clone().or_else(|| built_disk(artifacts));
    if let Some(disk) = &disk {
        if !disk.is_file() {
            bail!("no disk image {}", disk.display());
        }
    } else if profile.raspberry_pi.is_some() {
        bail!(
            "{} has no card image: run `brig build --board {}` first",
            artifacts.display(),
            board.name
        );
    }
    if profile.raspberry_pi.is_none() {
        for file in ["vmlinuz", "initramfs.img"] {
            if !artifacts.join(file).exists() {
                bail!(
                    "{} has no {file}: run `brig build --board {}` first",
                    artifacts.display(),
                    board.name
                );
            }
        }
    }
    let boot = match (disk, &profile.raspberry_pi) {
        (Some(card), Some(machine)) => raspberry_pi_boot(card, machine, artifacts)?,
        (Some(disk), None) if !opts.kernel_boot => {
            let uefi = profile.uefi.as_ref().with_context(|| {
                format!(
                    "the QEMU profile {profile_name} has no UEFI firmware to boot a disk image; use --kernel-boot"
                )
            })?;
            host_tools::require(&uefi.code, &uefi.package)?;
            let vars = vars_path(artifacts);
            std::fs::copy(&uefi.vars, &vars).with_context(|| {
                format!(
                    "copying the UEFI variable store {} (package {})",
                    uefi.vars, uefi.package
                )
            })?;
            Boot::Uefi { disk, vars }
        }
        (disk, _) => Boot::Kernel {
            // What the build wrote (it names the system partition), else the board's.
            cmdline: std::fs::read_to_string(artifacts.join("cmdline"))
                .map(|c| c.trim().to_string())
                .unwrap_or_else(|_| board.kernel_cmdline()),
            system: match disk {
                Some(_) => None,
                None => built_system_disk(artifacts)?,
            },
            disk,
        },
    };
    let (kvm, _) = decide_accel(&qemu, &profile, board, artifacts, opts.accel);
    step(&format!(
        "booting {}{} in QEMU ({}), ssh on 127.0.0.1:{}{}",
        board.name,
        match &boot {
            Boot::Uefi { disk, .. } => format!(" from {} with UEFI", disk.display()),
            Boot::Kernel {
                disk: Some(disk), ..
            } => {
                format!(" (kernel boot, disk {})", disk.display())
            }
            Boot::Kernel {
                system: Some(system),
                ..
            } => format!(" (kernel boot, system disk {})", system.display()),
            Boot::Kernel { .. } => String::new(),
            Boot::RaspberryPi { card, .. } => format!(
                " from card {} (U-Boot and the device tree off its boot partition)",
                card.display()
            ),
        },
        if kvm { "KVM" } else { "TCG software emulation" },
        opts.ssh_port,
        if opts.headless {
            ""
        } else {
            "; Ctrl-A X quits"
        }
    ));
    if opts.wants_seed() {
        let read = |p: &Option<PathBuf>| -> Result<Option<Vec<u8>>> {
            p.as_ref()
                .map(|p| std::fs::read(p).with_context(|| format!("reading {}", p.display())))
                .transpose()
        };
        let files = crate::seed::files(
            read(&opts.user_data)?.as_deref(),
            read(&opts.meta_data)?.as_deref(),
            read(&opts.network_config)?.as_deref(),
        );
        if let Boot::RaspberryPi { card, .. } = &boot {
            // As a user edits a real card: the files on its boot partition.
            boot_partition::put(card, &files)?;
            step(&format!(
                "{} written onto the boot partition of {}",
                files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
                card.display()
            ));
        } else {
            let seed = crate::seed::make(artifacts, &files)?;
            step(&format!("NoCloud seed {}", seed.display()));
        }
    }
    if matches!(boot, Boot::Uefi { .. }) && !opts.append.is_empty() {
        step("note: --append applies to kernel boots (--kernel-boot); a disk image boots with the command line of its loader entry (loader/entries/brig-*.conf on BRIG_BOOT)");
    }
    let args = arguments(&profile, artifacts, opts, kvm, &boot);
    let mut command = Command::new(&qemu);
    command.args(&args);
    if opts.headless {
        command.stdin(Stdio::null());
    }
    let status = command
        .status()
        .with_context(|| format!("starting {}", qemu.display()));
    if opts.wants_seed() {
        let _ = std::fs::remove_file(crate::seed::path(artifacts));
    }
    match &boot {
        Boot::Uefi { vars, .. } => {
            let _ = std::fs::remove_file(vars);
        }
        Boot::RaspberryPi { files, .. } => {
            let _ = std::fs::remove_dir_all(files);
        }
        Boot::Kernel { .. } => {}
    }
    status
}

/// Does the Pi firmware's part for QEMU: takes U-Boot and the device tree
/// off the card's boot partition into a directory of this run's, and turns
/// off in that copy of the device tree what QEMU's model of the board
/// lacks.
fn raspberry_pi_boot(
    card: PathBuf,
    machine: &RaspberryPiMachine,
    artifacts: &Path,
) -> Result<Boot> {
    let size = std::fs::metadata(&card)
        .with_context(|| format!("reading {}", card.display()))?
        .len();
    if !size.is_power_of_two() {
        bail!(
            "QEMU's Raspberry Pi machines take only SD cards of a power-of-two size; {} is {size} \
             bytes: make a copy that size (e.g. `qemu-img resize -f raw COPY 2G`) and boot it with --disk",
            card.display()
        );
    }
    let files = artifacts.join(format!("raspberry-pi-boot-{}", std::process::id()));
    std::fs::create_dir_all(&files).with_context(|| format!("creating {}", files.display()))?;
    boot_partition::copy_out(&card, &[uboot::UBOOT_FILE, &machine.device_tree], &files).context(
        "the card has no U-Boot: it was made before A/B updates on the Pi; build it again",
    )?;
    if !machine.disable.is_empty() || !machine.delete.is_empty() {
        let fdtput = host_tools::require("fdtput", "device-tree-compiler")?;
        let device_tree = files.join(&machine.device_tree);
        let what = |change: &str| format!("{change} in brig run's copy of {}", machine.device_tree);
        for node in &machine.disable {
            host_tools::run(
                Command::new(&fdtput)
                    .args(["-t", "s"])
                    .arg(&device_tree)
                    .args([node, "status", "disabled"]),
                &what(&format!("turning off {node}")),
            )?;
        }
        for property in &machine.delete {
            let (node, name) = property
                .rsplit_once(':')
                .with_context(|| format!("QEMU profile: {property:?} is not NODE:PROPERTY"))?;
            host_tools::run(
                Command::new(&fdtput)
                    .arg("-d")
                    .arg(&device_tree)
                    .args([node, name]),
                &what(&format!("taking out {property}")),
            )?;
        }
    }
    Ok(Boot::RaspberryPi {
        card,
        files,
        device_tree: machine.device_tree.clone(),
        cmdline: qemu_cmdline(machine),
    })
}

/// What the model needs added to the slot's command line (U-Boot's script
/// appends the device tree's bootargs): a serial console it can run, named
/// last so that it is /dev/console, and the profile's words.
fn qemu_cmdline(machine: &RaspberryPiMachine) -> String {
    machine
        .serial_console
        .iter()
        .map(|console| format!("console={console}"))
        .chain(machine.kernel_args.iter().cloned())
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether guests of `board` run under KVM (true) or TCG here, and why.
fn decide_accel(
    qemu: &Path,
    profile: &QemuProfile,
    board: &Board,
    artifacts: &Path,
    accel: Accel,
) -> (bool, &'static str) {
    match accel {
        Accel::Tcg => (false, "asked for (--accel tcg)"),
        Accel::Kvm => (true, "asked for (--accel kvm)"),
        Accel::Auto if Arch::host() != Some(board.arch) => {
            (false, "the board's architecture is not this host's")
        }
        Accel::Auto => match kvm_works(qemu, profile, board, artifacts) {
            true => (true, "a probe boot works"),
            false => (false, "no usable /dev/kvm, or a probe boot under it fails"),
        },
    }
}

/// `brig accel`: what `brig run` would use for `board` here, in words.
pub fn describe_accel(
    source: &Path,
    board: &Board,
    artifacts: &Path,
    opts: &RunOptions,
) -> Result<String> {
    let (_, profile, qemu) = profile_and_qemu(source, board, opts)?;
    let (kvm, why) = decide_accel(&qemu, &profile, board, artifacts, opts.accel);
    Ok(format!(
        "{} ({why})",
        if kvm { "KVM" } else { "TCG software emulation" }
    ))
}

/// Whether KVM can boot this board's kernel here. An openable /dev/kvm is not
/// enough (nested virtualization may create VMs and then fail to run them),
/// so the kernel is booted under KVM without an initramfs: reaching its
/// "cannot mount root" panic proves it runs. The answer is cached per host
/// boot.
fn kvm_works(qemu: &Path, profile: &QemuProfile, board: &Board, artifacts: &Path) -> bool {
    if Arch::host() != Some(board.arch) {
        return false;
    }
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return false;
    }
    let boot_id = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").unwrap_or_default();
    let cache = crate::debian::cache_dir()
        .ok()
        .map(|d| d.join(format!("kvm-probe-{}", board.arch)));
    if let Some(cached) = cache.as_ref().and_then(|c| std::fs::read_to_string(c).ok()) {
        if let Some(answer) = cached.strip_prefix(boot_id.trim()) {
            return answer.trim() == "works";
        }
    }
    step("checking whether KVM works here (probe boot) ...");
    let works = probe_kvm(qemu, profile, board, artifacts).unwrap_or(false);
    step(&format!(
        "KVM {}",
        if works {
            "works"
        } else {
            "does not work here; using TCG"
        }
    ));
    if let Some(cache) = cache {
        let _ = std::fs::create_dir_all(cache.parent().unwrap_or(Path::new(".")));
        let _ = std::fs::write(
            cache,
            format!(
                "{} {}\n",
                boot_id.trim(),
                if works { "works" } else { "fails" }
            ),
        );
    }
    works
}

fn probe_kvm(qemu: &Path, profile: &QemuProfile, board: &Board, artifacts: &Path) -> Result<bool> {
    let mut child = Command::new(qemu)
        .args([
            "-machine",
            &profile.machine,
            "-accel",
            "kvm",
            "-cpu",
            &profile.cpu_kvm,
            "-m",
            "256M",
        ])
        .arg("-kernel")
        .arg(artifacts.join("vmlinuz"))
        .args([
            "-append",
            &format!("console={} panic=-1 loglevel=4", board.console),
        ])
        .args([
            "-display",
            "none",
            "-serial",
            "stdio",
            "-monitor",
            "none",
            "-no-reboot",
            "-nodefaults",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let mut output = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut output);
    }
    Ok(output.contains("Kernel panic") && output.contains("VFS"))
}

#[cfg(test)]
mod tests;
