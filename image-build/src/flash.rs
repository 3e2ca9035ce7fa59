//! `brig flash`: writes a card image (`.img`, or the `.img.zst` copy) onto
//! an SD card or another disk, or into an image file. It refuses disks it
//! should not touch unless forced, shows progress, reads back what it
//! wrote to verify it, and can put the user's `user-data` onto the card's
//! boot partition afterwards.

use std::fs::File;
use std::io::{IsTerminal, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::boot_partition;
use crate::progress::step;

/// The options of `brig flash`.
#[derive(Debug, Clone, clap::Args)]
pub struct FlashOptions {
    /// Where to write: the card's whole disk (e.g. /dev/sdb, /dev/mmcblk0),
    /// or an image file (made or overwritten).
    #[arg(long, value_name = "DEVICE")]
    pub device: PathBuf,
    /// The image to write (`.img` or `.img.zst`); default: the board's,
    /// from `brig build`.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// cloud-init user data to put on the card's boot partition
    /// (replacing the example there).
    #[arg(long, value_name = "FILE")]
    pub user_data: Option<PathBuf>,
    /// Write even to a disk that is not removable, is mounted or in use,
    /// or holds this computer's root filesystem.
    #[arg(long)]
    pub force: bool,
    /// Whose filesystem counts as this computer's root: `/`. The tests
    /// name a directory on a loop device, which brig must then treat as the
    /// root disk, without ever aiming at the real one.
    #[arg(long, value_name = "DIR", default_value = "/", hide = true)]
    pub root_of: PathBuf,
}

/// What is known of the disk about to be written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Disk {
    /// Its kernel name (`sdb`).
    pub name: String,
    pub size: u64,
    /// A partition rather than a whole disk.
    pub partition: bool,
    /// Removable media, a USB disk or an SD card slot.
    pub removable: bool,
    /// Where it or its partitions are mounted, swapped on, or held (LVM, RAID).
    pub in_use: Vec<String>,
    /// It holds the filesystem this computer runs from.
    pub holds_root: bool,
}

/// Why `disk` may not be written: reasons `force` overrides, and those it
/// does not (a partition, too small for the image).
pub fn refusals(disk: &Disk, image_size: u64, force: bool) -> Vec<String> {
    let mut reasons = Vec::new();
    if disk.partition {
        reasons.push(format!(
            "{} is a partition: name the whole disk it is on",
            disk.name
        ));
    }
    if disk.size < image_size {
        reasons.push(format!(
            "{} holds {} MiB, the image needs {} MiB",
            disk.name,
            disk.size >> 20,
            image_size.div_ceil(1 << 20)
        ));
    }
    if !force {
        if disk.holds_root {
            reasons.push(format!(
                "{} holds this computer's root filesystem",
                disk.name
            ));
        }
        if !disk.removable {
            reasons.push(format!(
                "{} is not a removable disk (not USB, not an SD card slot)",
                disk.name
            ));
        }
        for use_ in &disk.in_use {
            reasons.push(format!("{} is in use: {use_}", disk.name));
        }
    }
    reasons
}

/// Writes the image onto `opts.device`; `built` is the board's image.
pub fn flash(opts: &FlashOptions, built: Option<PathBuf>) -> Result<()> {
    let image = opts.image.clone().or(built).context(
        "no image to write: run `brig build --board BOARD` first, or name one with --image",
    )?;
    let source = Source::open(&image)?;
    // Bad user data is found before anything is written.
    let user_data = match &opts.user_data {
        Some(path) => Some(checked_user_data(path)?),
        None => None,
    };
    let target = opts.device.as_path();
    let block_device = std::fs::metadata(target)
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    let mut out = if block_device {
        let disk = sysfs::disk(target, &opts.root_of)?;
        let reasons = refusals(&disk, source.size, opts.force);
        if !reasons.is_empty() {
            bail!(
                "not writing {}: {}{}",
                target.display(),
                reasons.join("; "),
                if opts.force || disk.partition || disk.size < source.size {
                    ""
                } else {
                    " (--force writes anyway)"
                }
            );
        }
        std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .open(target)
            .with_context(|| format!("opening {} to write", target.display()))?
    } else if target.exists() && !target.is_file() {
        bail!(
            "{} is neither a block device nor an image file",
            target.display()
        );
    } else {
        std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .create(true)
            .truncate(true)
            .open(target)
            .with_context(|| format!("creating {}", target.display()))?
    };
    step(&format!(
        "writing {} ({} MiB) onto {}",
        image.display(),
        source.size >> 20,
        target.display()
    ));
    let started = Instant::now();
    let mut progress = Progress::new("writing", source.size);
    let written = source.each_chunk(|at, chunk| {
        out.write_all(chunk)
            .with_context(|| format!("writing {} at byte {at}", target.display()))?;
        // Synced as it goes, so the figures show the card's speed, not
        // the page cache's.
        if (at + chunk.len() as u64).is_multiple_of(SYNC_EVERY) {
            out.sync_data()
                .with_context(|| format!("flushing {}", target.display()))?;
        }
        progress.show(at + chunk.len() as u64);
        Ok(())
    })?;
    out.sync_all()
        .with_context(|| format!("flushing {}", target.display()))?;
    progress.done();
    step(&format!(
        "wrote {} MiB in {:.1} s; reading it back",
        written >> 20,
        started.elapsed().as_secs_f64()
    ));
    drop_cache(&out);
    out.seek(SeekFrom::Start(0))
        .with_context(|| format!("reading back {}", target.display()))?;
    let mut progress = Progress::new("verifying", source.size);
    let mut back = vec![0; CHUNK];
    Source::open(&image)?.each_chunk(|at, chunk| {
        let back = &mut back[..chunk.len()];
        out.read_exact(back)
            .with_context(|| format!("reading back {} at byte {at}", target.display()))?;
        if back != chunk {
            let first = back
                .iter()
                .zip(chunk)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            bail!(
                "{} does not hold what was written: it differs at byte {} — the card may be \
                 failing or fake (smaller than it claims)",
                target.display(),
                at + first as u64
            );
        }
        progress.show(at + chunk.len() as u64);
        Ok(())
    })?;
    progress.done();
    step(&format!("verified: {} holds the image", target.display()));
    drop(out);
    if let Some(user_data) = user_data {
        boot_partition::put(target, &[("user-data", user_data.clone())])?;
        let check = tempfile::tempdir().context("making a directory to read it back")?;
        boot_partition::copy_out(target, &["user-data"], check.path())?;
        if std::fs::read(check.path().join("user-data")).ok() != Some(user_data) {
            bail!(
                "the user-data read back from {} differs from what was written",
                target.display()
            );
        }
        step(&format!(
            "user-data written onto the boot partition of {} (and read back)",
            target.display()
        ));
    }
    Ok(())
}

/// Chunk size for writing and reading back.
const CHUNK: usize = 4 << 20;
/// Bytes between flushes while writing.
const SYNC_EVERY: u64 = 64 << 20;

/// The user data file, if it is valid cloud-config (or a script); else
/// every problem, placed (`FILE:LINE:COLUMN`).
fn checked_user_data(path: &Path) -> Result<Vec<u8>> {
    let data = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let problems = brig_spec::cloud_config::report(&path.display().to_string(), &data);
    if !problems.is_empty() {
        bail!(
            "the user data has problems, nothing written:\n{}",
            problems.join("\n")
        );
    }
    Ok(data)
}

/// Drops what the page cache holds of `file`, so reading it back reads
/// the card.
fn drop_cache(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: the descriptor is open for the call's length; fadvise reads
    // no memory of ours.
    unsafe {
        libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED);
    }
}

/// The image being written: raw, or zstd-compressed (by its name).
struct Source {
    path: PathBuf,
    /// The raw image's size.
    size: u64,
    compressed: bool,
}

impl Source {
    fn open(path: &Path) -> Result<Source> {
        let what = || format!("reading the image {}", path.display());
        let mut file = File::open(path).with_context(what)?;
        let compressed = path.extension().is_some_and(|e| e == "zst");
        let size = if compressed {
            let mut header = vec![0; 18];
            let n = file.read(&mut header).with_context(what)?;
            match zstd::zstd_safe::get_frame_content_size(&header[..n]) {
                Ok(Some(size)) => size,
                _ => bail!(
                    "{} is no zstd image that says its size (made by brig build?)",
                    path.display()
                ),
            }
        } else {
            file.metadata().with_context(what)?.len()
        };
        if size == 0 {
            bail!("{} is empty", path.display());
        }
        Ok(Source {
            path: path.to_path_buf(),
            size,
            compressed,
        })
    }

    /// Calls `f(offset, bytes)` for each chunk of the raw image; returns
    /// its size.
    fn each_chunk(&self, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<u64> {
        let what = || format!("reading the image {}", self.path.display());
        let file = File::open(&self.path).with_context(what)?;
        let mut reader: Box<dyn Read> = if self.compressed {
            Box::new(zstd::Decoder::new(file).with_context(what)?)
        } else {
            Box::new(file)
        };
        let mut buffer = vec![0; CHUNK];
        let mut at = 0;
        loop {
            let mut filled = 0;
            while filled < CHUNK {
                match reader.read(&mut buffer[filled..]).with_context(what)? {
                    0 => break,
                    n => filled += n,
                }
            }
            if filled == 0 {
                break;
            }
            f(at, &buffer[..filled])?;
            at += filled as u64;
        }
        if at != self.size {
            bail!(
                "{} holds {at} bytes, not the {} it says",
                self.path.display(),
                self.size
            );
        }
        Ok(at)
    }
}

/// Progress on stderr: one line redrawn on a terminal, else a line every
/// tenth.
struct Progress {
    what: &'static str,
    total: u64,
    started: Instant,
    terminal: bool,
    shown_tenths: u64,
}

impl Progress {
    fn new(what: &'static str, total: u64) -> Progress {
        Progress {
            what,
            total,
            started: Instant::now(),
            terminal: std::io::stderr().is_terminal(),
            shown_tenths: 0,
        }
    }

    fn show(&mut self, done: u64) {
        let tenths = done * 10 / self.total;
        if !self.terminal && tenths == self.shown_tenths {
            return;
        }
        self.shown_tenths = tenths;
        let seconds = self.started.elapsed().as_secs_f64().max(0.001);
        let line = format!(
            "    {}: {} of {} MiB ({}%), {:.0} MiB/s",
            self.what,
            done >> 20,
            self.total >> 20,
            done * 100 / self.total,
            (done >> 20) as f64 / seconds
        );
        if self.terminal {
            eprint!("\r{line}   ");
        } else {
            eprintln!("{line}");
        }
    }

    fn done(&self) {
        if self.terminal {
            eprintln!();
        }
    }
}

/// What Linux says of a block device, in /sys and /proc.
mod sysfs {
    use super::*;

    /// The facts `refusals` weighs, for block device `path`; the root
    /// filesystem is the one `root_of` is on.
    pub fn disk(path: &Path, root_of: &Path) -> Result<Disk> {
        let rdev = std::fs::metadata(path)
            .with_context(|| format!("reading {}", path.display()))?
            .rdev();
        let dev = dev_name(rdev);
        let sys = Path::new("/sys/dev/block").join(&dev);
        let sys = sys
            .canonicalize()
            .with_context(|| format!("finding {} in {}", path.display(), sys.display()))?;
        let name = file_name(&sys);
        let partition = sys.join("partition").exists();
        let size = read(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
        let removable = read(&sys.join("removable")) == "1"
            || sys.to_string_lossy().contains("/usb")
            || name.starts_with("mmcblk");
        // The disk and its partitions, by device number.
        let mut members = vec![(dev.clone(), name.clone())];
        if let Ok(entries) = std::fs::read_dir(&sys) {
            for entry in entries.flatten() {
                if entry.path().join("partition").exists() {
                    let number = read(&entry.path().join("dev"));
                    members.push((number, file_name(&entry.path())));
                }
            }
        }
        let mut in_use = Vec::new();
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if let (Some(number), Some(point)) = (fields.get(2), fields.get(4)) {
                if let Some((_, member)) = members.iter().find(|(d, _)| d == number) {
                    in_use.push(format!("{member} is mounted at {point}"));
                }
            }
        }
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap_or_default();
        for (_, member) in &members {
            if swaps
                .lines()
                .any(|l| l.split_whitespace().next() == Some(&format!("/dev/{member}")))
            {
                in_use.push(format!("{member} is swap space"));
            }
            let holders = Path::new("/sys/class/block").join(member).join("holders");
            if let Ok(entries) = std::fs::read_dir(holders) {
                for holder in entries.flatten() {
                    in_use.push(format!(
                        "{member} is held by {}",
                        holder.file_name().to_string_lossy()
                    ));
                }
            }
        }
        let holds_root = root_disks(root_of)
            .iter()
            .any(|d| members.iter().any(|(_, m)| m == d));
        Ok(Disk {
            name,
            size,
            partition,
            removable,
            in_use,
            holds_root,
        })
    }

    /// The block devices under this computer's root filesystem (the one
    /// `root_of` is on): its device, the disk that is on, and what a device
    /// mapper sits on.
    fn root_disks(root_of: &Path) -> Vec<String> {
        let mut found = Vec::new();
        let Ok(root) = std::fs::metadata(root_of) else {
            return found;
        };
        let mut pending = vec![Path::new("/sys/dev/block").join(dev_name(root.dev()))];
        while let Some(path) = pending.pop() {
            let Ok(path) = path.canonicalize() else {
                continue;
            };
            found.push(file_name(&path));
            if path.join("partition").exists() {
                if let Some(parent) = path.parent() {
                    pending.push(parent.to_path_buf());
                }
            }
            if let Ok(slaves) = std::fs::read_dir(path.join("slaves")) {
                pending.extend(slaves.flatten().map(|s| s.path()));
            }
        }
        found
    }

    fn dev_name(dev: u64) -> String {
        format!("{}:{}", libc::major(dev), libc::minor(dev))
    }

    fn file_name(path: &Path) -> String {
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    }

    fn read(path: &Path) -> String {
        std::fs::read_to_string(path)
            .map(|s| s.trim().to_string())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn card() -> Disk {
        Disk {
            name: "sdb".into(),
            size: 16 << 30,
            removable: true,
            ..Disk::default()
        }
    }

    #[test]
    fn a_removable_unused_card_large_enough_is_written() {
        assert!(refusals(&card(), 1 << 30, false).is_empty());
    }

    #[test]
    fn fixed_mounted_and_root_disks_are_refused_unless_forced() {
        let disk = Disk {
            removable: false,
            in_use: vec!["sda1 is mounted at /".into()],
            holds_root: true,
            ..card()
        };
        let reasons = refusals(&disk, 1 << 30, false);
        assert_eq!(
            reasons,
            [
                "sdb holds this computer's root filesystem",
                "sdb is not a removable disk (not USB, not an SD card slot)",
                "sdb is in use: sda1 is mounted at /",
            ]
        );
        assert!(refusals(&disk, 1 << 30, true).is_empty());
    }

    #[test]
    fn partitions_and_small_disks_are_refused_even_when_forced() {
        let partition = Disk {
            name: "sdb1".into(),
            partition: true,
            ..card()
        };
        assert_eq!(
            refusals(&partition, 1 << 30, true),
            ["sdb1 is a partition: name the whole disk it is on"]
        );
        let small = Disk {
            size: 512 << 20,
            ..card()
        };
        assert_eq!(
            refusals(&small, 1 << 30, true),
            ["sdb holds 512 MiB, the image needs 1024 MiB"]
        );
    }

    #[test]
    fn a_compressed_image_is_read_as_the_raw_one() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("card.img");
        let mut bytes = vec![0u8; CHUNK * 2 + 1000];
        bytes[CHUNK + 7] = 42;
        std::fs::write(&raw, &bytes).unwrap();
        let zst = dir.path().join("card.img.zst");
        crate::disk::compress(&raw, &zst).unwrap();
        for path in [&raw, &zst] {
            let source = Source::open(path).unwrap();
            assert_eq!(source.size, bytes.len() as u64);
            let mut seen = Vec::new();
            source
                .each_chunk(|at, chunk| {
                    assert_eq!(at, seen.len() as u64);
                    seen.extend_from_slice(chunk);
                    Ok(())
                })
                .unwrap();
            assert!(seen == bytes, "{} read back differently", path.display());
        }
    }

    #[test]
    fn a_truncated_compressed_image_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("card.img");
        std::fs::write(&raw, vec![7u8; 3 << 20]).unwrap();
        let zst = dir.path().join("card.img.zst");
        crate::disk::compress(&raw, &zst).unwrap();
        let whole = std::fs::read(&zst).unwrap();
        std::fs::write(&zst, &whole[..whole.len() / 2]).unwrap();
        let source = Source::open(&zst).unwrap();
        assert!(source.each_chunk(|_, _| Ok(())).is_err());
    }
}
