//! `brig build`: kernel from Debian, checked against kernel-config/, brig-init
//! cross-built, everything packed into a compressed initramfs in out/<board>/.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::board::Board;
use crate::initramfs::{Entry, Initramfs};
use crate::progress::{step, timed};
use crate::{debian, host_tools, kernel_config, kernel_modules};

/// zstd level for the initramfs: 19 is the best ratio before the "ultra"
/// levels, whose large windows cost memory at boot.
const ZSTD_LEVEL: i32 = 19;

pub fn build(source: &Path, board: &Board, out: &Path, refresh: bool) -> Result<()> {
    let requirements = load_fragments(source, board)?;
    let cache = debian::cache_dir()?;
    let kernel = debian::kernel(&cache, board, refresh)?;

    let config_text = std::fs::read_to_string(&kernel.config)
        .with_context(|| format!("reading kernel config {}", kernel.config.display()))?;
    let needs = kernel_config::check(
        &requirements,
        &kernel_config::parse_kernel_config(&config_text),
    )
    .map_err(|unmet| {
        anyhow::anyhow!(
            "{unmet}\n(kernel {}, package {})",
            kernel.release,
            board.kernel_package
        )
    })?;
    step(&format!(
        "kernel config: {} requirements met, {} built as modules",
        requirements.len(),
        needs.len()
    ));
    let modules = timed("selecting kernel modules and their dependencies", || {
        kernel_modules::select(&kernel.modules, &needs)
    })?;

    let init = timed(
        &format!("building brig-init for {}", board.arch.rust_target()),
        || build_init(source, board.arch.rust_target()),
    )?;

    let mut image = Initramfs::default();
    image.file(
        "/init",
        0o755,
        std::fs::read(&init).with_context(|| format!("reading {}", init.display()))?,
    );
    // The kernel opens /dev/console for init before anything is mounted.
    image.add(
        "/dev/console",
        Entry::CharDevice {
            mode: 0o600,
            major: 5,
            minor: 1,
        },
    );
    for dir in ["/proc", "/sys", "/run", "/tmp", "/mnt"] {
        image.dir(dir, if dir == "/tmp" { 0o1777 } else { 0o755 });
    }
    let modules_dir = format!("/lib/modules/{}", kernel.release);
    for module in &modules {
        image.file(
            &format!("{modules_dir}/{}", module.path),
            0o644,
            module.data.clone(),
        );
    }
    image.file(
        &format!("{modules_dir}/modules.dep"),
        0o644,
        kernel_modules::modules_dep(&modules).into_bytes(),
    );
    image.file(
        &format!("{modules_dir}/modules.alias"),
        0o644,
        kernel_modules::modules_alias(&modules).into_bytes(),
    );
    image.file(
        "/etc/brig/board",
        0o644,
        format!("{}\n", board.name).into_bytes(),
    );

    let cpio = image.to_cpio(source_date_epoch());
    let compressed = timed(
        &format!("compressing the initramfs (zstd -{ZSTD_LEVEL})"),
        || zstd::encode_all(cpio.as_slice(), ZSTD_LEVEL),
    )
    .context("compressing the initramfs")?;

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    write(&out.join("initramfs.img"), &compressed)?;
    std::fs::copy(&kernel.vmlinuz, out.join("vmlinuz"))
        .with_context(|| format!("copying {} to {}", kernel.vmlinuz.display(), out.display()))?;
    write(
        &out.join("cmdline"),
        format!("{}\n", board.kernel_cmdline()).as_bytes(),
    )?;

    let vmlinuz_size = std::fs::metadata(out.join("vmlinuz"))?.len();
    let manifest = json!({
        "board": board.name,
        "arch": board.arch.to_string(),
        "brig_version": env!("CARGO_PKG_VERSION"),
        "kernel": {
            "package": board.kernel_package,
            "suite": board.suite,
            "release": kernel.release,
            "debs": kernel.debs,
            "vmlinuz_size": vmlinuz_size,
        },
        "cmdline": board.kernel_cmdline(),
        "brig_init_size": std::fs::metadata(&init)?.len(),
        "initramfs": {
            "compression": format!("zstd -{ZSTD_LEVEL}"),
            "size": compressed.len(),
            "uncompressed_size": cpio.len(),
        },
        "modules": modules.iter().map(|m| json!({
            "name": m.name, "size": m.data.len(), "needed_by": m.reason,
        })).collect::<Vec<_>>(),
        "contents": image.files().iter().map(|(path, size)| json!({"path": path, "size": size})).collect::<Vec<_>>(),
    });
    write(
        &out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    step(&format!(
        "built {}: kernel {} ({} KiB), initramfs {} KiB ({} KiB unpacked, {} modules), in {}",
        board.name,
        kernel.release,
        vmlinuz_size / 1024,
        compressed.len() / 1024,
        cpio.len() / 1024,
        modules.len(),
        out.display()
    ));
    Ok(())
}

fn load_fragments(source: &Path, board: &Board) -> Result<Vec<kernel_config::Requirement>> {
    let mut all = Vec::new();
    for name in &board.kernel_config {
        let path = source.join("kernel-config").join(format!("{name}.config"));
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "board {}: reading kernel config fragment {}",
                board.name,
                path.display()
            )
        })?;
        let display = format!("kernel-config/{name}.config");
        match kernel_config::parse_fragment(&display, &text) {
            Ok(reqs) => all.extend(reqs),
            Err(errors) => bail!("invalid kernel config fragment:\n  {}", errors.join("\n  ")),
        }
    }
    Ok(all)
}

/// Cross-builds brig-init as a static musl binary; returns its path.
fn build_init(source: &Path, target: &str) -> Result<PathBuf> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    if let Some(rustup) = host_tools::find("rustup") {
        let installed = Command::new(rustup)
            .args(["target", "list", "--installed"])
            .output()?;
        if !String::from_utf8_lossy(&installed.stdout)
            .lines()
            .any(|l| l.trim() == target)
        {
            bail!("the Rust target {target} is not installed: run `rustup target add {target}`");
        }
    }
    let status = Command::new(&cargo)
        .current_dir(source)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "brig-init",
            "--target",
            target,
        ])
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!("building brig-init for {target} failed ({status})");
    }
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| source.join("target"), PathBuf::from);
    Ok(target_dir.join(target).join("release/brig-init"))
}

fn source_date_epoch() -> u32 {
    std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Writes through a temporary file and a rename, so an interrupted build never
/// leaves a truncated artifact under the final name.
fn write(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("partial");
    std::fs::write(&tmp, data).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
}
