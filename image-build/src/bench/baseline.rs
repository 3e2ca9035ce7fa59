//! The baseline Brig is measured against: plain Debian with systemd and
//! OpenSSH, booted with Brig's own kernel as a Debian cloud VM boots —
//! initramfs-tools' initramfs, the root file system on a virtio disk, DHCP
//! by systemd-networkd, sshd from the package.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::board::Board;
use crate::debian::Kernel;
use crate::host_tools;
use crate::progress::timed;

/// Packages on top of Debian's minimal base: the init, device manager,
/// D-Bus and logind (without which sshd's PAM session waits for a
/// timeout), OpenSSH, and what makes the initramfs.
const PACKAGES: &[&str] = &[
    "systemd-sysv",
    "udev",
    "dbus",
    "libpam-systemd",
    "openssh-server",
    "initramfs-tools",
    "kmod",
    "zstd",
];

/// The baseline's artifacts, laid out as a build's so `brig run` boots
/// them: `vmlinuz` (Brig's, and uncompressed as `vmlinux` for PVH, as
/// Brig's build writes it), `initramfs.img` (Debian's), `cmdline`, and
/// the root disk `root.img`.
pub struct Baseline {
    pub artifacts: PathBuf,
    pub disk: PathBuf,
}

/// Makes the baseline in `dir` with mmdebstrap, unless `dir` already holds
/// one made by the same recipe for the same kernel and key.
pub fn make(dir: &Path, board: &Board, kernel: &Kernel, public_key: &str) -> Result<Baseline> {
    let baseline = Baseline {
        artifacts: dir.to_path_buf(),
        disk: dir.join("root.img"),
    };
    let key_file = dir.join("authorized_keys");
    let hooks = customize_hooks(dir, kernel, &key_file);
    let recipe = recipe(board, kernel, public_key, &hooks);
    let stamp = dir.join("recipe");
    if std::fs::read_to_string(&stamp).is_ok_and(|made| made == recipe)
        && baseline.disk.exists()
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
        .arg(format!("--include={}", PACKAGES.join(",")));
    for hook in &hooks {
        command.arg(format!("--customize-hook={hook}"));
    }
    command.arg(&board.suite).arg(&rootfs);
    let status = timed(
        &format!(
            "baseline: Debian {} with systemd and OpenSSH, for kernel {release} (mmdebstrap)",
            board.suite
        ),
        || command.status(),
    )
    .context("running mmdebstrap for the baseline")?;
    if !status.success() {
        bail!("mmdebstrap could not make the Debian baseline ({status})");
    }

    let initrd = rootfs.join(format!("boot/initrd.img-{release}"));
    std::fs::copy(&initrd, dir.join("initramfs.img"))
        .with_context(|| format!("copying {}", initrd.display()))?;
    std::fs::copy(&kernel.vmlinuz, dir.join("vmlinuz"))
        .with_context(|| format!("copying {}", kernel.vmlinuz.display()))?;
    // Loaded as Brig's is: uncompressed, through PVH, where it can be.
    let bzimage = std::fs::read(&kernel.vmlinuz)
        .with_context(|| format!("reading {}", kernel.vmlinuz.display()))?;
    if let Ok(elf) = crate::pvh::uncompressed_kernel(&bzimage) {
        std::fs::write(dir.join(crate::pvh::VMLINUX), elf)
            .context("writing the baseline's uncompressed kernel")?;
    }
    std::fs::write(
        dir.join("cmdline"),
        format!("{} root=/dev/vda rw", board.kernel_cmdline()),
    )
    .context("writing the baseline's kernel command line")?;
    let mkfs = host_tools::require("mkfs.ext4", "e2fsprogs")?;
    host_tools::run(
        Command::new(mkfs)
            .args(["-q", "-F", "-L", "debian", "-d"])
            .arg(&rootfs)
            .arg(&baseline.disk)
            .arg("2G"),
        "making the baseline's root file system",
    )?;
    std::fs::remove_dir_all(&rootfs).with_context(|| format!("removing {}", rootfs.display()))?;
    std::fs::write(&stamp, recipe).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(baseline)
}

/// mmdebstrap's customize hooks: the kernel Brig boots and a cloud VM's
/// setup, in the tree `$1`.
fn customize_hooks(dir: &Path, kernel: &Kernel, key_file: &Path) -> Vec<String> {
    let release = &kernel.release;
    let network = "[Match]\\nName=en* eth*\\n[Network]\\nDHCP=yes\\n";
    vec![
        // The kernel Brig boots, its modules and config, and the initramfs
        // Debian would make for it.
        format!(
            "mkdir -p \"$1/usr/lib/modules\" && cp -a {} \"$1/usr/lib/modules/{release}\"",
            kernel.modules.display()
        ),
        format!("cp {} \"$1/boot/config-{release}\"", kernel.config.display()),
        format!("chroot \"$1\" depmod {release}"),
        format!("chroot \"$1\" update-initramfs -c -k {release}"),
        // As a cloud image is set up: a host name, DHCP on the wired
        // link, an account that logs in with the key.
        "echo debian > \"$1/etc/hostname\"".to_string(),
        "echo '/dev/vda / ext4 defaults 0 1' > \"$1/etc/fstab\"".to_string(),
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
    ]
}

/// What the baseline is made from, its hooks included: a different one
/// means a new baseline.
fn recipe(board: &Board, kernel: &Kernel, public_key: &str, hooks: &[String]) -> String {
    format!(
        "suite {}\narch {}\nkernel {}\npackages {}\nkey {public_key}\nhooks\n{}\n",
        board.suite,
        board.arch.debian(),
        kernel.release,
        PACKAGES.join(","),
        hooks.join("\n")
    )
}
