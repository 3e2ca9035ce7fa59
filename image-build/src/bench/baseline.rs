//! The baselines Brig is measured against, both plain Debian with systemd
//! and OpenSSH booted with Brig's own kernel:
//! - as a Debian cloud VM boots: initramfs-tools' initramfs, the root file
//!   system on a virtio disk, D-Bus and logind, DHCP by systemd-networkd;
//! - lean: the fastest Debian that still has systemd, OpenSSH and
//!   systemd-networkd: the root file system is the initramfs (no
//!   initramfs-tools, no root disk to find and mount), no D-Bus, logind
//!   masked, no documentation or translations.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::board::Board;
use crate::debian::Kernel;
use crate::host_tools;
use crate::progress::timed;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    CloudVm,
    Lean,
}

impl Kind {
    /// Packages on top of Debian's minimal base.
    fn packages(self) -> &'static [&'static str] {
        match self {
            // The init, device manager, D-Bus and logind (without which
            // sshd's PAM session waits for a timeout), OpenSSH, and what
            // makes the initramfs.
            Kind::CloudVm => &[
                "systemd-sysv",
                "udev",
                "dbus",
                "libpam-systemd",
                "openssh-server",
                "initramfs-tools",
                "kmod",
                "zstd",
            ],
            // udev loads the network card's driver (a module).
            Kind::Lean => &["systemd-sysv", "udev", "kmod", "openssh-server"],
        }
    }

    /// What dpkg leaves out (a lean image: as Debian's slim container
    /// images do).
    fn excludes(self) -> &'static [&'static str] {
        match self {
            Kind::CloudVm => &[],
            Kind::Lean => &[
                "/usr/share/doc/*",
                "/usr/share/man/*",
                "/usr/share/info/*",
                "/usr/share/locale/*",
            ],
        }
    }

    pub fn label(self, suite: &str) -> String {
        match self {
            Kind::CloudVm => {
                format!("Debian {suite} + systemd + OpenSSH, as a cloud VM (baseline)")
            }
            Kind::Lean => format!(
                "Debian {suite} + systemd + OpenSSH, lean, root in the initramfs (baseline)"
            ),
        }
    }
}

/// A baseline's artifacts, laid out as a build's so `brig run
/// --kernel-boot` boots them: `vmlinuz` (Brig's, and uncompressed as
/// `vmlinux` for PVH, as Brig's build writes it), `initramfs.img`,
/// `cmdline`, and for the cloud VM the root disk `root.img`.
pub struct Baseline {
    pub artifacts: PathBuf,
    pub disk: Option<PathBuf>,
}

/// Makes a baseline in `dir` with mmdebstrap, unless `dir` already holds
/// one made by the same recipe for the same kernel and key.
pub fn make(
    dir: &Path,
    kind: Kind,
    board: &Board,
    kernel: &Kernel,
    public_key: &str,
) -> Result<Baseline> {
    let baseline = Baseline {
        artifacts: dir.to_path_buf(),
        disk: (kind == Kind::CloudVm).then(|| dir.join("root.img")),
    };
    let key_file = dir.join("authorized_keys");
    let hooks = customize_hooks(dir, kind, kernel, &key_file);
    let recipe = recipe(kind, board, kernel, public_key, &hooks);
    let stamp = dir.join("recipe");
    if std::fs::read_to_string(&stamp).is_ok_and(|made| made == recipe)
        && baseline.disk.as_ref().is_none_or(|d| d.exists())
        && dir.join("initramfs.img").exists()
        && dir.join(crate::pvh::VMLINUX).exists()
    {
        return Ok(baseline);
    }
    if dir.exists() {
        std::fs::remove_dir_all(dir).with_context(|| format!("removing {}", dir.display()))?;
    }
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::write(&key_file, format!("{public_key}\n"))
        .with_context(|| format!("writing {}", key_file.display()))?;

    let release = &kernel.release;
    let mmdebstrap = host_tools::require("mmdebstrap", "mmdebstrap")?;
    let mut command = Command::new(mmdebstrap);
    command
        .args(["--variant=minbase", "--format=directory"])
        .arg(format!("--architectures={}", board.arch.debian()))
        .arg(format!("--include={}", kind.packages().join(",")));
    for excluded in kind.excludes() {
        command.arg(format!("--dpkgopt=path-exclude={excluded}"));
    }
    for hook in &hooks {
        command.arg(format!("--customize-hook={hook}"));
    }
    command.arg(&board.suite).arg(&rootfs);
    let status = timed(
        &format!(
            "baseline: {} for kernel {release} (mmdebstrap)",
            kind.label(&board.suite)
        ),
        || command.status(),
    )
    .context("running mmdebstrap for the baseline")?;
    if !status.success() {
        bail!("mmdebstrap could not make the Debian baseline ({status})");
    }

    std::fs::copy(&kernel.vmlinuz, dir.join("vmlinuz"))
        .with_context(|| format!("copying {}", kernel.vmlinuz.display()))?;
    // Loaded as Brig's is: uncompressed, through PVH, where it can be (the
    // stamp check above wants it: Brig's build of this kernel made one).
    let _ = crate::pvh::write_vmlinux(&kernel.vmlinuz, dir)?;
    match &baseline.disk {
        Some(disk) => {
            let initrd = rootfs.join(format!("boot/initrd.img-{release}"));
            std::fs::copy(&initrd, dir.join("initramfs.img"))
                .with_context(|| format!("copying {}", initrd.display()))?;
            write_cmdline(dir, &format!("{} root=/dev/vda rw", board.kernel_cmdline()))?;
            let mkfs = host_tools::require("mkfs.ext4", "e2fsprogs")?;
            host_tools::run(
                Command::new(mkfs)
                    .args(["-q", "-F", "-L", "debian", "-d"])
                    .arg(&rootfs)
                    .arg(disk)
                    .arg("2G"),
                "making the baseline's root file system",
            )?;
        }
        None => {
            let cpio = timed(
                "baseline: the root file system as an initramfs (cpio, zstd)",
                || root_as_initramfs(&rootfs),
            )?;
            std::fs::write(dir.join("initramfs.img"), cpio)
                .context("writing the lean baseline's initramfs")?;
            write_cmdline(dir, &board.kernel_cmdline())?;
        }
    }
    std::fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    std::fs::write(&stamp, recipe).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(baseline)
}

fn write_cmdline(dir: &Path, cmdline: &str) -> Result<()> {
    std::fs::write(dir.join("cmdline"), cmdline)
        .context("writing the baseline's kernel command line")
}

/// The whole tree, owners and links as they are, as a zstd newc cpio.
fn root_as_initramfs(rootfs: &Path) -> Result<Vec<u8>> {
    let cpio = host_tools::require("cpio", "cpio")?;
    let paths = host_tools::run(
        Command::new("find")
            .args([".", "-mindepth", "1", "-print0"])
            .current_dir(rootfs),
        "listing the lean baseline's root file system",
    )?;
    // The list beside the tree, not in it.
    let list = rootfs.with_extension("paths");
    std::fs::write(&list, &paths.stdout).with_context(|| format!("writing {}", list.display()))?;
    let list_file =
        std::fs::File::open(&list).with_context(|| format!("opening {}", list.display()))?;
    let archive = host_tools::run(
        Command::new(cpio)
            .args(["--null", "--create", "--format=newc", "--quiet"])
            .current_dir(rootfs)
            .stdin(list_file),
        "packing the lean baseline's root file system (cpio)",
    );
    let _ = std::fs::remove_file(&list);
    zstd::encode_all(archive?.stdout.as_slice(), 10).context("compressing the lean initramfs")
}

/// mmdebstrap's customize hooks: the kernel Brig boots and a cloud VM's
/// setup, in the tree `$1`.
fn customize_hooks(dir: &Path, kind: Kind, kernel: &Kernel, key_file: &Path) -> Vec<String> {
    let release = &kernel.release;
    let network = "[Match]\\nName=en* eth*\\n[Network]\\nDHCP=yes\\n";
    // The kernel Brig boots and its modules.
    let mut hooks = vec![
        format!(
            "mkdir -p \"$1/usr/lib/modules\" && cp -a {} \"$1/usr/lib/modules/{release}\"",
            kernel.modules.display()
        ),
        format!("chroot \"$1\" depmod {release}"),
    ];
    match kind {
        // The initramfs Debian would make for it; the root disk.
        Kind::CloudVm => hooks.extend([
            format!(
                "cp {} \"$1/boot/config-{release}\"",
                kernel.config.display()
            ),
            format!("chroot \"$1\" update-initramfs -c -k {release}"),
            "echo '/dev/vda / ext4 defaults 0 1' > \"$1/etc/fstab\"".to_string(),
        ]),
        // The kernel starts systemd from the initramfs itself; logind
        // (which needs D-Bus) is not started.
        Kind::Lean => hooks.extend([
            "ln -s sbin/init \"$1/init\"".to_string(),
            "chroot \"$1\" systemctl mask systemd-logind.service".to_string(),
        ]),
    }
    // As a cloud image is set up: a host name, DHCP on the wired link, an
    // account that logs in with the key.
    hooks.extend([
        "echo debian > \"$1/etc/hostname\"".to_string(),
        format!("printf '{network}' > \"$1/etc/systemd/network/20-wired.network\""),
        "chroot \"$1\" systemctl enable systemd-networkd".to_string(),
        "chroot \"$1\" useradd --create-home --shell /bin/bash --password '*' brig".to_string(),
        format!(
            "install -D -m 600 {} \"$1/home/brig/.ssh/authorized_keys\" && chroot \"$1\" chown -R brig:brig /home/brig/.ssh",
            key_file.display()
        ),
        // For the results: what the baseline runs.
        format!(
            "chroot \"$1\" dpkg-query -W -f '${{Package}} ${{Version}}\\n' systemd openssh-server > {}",
            dir.join("versions").display()
        ),
    ]);
    hooks
}

/// What the baseline is made from, its hooks included: a different one
/// means a new baseline.
fn recipe(
    kind: Kind,
    board: &Board,
    kernel: &Kernel,
    public_key: &str,
    hooks: &[String],
) -> String {
    format!(
        "kind {kind:?}\nsuite {}\narch {}\nkernel {}\npackages {}\nexcludes {}\nkey {public_key}\nhooks\n{}\n",
        board.suite,
        board.arch.debian(),
        kernel.release,
        kind.packages().join(","),
        kind.excludes().join(","),
        hooks.join("\n")
    )
}
