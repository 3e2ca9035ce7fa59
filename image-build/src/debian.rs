//! Debian packages for the target architecture, fetched with mmdebstrap (apt
//! checks the archive's signatures and every package's hash) and cached under
//! the user's cache directory, so a rebuild works offline.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::board::Board;
use crate::host_tools;
use crate::progress::step;

/// A kernel package unpacked in the cache.
#[derive(Debug)]
pub struct Kernel {
    pub release: String,
    pub vmlinuz: PathBuf,
    pub config: PathBuf,
    /// `lib/modules/<release>` of the package.
    pub modules: PathBuf,
    /// The package's device trees (`usr/lib/linux-image-<release>/`, by
    /// vendor: `broadcom/bcm2711-rpi-4-b.dtb`); empty on x86_64.
    pub device_trees: PathBuf,
    /// `sha256  file.deb` lines of the kernel packages used.
    pub debs: Vec<String>,
}

/// `$XDG_CACHE_HOME/brig`, or `~/.cache/brig`.
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("brig"));
    }
    let home = std::env::var_os("HOME")
        .context("neither XDG_CACHE_HOME nor HOME is set: no cache directory")?;
    Ok(PathBuf::from(home).join(".cache/brig"))
}

/// The board's kernel: from the cache, or fetched when absent or `refresh`.
/// A failed refresh with a cached copy keeps using the cached copy.
pub fn kernel(cache: &Path, board: &Board, refresh: bool) -> Result<Kernel> {
    let entry = cache.join("kernels").join(format!(
        "{}-{}-{}",
        board.suite,
        board.arch.debian(),
        board.kernel_package
    ));
    // Caches from before device trees were kept lack them.
    let cached = entry.join("packages.sha256").exists()
        && (board.raspberry_pi.is_none() || entry.join(DEVICE_TREES).is_dir());
    if cached && !refresh {
        let kernel = load(&entry)?;
        step(&format!(
            "kernel: {} from cache {} (brig build --refresh checks for updates)",
            kernel.release,
            entry.display()
        ));
        return Ok(kernel);
    }
    match fetch(&entry, board) {
        Ok(()) => load(&entry),
        Err(e) if cached => {
            step(&format!(
                "kernel: fetching failed ({e:#}); using the cached copy"
            ));
            load(&entry)
        }
        Err(e) => Err(e),
    }
}

fn fetch(entry: &Path, board: &Board) -> Result<()> {
    step(&format!(
        "kernel: fetching {} ({} {}) with mmdebstrap",
        board.kernel_package,
        board.suite,
        board.arch.debian()
    ));
    // The release is in the directory's name, so no sync-out of a fixed path.
    let device_trees = format!(
        "mkdir -p \"$BRIG_OUT\"/{DEVICE_TREES} && for d in \"$1\"/usr/lib/linux-image-*; do \
         if [ -d \"$d\" ]; then cp -a \"$d\"/. \"$BRIG_OUT\"/{DEVICE_TREES}/ || exit 1; fi; done"
    );
    let fetch = Fetch {
        what: "kernel",
        package: &board.kernel_package,
        dirs: &[("/boot", "boot"), ("/usr/lib/modules", "modules")],
        hooks: &[device_trees],
        debs: "linux-image-*.deb",
    };
    extract(entry, board, &fetch, |dir| load(dir).map(drop))
}

/// Where a cached kernel keeps its device trees.
const DEVICE_TREES: &str = "dtbs";

/// A Debian package to unpack into the cache.
struct Fetch<'a> {
    /// What it is, for messages ("boot loader").
    what: &'a str,
    package: &'a str,
    /// Paths in the package → names under the cache entry.
    dirs: &'a [(&'a str, &'a str)],
    /// Further extract hooks (shell: `$1` the unpacked tree, `$BRIG_OUT` the
    /// directory that becomes the entry).
    hooks: &'a [String],
    /// The `.deb`s whose sha256 is kept (`packages.sha256`).
    debs: &'a str,
}

/// `fetch`'s package in `entry`: the cached copy when `check` accepts it
/// and no `refresh` is asked for, else fetched; a failed fetch falls back
/// to a cached copy, saying so.
fn cached(
    entry: &Path,
    board: &Board,
    fetch: &Fetch,
    check: impl Fn(&Path) -> Result<()>,
    refresh: bool,
) -> Result<()> {
    let (what, package) = (fetch.what, fetch.package);
    let cached = entry.join("packages.sha256").exists() && check(entry).is_ok();
    if cached && !refresh {
        step(&format!("{what}: {package} from cache {}", entry.display()));
        return Ok(());
    }
    step(&format!(
        "{what}: fetching {package} ({} {}) with mmdebstrap",
        board.suite,
        board.arch.debian()
    ));
    match extract(entry, board, fetch, check) {
        Err(e) if cached => {
            step(&format!(
                "{what}: fetching failed ({e:#}); using the cached copy"
            ));
            Ok(())
        }
        result => result,
    }
}

/// Unpacks `fetch.package` (and its dependencies) for the board's
/// architecture with mmdebstrap, keeps its `dirs`, runs its `hooks`, and
/// keeps the sha256 of its `debs` (apt already verified them against the
/// signed index); `check` must accept the result before it replaces what
/// `entry` held.
fn extract(
    entry: &Path,
    board: &Board,
    fetch: &Fetch,
    check: impl Fn(&Path) -> Result<()>,
) -> Result<()> {
    // Named by this process, so two builds filling the cache at once do
    // not write into each other's directory.
    let partial = entry.with_extension(format!("partial-{}", std::process::id()));
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let result = extract_into(&partial, entry, board, fetch, check);
    // Whatever failed (offline, a bad package), nothing is left behind.
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&partial);
    }
    result
}

/// `extract` into the directory `partial`, then moved to `entry`.
fn extract_into(
    partial: &Path,
    entry: &Path,
    board: &Board,
    fetch: &Fetch,
    check: impl Fn(&Path) -> Result<()>,
) -> Result<()> {
    let (package, dirs, hooks, debs) = (fetch.package, fetch.dirs, fetch.hooks, fetch.debs);
    let mmdebstrap = host_tools::require("mmdebstrap", "mmdebstrap")?;
    // The extract variant unpacks the package and its dependencies without
    // running any of their scripts, so no emulation of the target is needed.
    let out = partial.display().to_string();
    let mut command = Command::new(mmdebstrap);
    command
        .args(["--variant=extract", "--format=null"])
        // Firmware (the Pi's, Wi-Fi chips') is in non-free-firmware.
        .arg("--components=main,non-free-firmware")
        .arg(format!("--architectures={}", board.arch.debian()))
        .arg(format!("--include={package}"));
    for (from, to) in dirs {
        command.arg(format!("--extract-hook=sync-out {from} {out}/{to}"));
    }
    for hook in hooks {
        command.arg(format!("--extract-hook={hook}"));
    }
    let status = command
        .arg(format!(
            "--extract-hook=cd \"$1\"/var/cache/apt/archives && sha256sum {debs} > \"$BRIG_OUT\"/packages.sha256"
        ))
        // Hooks keep the environment mmdebstrap was given.
        .env("BRIG_OUT", partial)
        .arg(&board.suite)
        .arg("/dev/null")
        .status()
        .context("running mmdebstrap")?;
    if !status.success() {
        bail!(
            "mmdebstrap could not fetch {package} for {} ({status})",
            board.arch.debian()
        );
    }
    check(partial).context("checking what mmdebstrap fetched")?;
    if entry.exists() {
        // Swapped in one step, never removed first: another build may be
        // reading the cached copy (two builds that found no cache fetch
        // at once), and its paths must go on naming a whole copy.
        exchange(partial, entry).with_context(|| {
            format!(
                "putting {} in place of {}",
                partial.display(),
                entry.display()
            )
        })?;
        // What is left at `partial` is the old copy.
        let _ = std::fs::remove_dir_all(partial);
        return Ok(());
    }
    if let Err(e) = std::fs::rename(partial, entry) {
        // Another build put its copy there meanwhile: as good as ours.
        let _ = std::fs::remove_dir_all(partial);
        if check(entry).is_err() {
            return Err(e).with_context(|| format!("moving {} into place", partial.display()));
        }
    }
    Ok(())
}

/// Swaps two directories atomically (`renameat2(RENAME_EXCHANGE)`).
fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_bytes())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))
    };
    let (a, b) = (c(a)?, c(b)?);
    // SAFETY: two valid NUL-terminated paths, relative to the current
    // directory (AT_FDCWD) or absolute; renameat2 only reads them.
    let done = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if done == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// systemd-boot's EFI binary for the board's architecture, from Debian's
/// `systemd-boot-efi`: from the cache, or fetched when absent or `refresh`.
pub fn boot_loader(cache: &Path, board: &Board, refresh: bool) -> Result<PathBuf> {
    const PACKAGE: &str = "systemd-boot-efi";
    let entry = cache.join("boot-loaders").join(format!(
        "{}-{}-{PACKAGE}",
        board.suite,
        board.arch.debian()
    ));
    let binary = |dir: &Path| {
        dir.join("efi")
            .join(format!("systemd-boot{}.efi", board.arch.efi()))
    };
    let exists = |dir: &Path| -> Result<()> {
        let path = binary(dir);
        if !path.is_file() {
            bail!("{PACKAGE} has no {}", path.display());
        }
        Ok(())
    };
    let fetch = Fetch {
        what: "boot loader",
        package: PACKAGE,
        dirs: &[("/usr/lib/systemd/boot/efi", "efi")],
        hooks: &[],
        debs: "systemd-boot-efi*.deb",
    };
    cached(&entry, board, &fetch, exists, refresh)?;
    Ok(binary(&entry))
}

/// A firmware package and the directory in it that holds the files.
pub struct FirmwarePackage {
    pub package: &'static str,
    pub dir: &'static str,
}

/// Debian's `raspi-firmware`: the Pi's GPU firmware.
pub const RASPI_FIRMWARE: FirmwarePackage = FirmwarePackage {
    package: "raspi-firmware",
    dir: "/usr/lib/raspi-firmware",
};

/// Debian's `u-boot-rpi`: U-Boot for the Pis, which boots Brig's slots.
pub const UBOOT_RPI: FirmwarePackage = FirmwarePackage {
    package: "u-boot-rpi",
    dir: "/usr/lib/u-boot",
};

/// The 64-bit build for the Pi 3 and 4 alike (it reads the model from the
/// firmware's device tree).
pub const UBOOT_RPI_BINARY: &str = "rpi_arm64/u-boot.bin";

/// Debian's `firmware-brcm80211`: the Broadcom and Cypress Wi-Fi chips'
/// firmware, the Pis' among them.
pub const WIFI_FIRMWARE: FirmwarePackage = FirmwarePackage {
    package: "firmware-brcm80211",
    dir: "/usr/lib/firmware",
};

/// A firmware package's directory `dir`, with `files` in it (what a board
/// needs of it): from the cache, or fetched when absent or `refresh`.
pub fn firmware(
    cache: &Path,
    board: &Board,
    firmware: &FirmwarePackage,
    files: &[String],
    refresh: bool,
) -> Result<PathBuf> {
    let (package, dir) = (firmware.package, firmware.dir);
    let entry = cache
        .join("firmware")
        .join(format!("{}-{package}", board.suite));
    let name = "files";
    let complete = |entry: &Path| -> Result<()> {
        for file in files {
            let path = entry.join(name).join(file);
            if !path.is_file() {
                bail!("{package} has no {}", path.display());
            }
        }
        Ok(())
    };
    let debs = format!("{package}*.deb");
    let fetch = Fetch {
        what: "firmware",
        package,
        dirs: &[(dir, name)],
        hooks: &[],
        debs: &debs,
    };
    cached(&entry, board, &fetch, complete, refresh)?;
    Ok(entry.join(name))
}

fn load(entry: &Path) -> Result<Kernel> {
    let boot = entry.join("boot");
    let mut releases: Vec<String> = std::fs::read_dir(&boot)
        .with_context(|| format!("reading {}", boot.display()))?
        .flatten()
        .filter_map(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.strip_prefix("vmlinuz-"))
                .map(str::to_string)
        })
        .collect();
    releases.sort();
    let release = match releases.as_slice() {
        [one] => one.clone(),
        [] => bail!("no kernel (vmlinuz-*) in {}", boot.display()),
        many => bail!("several kernels in {}: {}", boot.display(), many.join(", ")),
    };
    let kernel = Kernel {
        vmlinuz: boot.join(format!("vmlinuz-{release}")),
        config: boot.join(format!("config-{release}")),
        modules: entry.join("modules").join(&release),
        device_trees: entry.join(DEVICE_TREES),
        debs: std::fs::read_to_string(entry.join("packages.sha256"))
            .with_context(|| format!("reading {}", entry.join("packages.sha256").display()))?
            .lines()
            .map(str::to_string)
            .collect(),
        release,
    };
    for path in [&kernel.config, &kernel.modules] {
        if !path.exists() {
            bail!("the kernel package has no {}", path.display());
        }
    }
    Ok(kernel)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_copy_takes_the_place_of_the_old_in_one_step() {
        let dir = tempfile::tempdir().unwrap();
        let (new, old) = (dir.path().join("new"), dir.path().join("entry"));
        for (path, text) in [(&new, "new"), (&old, "old")] {
            std::fs::create_dir(path).unwrap();
            std::fs::write(path.join("file"), text).unwrap();
        }
        exchange(&new, &old).unwrap();
        assert_eq!(std::fs::read_to_string(old.join("file")).unwrap(), "new");
        assert_eq!(std::fs::read_to_string(new.join("file")).unwrap(), "old");
        assert!(exchange(&dir.path().join("missing"), &old).is_err());
    }
}
