//! `brig build`: kernel from Debian, checked against kernel-config/, brig-init
//! cross-built into a small initramfs, the system containers packed into a
//! system squashfs (on a disk image's partition, or a system disk beside the
//! kernel), or for netboot into the initramfs, in `out/<board>/`.
//!
//! Longer than 600 lines because it is the build's one sequence, step by
//! step in the order it runs; each step's work lives in its own module
//! (containers, initramfs, disk, kernel_modules, ...), this file only
//! orders them and writes the manifest.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use serde_json::json;

use crate::board::Board;
use crate::disk::{self, Format};
use crate::initramfs::{Entry, Initramfs};
use crate::progress::{step, timed};
use crate::{containers, debian, host_tools, kernel_config, kernel_modules};
use std::collections::BTreeMap;

/// zstd level for the initramfs: 19 is the best ratio before the "ultra"
/// levels, whose large windows cost memory at boot.
const ZSTD_LEVEL: i32 = 19;

/// The image's default cloud-config (`brig build --user-data`).
pub const DEFAULT_CONFIG: &str = brig_spec::cloud_config::DEFAULT_FILE;

/// User data to bake into the image, refused with every problem placed
/// (`FILE:LINE:COLUMN`) rather than found at boot.
fn default_config(path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let problems = brig_spec::cloud_config::report(&path.display().to_string(), &data);
    if !problems.is_empty() {
        anyhow::bail!(
            "the user data to bake into the image has problems:\n{}",
            problems.join("\n")
        );
    }
    if String::from_utf8_lossy(&data).trim().is_empty() {
        anyhow::bail!(
            "{} is empty: nothing to bake into the image",
            path.display()
        );
    }
    step(&format!(
        "default config from {} ({} bytes)",
        path.display(),
        data.len()
    ));
    Ok(data)
}

/// The system disk of a `--format kernel` build, beside the kernel.
pub const SYSTEM_DISK: &str = "system.img";

/// Where PID 1 finds the system containers: `<name>.squashfs` and `<name>.json`.
pub const CONTAINERS_DIR: &str = "/lib/brig/containers";

/// What to make: the format, for disk images the sizes, and how hard to
/// compress.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    pub format: Format,
    pub sizes: disk::Sizes,
    /// zstd's level for the initramfs and the container images instead of
    /// the shipped ones (`ZSTD_LEVEL`, `containers::SQUASHFS_ZSTD_LEVEL`):
    /// a low one packs fast (the tests' images).
    pub zstd_level: Option<u8>,
}

/// The release: its version, the key its updates are signed with, and
/// whether to write an update bundle beside the images.
pub struct Release {
    pub version: brig_spec::update_bundle::Version,
    /// The oldest version the bundle may update.
    pub min_from: brig_spec::update_bundle::Version,
    pub update_key: brig_spec::update_bundle::SigningKey,
    pub bundle: bool,
}

/// Which services go into the image: those in system-containers/ and in
/// further directories (`--services`), less those left out (`--without`).
pub struct Selection {
    pub extra_dirs: Vec<PathBuf>,
    pub without: Vec<String>,
}

/// How the build uses its cache (kernels, packages, packed images).
pub struct CacheUse {
    /// Fetch the kernel (and boot loader) again even if cached.
    pub refresh: bool,
    /// Reuse a packed container image made from the same inputs.
    pub reuse_images: bool,
}

// The build's inputs, each its own concern; bundling them would only
// rename them.
#[allow(clippy::too_many_arguments)]
pub fn build(
    source: &Path,
    board: &Board,
    out: &Path,
    cache_use: &CacheUse,
    selection: &Selection,
    user_data: Option<&Path>,
    output: &Output,
    release: &Release,
) -> Result<()> {
    if release.bundle && !output.format.has_system_partition() {
        bail!("--bundle: a netboot build has no system image to update; build another format");
    }
    // Checked first: a mistake in it should not wait for the whole build.
    let default_config = user_data.map(default_config).transpose()?;
    let requirements = load_fragments(source, board)?;
    let mut service_dirs = vec![source.join("system-containers")];
    service_dirs.extend(selection.extra_dirs.iter().cloned());
    let for_board = containers::discover(&service_dirs)?
        .into_iter()
        .filter(|s| s.spec.boards.is_empty() || s.spec.boards.contains(&board.name))
        .collect();
    let (mut services, dependents) = containers::leave_out(for_board, &selection.without)?;
    containers::add_packages_with(&mut services);
    for name in dependents {
        step(&format!(
            "leaving out {name} too: it depends on a service left out"
        ));
    }
    let cache = debian::cache_dir()?;
    let refresh = cache_use.refresh;
    let kernel = debian::kernel(&cache, board, refresh)?;
    let boot_loader = match (output.format.is_disk(), &board.raspberry_pi) {
        (false, _) => None,
        (true, None) => Some(BootFiles::Uefi {
            loader: debian::boot_loader(&cache, board, refresh)?,
        }),
        (true, Some(pi)) => Some(BootFiles::RaspberryPi {
            firmware: debian::firmware(
                &cache,
                board,
                &debian::RASPI_FIRMWARE,
                &pi.firmware,
                refresh,
            )?,
            uboot: debian::firmware(
                &cache,
                board,
                &debian::UBOOT_RPI,
                &[debian::UBOOT_RPI_BINARY.to_string()],
                refresh,
            )?
            .join(debian::UBOOT_RPI_BINARY),
        }),
    };

    let config_text = std::fs::read_to_string(&kernel.config)
        .with_context(|| format!("reading kernel config {}", kernel.config.display()))?;
    let kernel_options = kernel_config::parse_kernel_config(&config_text);
    let needs = kernel_config::check(&requirements, &kernel_options).map_err(|unmet| {
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

    let mut wanted: Vec<&str> = vec!["brig-init", "brig-config"];
    for service in &services {
        wanted.extend(service.spec.rootfs.binaries.iter().map(String::as_str));
    }
    let target = board.arch.rust_target();
    let binaries = timed(
        &format!("building {} for {target}", wanted.join(", ")),
        || cross_build(source, target, &wanted),
    )?;
    let init = binaries["brig-init"].clone();

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
    if let Some(pi) = board
        .raspberry_pi
        .as_ref()
        .filter(|pi| !pi.wifi_firmware.is_empty())
    {
        let dir = debian::firmware(
            &cache,
            board,
            &debian::WIFI_FIRMWARE,
            &pi.wifi_firmware,
            refresh,
        )?;
        for file in &pi.wifi_firmware {
            // Debian links some to others (brcm/ to cypress/): their contents.
            let path = dir.join(file);
            let data =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            image.file(&format!("/lib/firmware/{file}"), 0o644, data);
        }
    }
    image.file(
        brig_spec::paths::BOARD_FILE,
        0o644,
        format!("{}\n", board.name).into_bytes(),
    );
    image.file(
        brig_spec::paths::VERSION_FILE,
        0o644,
        format!("{}\n", release.version).into_bytes(),
    );
    image.file(
        brig_spec::paths::UPDATE_KEY_FILE,
        0o644,
        brig_spec::update_bundle::public_key_text(&release.update_key.verifying_key()).into_bytes(),
    );

    if let Some(data) = &default_config {
        // Root's only, as all config: it can hold password hashes.
        image.file(DEFAULT_CONFIG, 0o600, data.clone());
    }

    // The container images are zstd squashfs already: compressing them again
    // would only cost build time (and boot time, unpacking). They go into a
    // second, uncompressed cpio segment, which the kernel unpacks after the
    // first.
    let mut stored = Initramfs::default();
    let mut system_files: Vec<(String, Vec<u8>)> = Vec::new();
    let images_dir = out.join("containers");
    std::fs::create_dir_all(&images_dir)
        .with_context(|| format!("creating {}", images_dir.display()))?;
    let mut container_sizes = Vec::new();
    let image_cache = containers::ImageCache {
        dir: cache.join("images").join(board.arch.debian()),
        reuse: cache_use.reuse_images,
    };
    for service in &services {
        let name = &service.spec.name;
        let path = images_dir.join(format!("{name}.squashfs"));
        let packed = timed(&format!("packing system container {name}"), || {
            containers::build_image(
                service,
                board,
                &cache,
                &image_cache,
                &binaries,
                source_date_epoch(),
                output
                    .zstd_level
                    .map_or(containers::SQUASHFS_ZSTD_LEVEL, u32::from),
                &path,
            )
        })?;
        if packed == containers::Packed::Reused {
            eprintln!("    (the cached image of the same inputs)");
        }
        let data = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        container_sizes.push(json!({
            "name": name, "size": data.len(), "packages": service.spec.rootfs.packages,
        }));
        // Checked, and as JSON: PID 1 has no TOML parser.
        let spec = service.spec.to_json().into_bytes();
        if output.format.has_system_partition() {
            // On the system partition, mounted over /lib/brig.
            system_files.push((format!("containers/{name}.squashfs"), data));
            system_files.push((format!("containers/{name}.json"), spec));
        } else {
            stored.file(&format!("{CONTAINERS_DIR}/{name}.squashfs"), 0o644, data);
            image.file(&format!("{CONTAINERS_DIR}/{name}.json"), 0o644, spec);
        }
    }
    // The program that reads cloud-config for PID 1: stored, not
    // compressed, as the images are (paths::CONFIG_PROGRAM says why).
    let config_program = binaries["brig-config"].clone();
    let config_program = std::fs::read(&config_program)
        .with_context(|| format!("reading {}", config_program.display()))?;
    stored.file(brig_spec::paths::CONFIG_PROGRAM, 0o755, config_program);
    let system = if output.format.has_system_partition() {
        let path = out.join("system.squashfs");
        std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
        timed("packing the system partition (squashfs)", || {
            disk::system_image(&system_files, source_date_epoch(), &path)
        })?;
        let seed = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        Some((path, seed))
    } else {
        None
    };
    let mut cmdline = board.kernel_cmdline();
    // A bundle's line: the machine adds its slot to it.
    let bundle_cmdline = cmdline.clone();
    let system_disk = out.join(SYSTEM_DISK);
    let layout = match &system {
        Some((path, bytes)) if !output.format.is_disk() => {
            let guid = timed("writing the system disk (GPT, read-only)", || {
                disk::system_disk(path, bytes, &board.name, &system_disk)
            })?;
            cmdline.push_str(&format!(" brig.system=PARTUUID={guid}"));
            None
        }
        Some((_, bytes)) => {
            let layout = disk::layout(&output.sizes, bytes.len() as u64).map_err(|e| {
                anyhow::anyhow!("disk image: {e} (see --disk-size, --boot-size, --system-size)")
            })?;
            let table = disk::table(&layout, bytes, &board.name)
                .map_err(|e| anyhow::anyhow!("disk image: {e}"))?;
            let (_, system) = table
                .find(disk::SYSTEM_A_LABEL)
                .context("the system partition")?;
            // PID 1 finds its system partition by this, even with several
            // Brig disks attached.
            cmdline.push_str(&format!(" brig.system=PARTUUID={}", system.unique_guid));
            Some((layout, table))
        }
        None => None,
    };

    let cpio = image.to_cpio(source_date_epoch());
    let level = output.zstd_level.map_or(ZSTD_LEVEL, i32::from);
    let compressed = timed(
        &format!("compressing the initramfs (zstd -{level})"),
        || zstd::encode_all(cpio.as_slice(), level),
    )
    .context("compressing the initramfs")?;
    // Zero padding to 4 bytes: the kernel skips it, and a further cpio
    // segment appended to the image (more files) starts aligned as it must.
    let mut initramfs = compressed;
    initramfs.resize(initramfs.len().next_multiple_of(4), 0);
    let compressed_size = initramfs.len();
    let stored_cpio = stored.to_cpio(source_date_epoch());
    initramfs.extend_from_slice(&stored_cpio);
    initramfs.resize(initramfs.len().next_multiple_of(4), 0);

    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    // An earlier build's shared boot files must not go into this bundle.
    let _ = std::fs::remove_dir_all(out.join(SHARED_BOOT_DIR));
    write(&out.join("initramfs.img"), &initramfs)?;
    std::fs::copy(&kernel.vmlinuz, out.join("vmlinuz"))
        .with_context(|| format!("copying {} to {}", kernel.vmlinuz.display(), out.display()))?;
    write(&out.join("cmdline"), format!("{cmdline}\n").as_bytes())?;
    // The Pi's slots hold the kernel gzip'd (raspberry_pi.rs); so do its bundles.
    let vmlinuz_gz = out.join("vmlinuz.gz");
    let _ = std::fs::remove_file(&vmlinuz_gz);
    if board.raspberry_pi.is_some() {
        let image = std::fs::read(&kernel.vmlinuz)
            .with_context(|| format!("reading {}", kernel.vmlinuz.display()))?;
        let packed = timed("compressing the kernel for U-Boot (gzip)", || {
            crate::raspberry_pi::gzip_kernel(&image)
        })?;
        write(&vmlinuz_gz, &packed)?;
    }
    let vmlinux = out.join(crate::pvh::VMLINUX);
    let _ = std::fs::remove_file(&vmlinux);
    let loads_elf = kernel_options.get("CONFIG_PVH").is_some_and(|v| v == "y");
    if board.arch == crate::board::Arch::X86_64 && !output.format.is_disk() && loads_elf {
        // QEMU boots it through PVH, skipping the decompressor (pvh.rs).
        if let Err(e) = crate::pvh::write_vmlinux(&kernel.vmlinuz, out)? {
            step(&format!(
                "note: {}: {e}; QEMU boots the compressed kernel",
                kernel.vmlinuz.display()
            ));
        }
    }
    let disk_image = match (&layout, &system, &boot_loader) {
        (Some((layout, table)), Some((system, _)), Some(loader)) => Some(write_disk(
            board, out, output, layout, table, system, loader, &kernel, &cmdline, &initramfs,
            release,
        )?),
        _ => {
            remove_disk_images(board, out);
            if system.is_none() {
                let _ = std::fs::remove_file(out.join("system.squashfs"));
            }
            None
        }
    };
    if output.format != Format::Kernel {
        let _ = std::fs::remove_file(&system_disk);
    }

    let vmlinuz_size = std::fs::metadata(out.join("vmlinuz"))?.len();
    let manifest = json!({
        "board": board.name,
        "arch": board.arch.to_string(),
        "brig_version": release.version.to_string(),
        "kernel": {
            "package": board.kernel_package,
            "suite": board.suite,
            "release": kernel.release,
            "debs": kernel.debs,
            "vmlinuz_size": vmlinuz_size,
            "vmlinux_size": std::fs::metadata(&vmlinux).ok().map(|m| m.len()),
        },
        "cmdline": cmdline,
        "format": format!("{:?}", output.format).to_lowercase(),
        "system_disk": (output.format == Format::Kernel).then(|| json!({
            "path": SYSTEM_DISK,
            "size": std::fs::metadata(&system_disk).map(|m| m.len()).unwrap_or(0),
            "system_squashfs_size": system.as_ref().map(|(_, b)| b.len()),
        })),
        "disk": disk_image.as_ref().map(|(path, layout)| json!({
            "path": path.file_name().map(|n| n.to_string_lossy().to_string()),
            "size": layout.disk_bytes(),
            "boot_partition": {"first_sector": layout.boot.0, "last_sector": layout.boot.1},
            "system_partition": {"first_sector": layout.system.0, "last_sector": layout.system.1},
            "system_partition_b": {"first_sector": layout.system_b.0, "last_sector": layout.system_b.1},
            "system_squashfs_size": system.as_ref().map(|(_, b)| b.len()),
            "compressed": std::fs::metadata(compressed_name(path)).ok().map(|m| json!({
                "path": compressed_name(path).file_name().map(|n| n.to_string_lossy().to_string()),
                "size": m.len(),
            })),
        })),
        "brig_init_size": std::fs::metadata(&init)?.len(),
        "initramfs": {
            "compression": format!("zstd -{level}, then the container images uncompressed"),
            "size": initramfs.len(),
            "compressed_size": compressed_size,
            "uncompressed_size": cpio.len() + stored_cpio.len(),
        },
        "containers": container_sizes,
        "default_config": default_config.as_ref().map(|d| json!({"path": DEFAULT_CONFIG, "size": d.len()})),
        "modules": modules.iter().map(|m| json!({
            "name": m.name, "size": m.data.len(), "needed_by": m.reason,
        })).collect::<Vec<_>>(),
        "contents": image.files().iter().chain(&stored.files()).map(|(path, size)| json!({"path": path, "size": size})).collect::<Vec<_>>(),
    });
    write(
        &out.join("manifest.json"),
        serde_json::to_string_pretty(&manifest)?.as_bytes(),
    )?;
    let bundle_path = out.join(crate::update_bundle::file_name(
        &board.name,
        release.version,
    ));
    let _ = std::fs::remove_file(&bundle_path);
    if let (true, Some((system, _))) = (release.bundle, &system) {
        let kernel = if vmlinuz_gz.exists() {
            vmlinuz_gz.clone()
        } else {
            out.join("vmlinuz")
        };
        let shared = if board.raspberry_pi.is_some() {
            shared_boot_parts(out)?
        } else {
            Vec::new()
        };
        if board.raspberry_pi.is_some() && shared.is_empty() {
            bail!("--bundle: a Pi bundle carries the card's boot files, made with its card image: build --format raw");
        }
        let mut parts = vec![
            ("vmlinuz", kernel),
            ("initramfs.img", out.join("initramfs.img")),
            ("system.img", system.clone()),
        ];
        parts.extend(
            shared
                .iter()
                .map(|(name, path)| (name.as_str(), path.clone())),
        );
        let bundle = crate::update_bundle::Release {
            board: &board.name,
            version: release.version,
            min_from: release.min_from,
            cmdline: &bundle_cmdline,
            parts,
        };
        let path = timed("writing the update bundle (signed)", || {
            crate::update_bundle::write(&bundle, &release.update_key, out)
        })?;
        step(&format!(
            "update bundle {} ({} MiB)",
            path.display(),
            std::fs::metadata(&path).map_or(0, |m| m.len()) >> 20
        ));
    }
    if let Some((path, layout)) = &disk_image {
        step(&format!(
            "disk image {} ({} MiB; boot {} MiB, two system slots of {} MiB, the rest becomes the state partition on first boot)",
            path.display(),
            layout.disk_bytes() >> 20,
            layout.boot_bytes() >> 20,
            layout.system_bytes() >> 20,
        ));
    }
    if output.format == Format::Kernel {
        step(&format!(
            "system disk {} ({} MiB, attached read-only by `brig run`)",
            system_disk.display(),
            std::fs::metadata(&system_disk).map_or(0, |m| m.len()) >> 20
        ));
    }
    step(&format!(
        "built {}: kernel {} ({} KiB), initramfs {} KiB ({} KiB unpacked, {} modules), in {}",
        board.name,
        kernel.release,
        vmlinuz_size / 1024,
        initramfs.len() / 1024,
        (cpio.len() + stored_cpio.len()) / 1024,
        modules.len(),
        out.display()
    ));
    Ok(())
}

/// The disk image's file name for `format`.
pub fn disk_image_name(board: &Board, format: Format) -> String {
    match format {
        Format::Qcow2 => format!("brig-{}.qcow2", board.name),
        _ => format!("brig-{}.img", board.name),
    }
}

/// Images of an earlier build in another format would be mistaken for this
/// build's.
fn remove_disk_images(board: &Board, out: &Path) {
    for format in [Format::Raw, Format::Qcow2] {
        let path = out.join(disk_image_name(board, format));
        let _ = std::fs::remove_file(compressed_name(&path));
        let _ = std::fs::remove_file(path);
    }
}

/// The compressed copy of a card image: `brig-rpi4.img.zst`.
fn compressed_name(image: &Path) -> PathBuf {
    let mut name = image.as_os_str().to_owned();
    name.push(".zst");
    PathBuf::from(name)
}

/// What boots the disk image, fetched from Debian.
enum BootFiles {
    /// systemd-boot's EFI binary.
    Uefi { loader: PathBuf },
    /// The Pi's GPU firmware (raspi-firmware's directory) and U-Boot.
    RaspberryPi { firmware: PathBuf, uboot: PathBuf },
}

/// Where the boot files both slots share (the Pi's firmware, device
/// trees, U-Boot and its script) are kept for the update bundle.
const SHARED_BOOT_DIR: &str = "boot-shared";

/// Writes the boot partition's files a bundle carries (`may_share`) under
/// `out/boot-shared`, replacing what an earlier build left there.
fn write_shared_boot_files(out: &Path, files: &[(String, Vec<u8>)]) -> Result<()> {
    let dir = out.join(SHARED_BOOT_DIR);
    let _ = std::fs::remove_dir_all(&dir);
    for (name, data) in files {
        if !brig_spec::update_bundle::may_share(name) {
            continue;
        }
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        write(&path, data)?;
    }
    Ok(())
}

/// The shared boot files under `out/boot-shared`, as bundle parts
/// (`boot/start.elf`), in name order; none for boards without them.
fn shared_boot_parts(out: &Path) -> Result<Vec<(String, PathBuf)>> {
    let dir = out.join(SHARED_BOOT_DIR);
    let mut parts = Vec::new();
    let mut walk = vec![dir.clone()];
    while let Some(at) = walk.pop() {
        let Ok(listing) = std::fs::read_dir(&at) else {
            continue;
        };
        for item in listing {
            let path = item
                .with_context(|| format!("listing {}", at.display()))?
                .path();
            if path.is_dir() {
                walk.push(path);
                continue;
            }
            let relative = path.strip_prefix(&dir).unwrap_or(&path).to_string_lossy();
            let name = format!("{}{relative}", brig_spec::update_bundle::SHARED_PREFIX);
            parts.push((name, path.clone()));
        }
    }
    parts.sort();
    Ok(parts)
}

/// The boot partition's files, then the disk image in the wanted format.
#[allow(clippy::too_many_arguments)]
fn write_disk(
    board: &Board,
    out: &Path,
    output: &Output,
    layout: &disk::Layout,
    table: &brig_spec::gpt::Table,
    system: &Path,
    boot_files: &BootFiles,
    kernel: &debian::Kernel,
    cmdline: &str,
    initramfs: &[u8],
    release: &Release,
) -> Result<(PathBuf, disk::Layout)> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    let (files, mbr, what) = match (boot_files, &board.raspberry_pi) {
        (BootFiles::RaspberryPi { firmware, uboot }, Some(pi)) => {
            let files = crate::raspberry_pi::boot_files(
                board,
                pi,
                firmware,
                &kernel.device_trees,
                crate::raspberry_pi::PiBoot {
                    uboot,
                    vmlinuz: read(&out.join("vmlinuz.gz"))?,
                    initramfs: initramfs.to_vec(),
                    version: release.version,
                    cmdline,
                },
            )?;
            write_shared_boot_files(out, &files)?;
            let (_, boot) = table.find(disk::BOOT_LABEL).context("the boot partition")?;
            // The Pi's firmware reads only an MBR (docs/raspberry-pi.md).
            let mbr =
                brig_spec::gpt::hybrid_mbr(boot).map_err(|e| anyhow::anyhow!("disk image: {e}"))?;
            (files, Some(mbr), "Raspberry Pi firmware, U-Boot")
        }
        (BootFiles::Uefi { loader }, _) => (
            uefi_files(board, loader, out, cmdline, initramfs, release)?,
            None,
            "systemd-boot",
        ),
        (BootFiles::RaspberryPi { .. }, None) => bail!("Pi firmware for a board that is no Pi"),
    };
    let boot_bytes = layout.boot_bytes();
    let boot = out.join("boot.vfat");
    let volume_id = u32::from_le_bytes(table.disk_guid.0[..4].try_into().expect("4 bytes"));
    timed(
        &format!("making the boot partition (FAT32, {what})"),
        || disk::boot_volume(&files, boot_bytes, volume_id, source_date_epoch(), &boot),
    )?;
    remove_disk_images(board, out);
    let raw_name = disk_image_name(board, Format::Raw);
    let partial = out.join(format!("{raw_name}.partial"));
    timed("writing the disk image", || {
        disk::write_raw(table, mbr.as_deref(), layout, &boot, system, &partial)
    })?;
    finish_disk(board, out, output, layout, &boot, &partial)
}

/// systemd-boot, its entry, the kernel and the initramfs.
fn uefi_files(
    board: &Board,
    boot_loader: &Path,
    out: &Path,
    cmdline: &str,
    initramfs: &[u8],
    release: &Release,
) -> Result<Vec<(String, Vec<u8>)>> {
    let read = |p: &Path| std::fs::read(p).with_context(|| format!("reading {}", p.display()));
    use brig_spec::boot_slots::{self, EntryName, Slot};
    let efi = board.arch.efi().to_uppercase();
    // The image boots slot A, the first install: no boot counting for it.
    let dir = boot_slots::kernel_dir(Slot::A, release.version);
    let entry = EntryName {
        generation: 1,
        version: release.version,
        counter: None,
    };
    Ok(vec![
        (format!("EFI/BOOT/BOOT{efi}.EFI"), read(boot_loader)?),
        (
            "loader/loader.conf".to_string(),
            boot_slots::LOADER_CONF.as_bytes().to_vec(),
        ),
        (
            format!("{}/{}", boot_slots::ENTRIES_DIR, entry.file_name()),
            boot_slots::entry_text(&board.name, release.version, Slot::A, cmdline).into_bytes(),
        ),
        (format!("{dir}/vmlinuz"), read(&out.join("vmlinuz"))?),
        (format!("{dir}/initramfs.img"), initramfs.to_vec()),
    ])
}

/// The raw image written at `partial` becomes the wanted format.
fn finish_disk(
    board: &Board,
    out: &Path,
    output: &Output,
    layout: &disk::Layout,
    boot: &Path,
    partial: &Path,
) -> Result<(PathBuf, disk::Layout)> {
    let _ = std::fs::remove_file(boot);
    let path = out.join(disk_image_name(board, output.format));
    if output.format == Format::Qcow2 {
        let converted = timed("converting to qcow2", || disk::to_qcow2(partial, &path));
        let _ = std::fs::remove_file(partial);
        converted?;
    } else {
        std::fs::rename(partial, &path)
            .with_context(|| format!("moving {} into place", path.display()))?;
    }
    if board.raspberry_pi.is_some() {
        // SD card images are downloaded and flashed: a compressed copy too.
        let compressed = compressed_name(&path);
        timed("compressing a copy of the card image (zstd)", || {
            disk::compress(&path, &compressed)
        })?;
    }
    Ok((path, layout.clone()))
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

/// Cross-builds workspace binaries as static musl executables; returns
/// their paths by name.
fn cross_build(source: &Path, target: &str, bins: &[&str]) -> Result<BTreeMap<String, PathBuf>> {
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
    let mut command = Command::new(&cargo);
    command
        .current_dir(source)
        .args(["build", "--release", "--quiet", "--target", target]);
    for bin in bins {
        command.args(["--bin", bin]);
    }
    let status = command
        .status()
        .with_context(|| format!("running {cargo}"))?;
    if !status.success() {
        bail!(
            "building {} for {target} failed ({status})",
            bins.join(", ")
        );
    }
    let target_dir =
        std::env::var_os("CARGO_TARGET_DIR").map_or_else(|| source.join("target"), PathBuf::from);
    Ok(bins
        .iter()
        .map(|b| {
            (
                b.to_string(),
                target_dir.join(target).join("release").join(b),
            )
        })
        .collect())
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
