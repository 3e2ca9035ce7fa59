//! Boards (`boards/<name>.toml`) and QEMU profiles (`qemu/<name>.toml`): the
//! declarative description of a target. Adding a board is adding a file.

use std::fmt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::Deserialize;

/// A CPU architecture Brig builds for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arch {
    X86_64,
    Aarch64,
}

impl Arch {
    /// Debian's name for it.
    pub fn debian(self) -> &'static str {
        match self {
            Arch::X86_64 => "amd64",
            Arch::Aarch64 => "arm64",
        }
    }

    /// Debian's multiarch directory name (`/usr/lib/<triplet>`).
    pub fn multiarch(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-linux-gnu",
            Arch::Aarch64 => "aarch64-linux-gnu",
        }
    }

    /// UEFI's name for it, in `BOOT<X64>.EFI` and systemd-boot's file names.
    pub fn efi(self) -> &'static str {
        match self {
            Arch::X86_64 => "x64",
            Arch::Aarch64 => "aa64",
        }
    }

    /// The Rust target device binaries are built for.
    pub fn rust_target(self) -> &'static str {
        match self {
            Arch::X86_64 => "x86_64-unknown-linux-musl",
            Arch::Aarch64 => "aarch64-unknown-linux-musl",
        }
    }

    /// The architecture of the machine running `brig`.
    pub fn host() -> Option<Arch> {
        match std::env::consts::ARCH {
            "x86_64" => Some(Arch::X86_64),
            "aarch64" => Some(Arch::Aarch64),
            _ => None,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Arch::X86_64 => "x86_64",
            Arch::Aarch64 => "aarch64",
        })
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Board {
    #[serde(skip)]
    pub name: String,
    pub description: String,
    pub arch: Arch,
    /// Debian suite the kernel comes from.
    #[serde(default = "default_suite")]
    pub suite: String,
    /// Debian kernel package (usually a metapackage such as linux-image-arm64).
    pub kernel_package: String,
    /// Fragments in `kernel-config/` (without `.config`) the kernel must satisfy.
    pub kernel_config: Vec<String>,
    /// Serial console device, without /dev (ttyS0, ttyAMA0).
    pub console: String,
    /// Kernel command line words besides `console=`.
    #[serde(default)]
    pub cmdline: Vec<String>,
    /// Profile in `qemu/` used by `brig run`.
    pub qemu_profile: String,
    /// What `brig build` makes without `--format`.
    #[serde(default = "default_format")]
    pub default_format: crate::disk::Format,
    /// A Raspberry Pi: its disk image boots through the Pi's firmware.
    #[serde(default)]
    pub raspberry_pi: Option<RaspberryPi>,
}

/// What a Raspberry Pi's boot partition holds besides the kernel and
/// initramfs (docs/raspberry-pi.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaspberryPi {
    /// Files of Debian's raspi-firmware (`/usr/lib/raspi-firmware/`) the
    /// models need: the GPU firmware that loads the kernel, and overlays
    /// (`overlays/NAME.dtbo`, kept in that directory).
    pub firmware: Vec<String>,
    /// Device trees of the kernel package (`broadcom/bcm2711-rpi-4-b.dtb`);
    /// the firmware picks the model's by name.
    pub device_trees: Vec<String>,
    /// Further `config.txt` lines, after Brig's own.
    #[serde(default)]
    pub config: Vec<String>,
    /// Files of Debian's firmware-brcm80211 (paths under /usr/lib/firmware)
    /// for the models' Wi-Fi chips: the kernel loads them from the image's
    /// /lib/firmware when the driver probes.
    #[serde(default)]
    pub wifi_firmware: Vec<String>,
}

fn default_format() -> crate::disk::Format {
    crate::disk::Format::Kernel
}

fn default_suite() -> String {
    "trixie".into()
}

impl Board {
    pub fn load(source: &Path, name: &str) -> Result<Board> {
        let path = source.join("boards").join(format!("{name}.toml"));
        if !path.exists() {
            bail!(
                "no board {name:?}: {} does not exist (boards: {})",
                path.display(),
                list(source)?.join(", ")
            );
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut board: Board =
            toml::from_str(&text).with_context(|| format!("in board file {}", path.display()))?;
        board.name = name.to_string();
        Ok(board)
    }

    /// The full kernel command line.
    pub fn kernel_cmdline(&self) -> String {
        let mut words = vec![format!("console={}", self.console)];
        words.extend(self.cmdline.iter().cloned());
        words.join(" ")
    }
}

/// One word for the kernel command line (`brig build --kernel-arg`): no
/// spaces, quotes or control characters, which would split it or end the
/// boot entry's line; and not `brig.system=`, which the build sets.
pub fn kernel_arg(word: &str) -> Result<String, String> {
    if word.is_empty()
        || word
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || c == '"')
    {
        return Err(format!(
            "{word:?} is not one word: a kernel argument has no spaces, quotes or control characters"
        ));
    }
    if word.starts_with("brig.system=") {
        return Err("brig.system= is set by the build (it names the system partition)".into());
    }
    Ok(word.to_string())
}

/// Names of all boards in `boards/`, sorted.
pub fn list(source: &Path) -> Result<Vec<String>> {
    let dir = source.join("boards");
    let mut names = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "toml") {
            if let Some(stem) = path.file_stem() {
                names.push(stem.to_string_lossy().into_owned());
            }
        }
    }
    names.sort();
    Ok(names)
}

/// How `brig run` starts QEMU for a board.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QemuProfile {
    /// QEMU system emulator binary.
    pub binary: String,
    /// Debian package that provides it (named in the error when it is missing).
    pub package: String,
    pub machine: String,
    /// CPU model under KVM and under TCG (software emulation).
    pub cpu_kvm: String,
    pub cpu_tcg: String,
    pub memory: String,
    pub smp: u32,
    /// Under TCG, all vCPUs on one host thread: the Pi machines' USB host
    /// model (dwc2) misses its device when the vCPU threads starve QEMU's
    /// main loop on a small host.
    #[serde(default)]
    pub tcg_single_thread: bool,
    /// Network card model; user networking is attached to it.
    pub nic: String,
    /// Which of the machine's serial ports is the board's console (the
    /// Pi's mini UART is QEMU's second).
    #[serde(default)]
    pub serial_port: usize,
    /// A Raspberry Pi machine: the device tree to take off the card.
    #[serde(default)]
    pub raspberry_pi: Option<RaspberryPiMachine>,
    /// Any further arguments, verbatim.
    #[serde(default)]
    pub extra_args: Vec<String>,
    /// UEFI firmware for booting disk images, if the machine has one here.
    #[serde(default)]
    pub uefi: Option<Uefi>,
}

/// How QEMU boots a Pi card without the Pi's firmware (qemu.rs).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaspberryPiMachine {
    /// The device tree on the boot partition for this model.
    pub device_tree: String,
    /// Device tree nodes turned off in `brig run`'s copy of it: hardware
    /// the kernel probes and QEMU's model lacks (never in the image).
    #[serde(default)]
    pub disable: Vec<String>,
    /// Properties taken out of that copy, as `NODE:PROPERTY`.
    #[serde(default)]
    pub delete: Vec<String>,
    /// A serial console QEMU's model can run, added after the slot's
    /// `console=ttyS…` so that it is /dev/console (with that UART among
    /// `disable`).
    #[serde(default)]
    pub serial_console: Option<String>,
    /// Words added to the kernel's command line for QEMU's model only
    /// (through the device tree's bootargs, as `cmdline.txt` on a Pi).
    #[serde(default)]
    pub kernel_args: Vec<String>,
}

/// UEFI firmware files as a Debian package installs them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Uefi {
    /// The firmware code (read-only flash).
    pub code: String,
    /// The variable store template; each boot gets its own copy.
    pub vars: String,
    pub package: String,
}

impl QemuProfile {
    pub fn load(source: &Path, name: &str) -> Result<QemuProfile> {
        let path = source.join("qemu").join(format!("{name}.toml"));
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading QEMU profile {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("in QEMU profile {}", path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_args_are_single_words_and_never_the_system_partition() {
        assert_eq!(
            kernel_arg("module_blacklist=virtio_net").unwrap(),
            "module_blacklist=virtio_net"
        );
        for bad in ["", "a b", "quiet\n", "x=\"y\"", "brig.system=PARTUUID=1"] {
            assert!(kernel_arg(bad).is_err(), "{bad:?}");
        }
    }

    fn repo() -> &'static Path {
        Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/.."))
    }

    #[test]
    fn every_board_in_the_repo_loads_with_its_profile_and_fragments() {
        let boards = list(repo()).unwrap();
        assert!(
            boards.contains(&"qemu-x86_64".to_string())
                && boards.contains(&"qemu-aarch64".to_string())
        );
        // Every profile, also those no board names (`brig run --machine`).
        for entry in std::fs::read_dir(repo().join("qemu")).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_string_lossy();
            QemuProfile::load(repo(), &name).unwrap();
        }
        for name in boards {
            let board = Board::load(repo(), &name).unwrap();
            QemuProfile::load(repo(), &board.qemu_profile).unwrap();
            for fragment in &board.kernel_config {
                let path = repo()
                    .join("kernel-config")
                    .join(format!("{fragment}.config"));
                assert!(
                    path.exists(),
                    "board {name}: missing fragment {}",
                    path.display()
                );
            }
            assert!(board
                .kernel_cmdline()
                .starts_with(&format!("console={}", board.console)));
        }
    }

    #[test]
    fn unknown_board_lists_the_known_ones() {
        let err = Board::load(repo(), "nosuch").unwrap_err().to_string();
        assert!(
            err.contains("nosuch") && err.contains("qemu-x86_64"),
            "{err}"
        );
    }

    #[test]
    fn a_typo_in_a_board_file_names_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("boards")).unwrap();
        std::fs::write(
            dir.path().join("boards/x.toml"),
            "description = \"x\"\narch = \"x86_64\"\nkernel_pakage = \"linux-image-amd64\"\n",
        )
        .unwrap();
        let err = format!("{:#}", Board::load(dir.path(), "x").unwrap_err());
        assert!(
            err.contains("boards/x.toml") && err.contains("kernel_pakage"),
            "{err}"
        );
        std::fs::write(dir.path().join("boards/x.toml"), "arch = \"mips\"\n").unwrap();
        let err = format!("{:#}", Board::load(dir.path(), "x").unwrap_err());
        assert!(err.contains("mips"), "{err}");
    }
}
