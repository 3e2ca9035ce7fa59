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
    let cached = entry.join("packages.sha256").exists();
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
    let mmdebstrap = host_tools::require("mmdebstrap", "mmdebstrap")?;
    let partial = entry.with_extension("partial");
    if partial.exists() {
        std::fs::remove_dir_all(&partial)
            .with_context(|| format!("removing {}", partial.display()))?;
    }
    std::fs::create_dir_all(&partial).with_context(|| format!("creating {}", partial.display()))?;
    step(&format!(
        "kernel: fetching {} ({} {}) with mmdebstrap",
        board.kernel_package,
        board.suite,
        board.arch.debian()
    ));
    // The extract variant unpacks the package and its dependencies without
    // running any of their scripts, so no emulation of the target is needed.
    // Hooks copy out only /boot and the modules, and record the kernel
    // packages' hashes (apt already verified them against the signed index).
    let out = partial.display().to_string();
    let status = Command::new(mmdebstrap)
        .args(["--variant=extract", "--format=null"])
        .arg(format!("--architectures={}", board.arch.debian()))
        .arg(format!("--include={}", board.kernel_package))
        .arg(format!("--extract-hook=sync-out /boot {out}/boot"))
        .arg(format!("--extract-hook=sync-out /usr/lib/modules {out}/modules"))
        .arg(format!(
            "--extract-hook=cd \"$1\"/var/cache/apt/archives && sha256sum linux-image-*.deb > {out}/packages.sha256"
        ))
        .arg(&board.suite)
        .arg("/dev/null")
        .status()
        .context("running mmdebstrap")?;
    if !status.success() {
        bail!(
            "mmdebstrap could not fetch {} for {} ({status})",
            board.kernel_package,
            board.arch.debian()
        );
    }
    load(&partial).context("checking what mmdebstrap fetched")?;
    if entry.exists() {
        std::fs::remove_dir_all(entry).with_context(|| format!("replacing {}", entry.display()))?;
    }
    std::fs::rename(&partial, entry)
        .with_context(|| format!("moving {} into place", partial.display()))?;
    Ok(())
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
