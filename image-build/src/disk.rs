//! Disk images (`brig build --format raw|qcow2`), booted with UEFI, and the
//! QEMU boards' system disk (`system_disk`). A disk image:
//!
//! | # | label | what |
//! |---|---|---|
//! | 1 | `BRIG_BOOT` | EFI system partition (FAT32): systemd-boot, kernels, initramfs |
//! | 2 | `BRIG_SYSTEM_A` | the system squashfs: every system container, read-only |
//! | 3 | `BRIG_SYSTEM_B` | the other slot, empty until the first update (docs/updates.md) |
//! | - | (free) | where PID 1 makes `BRIG_STATE` (ext4) on first boot |
//!
//! The table math and bytes are `brig_spec::gpt`; the FAT volume is made by
//! mkfs.vfat and mtools (as NoCloud seeds are), the squashfs by tar2sqfs,
//! qcow2 by qemu-img. Same inputs give the same bytes: GUIDs and the FAT
//! volume id derive from the contents, timestamps from SOURCE_DATE_EPOCH.

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};
use brig_spec::gpt::{self, Guid, Partition, Table, SECTOR};

use crate::host_tools;

pub const MIB: u64 = 1 << 20;
/// Labels PID 1 looks for (partition names; the FAT volume label too).
pub const BOOT_LABEL: &str = "BRIG_BOOT";
/// The system disk's one partition (`--format kernel`).
pub const SYSTEM_LABEL: &str = "BRIG_SYSTEM";
/// A disk image's two slots: the image boots A; updates go to the other.
pub const SYSTEM_A_LABEL: &str = brig_spec::boot_slots::Slot::A.label();
pub const SYSTEM_B_LABEL: &str = brig_spec::boot_slots::Slot::B.label();

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Kernel and a small initramfs, booted directly (QEMU's -kernel), with
    /// the system containers on a read-only system disk (`system.img`).
    Kernel,
    /// Kernel and one initramfs holding everything, the system containers
    /// too, run from RAM: for a PXE or netboot server, where there is no
    /// disk to read them from.
    Netboot,
    /// A GPT disk image booting with UEFI, raw bytes (`dd` to a disk).
    #[value(alias = "disk")]
    Raw,
    /// The same disk image as a qcow2 file (QEMU, OpenStack, libvirt).
    Qcow2,
}

impl Format {
    /// A disk image with a boot loader.
    pub fn is_disk(self) -> bool {
        matches!(self, Format::Raw | Format::Qcow2)
    }

    /// The system containers on a system partition (of the disk image, or
    /// of the system disk), not in the initramfs.
    pub fn has_system_partition(self) -> bool {
        self != Format::Netboot
    }
}

/// Sizes of the image and of its partitions, in bytes.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub disk: u64,
    pub boot: u64,
    /// Default: what the system squashfs needs, with room to spare.
    pub system: Option<u64>,
}

/// A size as users write it: `1G`, `512M`, `64MiB`, or bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let digits = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(digits);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 1G, 512M)"))?;
    let scale = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        "T" | "TB" | "TIB" => 1 << 40,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G or T)"
            ))
        }
    };
    number
        .checked_mul(scale)
        .ok_or_else(|| format!("{text:?} is too large"))
}

/// Where each partition goes: the pure part of laying out the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_sectors: u64,
    pub boot: (u64, u64),
    /// Slot A, which the image boots; slot B is as large, after it.
    pub system: (u64, u64),
    pub system_b: (u64, u64),
}

impl Layout {
    pub fn disk_bytes(&self) -> u64 {
        self.disk_sectors * SECTOR
    }
    pub fn boot_bytes(&self) -> u64 {
        (self.boot.1 + 1 - self.boot.0) * SECTOR
    }
    pub fn system_bytes(&self) -> u64 {
        (self.system.1 + 1 - self.system.0) * SECTOR
    }
}

/// Less than this left after the system partition is refused: the state
/// partition would be too small to hold anything worth keeping.
pub const MIN_STATE: u64 = 64 * MIB;

pub fn layout(sizes: &Sizes, system_bytes: u64) -> Result<Layout, String> {
    let round = |b: u64| b.next_multiple_of(MIB);
    let boot = round(sizes.boot);
    if boot < 34 * MIB {
        return Err(format!(
            "the boot partition must be at least 34 MiB (FAT32), not {} MiB",
            boot / MIB
        ));
    }
    // Room for the system partition to take a larger image later.
    let system = match sizes.system {
        Some(s) if round(s) < system_bytes => {
            return Err(format!(
                "the system squashfs is {} MiB and does not fit a {} MiB system partition",
                system_bytes.div_ceil(MIB),
                round(s) / MIB
            ))
        }
        Some(s) => round(s),
        None => round(system_bytes * 2).max(256 * MIB),
    };
    let disk = sizes.disk.next_multiple_of(SECTOR);
    let used = MIB + boot + 2 * system;
    if disk < used + MIN_STATE + MIB {
        return Err(format!(
            "a {} MiB disk is too small: the boot ({} MiB) and two system ({} MiB each) partitions need {} MiB, plus {} MiB for state",
            disk / MIB,
            boot / MIB,
            system / MIB,
            used.div_ceil(MIB) + 1,
            MIN_STATE / MIB
        ));
    }
    let first = MIB / SECTOR;
    let boot_sectors = boot / SECTOR;
    let system_sectors = system / SECTOR;
    let a = first + boot_sectors;
    let b = a + system_sectors;
    Ok(Layout {
        disk_sectors: disk / SECTOR,
        boot: (first, first + boot_sectors - 1),
        system: (a, a + system_sectors - 1),
        system_b: (b, b + system_sectors - 1),
    })
}

/// A GUID derived from `seed` and `salt`: stable for the same inputs.
pub fn derived_guid(seed: &[u8], salt: &str) -> Guid {
    let hash = |extra: u8| {
        let mut data = Vec::with_capacity(seed.len() + salt.len() + 1);
        data.extend_from_slice(seed);
        data.extend_from_slice(salt.as_bytes());
        data.push(extra);
        crate::hash::fnv1a(&data).to_le_bytes()
    };
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&hash(0));
    bytes[8..].copy_from_slice(&hash(1));
    Guid::from_random(bytes)
}

/// The GPT for `layout`, with GUIDs derived from `seed` (the contents) and
/// the board's name.
pub fn table(layout: &Layout, seed: &[u8], board: &str) -> Result<Table, String> {
    let guid = |what: &str| derived_guid(seed, &format!("{board} {what}"));
    let mut table = Table::new(guid("disk"));
    // Bit 60 marks the system partitions read-only (the UEFI spec's
    // attribute for the OS): only an update writes them.
    for (label, type_guid, (first_lba, last_lba), attributes) in [
        (BOOT_LABEL, gpt::types::efi_system(), layout.boot, 0),
        (
            SYSTEM_A_LABEL,
            gpt::types::linux_filesystem(),
            layout.system,
            1 << 60,
        ),
        (
            SYSTEM_B_LABEL,
            gpt::types::linux_filesystem(),
            layout.system_b,
            1 << 60,
        ),
    ] {
        let partition = Partition {
            type_guid,
            unique_guid: guid(label),
            first_lba,
            last_lba,
            attributes,
            name: label.into(),
        };
        table
            .add(partition, layout.disk_sectors)
            .map_err(|e| e.to_string())?;
    }
    Ok(table)
}

/// The system squashfs from `files` (path in it → bytes), gzip at its
/// fastest: the container images in it are compressed already, and only
/// its tables and the specs are left to compress. gzip rather than zstd
/// for the kernel's sake: Debian's kernel gives every mounted squashfs one
/// decompressor per CPU for as long as it is mounted, and zstd's takes
/// 608 KiB of 128 KiB blocks where zlib's takes tens of KiB.
pub fn system_image(files: &[(String, Vec<u8>)], mtime: u32, out: &Path) -> Result<()> {
    let tar2sqfs = host_tools::require("tar2sqfs", "squashfs-tools-ng")?;
    let mut child = Command::new(tar2sqfs)
        .args(["--quiet", "--force", "--no-skip", "--no-keep-time"])
        .args(["--compressor", "gzip", "--comp-extra", "level=1"])
        .args([
            "--defaults",
            &format!("uid=0,gid=0,mode=0755,mtime={mtime}"),
        ])
        .arg(out)
        .stdin(Stdio::piped())
        .spawn()
        .context("starting tar2sqfs")?;
    let stdin = child.stdin.take().context("tar2sqfs stdin")?;
    let mut tar = tar::Builder::new(stdin);
    let mut written = Ok(());
    for (path, data) in files {
        let mut header = tar::Header::new_ustar();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(mtime.into());
        header.set_entry_type(tar::EntryType::Regular);
        written = tar.append_data(&mut header, path, data.as_slice());
        if written.is_err() {
            break;
        }
    }
    let finished = written.and_then(|()| tar.into_inner()).map(drop);
    let status = child.wait().context("waiting for tar2sqfs")?;
    finished.context("streaming the system files into tar2sqfs")?;
    if !status.success() {
        bail!("tar2sqfs failed making the system image ({status})");
    }
    Ok(())
}

/// 1980-01-02, the first day every FAT implementation can show.
const FAT_EPOCH: u32 = 315_619_200;

/// The EFI system partition's FAT32 volume, `bytes` long, holding `files`
/// (path on the volume → bytes), written to `out`.
pub fn boot_volume(
    files: &[(String, Vec<u8>)],
    bytes: u64,
    volume_id: u32,
    mtime: u32,
    out: &Path,
) -> Result<()> {
    let mkfs = host_tools::require("mkfs.vfat", "dosfstools")?;
    let mmd = host_tools::require("mmd", "mtools")?;
    let mcopy = host_tools::require("mcopy", "mtools")?;
    let _ = std::fs::remove_file(out);
    // FAT cannot date anything before 1980.
    let mtime = mtime.max(FAT_EPOCH);
    let what = format!("making the boot partition {}", out.display());
    let run = |command: &mut Command| -> Result<()> {
        // mtools dates what it makes by SOURCE_DATE_EPOCH, in local time.
        let command = command
            .env("TZ", "UTC")
            .env("SOURCE_DATE_EPOCH", mtime.to_string());
        host_tools::run(command, &what).map(drop)
    };
    run(Command::new(&mkfs)
        .args(["-F", "32", "-n", BOOT_LABEL, "--invariant", "-i"])
        .arg(format!("{volume_id:08X}"))
        .arg("-C")
        .arg(out)
        .arg((bytes / 1024).to_string()))?;
    let stage = out.with_extension("files");
    let _ = std::fs::remove_dir_all(&stage);
    let mut dirs: Vec<String> = Vec::new();
    for (path, _) in files {
        let mut at = Path::new(path).parent();
        let mut chain = Vec::new();
        while let Some(dir) = at.filter(|d| !d.as_os_str().is_empty()) {
            chain.push(dir.display().to_string());
            at = dir.parent();
        }
        for dir in chain.into_iter().rev() {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
    }
    if !dirs.is_empty() {
        let mut command = Command::new(&mmd);
        command.arg("-i").arg(out);
        for dir in &dirs {
            command.arg(format!("::/{dir}"));
        }
        run(&mut command)?;
    }
    let time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime.into());
    for (path, data) in files {
        let staged = stage.join(path);
        std::fs::create_dir_all(staged.parent().unwrap_or(&stage))
            .with_context(|| format!("creating {}", stage.display()))?;
        let mut file =
            File::create(&staged).with_context(|| format!("staging {}", staged.display()))?;
        file.write_all(data)
            .and_then(|()| file.set_modified(time))
            .with_context(|| format!("staging {}", staged.display()))?;
        drop(file);
        run(Command::new(&mcopy)
            .args(["-m", "-i"])
            .arg(out)
            .arg(&staged)
            .arg(format!("::/{path}")))?;
    }
    let _ = std::fs::remove_dir_all(&stage);
    Ok(())
}

/// Writes the raw disk: the table (with `mbr` in LBA 0, when given), then each partition's contents; the
/// file is sparse where nothing is written. Returns its path.
pub fn write_raw(
    table: &Table,
    mbr: Option<&[u8]>,
    layout: &Layout,
    boot: &Path,
    system: &Path,
    out: &Path,
) -> Result<PathBuf> {
    let file = File::create(out).with_context(|| format!("creating {}", out.display()))?;
    file.set_len(layout.disk_sectors * SECTOR)
        .with_context(|| format!("sizing {}", out.display()))?;
    let write = |at: u64, data: &[u8]| {
        file.write_all_at(data, at)
            .with_context(|| format!("writing {}", out.display()))
    };
    write(0, &table.primary(layout.disk_sectors))?;
    // A hybrid MBR in place of the protective one (a Raspberry Pi's).
    if let Some(mbr) = mbr {
        write(0, mbr)?;
    }
    write(
        Table::backup_offset(layout.disk_sectors),
        &table.backup(layout.disk_sectors),
    )?;
    for (path, (first, last)) in [(boot, layout.boot), (system, layout.system)] {
        let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        if data.len() as u64 > (last + 1 - first) * SECTOR {
            bail!("{} does not fit its partition", path.display());
        }
        write(first * SECTOR, &data)?;
    }
    file.sync_all()
        .with_context(|| format!("writing {}", out.display()))?;
    Ok(out.to_path_buf())
}

/// A system disk for a machine that boots its kernel directly (the QEMU
/// boards): a GPT holding one partition, `BRIG_SYSTEM`, with the system
/// squashfs at `squashfs`, attached read-only. PID 1 finds it as it finds
/// a disk image's system partition, by the partition's GUID on the kernel
/// command line (derived from `seed`: the same inputs, the same GUID),
/// which is returned.
pub fn system_disk(squashfs: &Path, seed: &[u8], board: &str, out: &Path) -> Result<Guid> {
    let data =
        std::fs::read(squashfs).with_context(|| format!("reading {}", squashfs.display()))?;
    let (first, last) = system_disk_partition(data.len() as u64);
    // Room for the backup table after the partition, aligned as the start.
    let disk_sectors = last + 1 + MIB / SECTOR;
    let mut table = Table::new(derived_guid(seed, &format!("{board} system disk")));
    let unique_guid = derived_guid(seed, &format!("{board} {SYSTEM_LABEL}"));
    table
        .add(
            Partition {
                type_guid: gpt::types::linux_filesystem(),
                unique_guid,
                first_lba: first,
                last_lba: last,
                attributes: 1 << 60,
                name: SYSTEM_LABEL.into(),
            },
            disk_sectors,
        )
        .map_err(|e| anyhow::anyhow!("the system disk's table: {e}"))?;
    let partial = out.with_extension("partial");
    let file = File::create(&partial).with_context(|| format!("creating {}", partial.display()))?;
    let written = file
        .set_len(disk_sectors * SECTOR)
        .and_then(|()| file.write_all_at(&table.primary(disk_sectors), 0))
        .and_then(|()| {
            file.write_all_at(
                &table.backup(disk_sectors),
                Table::backup_offset(disk_sectors),
            )
        })
        .and_then(|()| file.write_all_at(&data, first * SECTOR))
        .and_then(|()| file.sync_all());
    written.with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, out)
        .with_context(|| format!("moving {} into place", out.display()))?;
    Ok(unique_guid)
}

/// The system disk's partition for a squashfs of `bytes`: from 1 MiB, as
/// long as the squashfs rounded up to a MiB (inclusive sectors).
fn system_disk_partition(bytes: u64) -> (u64, u64) {
    let first = MIB / SECTOR;
    (
        first,
        first + bytes.max(1).next_multiple_of(MIB) / SECTOR - 1,
    )
}

/// The raw image converted to qcow2 with qemu-img.
pub fn to_qcow2(raw: &Path, out: &Path) -> Result<()> {
    let qemu_img = host_tools::require("qemu-img", "qemu-utils")?;
    host_tools::run(
        Command::new(qemu_img)
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(raw)
            .arg(out),
        &format!("converting {} to qcow2", raw.display()),
    )
    .map(drop)
}

/// A zstd-compressed copy of the raw image `raw` at `out`, to download
/// and to hand to flashing tools that read `.img.zst`. Level 3: what the
/// image holds is compressed already, zstd's gain is its empty space.
pub fn compress(raw: &Path, out: &Path) -> Result<u64> {
    let what = || format!("compressing {} into {}", raw.display(), out.display());
    let partial = out.with_extension("zst.partial");
    let mut input = std::fs::File::open(raw).with_context(what)?;
    let output = std::fs::File::create(&partial).with_context(what)?;
    let mut encoder = zstd::Encoder::new(output, 3).with_context(what)?;
    // The frame says how large the image is: tools show progress by it.
    encoder
        .set_pledged_src_size(Some(input.metadata().with_context(what)?.len()))
        .with_context(what)?;
    std::io::copy(&mut input, &mut encoder).with_context(what)?;
    encoder
        .finish()
        .and_then(|f| f.sync_all())
        .with_context(what)?;
    std::fs::rename(&partial, out).with_context(what)?;
    Ok(std::fs::metadata(out).with_context(what)?.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_disk_holds_the_squashfs_in_one_partition_found_by_its_guid() {
        assert_eq!(system_disk_partition(1), (2048, 4095));
        assert_eq!(system_disk_partition(MIB + 1), (2048, 6143));
        let dir = tempfile::tempdir().unwrap();
        let squashfs = dir.path().join("system.squashfs");
        let contents: Vec<u8> = (0..3 * MIB / 2).map(|i| (i % 251) as u8).collect();
        std::fs::write(&squashfs, &contents).unwrap();
        let out = dir.path().join("system.img");
        let guid = system_disk(&squashfs, b"inputs", "qemu-x86_64", &out).unwrap();
        assert_eq!(
            guid,
            system_disk(&squashfs, b"inputs", "qemu-x86_64", &out).unwrap(),
            "the same inputs, the same GUID"
        );
        let image = std::fs::read(&out).unwrap();
        let sectors = image.len() as u64 / SECTOR;
        assert_eq!(sectors, 2048 + 4096 + 2048);
        let found = gpt::read(
            &image[..gpt::PRIMARY_BYTES as usize],
            sectors,
            &mut |offset, length| Ok(image[offset as usize..][..length].to_vec()),
        )
        .unwrap();
        assert_eq!(found.note, None);
        let (number, partition) = found.table.find(SYSTEM_LABEL).unwrap();
        assert_eq!((number, partition.unique_guid), (1, guid));
        let start = (partition.first_lba * SECTOR) as usize;
        assert_eq!(&image[start..start + contents.len()], contents.as_slice());
    }

    #[test]
    fn sizes_read_as_users_write_them() {
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512M"), Ok(512 << 20));
        assert_eq!(parse_size("64MiB"), Ok(64 << 20));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("1X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("big").unwrap_err().contains("not a size"));
    }

    #[test]
    fn the_layout_aligns_partitions_and_leaves_room_for_state() {
        let sizes = Sizes {
            disk: 1 << 30,
            boot: 64 * MIB,
            system: None,
        };
        let l = layout(&sizes, 40 * MIB).unwrap();
        assert_eq!(l.disk_sectors, 2 * 1024 * 1024);
        assert_eq!(l.boot, (2048, 2048 + 64 * 2048 - 1));
        // At least 256 MiB, so a larger system image fits later; the
        // other slot as large, right after.
        assert_eq!(l.system, (65 * 2048, 321 * 2048 - 1));
        assert_eq!(l.system_b, (321 * 2048, 577 * 2048 - 1));
        let l = layout(&sizes, 200 * MIB).unwrap();
        assert_eq!(l.system.1 + 1 - l.system.0, 400 * 2048);
    }

    #[test]
    fn sizes_that_cannot_work_are_refused_with_the_numbers() {
        let sizes = Sizes {
            disk: 600 * MIB,
            boot: 64 * MIB,
            system: None,
        };
        let e = layout(&sizes, 40 * MIB).unwrap_err();
        assert!(e.contains("a 600 MiB disk is too small"), "{e}");
        let e = layout(
            &Sizes {
                system: Some(32 * MIB),
                disk: 1 << 30,
                ..sizes
            },
            40 * MIB,
        )
        .unwrap_err();
        assert!(e.contains("does not fit a 32 MiB system partition"), "{e}");
        let e = layout(
            &Sizes {
                boot: 16 * MIB,
                disk: 1 << 30,
                ..sizes
            },
            40 * MIB,
        )
        .unwrap_err();
        assert!(e.contains("at least 34 MiB"), "{e}");
    }

    #[test]
    fn guids_are_stable_for_the_same_contents_and_differ_otherwise() {
        assert_eq!(derived_guid(b"a", "disk"), derived_guid(b"a", "disk"));
        assert_ne!(derived_guid(b"a", "disk"), derived_guid(b"b", "disk"));
        assert_ne!(derived_guid(b"a", "disk"), derived_guid(b"a", "BRIG_BOOT"));
    }

    /// The table as util-linux reads it: the real tool agrees on every
    /// partition's place, type and name.
    #[test]
    fn sfdisk_reads_the_table_we_write() {
        let dir = tempfile::tempdir().unwrap();
        let sizes = Sizes {
            disk: 1024 * MIB,
            boot: 64 * MIB,
            system: None,
        };
        let l = layout(&sizes, 10 * MIB).unwrap();
        let t = table(&l, b"contents", "qemu-x86_64").unwrap();
        assert_ne!(
            t.disk_guid,
            table(&l, b"contents", "pc-x86_64").unwrap().disk_guid,
            "boards differ"
        );
        let boot = dir.path().join("boot");
        let system = dir.path().join("system");
        std::fs::write(&boot, b"boot").unwrap();
        std::fs::write(&system, b"system").unwrap();
        let raw = write_raw(&t, None, &l, &boot, &system, &dir.path().join("disk.img")).unwrap();
        let sfdisk = host_tools::find("sfdisk").expect("sfdisk (util-linux fdisk) is needed");
        let output = Command::new(sfdisk)
            .arg("--json")
            .arg(&raw)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(
            !stderr.contains("GPT PMBR size mismatch") && !stderr.contains("corrupt"),
            "{stderr}"
        );
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let table = &json["partitiontable"];
        assert_eq!(table["label"], "gpt");
        assert_eq!(table["id"], t.disk_guid.to_string());
        let parts = table["partitions"].as_array().unwrap();
        assert_eq!(parts.len(), 3);
        assert_eq!(parts[0]["start"], 2048);
        assert_eq!(parts[0]["size"], 64 * 2048);
        assert_eq!(parts[0]["type"], gpt::types::EFI_SYSTEM);
        assert_eq!(parts[0]["name"], BOOT_LABEL);
        assert_eq!(parts[1]["start"], 65 * 2048);
        assert_eq!(parts[1]["name"], SYSTEM_A_LABEL);
        assert_eq!(parts[1]["attrs"], "GUID:60");
        assert_eq!(parts[2]["start"], (65 + 256) * 2048);
        assert_eq!(parts[2]["name"], SYSTEM_B_LABEL);
    }
}
