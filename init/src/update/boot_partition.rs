//! The boot partition as the update code uses it: found beside the system
//! slot PID 1 booted, mounted for one job at a mount point of its own, its
//! entries read, renamed and written with each change synced before the
//! next (FAT has no journal: order is what keeps a power cut harmless).
//!
//! Two boot loaders keep the entries: systemd-boot (the PC) as files in
//! `loader/entries`, U-Boot (the Raspberry Pi) as variables in its
//! environment file. Both are read as the same `Entries`, so the update
//! logic does not know which it drives.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use brig_spec::boot_slots::{self, EntryName, Slot, ENTRIES_DIR};
use brig_spec::uboot::{self, SlotBoot, Slots};
use nix::mount::{MntFlags, MsFlags};

use super::entries::{Entries, Entry, Rename};
use crate::boot::disk;

/// The boot partition's label (its GPT name and FAT label).
pub const BOOT_LABEL: &str = "BRIG_BOOT";

/// What this boot knows about its slots: which it runs and on what disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Machine {
    pub slot: Slot,
    /// `vda`, `nvme0n1`, `mmcblk0`.
    pub disk: String,
}

impl Machine {
    /// From the system partition PID 1 mounted: a slot's, or none (a system
    /// disk, an image from before slots).
    pub fn of(partition: &disk::BlockPartition) -> Option<Machine> {
        Some(Machine {
            slot: Slot::from_label(partition.partname.as_deref()?)?,
            disk: partition.disk.clone(),
        })
    }

    /// The boot partition's device, `/dev/vda1`.
    pub fn boot_device(&self) -> Result<String, String> {
        Ok(format!("/dev/{}", self.partition(BOOT_LABEL)?.name))
    }

    /// The partition named `label` on this machine's disk.
    pub fn partition(&self, label: &str) -> Result<disk::BlockPartition, String> {
        disk::partitions()
            .into_iter()
            .find(|p| p.disk == self.disk && p.partname.as_deref() == Some(label))
            .ok_or_else(|| format!("/dev/{} has no partition named {label}", self.disk))
    }
}

/// The boot loader whose entries the boot partition holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Loader {
    SystemdBoot,
    /// The Pi: `boot.scr` and `uboot.env` (docs/updates.md).
    UBoot,
}

/// The boot partition, mounted until dropped.
pub struct Mounted {
    pub root: PathBuf,
    loader: Loader,
}

impl Mounted {
    pub fn mount(machine: &Machine, writable: bool) -> Result<Mounted, String> {
        let partition = machine.partition(BOOT_LABEL)?;
        Mounted::mount_device(&format!("/dev/{}", partition.name), writable)
    }

    /// The boot partition at `device` (a partition, or a loop device over
    /// one not yet in any table: `brigctl install`).
    pub fn mount_device(device: &str, writable: bool) -> Result<Mounted, String> {
        // One mount point per process: a status read may run beside an update.
        let root = PathBuf::from(format!("/run/brig/update/boot-{}", std::process::id()));
        fs::create_dir_all(&root).map_err(|e| format!("creating {}: {e}", root.display()))?;
        let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
        if !writable {
            flags |= MsFlags::MS_RDONLY;
        }
        nix::mount::mount(Some(device), &root, Some("vfat"), flags, None::<&str>)
            .map_err(|e| format!("mounting the boot partition {device}: {e}"))?;
        let loader = if root.join(uboot::SCRIPT_FILE).is_file() {
            Loader::UBoot
        } else {
            Loader::SystemdBoot
        };
        Ok(Mounted { root, loader })
    }

    /// Whether this boot loader's partition takes a bundle's shared boot
    /// files: the Pi's (firmware, device trees, U-Boot); systemd-boot's
    /// binaries are not carried.
    pub fn takes_shared_files(&self) -> bool {
        self.loader == Loader::UBoot
    }

    fn entries_dir(&self) -> PathBuf {
        self.root.join(ENTRIES_DIR)
    }

    pub fn entries(&self) -> Result<Entries, String> {
        if self.loader == Loader::UBoot {
            let slots = self.read_uboot_env()?;
            let entries = [Slot::A, Slot::B]
                .into_iter()
                .filter_map(|slot| {
                    slots.get(slot).map(|boot| Entry {
                        file: boot.name.file_name(),
                        name: boot.name,
                        slot,
                    })
                })
                .collect();
            return Ok(Entries(entries));
        }
        let dir = self.entries_dir();
        let listing = fs::read_dir(&dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        let mut entries = Vec::new();
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            // Entries are a few hundred bytes; anything larger is not ours.
            let Ok(text) = read_small(&item.path(), 64 * 1024) else {
                continue;
            };
            if let Some(entry) = Entry::read(&name, &text) {
                entries.push(entry);
            }
        }
        Ok(Entries(entries))
    }

    pub fn rename(&self, rename: &Rename) -> Result<(), String> {
        if self.loader == Loader::UBoot {
            let mut slots = self.read_uboot_env()?;
            let to = EntryName::parse(&rename.to)
                .ok_or_else(|| format!("{} names no boot entry", rename.to))?;
            let slot = [Slot::A, Slot::B]
                .into_iter()
                .find(|s| {
                    slots
                        .get(*s)
                        .is_some_and(|b| b.name.file_name() == rename.from)
                })
                .ok_or_else(|| format!("U-Boot's environment has no entry {}", rename.from))?;
            let cmdline = slots
                .get(slot)
                .map(|b| b.cmdline.clone())
                .unwrap_or_default();
            slots.set(slot, Some(SlotBoot { name: to, cmdline }));
            return self.write_uboot_env(&slots);
        }
        let dir = self.entries_dir();
        fs::rename(dir.join(&rename.from), dir.join(&rename.to))
            .map_err(|e| format!("renaming {} to {}: {e}", rename.from, rename.to))?;
        sync_dir(&dir)
    }

    pub fn remove_entry(&self, entry: &Entry) -> Result<(), String> {
        if self.loader == Loader::UBoot {
            let mut slots = self.read_uboot_env()?;
            slots.set(entry.slot, None);
            return self.write_uboot_env(&slots);
        }
        let dir = self.entries_dir();
        fs::remove_file(dir.join(&entry.file))
            .map_err(|e| format!("removing the boot entry {}: {e}", entry.file))?;
        sync_dir(&dir)
    }

    /// A new entry booting `slot`'s kernel directory for `name.version`.
    pub fn add_entry(
        &self,
        board: &str,
        slot: Slot,
        name: EntryName,
        cmdline: &str,
    ) -> Result<(), String> {
        if self.loader == Loader::UBoot {
            return self.write_uboot_slot(self.read_uboot_env()?, slot, name, cmdline);
        }
        self.write_file(
            &format!("{ENTRIES_DIR}/{}", name.file_name()),
            boot_slots::entry_text(board, name.version, slot, cmdline).as_bytes(),
        )
    }

    /// The kernel command line `entry` boots with.
    pub fn cmdline(&self, entry: &Entry) -> Result<String, String> {
        if self.loader == Loader::UBoot {
            return self
                .read_uboot_env()?
                .get(entry.slot)
                .map(|boot| boot.cmdline.clone())
                .ok_or_else(|| {
                    format!("U-Boot's environment has no entry for slot {}", entry.slot)
                });
        }
        let path = self.entries_dir().join(&entry.file);
        let text =
            read_small(&path, 64 * 1024).map_err(|e| format!("reading {}: {e}", path.display()))?;
        // systemd-boot joins every `options` line.
        let options: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("options"))
            .filter(|rest| rest.starts_with([' ', '\t']))
            .map(str::trim)
            .collect();
        if options.is_empty() {
            return Err(format!("the boot entry {} has no options line", entry.file));
        }
        Ok(options.join(" "))
    }

    /// Makes `name` (booting `slot`) the only entry: written first, then
    /// every other removed; for U-Boot, one environment with that slot only.
    pub fn keep_only(
        &self,
        board: &str,
        slot: Slot,
        name: EntryName,
        cmdline: &str,
    ) -> Result<(), String> {
        if self.loader == Loader::UBoot {
            return self.write_uboot_slot(Slots::default(), slot, name, cmdline);
        }
        let file = name.file_name();
        self.add_entry(board, slot, name, cmdline)?;
        for entry in self.entries()?.0.iter().filter(|e| e.file != file) {
            self.remove_entry(entry)?;
        }
        Ok(())
    }

    /// The slots in U-Boot's environment, or in its backup when a cut
    /// write left the environment damaged (U-Boot's script does the same).
    fn read_uboot_env(&self) -> Result<Slots, String> {
        let mut problems = Vec::new();
        for name in [uboot::ENV_FILE, uboot::ENV_BACKUP] {
            let path = self.root.join(name);
            let read = read_bytes(&path, uboot::ENV_SIZE as u64 + 1)
                .map_err(|e| e.to_string())
                .and_then(|data| uboot::decode_env(&data));
            match read.map(|vars| Slots::from_env(&vars)) {
                // As the boot script: an environment naming no version
                // (a `saveenv` at U-Boot's prompt) is not Brig's.
                Ok(Slots { a: None, b: None }) => {
                    problems.push(format!("{name}: it names no version"))
                }
                Ok(slots) => return Ok(slots),
                Err(e) => problems.push(format!("{name}: {e}")),
            }
        }
        Err(format!(
            "reading U-Boot's environment on the boot partition: {}",
            problems.join("; ")
        ))
    }

    /// `slots` with `slot` booting `name`, written as U-Boot's environment.
    fn write_uboot_slot(
        &self,
        mut slots: Slots,
        slot: Slot,
        name: EntryName,
        cmdline: &str,
    ) -> Result<(), String> {
        let cmdline = cmdline.to_string();
        slots.set(slot, Some(SlotBoot { name, cmdline }));
        self.write_uboot_env(&slots)
    }

    /// The backup first, then the environment: a cut between the two
    /// leaves U-Boot the old state, whole.
    fn write_uboot_env(&self, slots: &Slots) -> Result<(), String> {
        let data = uboot::encode_env(&slots.to_env())?;
        self.write_file(uboot::ENV_BACKUP, &data)?;
        self.write_file(uboot::ENV_FILE, &data)
    }

    /// Writes `data` at `relative` under a temporary name, syncs it, then
    /// gives it its name: a cut leaves the old state or the new, and a
    /// temporary name no boot loader reads.
    pub fn write_file(&self, relative: &str, data: &[u8]) -> Result<(), String> {
        let path = self.root.join(relative);
        let dir = path.parent().unwrap_or(&self.root).to_path_buf();
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let partial = partial_name(&path);
        let mut file =
            File::create(&partial).map_err(|e| format!("creating {}: {e}", partial.display()))?;
        file.write_all(data)
            .and_then(|()| file.sync_all())
            .map_err(|e| format!("writing {}: {e}", partial.display()))?;
        fs::rename(&partial, &path).map_err(|e| format!("renaming {}: {e}", path.display()))?;
        sync_dir(&dir)
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // syncfs through umount: FAT's metadata reaches the disk here.
        let _ = nix::mount::umount2(&self.root, MntFlags::empty());
        let _ = fs::remove_dir(&self.root);
    }
}

/// Removes every kernel directory under `brig/` but `keep` (`brig/a-0.1.0`),
/// and syncs the removals before anything else is written.
pub fn remove_kernels_but(root: &Path, keep: &str) -> Result<(), String> {
    let kernels = root.join("brig");
    let Ok(listing) = fs::read_dir(&kernels) else {
        return Ok(());
    };
    for item in listing.flatten() {
        let relative = format!("brig/{}", item.file_name().to_string_lossy());
        if relative == keep {
            continue;
        }
        let path = item.path();
        let removed = match item.file_type() {
            Ok(kind) if kind.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        removed.map_err(|e| format!("removing {relative} from the boot partition: {e}"))?;
    }
    sync_dir(&kernels)
}

/// Removes the partial files a cut install left among the shared files
/// (`.start.elf.partial`, `overlays/.x.dtbo.partial`): only those of
/// names a bundle may carry, so a user's own files stay.
pub fn remove_partials(root: &Path) -> Result<(), String> {
    for dir in [root.to_path_buf(), root.join("overlays")] {
        let mut removed = false;
        for item in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(file) = name
                .strip_prefix('.')
                .and_then(|n| n.strip_suffix(".partial"))
            else {
                continue;
            };
            if item.file_type().is_ok_and(|t| t.is_file())
                && brig_spec::update_bundle::may_share(file)
            {
                fs::remove_file(item.path())
                    .map_err(|e| format!("removing {}: {e}", item.path().display()))?;
                removed = true;
            }
        }
        if removed {
            sync_dir(&dir)?;
        }
    }
    Ok(())
}

/// Gives each shared file written as a partial (`files`, paths under
/// `root`) its name where its content differs from the file there; drops
/// the partial where it is the same. Returns the files replaced.
///
/// The order keeps a cut's harm small: device trees and the rest first,
/// then U-Boot before its script (a new U-Boot runs an old script; an old
/// one might not run a new script), and last the GPU firmware's halves
/// (`start*.elf` and its `fixup*.dat` must match), renamed one right
/// after the other with one sync for them all.
pub fn replace_shared(root: &Path, files: &[&str]) -> Result<Vec<String>, String> {
    let mut changed = Vec::new();
    for file in files {
        let path = root.join(file);
        let partial = partial_name(&path);
        if same_content(&partial, &path)? {
            fs::remove_file(&partial)
                .map_err(|e| format!("removing {}: {e}", partial.display()))?;
        } else {
            changed.push(file.to_string());
        }
    }
    changed.sort_by_key(|f| (replace_rank(f), f.clone()));
    for (i, file) in changed.iter().enumerate() {
        let path = root.join(file);
        fs::rename(partial_name(&path), &path)
            .map_err(|e| format!("renaming {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(root).to_path_buf();
        let firmware_follows = replace_rank(file) == 3
            && changed
                .get(i + 1)
                .is_some_and(|next| replace_rank(next) == 3);
        if !firmware_follows {
            sync_dir(&dir)?;
        }
    }
    Ok(changed)
}

/// Where a shared file comes in `replace_shared`'s order.
fn replace_rank(file: &str) -> u8 {
    let name = file.to_ascii_lowercase();
    if name == uboot::UBOOT_FILE {
        1
    } else if name == uboot::SCRIPT_FILE {
        2
    } else if (name.starts_with("start") && name.ends_with(".elf"))
        || (name.starts_with("fixup") && name.ends_with(".dat"))
    {
        3
    } else {
        0
    }
}

/// Whether `a` and `b` hold the same bytes (false when `b` is missing).
fn same_content(a: &Path, b: &Path) -> Result<bool, String> {
    use std::io::Read;
    let Ok(mut second) = File::open(b) else {
        return Ok(false);
    };
    let mut first = File::open(a).map_err(|e| format!("reading {}: {e}", a.display()))?;
    let (mut x, mut y) = (vec![0u8; 1 << 16], vec![0u8; 1 << 16]);
    loop {
        let n =
            read_full(&mut first, &mut x).map_err(|e| format!("reading {}: {e}", a.display()))?;
        let m =
            read_full(&mut second, &mut y).map_err(|e| format!("reading {}: {e}", b.display()))?;
        if n != m || x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
    fn read_full(file: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
        let mut filled = 0;
        while filled < buf.len() {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        Ok(filled)
    }
}

/// Removes what fsck.fat salvaged into the root (`FSCK0000.REC`, …): the
/// pieces of files a power cut left owned by no directory.
pub fn remove_salvaged(root: &Path) -> Result<(), String> {
    let mut removed = false;
    for item in fs::read_dir(root).into_iter().flatten().flatten() {
        let name = item.file_name().to_string_lossy().to_ascii_uppercase();
        let salvaged = name.len() == 12
            && name.starts_with("FSCK")
            && name.ends_with(".REC")
            && name[4..8].bytes().all(|b| b.is_ascii_digit());
        if salvaged {
            fs::remove_file(item.path())
                .map_err(|e| format!("removing {name} from the boot partition: {e}"))?;
            removed = true;
        }
    }
    if removed {
        sync_dir(root)?;
    }
    Ok(())
}

/// What takes the room on the boot partition: each directory two levels
/// down and each file above that, with its size in KiB, for a message.
pub fn usage(root: &Path) -> String {
    fn bytes(path: &Path) -> u64 {
        match fs::symlink_metadata(path) {
            Ok(m) if m.is_dir() => fs::read_dir(path)
                .map(|l| l.flatten().map(|e| bytes(&e.path())).sum())
                .unwrap_or(0),
            Ok(m) => m.len(),
            Err(_) => 0,
        }
    }
    let mut parts = Vec::new();
    let mut walk = vec![(root.to_path_buf(), 0)];
    while let Some((dir, depth)) = walk.pop() {
        for item in fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = item.path();
            if path.is_dir() && depth < 1 {
                walk.push((path, depth + 1));
                continue;
            }
            let name = path
                .strip_prefix(root)
                .unwrap_or(&path)
                .display()
                .to_string();
            parts.push(format!("{name} {} KiB", bytes(&path) >> 10));
        }
    }
    parts.sort();
    parts.join(", ")
}

/// `vmlinuz` → `.vmlinuz.partial`, in the same directory.
pub fn partial_name(path: &Path) -> PathBuf {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    path.with_file_name(format!(".{name}.partial"))
}

pub fn sync_dir(dir: &Path) -> Result<(), String> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| format!("syncing {}: {e}", dir.display()))
}

fn read_bytes(path: &Path, limit: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut data = Vec::new();
    File::open(path)?.take(limit).read_to_end(&mut data)?;
    Ok(data)
}

fn read_small(path: &Path, limit: u64) -> std::io::Result<String> {
    use std::io::Read;
    let mut text = String::new();
    File::open(path)?.take(limit).read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_what_fsck_fat_salvaged_is_removed() {
        let root = tempfile::tempdir().unwrap();
        for name in [
            "FSCK0000.REC",
            "fsck0012.rec",
            "FSCK00A1.REC",
            "FSCK0000.REC.txt",
        ] {
            fs::write(root.path().join(name), b"x").unwrap();
        }
        remove_salvaged(root.path()).unwrap();
        let mut left: Vec<String> = fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, ["FSCK0000.REC.txt", "FSCK00A1.REC"]);
    }

    /// The Pi's entries, kept in U-Boot's environment: read, renamed,
    /// removed and added as the update logic does, and read from the
    /// backup when `uboot.env` is damaged or names no version.
    #[test]
    fn u_boots_environment_holds_the_entries() {
        use brig_spec::boot_slots::EntryName;
        use brig_spec::update_bundle::Version;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("boot");
        fs::create_dir(&root).unwrap();
        let boot = Mounted {
            root: root.clone(),
            loader: Loader::UBoot,
        };
        let name = |generation, version: &str, counter| EntryName {
            generation,
            version: Version::parse(version).unwrap(),
            counter,
        };
        let first = Slots {
            a: Some(SlotBoot {
                name: name(1, "0.1.0", None),
                cmdline: "console=ttyS1,115200 brig.system=PARTUUID=A".into(),
            }),
            b: None,
        };
        boot.write_uboot_env(&first).unwrap();
        boot.add_entry("rpi3", Slot::B, name(2, "0.2.0", Some((3, 0))), "b-line")
            .unwrap();
        let entries = boot.entries().unwrap();
        let b = entries.of(Slot::B).unwrap();
        assert_eq!(b.file, "brig-2-0.2.0+3.conf");
        // U-Boot's script counts a try, as setexpr writes it.
        let mut vars = uboot::decode_env(&fs::read(root.join(uboot::ENV_FILE)).unwrap()).unwrap();
        vars.insert("brig_b_left".into(), "2".into());
        vars.insert("brig_b_done".into(), "1".into());
        fs::write(
            root.join(uboot::ENV_FILE),
            uboot::encode_env(&vars).unwrap(),
        )
        .unwrap();
        let entries = boot.entries().unwrap();
        let blessing = entries.blessing(Slot::B).unwrap();
        assert_eq!(blessing.from, "brig-2-0.2.0+2-1.conf");
        boot.rename(&blessing).unwrap();
        let slots = boot.read_uboot_env().unwrap();
        let b = slots.b.clone().unwrap();
        assert_eq!((b.name.counter, b.cmdline.as_str()), (None, "b-line"));
        assert_eq!(slots.a, first.a, "slot A untouched");
        // The backup holds the same: a damaged uboot.env loses nothing.
        let mut torn = fs::read(root.join(uboot::ENV_FILE)).unwrap();
        torn[200] ^= 0xff;
        fs::write(root.join(uboot::ENV_FILE), &torn).unwrap();
        assert_eq!(boot.read_uboot_env().unwrap(), slots);
        // Nor one that names no version (a `saveenv` at the prompt).
        let plain = uboot::encode_env(&Slots::default().to_env()).unwrap();
        fs::write(root.join(uboot::ENV_FILE), plain).unwrap();
        assert_eq!(boot.read_uboot_env().unwrap(), slots);
        let entry = boot.entries().unwrap().of(Slot::B).unwrap().clone();
        boot.remove_entry(&entry).unwrap();
        assert_eq!(boot.read_uboot_env().unwrap(), first);
        // Both gone: said, with each file's reason.
        fs::remove_file(root.join(uboot::ENV_BACKUP)).unwrap();
        fs::write(root.join(uboot::ENV_FILE), b"short").unwrap();
        let e = boot.entries().unwrap_err();
        assert!(e.contains("uboot.env: it is 5 bytes"), "{e}");
        assert!(e.contains("uboot.env.backup: No such file"), "{e}");
    }

    #[test]
    fn shared_files_are_replaced_only_where_they_differ_and_partials_are_swept() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        fs::create_dir_all(root.join("overlays")).unwrap();
        fs::create_dir_all(root.join("brig/a-0.1.0")).unwrap();
        fs::write(root.join("start.elf"), b"old firmware").unwrap();
        fs::write(root.join("overlays/x.dtbo"), b"same").unwrap();
        for (file, data) in [
            ("start.elf", &b"new firmware"[..]),
            ("overlays/x.dtbo", b"same"),
            ("u-boot.bin", b"new loader"),
        ] {
            fs::write(partial_name(&root.join(file)), data).unwrap();
        }
        fs::write(partial_name(&root.join("boot.scr")), b"new script").unwrap();
        fs::write(partial_name(&root.join("fixup.dat")), b"new fixup").unwrap();
        let replaced = replace_shared(
            root,
            &[
                "start.elf",
                "overlays/x.dtbo",
                "u-boot.bin",
                "boot.scr",
                "fixup.dat",
            ],
        )
        .unwrap();
        // U-Boot before its script, the firmware's halves last, together.
        assert_eq!(
            replaced,
            ["u-boot.bin", "boot.scr", "fixup.dat", "start.elf"]
        );
        assert_eq!(fs::read(root.join("start.elf")).unwrap(), b"new firmware");
        assert_eq!(fs::read(root.join("overlays/x.dtbo")).unwrap(), b"same");
        assert!(!partial_name(&root.join("overlays/x.dtbo")).exists());
        // A cut install's partials go; the slots' and the user's stay.
        let cut = partial_name(&root.join("overlays/y.dtbo"));
        fs::write(&cut, b"half").unwrap();
        let kernel = partial_name(&root.join("brig/a-0.1.0/vmlinuz"));
        fs::write(&kernel, b"x").unwrap();
        let users = partial_name(&root.join("notes.txt"));
        fs::write(&users, b"mine").unwrap();
        remove_partials(root).unwrap();
        assert!(!cut.exists());
        assert!(kernel.exists() && users.exists());
        assert!(root.join("start.elf").exists());
    }

    #[test]
    fn an_installed_disk_keeps_only_the_running_entry_with_its_new_line() {
        use brig_spec::boot_slots::EntryName;
        use brig_spec::update_bundle::Version;
        let name = |generation, version: &str, counter| EntryName {
            generation,
            version: Version::parse(version).unwrap(),
            counter,
        };
        let dir = tempfile::tempdir().unwrap();
        for loader in [Loader::SystemdBoot, Loader::UBoot] {
            let root = dir.path().join(format!("{loader:?}"));
            fs::create_dir(&root).unwrap();
            let boot = Mounted {
                root: root.clone(),
                loader,
            };
            // (U-Boot's environment is Brig's once it names a version.)
            let a = SlotBoot {
                name: name(1, "0.1.0", None),
                cmdline: "old a".into(),
            };
            match loader {
                Loader::UBoot => boot.write_uboot_env(&Slots {
                    a: Some(a),
                    b: None,
                }),
                Loader::SystemdBoot => boot.add_entry("b", Slot::A, a.name, &a.cmdline),
            }
            .unwrap();
            boot.add_entry("b", Slot::B, name(2, "0.2.0", Some((3, 0))), "old b")
                .unwrap();
            if loader == Loader::SystemdBoot {
                // A second `options` line, tab-separated: systemd-boot joins them.
                let file = root.join(ENTRIES_DIR).join("brig-2-0.2.0+3.conf");
                let text = fs::read_to_string(&file).unwrap() + "options\tquiet\n";
                fs::write(&file, text).unwrap();
            }
            let entries = boot.entries().unwrap();
            let running = entries.of(Slot::B).unwrap();
            let expected = match loader {
                Loader::SystemdBoot => "old b quiet",
                Loader::UBoot => "old b",
            };
            assert_eq!(boot.cmdline(running).unwrap(), expected, "{loader:?}");
            boot.keep_only("b", Slot::B, name(1, "0.2.0", None), "new b")
                .unwrap();
            let left = boot.entries().unwrap();
            let files: Vec<&str> = left.0.iter().map(|e| e.file.as_str()).collect();
            assert_eq!(files, ["brig-1-0.2.0.conf"], "{loader:?}");
            assert_eq!(boot.cmdline(&left.0[0]).unwrap(), "new b", "{loader:?}");
        }
    }

    #[test]
    fn usage_names_what_takes_the_room() {
        let root = tempfile::tempdir().unwrap();
        let kernels = root.path().join("brig/b-0.2.0");
        fs::create_dir_all(&kernels).unwrap();
        fs::write(kernels.join(".vmlinuz.partial"), vec![0u8; 5 << 10]).unwrap();
        fs::write(kernels.join("initramfs.img"), vec![0u8; 3 << 10]).unwrap();
        fs::create_dir_all(root.path().join("loader/entries")).unwrap();
        fs::write(root.path().join("loader/loader.conf"), b"timeout 0\n").unwrap();
        assert_eq!(
            usage(root.path()),
            "brig/b-0.2.0 8 KiB, loader/entries 0 KiB, loader/loader.conf 0 KiB"
        );
    }
}
