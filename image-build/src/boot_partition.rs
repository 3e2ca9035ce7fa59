//! The boot partition (FAT, `BRIG_BOOT`) inside a built disk image or a
//! flashed card, read and written in place with mtools: `brig run` takes a
//! Pi's kernel, initramfs and device tree off it (as the Pi's firmware
//! would), `brig run` and `brig flash` put the user's cloud-init files on it.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::process::Command;

use anyhow::{bail, Context, Result};
use brig_spec::gpt;

use crate::host_tools;

/// The GPT name `brig build` gives the boot partition (disk.rs).
const NAME: &str = "BRIG_BOOT";

/// Where the boot partition starts in `disk` (an image file or a block
/// device), in bytes, from its GUID partition table.
pub fn offset(disk: &Path) -> Result<u64> {
    let what = || format!("reading the partition table of {}", disk.display());
    let mut file = File::open(disk).with_context(what)?;
    let size = file.seek(SeekFrom::End(0)).with_context(what)?;
    let mut primary = vec![0; gpt::PRIMARY_BYTES as usize];
    file.seek(SeekFrom::Start(0)).with_context(what)?;
    file.read_exact(&mut primary).with_context(what)?;
    let mut read_at = |at: u64, len: usize| -> Result<Vec<u8>, String> {
        let mut bytes = vec![0; len];
        file.seek(SeekFrom::Start(at))
            .and_then(|_| file.read_exact(&mut bytes))
            .map_err(|e| e.to_string())?;
        Ok(bytes)
    };
    let found = gpt::read(&primary, size / gpt::SECTOR, &mut read_at)
        .map_err(anyhow::Error::msg)
        .with_context(what)?;
    match found.table.find(NAME) {
        Some((_, partition)) => Ok(partition.first_lba * gpt::SECTOR),
        None => bail!(
            "{} has no boot partition {NAME}: is it a Brig image?",
            disk.display()
        ),
    }
}

/// mtools' name for the FAT volume at `offset` in `disk`.
fn volume(disk: &Path, offset: u64) -> String {
    format!("{}@@{offset}", disk.display())
}

/// Copies `names` off the boot partition of `disk` into `dir`.
pub fn copy_out(disk: &Path, names: &[&str], dir: &Path) -> Result<()> {
    let mcopy = host_tools::require("mcopy", "mtools")?;
    let volume = volume(disk, offset(disk)?);
    for name in names {
        host_tools::run(
            Command::new(&mcopy)
                .args(["-n", "-i", &volume])
                .arg(format!("::{name}"))
                .arg(dir.join(name)),
            &format!(
                "copying {name} off the boot partition of {}",
                disk.display()
            ),
        )?;
    }
    Ok(())
}

/// Writes `files` (name, bytes) onto the boot partition of `disk`,
/// replacing files of the same name.
pub fn put(disk: &Path, files: &[(&str, Vec<u8>)]) -> Result<()> {
    let mcopy = host_tools::require("mcopy", "mtools")?;
    let volume = volume(disk, offset(disk)?);
    let stage = tempfile::tempdir().context("making a directory for the files")?;
    for (name, bytes) in files {
        // mcopy names the file on the volume after the file it copies.
        let path = stage.path().join(name);
        std::fs::write(&path, bytes).with_context(|| format!("staging {name}"))?;
        host_tools::run(
            Command::new(&mcopy)
                .args(["-o", "-i", &volume])
                .arg(&path)
                .arg(format!("::{name}")),
            &format!(
                "writing {name} onto the boot partition of {}",
                disk.display()
            ),
        )?;
    }
    Ok(())
}
