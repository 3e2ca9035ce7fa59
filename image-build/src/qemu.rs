//! `brig run`: boots built artifacts in QEMU. KVM is used only when it really
//! works here (a probe boot, not just an openable /dev/kvm), otherwise TCG.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::board::{Arch, Board, QemuProfile, RaspberryPiMachine};
use crate::boot_partition;
use crate::host_tools;
use crate::progress::step;
use crate::raspberry_pi;

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
    /// QEMU loads the kernel and initramfs, with this command line.
    Kernel {
        cmdline: String,
        disk: Option<PathBuf>,
    },
    /// UEFI firmware boots the disk image (systemd-boot on its ESP);
    /// `vars` is this boot's copy of the firmware's variable store.
    Uefi { disk: PathBuf, vars: PathBuf },
    /// A Raspberry Pi card: QEMU does not run the Pi's GPU firmware, so
    /// `brig run` does its part — the kernel, initramfs, device tree and
    /// `cmdline.txt` come off the card's boot partition into `files` —
    /// and the card is the machine's SD card.
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
    let manifest = std::fs::read(artifacts.join("manifest.json")).ok()?;
    let manifest: serde_json::Value = serde_json::from_slice(&manifest).ok()?;
    let name = manifest["disk"]["path"].as_str()?;
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
        Boot::Kernel { cmdline, disk } => {
            args.extend([
                "-kernel".into(),
                artifacts.join("vmlinuz").display().to_string(),
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
                files.join(raspberry_pi::KERNEL).display().to_string(),
                "-initrd".into(),
                files.join(raspberry_pi::INITRAMFS).display().to_string(),
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
    args
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
            Boot::Kernel { disk: None, .. } => String::new(),
            Boot::RaspberryPi { card, .. } => format!(
                " from card {} (kernel, initramfs, device tree off its boot partition)",
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
        step("note: --append applies to kernel boots (--kernel-boot); a disk image boots with the command line of its loader entry (loader/entries/brig.conf on BRIG_BOOT)");
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

/// Does the Pi firmware's part for QEMU: takes the kernel, initramfs,
/// device tree and command line off the card's boot partition into a
/// directory of this run's, and turns off in that copy of the device tree
/// what QEMU's model of the board lacks.
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
    let cmdline = "cmdline.txt";
    boot_partition::copy_out(
        &card,
        &[
            raspberry_pi::KERNEL,
            raspberry_pi::INITRAMFS,
            &machine.device_tree,
            cmdline,
        ],
        &files,
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
    let cmdline = std::fs::read_to_string(files.join(cmdline))
        .with_context(|| format!("reading cmdline.txt off {}", card.display()))?;
    Ok(Boot::RaspberryPi {
        card,
        files,
        device_tree: machine.device_tree.clone(),
        cmdline: qemu_cmdline(&cmdline, machine),
    })
}

/// `cmdline.txt` as QEMU's model of the board can run it.
fn qemu_cmdline(cmdline: &str, machine: &RaspberryPiMachine) -> String {
    cmdline
        .split_whitespace()
        .map(|word| match &machine.serial_console {
            Some(console) if word.starts_with("console=ttyS") => format!("console={console}"),
            _ => word.to_string(),
        })
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
mod tests {
    use super::*;

    fn repo() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    fn options() -> RunOptions {
        RunOptions {
            ssh_port: 2222,
            serial_log: None,
            headless: false,
            qmp: None,
            accel: Accel::Auto,
            no_reboot: false,
            append: vec![],
            rtc_base: None,
            nics: 1,
            user_net: vec![],
            qemu_arg: vec![],
            user_data: None,
            meta_data: None,
            network_config: None,
            disk: None,
            kernel_boot: false,
            machine: None,
        }
    }

    fn args_for(board: &str, opts: &RunOptions, kvm: bool) -> Vec<String> {
        let board = Board::load(repo(), board).unwrap();
        let profile = QemuProfile::load(repo(), &board.qemu_profile).unwrap();
        let boot = Boot::Kernel {
            cmdline: board.kernel_cmdline(),
            disk: None,
        };
        arguments(&profile, Path::new("/o"), opts, kvm, &boot)
    }

    fn value_of<'a>(args: &'a [String], flag: &str) -> &'a str {
        let i = args
            .iter()
            .position(|a| a == flag)
            .unwrap_or_else(|| panic!("no {flag} in {args:?}"));
        &args[i + 1]
    }

    #[test]
    fn a_pi_card_boots_its_own_kernel_and_device_tree_with_the_card_as_sd() {
        let profile = QemuProfile::load(repo(), "raspi3b").unwrap();
        let boot = Boot::RaspberryPi {
            card: "/c/card.img".into(),
            files: "/o/boot".into(),
            device_tree: "bcm2837-rpi-3-b.dtb".into(),
            cmdline: "console=tty1 console=ttyS1,115200".into(),
        };
        let opts = RunOptions {
            headless: true,
            user_data: Some("user-data.yaml".into()),
            append: vec!["loglevel=4".into()],
            ..options()
        };
        let args = arguments(&profile, Path::new("/o"), &opts, false, &boot);
        assert_eq!(value_of(&args, "-kernel"), "/o/boot/vmlinuz");
        assert_eq!(value_of(&args, "-initrd"), "/o/boot/initramfs.img");
        assert_eq!(value_of(&args, "-dtb"), "/o/boot/bcm2837-rpi-3-b.dtb");
        assert_eq!(
            value_of(&args, "-append"),
            "console=tty1 console=ttyS1,115200 loglevel=4"
        );
        // The card is the SD card, and the only drive: user data goes onto it.
        let drives: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-drive")
            .map(|w| &w[1])
            .collect();
        assert_eq!(drives, ["file=/c/card.img,format=raw,if=sd"]);
        // The mini UART is the second port: the first is left unconnected.
        let serials: Vec<&String> = args
            .windows(2)
            .filter(|w| w[0] == "-serial")
            .map(|w| &w[1])
            .collect();
        assert_eq!(serials, ["null", "chardev:console"]);
        assert!(value_of(&args, "-device").starts_with("usb-net,netdev=net0"));
        // One host thread for the vCPUs under TCG, so the USB model keeps up.
        assert_eq!(value_of(&args, "-accel"), "tcg,thread=single");
        let kvm = arguments(&profile, Path::new("/o"), &opts, true, &boot);
        assert_eq!(value_of(&kvm, "-accel"), "kvm");
    }

    #[test]
    fn a_serial_console_qemu_cannot_run_is_replaced_on_the_command_line() {
        let raspi4b = QemuProfile::load(repo(), "raspi4b").unwrap();
        let machine = raspi4b.raspberry_pi.unwrap();
        assert_eq!(
            qemu_cmdline(
                "console=tty1 console=ttyS1,115200 panic=10 brig.system=PARTUUID=X\n",
                &machine
            ),
            "console=tty1 console=ttyAMA0,115200 panic=10 brig.system=PARTUUID=X"
        );
        let raspi3b = QemuProfile::load(repo(), "raspi3b").unwrap();
        assert_eq!(
            qemu_cmdline(
                "console=tty1 console=ttyS1,115200",
                &raspi3b.raspberry_pi.unwrap()
            ),
            "console=tty1 console=ttyS1,115200"
        );
    }

    #[test]
    fn interactive_run_forwards_ssh_on_loopback_and_puts_the_console_on_stdio() {
        let args = args_for("qemu-x86_64", &options(), false);
        assert_eq!(value_of(&args, "-accel"), "tcg");
        assert_eq!(value_of(&args, "-kernel"), "/o/vmlinuz");
        assert!(value_of(&args, "-netdev").contains("hostfwd=tcp:127.0.0.1:2222-:22"));
        assert!(value_of(&args, "-chardev").starts_with("stdio,"));
        assert!(value_of(&args, "-append").starts_with("console=ttyS0"));
        assert!(!args.contains(&"-no-reboot".to_string()));
    }

    #[test]
    fn headless_run_logs_serial_to_a_file_and_offers_qmp() {
        let opts = RunOptions {
            ssh_port: 2300,
            serial_log: Some("/tmp/serial.log".into()),
            headless: true,
            qmp: Some("/tmp/q.sock".into()),
            no_reboot: true,
            append: vec!["brig.hostname=t1".into()],
            rtc_base: Some("2001-01-01".into()),
            user_data: Some("user-data.yaml".into()),
            ..options()
        };
        let args = args_for("qemu-aarch64", &opts, false);
        assert_eq!(
            value_of(&args, "-chardev"),
            "file,id=console,path=/tmp/serial.log"
        );
        assert_eq!(
            value_of(&args, "-qmp"),
            "unix:/tmp/q.sock,server=on,wait=off"
        );
        assert!(value_of(&args, "-netdev").contains("127.0.0.1:2300-:22"));
        assert!(value_of(&args, "-append").starts_with("console=ttyAMA0"));
        assert!(value_of(&args, "-append").ends_with(" brig.hostname=t1"));
        assert!(args.contains(&"-no-reboot".to_string()));
        assert_eq!(value_of(&args, "-rtc"), "base=2001-01-01");
        assert_eq!(
            value_of(&args, "-drive"),
            format!(
                "file=/o/nocloud-seed-{}.img,format=raw,if=virtio,readonly=on",
                std::process::id()
            )
        );
        let opts = RunOptions {
            nics: 2,
            user_net: vec![
                "net=169.254.169.0/24".into(),
                "guestfwd=tcp:169.254.169.254:80-cmd:serve a,b".into(),
            ],
            qemu_arg: vec![
                "-object".into(),
                "filter-dump,id=d,netdev=net1,file=x".into(),
            ],
            ..options()
        };
        let args = args_for("qemu-x86_64", &opts, false).join(" ");
        assert!(
            args.contains("-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22,net=169.254.169.0/24,guestfwd=tcp:169.254.169.254:80-cmd:serve a,,b -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56")
                && args.contains("-netdev user,id=net1 -device virtio-net-pci,netdev=net1,mac=52:54:00:12:34:57")
                && args.ends_with("-object filter-dump,id=d,netdev=net1,file=x"),
            "{args}"
        );
        assert!(!args_for("qemu-aarch64", &options(), false).contains(&"-rtc".to_string()));
    }

    #[test]
    fn a_disk_image_boots_with_uefi_firmware_as_the_first_virtio_disk() {
        let board = Board::load(repo(), "qemu-x86_64").unwrap();
        let profile = QemuProfile::load(repo(), &board.qemu_profile).unwrap();
        let opts = RunOptions {
            user_data: Some("u".into()),
            ..options()
        };
        let boot = Boot::Uefi {
            disk: "/o/brig-qemu-x86_64.qcow2".into(),
            vars: "/o/vars.fd".into(),
        };
        let args = arguments(&profile, Path::new("/o"), &opts, false, &boot).join(" ");
        assert!(!args.contains("-kernel"), "{args}");
        assert!(
            args.contains("-drive if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd -drive if=pflash,format=raw,unit=1,file=/o/vars.fd -drive file=/o/brig-qemu-x86_64.qcow2,format=qcow2,if=virtio"),
            "{args}"
        );
        // The system disk comes before the seed: it is vda.
        let disk = args.find("brig-qemu-x86_64.qcow2").unwrap();
        let seed = args.find("nocloud-seed").unwrap();
        assert!(disk < seed, "{args}");
        let boot = Boot::Kernel {
            cmdline: "console=ttyS0 brig.system=PARTUUID=X".into(),
            disk: Some("/o/brig-qemu-x86_64.img".into()),
        };
        let args = arguments(&profile, Path::new("/o"), &options(), false, &boot).join(" ");
        assert!(
            args.contains("-append console=ttyS0 brig.system=PARTUUID=X")
                && args.contains("-drive file=/o/brig-qemu-x86_64.img,format=raw,if=virtio")
                && !args.contains("pflash"),
            "{args}"
        );
    }

    #[test]
    fn kvm_uses_the_kvm_cpu_model() {
        let args = args_for("qemu-x86_64", &options(), true);
        assert_eq!(value_of(&args, "-accel"), "kvm");
        assert_eq!(value_of(&args, "-cpu"), "host");
    }
}
