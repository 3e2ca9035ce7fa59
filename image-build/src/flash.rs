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

/// Why `disk` may not be written. `force` overrides only "not removable"
/// (a USB disk that says it is fixed, a card reader on an internal bus):
/// a disk that is mounted, in use or this computer's own, a partition, or
/// one too small are refused whatever the flags.
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
    if disk.holds_root {
        reasons.push(format!(
            "{} holds this computer's root filesystem",
            disk.name
        ));
    }
    for use_ in &disk.in_use {
        reasons.push(format!("{} is in use: {use_}", disk.name));
    }
    if !force && !disk.removable {
        reasons.push(format!(
            "{} is not a removable disk (not USB, not an SD card slot)",
            disk.name
        ));
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
    let mut out = open_target(target, &opts.root_of, source.size, opts.force)?;
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

/// Opens what `brig flash --device` names: a whole disk that passes
/// `refusals`, opened exclusively (`O_EXCL`: the kernel refuses while
/// anything has it mounted, in a RAID, LVM or dm-crypt, or open
/// exclusively), and checked again once open, so a name swapped meanwhile
/// cannot redirect the write; or an image file, made or replaced. Anything
/// else (a FIFO, a character device, a directory, a name in /dev that is
/// no disk) is refused before a byte is written.
fn open_target(target: &Path, root_of: &Path, image_size: u64, force: bool) -> Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let shown = target.display();
    let in_dev = target.starts_with("/dev");
    let meta = match std::fs::metadata(target) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && in_dev => {
            bail!("not writing {shown}: it does not exist: is the card in? (`lsblk` lists disks)")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return std::fs::OpenOptions::new()
                .write(true)
                .read(true)
                .create_new(true)
                .open(target)
                .with_context(|| format!("creating {shown}"));
        }
        Err(e) => return Err(e).with_context(|| format!("looking at {shown}")),
    };
    let kind = meta.file_type();
    if kind.is_file() && !in_dev {
        return std::fs::OpenOptions::new()
            .write(true)
            .read(true)
            .truncate(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(target)
            .with_context(|| format!("replacing {shown}"))
            .and_then(|file| {
                // Swapped for something else since it was looked at.
                if !file.metadata()?.is_file() {
                    bail!("not writing {shown}: it changed while it was being checked");
                }
                Ok(file)
            });
    }
    if !kind.is_block_device() {
        let what = if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_dir() {
            "a directory"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "a file in /dev"
        };
        bail!(
            "not writing {shown}: it is {what}, neither a block device (a disk) nor an image file"
        );
    }
    let disk = sysfs::Host::real().disk(meta.rdev(), root_of)?;
    let reasons = refusals(&disk, image_size, force);
    if !reasons.is_empty() {
        let only_removable = !disk.removable && reasons.len() == 1;
        bail!(
            "not writing {shown}: {}{}",
            reasons.join("; "),
            if only_removable && !force {
                " (--force writes anyway)"
            } else {
                ""
            }
        );
    }
    let file = std::fs::OpenOptions::new()
        .write(true)
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(target)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::EBUSY) {
                anyhow::anyhow!(
                    "not writing {shown}: the kernel says it is in use (mounted, part of a RAID, \
                     LVM or encrypted volume, or open by another program)"
                )
            } else {
                anyhow::Error::new(e).context(format!("opening {shown} to write"))
            }
        })?;
    let opened = file
        .metadata()
        .with_context(|| format!("looking at {shown} once open"))?;
    if !opened.file_type().is_block_device() || opened.rdev() != meta.rdev() {
        bail!("not writing {shown}: it changed while it was being checked");
    }
    Ok(file)
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

    pub use brig_spec::mountinfo::{mounts, Mount};

    /// The machine's /sys, mounts and swaps (a fake /sys in unit tests).
    pub struct Host {
        pub sys: PathBuf,
        pub mounts: Vec<Mount>,
        pub swaps: String,
    }

    impl Host {
        pub fn real() -> Host {
            Host {
                sys: PathBuf::from("/sys"),
                mounts: mounts(
                    &std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default(),
                ),
                swaps: std::fs::read_to_string("/proc/swaps").unwrap_or_default(),
            }
        }

        /// The facts `refusals` weighs, for the block device `rdev`; the
        /// root filesystem is the one `root_of` is on.
        pub fn disk(&self, rdev: u64, root_of: &Path) -> Result<Disk> {
            let dev = dev_name(rdev);
            let link = self.sys.join("dev/block").join(&dev);
            let sys = link
                .canonicalize()
                .with_context(|| format!("finding block device {dev} in {}", link.display()))?;
            let name = file_name(&sys);
            let partition = sys.join("partition").exists();
            let size = read(&sys.join("size")).parse::<u64>().unwrap_or(0) * 512;
            let removable = read(&sys.join("removable")) == "1"
                || sys.to_string_lossy().contains("/usb")
                || name.starts_with("mmcblk");
            // The disk and its partitions.
            let mut members = vec![name.clone()];
            if let Ok(entries) = std::fs::read_dir(&sys) {
                for entry in entries.flatten() {
                    if entry.path().join("partition").exists() {
                        members.push(file_name(&entry.path()));
                    }
                }
            }
            let mut in_use = Vec::new();
            for member in &members {
                for mount in self.mounts_of(member) {
                    in_use.push(format!("{member} is mounted at {}", mount.point));
                }
                if self
                    .swaps
                    .lines()
                    .any(|l| l.split_whitespace().next() == Some(&format!("/dev/{member}")))
                {
                    in_use.push(format!("{member} is swap space"));
                }
                if let Ok(entries) = std::fs::read_dir(self.block(member).join("holders")) {
                    for holder in entries.flatten() {
                        in_use.push(format!(
                            "{member} is held by {}",
                            holder.file_name().to_string_lossy()
                        ));
                    }
                }
            }
            let root_dev = std::fs::metadata(root_of)
                .with_context(|| format!("looking at {}", root_of.display()))?
                .dev();
            let roots = self.root_disks(root_dev, root_of, zpool_devices);
            let holds_root = members.iter().any(|m| roots.contains(m));
            Ok(Disk {
                name,
                size,
                partition,
                removable,
                in_use,
                holds_root,
            })
        }

        fn block(&self, name: &str) -> PathBuf {
            self.sys.join("class/block").join(name)
        }

        /// The mounts of block device `name`: by device number, or by
        /// source (a btrfs mount has an anonymous number).
        fn mounts_of(&self, name: &str) -> Vec<&Mount> {
            let dev = read(&self.block(name).join("dev"));
            self.mounts
                .iter()
                .filter(|m| {
                    (!dev.is_empty() && m.dev == dev)
                        || self.kernel_name(&m.source).as_deref() == Some(name)
                })
                .collect()
        }

        /// `sda1` for `/dev/sda1`, `dm-0` for `/dev/mapper/root`.
        fn kernel_name(&self, source: &str) -> Option<String> {
            if !source.starts_with("/dev/") {
                return None;
            }
            let path = Path::new(source);
            let resolved = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            let name = file_name(&resolved);
            self.block(&name).exists().then_some(name)
        }

        /// The mount `path` is on: the one with the longest mount point
        /// above it, the last mounted of those.
        fn mount_of(&self, path: &Path) -> Option<&Mount> {
            let path = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
            brig_spec::mountinfo::mount_of(&self.mounts, &path)
        }

        /// Every block device this computer's root filesystem (the one
        /// `root_of` is on, device number `root_dev`) lives on: its device,
        /// its mount's source (btrfs gives `stat` an anonymous number, and
        /// not the one mountinfo shows), the other devices of a btrfs
        /// filesystem, a ZFS pool's (`zpool`), and beneath each, what it
        /// sits on: the disk of a partition, the slaves of a device mapper
        /// (LVM, dm-crypt) or an md RAID.
        pub fn root_disks(
            &self,
            root_dev: u64,
            root_of: &Path,
            zpool: fn(&str) -> Vec<String>,
        ) -> Vec<String> {
            let dev = dev_name(root_dev);
            let mut start: Vec<String> = Vec::new();
            if let Ok(path) = self.sys.join("dev/block").join(&dev).canonicalize() {
                start.push(file_name(&path));
            }
            let by_number = self.mounts.iter().filter(|m| m.dev == dev);
            for mount in by_number.chain(self.mount_of(root_of)) {
                if mount.fstype == "zfs" {
                    let pool = mount.source.split('/').next().unwrap_or_default();
                    start.extend(zpool(pool).iter().filter_map(|d| self.kernel_name(d)));
                }
                start.extend(self.kernel_name(&mount.source));
            }
            start.extend(self.btrfs_devices(&start));
            let mut found = Vec::new();
            let mut pending: Vec<PathBuf> = start.iter().map(|n| self.block(n)).collect();
            while let Some(path) = pending.pop() {
                let Ok(path) = path.canonicalize() else {
                    continue;
                };
                let name = file_name(&path);
                if found.contains(&name) {
                    continue;
                }
                found.push(name);
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

        /// Every device of the btrfs filesystems that have one of `names`.
        fn btrfs_devices(&self, names: &[String]) -> Vec<String> {
            let mut found = Vec::new();
            let Ok(filesystems) = std::fs::read_dir(self.sys.join("fs/btrfs")) else {
                return found;
            };
            for fs in filesystems.flatten() {
                let devices: Vec<String> = std::fs::read_dir(fs.path().join("devices"))
                    .map(|d| {
                        d.flatten()
                            .map(|e| e.file_name().to_string_lossy().into_owned())
                            .collect()
                    })
                    .unwrap_or_default();
                if devices.iter().any(|d| names.contains(d)) {
                    found.extend(devices);
                }
            }
            found
        }
    }

    /// The devices of ZFS pool `pool`, from `zpool list -vHP` (none
    /// without ZFS's tools: ZFS holds its devices open exclusively, so the
    /// `O_EXCL` open refuses them anyway).
    pub fn zpool_devices(pool: &str) -> Vec<String> {
        let Ok(out) = std::process::Command::new("zpool")
            .args(["list", "-vHP", pool])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|d| d.starts_with("/dev/"))
            .map(str::to_string)
            .collect()
    }

    pub fn dev_name(dev: u64) -> String {
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
    fn force_overrides_only_not_removable() {
        let fixed = Disk {
            removable: false,
            ..card()
        };
        assert_eq!(
            refusals(&fixed, 1 << 30, false),
            ["sdb is not a removable disk (not USB, not an SD card slot)"]
        );
        assert!(refusals(&fixed, 1 << 30, true).is_empty());
        let disk = Disk {
            in_use: vec!["sdb1 is mounted at /".into()],
            holds_root: true,
            ..fixed
        };
        let refused = [
            "sdb holds this computer's root filesystem",
            "sdb is in use: sdb1 is mounted at /",
        ];
        assert_eq!(refusals(&disk, 1 << 30, true), refused);
        assert_eq!(
            refusals(&disk, 1 << 30, false),
            [
                refused[0],
                refused[1],
                "sdb is not a removable disk (not USB, not an SD card slot)"
            ]
        );
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

    /// A /sys as Linux lays it out, for the disks named: `devices/<path>`
    /// with `dev`, `size`, `partition`, `slaves/`, and the links
    /// `class/block/<name>` and `dev/block/<maj:min>` to them.
    struct FakeSys {
        dir: tempfile::TempDir,
        next_minor: u64,
    }

    impl FakeSys {
        fn new() -> FakeSys {
            FakeSys {
                dir: tempfile::tempdir().unwrap(),
                next_minor: 1,
            }
        }

        /// `path` under devices/ (`sda/sda2` for a partition); returns its
        /// device number.
        fn device(&mut self, path: &str, slaves: &[&str]) -> u64 {
            let sys = self.dir.path();
            let dir = sys.join("devices").join(path);
            std::fs::create_dir_all(dir.join("holders")).unwrap();
            std::fs::create_dir_all(dir.join("slaves")).unwrap();
            let name = path.rsplit('/').next().unwrap();
            let rdev = libc::makedev(8, self.next_minor as u32);
            self.next_minor += 1;
            let dev = sysfs::dev_name(rdev);
            std::fs::write(dir.join("dev"), format!("{dev}\n")).unwrap();
            std::fs::write(dir.join("size"), "4194304\n").unwrap();
            std::fs::write(dir.join("removable"), "0\n").unwrap();
            if path.contains('/') {
                std::fs::write(dir.join("partition"), "1\n").unwrap();
            }
            for (place, link) in [("class/block", name), ("dev/block", dev.as_str())] {
                std::fs::create_dir_all(sys.join(place)).unwrap();
                std::os::unix::fs::symlink(&dir, sys.join(place).join(link)).unwrap();
            }
            for slave in slaves {
                let target = sys.join("class/block").join(slave).canonicalize().unwrap();
                std::os::unix::fs::symlink(&target, dir.join("slaves").join(slave)).unwrap();
                std::os::unix::fs::symlink(&dir, target.join("holders").join(name)).unwrap();
            }
            rdev
        }

        fn host(&self, mountinfo: &str) -> sysfs::Host {
            sysfs::Host {
                sys: self.dir.path().to_path_buf(),
                mounts: sysfs::mounts(mountinfo),
                swaps: String::new(),
            }
        }
    }

    fn no_zfs(_: &str) -> Vec<String> {
        Vec::new()
    }

    #[test]
    fn the_root_disk_is_found_beneath_lvm_on_dm_crypt() {
        let mut sys = FakeSys::new();
        sys.device("sda", &[]);
        sys.device("sda/sda1", &[]);
        sys.device("sda/sda2", &[]);
        sys.device("sdb", &[]);
        sys.device("dm-0", &["sda2"]); // dm-crypt
        let root = sys.device("dm-1", &["dm-0"]); // an LVM volume in it
        let host = sys.host("");
        let mut found = host.root_disks(root, Path::new("/nowhere"), no_zfs);
        found.sort();
        assert_eq!(found, ["dm-0", "dm-1", "sda", "sda2"]);
        // The disk shows the crypt volume that holds it, too.
        let dir = tempfile::tempdir().unwrap();
        let sda = host.disk(libc::makedev(8, 1), dir.path()).unwrap();
        assert_eq!(sda.in_use, ["sda2 is held by dm-0"]);
        assert!(!sda.partition);
    }

    #[test]
    fn the_root_disk_is_found_beneath_an_md_raid() {
        let mut sys = FakeSys::new();
        sys.device("sdb", &[]);
        sys.device("sdb/sdb1", &[]);
        sys.device("sdc", &[]);
        sys.device("sdc/sdc1", &[]);
        let root = sys.device("md0", &["sdb1", "sdc1"]);
        let mut found = sys.host("").root_disks(root, Path::new("/nowhere"), no_zfs);
        found.sort();
        assert_eq!(found, ["md0", "sdb", "sdb1", "sdc", "sdc1"]);
    }

    #[test]
    fn every_device_of_a_btrfs_or_zfs_root_is_the_root_disk() {
        let mut sys = FakeSys::new();
        sys.device("sdd", &[]);
        sys.device("sde", &[]);
        sys.device("sdf", &[]);
        sys.device("sdf/sdf1", &[]);
        sys.device("sdg", &[]);
        let devices = sys.dir.path().join("fs/btrfs/6f1c-uuid/devices");
        std::fs::create_dir_all(&devices).unwrap();
        for d in ["sdd", "sde"] {
            std::fs::write(devices.join(d), "").unwrap();
        }
        // btrfs: `stat` gives an anonymous device number that is not even
        // mountinfo's (0:46 against 0:45); the mount, found by its place,
        // names one device.
        let btrfs = "29 1 0:45 /@ / rw,relatime shared:1 - btrfs /dev/sdd rw,space_cache=v2\n";
        let host = sys.host(btrfs);
        let mut found = host.root_disks(libc::makedev(0, 46), Path::new("/"), no_zfs);
        found.sort();
        assert_eq!(found, ["sdd", "sde"]);
        // And it counts as mounted, though its number is anonymous.
        let dir = tempfile::tempdir().unwrap();
        let sde = host.disk(libc::makedev(8, 2), dir.path()).unwrap();
        assert!(sde.in_use.is_empty(), "{sde:?}");
        let sdd = host.disk(libc::makedev(8, 1), dir.path()).unwrap();
        assert_eq!(sdd.in_use, ["sdd is mounted at /"]);
        // ZFS: the pool's devices, as `zpool list -vHP` names them.
        let zfs = "30 1 0:50 / / rw - zfs rpool/ROOT/debian rw,xattr\n";
        fn pool(name: &str) -> Vec<String> {
            assert_eq!(name, "rpool");
            vec!["/dev/sdf1".into()]
        }
        let mut found = sys
            .host(zfs)
            .root_disks(libc::makedev(0, 50), Path::new("/nowhere"), pool);
        found.sort();
        assert_eq!(found, ["sdf", "sdf1"]);
    }
}
