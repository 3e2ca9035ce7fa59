//! Installing a bundle in the other slot (`brigctl os upgrade URL`), in a
//! child process of PID 1 that owns the client's connection. The bundle is
//! judged (signature, board, version) before anything is written; then the
//! other slot's boot entry is removed first, its partition and kernel
//! written and checked part by part, and its new entry written last: a
//! power cut at any point leaves the running version the default, or the
//! new one whole.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::Duration;

use brig_spec::boot_slots::{self, EntryName, TRIES};
use brig_spec::update_bundle::{self, BundleReader, Version};

use super::boot_partition::{self, Machine, Mounted};
use crate::boot::disk;
use crate::config::http;

use brig_spec::paths::{BOARD_FILE, UPDATE_KEY_FILE, VERSION_FILE};
/// The last update's outcome, for `brigctl os status` (state partition).
pub const LAST_RESULT: &str = "/var/lib/brig/update/last-result";
/// No byte for this long: the download is given up.
const READ_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a bundle comes from.
pub enum BundleSource {
    /// Fetched with HTTP GET, once per pass.
    Url(String),
    /// A file the client opened and passed (`brigctl os upgrade FILE`),
    /// read from its start once per pass.
    File { name: String, file: OwnedFd },
}

impl std::fmt::Display for BundleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BundleSource::Url(url) => f.write_str(url),
            BundleSource::File { name, .. } => write!(f, "the file {name}"),
        }
    }
}

/// Where a pass reads the bundle from; its length.
type Opened = (Box<dyn Read>, u64);

impl BundleSource {
    /// Checks the source before anything is read: a URL parses, a file is
    /// a regular file (a FIFO or a device could block this process forever
    /// or never end).
    fn check(&self) -> Result<(), String> {
        match self {
            BundleSource::Url(url) => http::Url::parse(url).map(|_| ()),
            BundleSource::File { name, file } => {
                let stat =
                    nix::sys::stat::fstat(file).map_err(|e| format!("reading {name}: {e}"))?;
                let kind = nix::sys::stat::SFlag::from_bits_truncate(stat.st_mode)
                    & nix::sys::stat::SFlag::S_IFMT;
                if kind != nix::sys::stat::SFlag::S_IFREG {
                    return Err(format!("{name} is not a regular file"));
                }
                // procfs and sysfs files pass as regular ones, and some
                // never end (/proc/kmsg).
                let fs = nix::sys::statfs::fstatfs(file)
                    .map_err(|e| format!("reading {name}: {e}"))?
                    .filesystem_type();
                if fs == nix::sys::statfs::PROC_SUPER_MAGIC || fs == nix::sys::statfs::SYSFS_MAGIC {
                    return Err(format!("{name} is a file of the kernel's, not a bundle"));
                }
                Ok(())
            }
        }
    }

    /// The bundle from its first byte, for one pass.
    fn open(&self) -> Result<Opened, String> {
        match self {
            BundleSource::Url(url) => {
                let download = http::download(&http::Url::parse(url)?, READ_TIMEOUT)?;
                let length = download.length;
                Ok((Box::new(download), length))
            }
            BundleSource::File { name, file } => {
                let file = File::from(
                    file.try_clone()
                        .map_err(|e| format!("reading {name}: {e}"))?,
                );
                let length = file
                    .metadata()
                    .map_err(|e| format!("reading {name}: {e}"))?
                    .len();
                Ok((Box::new(ReadAt { file, at: 0 }), length))
            }
        }
    }
}

/// What an install came to, when nothing went wrong.
pub enum Installed {
    /// Installed; what to tell the user.
    Done(String),
    /// (automatic checks) The bundle is not newer than the running version.
    NothingNewer(String),
}

/// A file read from the start with pread: the client shares the open
/// file, and its offset, which it could move under a plain read.
struct ReadAt {
    file: File,
    at: u64,
}

impl Read for ReadAt {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = std::os::unix::fs::FileExt::read_at(&self.file, buf, self.at)?;
        self.at += n as u64;
        Ok(n)
    }
}

/// The running version, as the image says it.
pub fn running_version() -> Result<Version, String> {
    let text =
        fs::read_to_string(VERSION_FILE).map_err(|e| format!("reading {VERSION_FILE}: {e}"))?;
    Version::parse(text.trim())
}

/// Installs the bundle from `source`; `say` hears each step. Returns what to
/// tell the user once it is done.
pub fn install(
    machine: Option<&Machine>,
    source: BundleSource,
    allow_downgrade: bool,
    automatic: bool,
    say: &mut dyn FnMut(&str),
) -> Result<Installed, String> {
    let key_text = fs::read_to_string(UPDATE_KEY_FILE).map_err(|e| {
        format!("this image has no update key ({UPDATE_KEY_FILE}: {e}): it takes no updates; flash a newer image")
    })?;
    let key = update_bundle::parse_public_key(&key_text)
        .map_err(|e| format!("{UPDATE_KEY_FILE}: {e}"))?;
    let board = fs::read_to_string(BOARD_FILE)
        .map_err(|e| format!("reading {BOARD_FILE}: {e}"))?
        .trim()
        .to_string();
    let running = running_version()?;
    let machine = machine.ok_or(
        "this machine did not boot from a system slot (BRIG_SYSTEM_A or _B): only disk images made with slots take updates; flash a current image",
    )?;
    source.check()?;
    // A first pass reads the whole bundle and checks every part, writing
    // nothing: a corrupted or tampered bundle costs the other slot nothing,
    // not even the version it holds to fall back on.
    let (reader, length) = source.open()?;
    let verb = match source {
        BundleSource::Url(_) => "downloading",
        BundleSource::File { .. } => "reading",
    };
    say(&format!(
        "{verb} {source} ({} MiB) to check it",
        length >> 20
    ));
    let mut bundle = open(reader, &key)?;
    let manifest = bundle.manifest().clone();
    if let Some(refusal) = manifest.refusal(&board, running, allow_downgrade) {
        if automatic && manifest.version <= running && manifest.board == board {
            return Ok(Installed::NothingNewer(format!(
                "{source} holds {}, and this machine runs {running}: nothing to install",
                manifest.version
            )));
        }
        return Err(format!("refused: {refusal}"));
    }
    {
        let boot = Mounted::mount(machine, false)?;
        let shares = manifest
            .parts
            .iter()
            .find(|p| update_bundle::shared_boot_file(&p.name).is_some());
        if let (Some(part), false) = (shares, boot.takes_shared_files()) {
            return Err(format!(
                "refused: the bundle carries boot files ({}) and this machine's boot loader takes none",
                part.name
            ));
        }
        let entries = boot.entries()?;
        // PID 1 refuses this too, when it could read the entries at boot.
        if let Some((_, done)) = entries.of(machine.slot).and_then(|e| e.name.counter) {
            return Err(format!(
                "refused: {running} is on trial (boot {done} of {TRIES}); the other slot holds the version it falls back to"
            ));
        }
        // A machine that follows a URL never installs again a version its
        // other slot holds as failed (or cancelled by the user): it would
        // loop through its tries forever. (One the user rolled back from,
        // still good, is the URL's to decide: docs/updates.md.)
        let other = entries
            .of(machine.slot.other())
            .filter(|e| e.name.version == manifest.version && e.name.is_bad());
        if let (true, Some(other)) = (automatic, other) {
            return Ok(Installed::NothingNewer(format!(
                "{source} holds {}, which slot {} holds already ({}): not installed again (brigctl os upgrade installs it by hand)",
                manifest.version,
                other.slot,
                other.state()
            )));
        }
    }
    while bundle
        .copy_next(|_| Ok(std::io::sink()), |_, _| {})
        .map_err(|e| format!("refused: {e}"))?
        .is_some()
    {}
    // The second pass writes; the source must give the same signed bundle.
    let mut bundle = open(source.open()?.0, &key)?;
    if *bundle.manifest() != manifest {
        return Err(format!(
            "{source} changed between the check and the install: nothing was written"
        ));
    }
    let target = machine.slot.other();
    say(&format!(
        "bundle {} for {} verified (signature, board, version); installing in slot {target}",
        manifest.version, manifest.board
    ));
    let partition = machine.partition(target.label())?;
    let device = format!("/dev/{}", partition.name);
    let capacity = fs::read_to_string(format!("/sys/class/block/{}/size", partition.name))
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map(|sectors| sectors * 512)
        .ok_or_else(|| format!("the size of {device}"))?;
    let image = manifest
        .parts
        .iter()
        .find(|p| p.name == "system.img")
        .ok_or("the bundle has no system.img")?;
    if image.size > capacity {
        return Err(format!(
            "the system image is {} MiB and slot {target} ({device}) holds {} MiB",
            image.size >> 20,
            capacity >> 20
        ));
    }
    let guid = disk::partition_guid(&machine.disk, partition.number)
        .ok_or_else(|| format!("reading the partition GUID of {device}"))?;

    let boot = Mounted::mount(machine, true)?;
    let entries = boot.entries()?;
    // Refused without the running version's entry: its kernel directory
    // could not be told from the others, and would go with them.
    let keep = entries
        .of(machine.slot)
        .map(|e| boot_slots::kernel_dir(machine.slot, e.name.version))
        .ok_or_else(|| {
            format!(
                "the boot partition names no entry for the running slot {}: nothing was written",
                machine.slot
            )
        })?;
    // First the other slot's entry goes: from here until its new entry is
    // written, nothing boots that slot.
    for entry in entries.0.iter().filter(|e| e.slot == target) {
        boot.remove_entry(entry)?;
    }
    // Every kernel directory but the running version's goes, the other
    // slot's and any a cut install left under another name; then the
    // removals are synced before anything is allocated, so that a cut
    // later cannot leave both the old files and the new.
    boot_partition::remove_kernels_but(&boot.root, &keep)?;
    // Shared files a cut install left half-written.
    boot_partition::remove_partials(&boot.root)?;
    // What fsck.fat salvaged at boot from cut installs (FSCK0000.REC, …)
    // is never anything Brig needs: every file here comes from a bundle.
    boot_partition::remove_salvaged(&boot.root)?;
    let dir = boot_slots::kernel_dir(target, manifest.version);
    let boot_needs: u64 = manifest
        .parts
        .iter()
        .filter(|p| p.name != "system.img")
        .map(|p| p.size)
        .sum();
    let free = nix::sys::statvfs::statvfs(&boot.root)
        .map(|s| s.blocks_available() * s.fragment_size())
        .map_err(|e| format!("the boot partition's free space: {e}"))?;
    if boot_needs + (1 << 20) > free {
        return Err(format!(
            "the boot partition has {} MiB free and the new kernel needs {} MiB; it holds {}",
            free >> 20,
            boot_needs.div_ceil(1 << 20),
            boot_partition::usage(&boot.root)
        ));
    }

    let mut written = Vec::new();
    // (part, percent last said): a line every 10% of the large parts.
    let mut shown = (String::new(), 0u64);
    let mut progress = |part: &update_bundle::Part, done: u64| {
        if shown.0 != part.name {
            shown = (part.name.clone(), 0);
        }
        let percent = done * 100 / part.size.max(1);
        if part.size > 8 << 20 && percent >= shown.1 + 10 {
            shown.1 = percent - percent % 10;
            say(&format!(
                "{}: {}% of {} MiB",
                part.name,
                shown.1,
                part.size >> 20
            ));
        }
    };
    loop {
        let copied = bundle
            .copy_next(
                |part| {
                    if part.name == "system.img" {
                        // O_EXCL: refused if anything has the slot mounted.
                        OpenOptions::new()
                            .write(true)
                            .custom_flags(libc::O_EXCL)
                            .open(&device)
                    } else {
                        let path = match update_bundle::shared_boot_file(&part.name) {
                            Some(shared) => boot.root.join(shared),
                            None => boot.root.join(&dir).join(&part.name),
                        };
                        if let Some(parent) = path.parent() {
                            fs::create_dir_all(parent)?;
                        }
                        File::create(boot_partition::partial_name(&path))
                    }
                },
                &mut progress,
            )
            .map_err(|e| format!("{e}; slot {target} is left unbootable, {running} stays"))?;
        let Some((part, file)) = copied else { break };
        file.sync_all()
            .map_err(|e| format!("writing {}: {e}", part.name))?;
        written.push(part.name);
    }
    // Every part arrived whole: the kernel files get their names.
    let own = |n: &&String| *n != "system.img" && update_bundle::shared_boot_file(n).is_none();
    for name in written.iter().filter(own) {
        let path = boot.root.join(&dir).join(name);
        fs::rename(boot_partition::partial_name(&path), &path)
            .map_err(|e| format!("renaming {}: {e}", path.display()))?;
        boot_partition::sync_dir(path.parent().unwrap_or(&boot.root))?;
    }
    // Then the files both slots share (the Pi's firmware, device trees,
    // U-Boot), each where it differs: one rename each, so a cut leaves
    // every file whole, old or new.
    let shared: Vec<&str> = written
        .iter()
        .filter_map(|n| update_bundle::shared_boot_file(n))
        .collect();
    if !shared.is_empty() {
        let replaced = boot_partition::replace_shared(&boot.root, &shared)?;
        say(&match replaced.as_slice() {
            [] => format!("boot files: all {} as before", shared.len()),
            names => format!(
                "boot files: {} replaced (shared by both slots); the other {} as before",
                names.join(", "),
                shared.len() - names.len()
            ),
        });
    }
    let entry = EntryName {
        generation: entries.next_generation(),
        version: manifest.version,
        counter: Some((TRIES, 0)),
    };
    let cmdline = format!("{} brig.system=PARTUUID={guid}", manifest.cmdline);
    boot.add_entry(&board, target, entry, &cmdline)
        .map_err(|e| match shared.is_empty() {
            true => e,
            false => format!("{e}; the new boot files are in place, and {running} boots with them"),
        })?;
    drop(boot);
    Ok(Installed::Done(format!(
        "installed {} in slot {target}; it starts at the next boot (brigctl reboot) and has {TRIES} tries to come up healthy, else {running} boots again",
        manifest.version
    )))
}

fn open(
    reader: Box<dyn Read>,
    key: &update_bundle::VerifyingKey,
) -> Result<BundleReader<std::io::BufReader<Box<dyn Read>>>, String> {
    BundleReader::open(std::io::BufReader::with_capacity(1 << 16, reader), key)
        .map_err(|e| format!("refused: {e}"))
}

/// A rollback the boot loader made by itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rollback {
    /// How the last result begins if it was that version's install.
    pub installed: String,
    pub outcome: String,
}

/// A version that never reached PID 1 (its kernel panicked) could not
/// record how its trial ended: the last result still says it was
/// installed. Once the state partition is mounted, it says it was rolled
/// back; any later result is left alone.
pub fn record_rollback(rollback: &Rollback) {
    let last = fs::read_to_string(LAST_RESULT).unwrap_or_default();
    if last.starts_with(&rollback.installed) {
        record(&rollback.outcome);
    }
}

/// Keeps the outcome for `brigctl os status`, when there is a state
/// partition to keep it on.
pub fn record(outcome: &str) {
    let path = Path::new(LAST_RESULT);
    if !Path::new("/var/lib/brig").is_dir() {
        return;
    }
    let _ = fs::create_dir_all(path.parent().unwrap_or(Path::new("/")));
    let partial = boot_partition::partial_name(path);
    let written = File::create(&partial)
        .and_then(|mut f| f.write_all(outcome.as_bytes()).and_then(|()| f.sync_all()))
        .and_then(|()| fs::rename(&partial, path));
    if written.is_ok() {
        let _ = boot_partition::sync_dir(path.parent().unwrap_or(Path::new("/")));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_source(path: &Path) -> BundleSource {
        let file = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap();
        BundleSource::File {
            name: path.display().to_string(),
            file: file.into(),
        }
    }

    #[test]
    fn a_passed_fifo_or_kernel_file_is_refused_before_it_is_read() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("bundle");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = file_source(&fifo).check().unwrap_err();
        assert!(e.ends_with("is not a regular file"), "{e}");
        // Regular by its mode, but the kernel's: some such files never end.
        let e = file_source(Path::new("/proc/self/status"))
            .check()
            .unwrap_err();
        assert!(
            e.ends_with("is a file of the kernel's, not a bundle"),
            "{e}"
        );
        let real = dir.path().join("real.bundle");
        fs::write(&real, b"BRIGUPD1").unwrap();
        file_source(&real).check().unwrap();
        let (mut reader, length) = file_source(&real).open().unwrap();
        let mut read = Vec::new();
        reader.read_to_end(&mut read).unwrap();
        assert_eq!((length, read.as_slice()), (8, &b"BRIGUPD1"[..]));
    }
}
