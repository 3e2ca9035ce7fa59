//! `brigctl install --device /dev/sdX`: the running Brig, booted from a
//! disk image on a USB stick, copies itself onto another disk of the
//! machine, as `ros install` did (docs/updates.md, "Installing to a disk").
//! In a child process of PID 1, like an update.
//!
//! The new disk gets the stick's layout (boot partition, both system
//! slots) with partition GUIDs of its own, a copy of the boot partition
//! and of the running slot, each read back and compared, and the running
//! version's boot entry naming its new slot. The state partition is left
//! to the new disk's first boot, as on a freshly flashed image. Deciding
//! (the table, the command line) is pure and unit-tested; the device work
//! is tested end to end in QEMU.

use std::fs::{self, File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};

use brig_spec::boot_slots::{self, EntryName};
use brig_spec::gpt::{self, Guid, Table, SECTOR};
use brig_spec::paths::BOARD_FILE;

use super::boot_partition::{self, Machine, Mounted, BOOT_LABEL};
use super::install::running_version;
use crate::boot::disk;

/// The partitions an install copies the geometry of, by name.
const COPIED: [&str; 3] = [BOOT_LABEL, "BRIG_SYSTEM_A", "BRIG_SYSTEM_B"];
/// What a copy reads and writes at a time.
const CHUNK: usize = 1 << 20;

/// `/dev/vdb` → `vdb`: a device of the machine's own /dev, by a plain name.
pub fn disk_name(device: &str) -> Result<&str, String> {
    let name = device.strip_prefix("/dev/").unwrap_or(device);
    let plain = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !plain {
        return Err(format!(
            "{device}: name a disk of this machine, as /dev/sdb or /dev/nvme0n1"
        ));
    }
    Ok(name)
}

/// The new disk's table: the boot partition and both slots where `source`
/// has them (same numbers, same sectors), each with a new unique GUID, and
/// room after them for a state partition of at least `disk::MIN_STATE`;
/// the disk's own new GUID.
pub fn plan(
    source: &Table,
    target_sectors: u64,
    device: &str,
    guid: &mut dyn FnMut() -> Guid,
) -> Result<Table, String> {
    let mut copied = Vec::new();
    for name in COPIED {
        let (number, partition) = source
            .find(name)
            .ok_or_else(|| format!("the boot disk has no partition {name}"))?;
        copied.push((number, partition.clone()));
    }
    let end = copied
        .iter()
        .map(|(_, p)| p.last_lba.saturating_add(1))
        .max()
        .unwrap_or(0);
    let needs = end.saturating_add(disk::MIN_STATE / SECTOR + gpt::ENTRY_SECTORS + 1);
    if target_sectors < needs {
        return Err(format!(
            "{device} holds {} MiB; Brig needs {} MiB (a boot partition, two system slots and at least {} MiB for the state partition): nothing was written",
            (target_sectors * SECTOR) >> 20,
            needs.saturating_mul(SECTOR).div_ceil(1 << 20),
            disk::MIN_STATE >> 20
        ));
    }
    let mut table = Table::new(guid());
    for (number, mut partition) in copied {
        partition.unique_guid = guid();
        // `add` checks each against the disk and the others, in the
        // numbers the boot disk gives them.
        let name = partition.name.clone();
        let added = table
            .add(partition, target_sectors)
            .map_err(|e| format!("the boot disk's table: {e}"))?;
        if added != number {
            return Err(format!(
                "the boot disk's table has {name} as partition {number}, not in Brig's order"
            ));
        }
    }
    Ok(table)
}

/// The running entry's command line with the new slot's partition in
/// `brig.system=` (the old one named the stick's).
pub fn retarget(cmdline: &str, guid: Guid) -> String {
    let mut words: Vec<String> = cmdline
        .split_whitespace()
        .filter(|w| !w.starts_with("brig.system="))
        .map(str::to_string)
        .collect();
    words.push(format!("brig.system=PARTUUID={guid}"));
    words.join(" ")
}

/// How much of a system slot holds its image: a squashfs's `bytes_used`
/// (at byte 40 of its superblock), rounded up to 4 KiB; None if the
/// superblock is not a squashfs's.
pub fn squashfs_length(superblock: &[u8]) -> Option<u64> {
    if superblock.get(..4)? != b"hsqs" {
        return None;
    }
    let used = u64::from_le_bytes(superblock.get(40..48)?.try_into().ok()?);
    used.checked_next_multiple_of(4096)
}

/// Installs the running version onto `device`; `say` hears each step.
///
/// Everything that can refuse does so before the first write. Then, in
/// an order a power cut leaves harmless: the disk's old table goes; the
/// boot partition and the running slot are copied and read back; the
/// copy's boot entries are edited through a loop device (no table names
/// it yet); the new table is written last. Until then the disk is not a
/// Brig, and the install can be run again.
pub fn install(
    machine: Option<&Machine>,
    device: &str,
    say: &mut dyn FnMut(&str),
) -> Result<String, String> {
    let machine = machine.ok_or(
        "this machine did not boot from a disk image with system slots (it runs in RAM, or from a system disk): boot the board's disk image from a USB stick to install from it",
    )?;
    let name = disk_name(device)?;
    let device = format!("/dev/{name}");
    let version = running_version()?;
    let board = fs::read_to_string(BOARD_FILE)
        .map_err(|e| format!("reading {BOARD_FILE}: {e}"))?
        .trim()
        .to_string();
    let sys = format!("/sys/class/block/{name}");
    if !std::path::Path::new(&sys).exists() {
        return Err(format!(
            "there is no disk {device}; this machine's disks: {}",
            disks().join(", ")
        ));
    }
    if std::path::Path::new(&sys).join("partition").exists() {
        return Err(format!(
            "{device} is a partition: name the whole disk; this machine's disks: {}",
            disks().join(", ")
        ));
    }
    if !disks().iter().any(|d| d == &device) {
        return Err(format!(
            "{device} is not a disk Brig installs onto (a loop, RAM, optical, network or device-mapper device)"
        ));
    }
    if name == machine.disk {
        return Err(format!(
            "{device} is the disk this machine booted from: install onto another disk"
        ));
    }
    if disk::is_read_only(name) {
        return Err(format!("{device} is read-only"));
    }
    // Brig's tables count 512-byte sectors (a 4Kn disk's would be lost).
    let sector_size = fs::read_to_string(format!("{sys}/queue/logical_block_size"))
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    if sector_size != "512" {
        return Err(format!(
            "{device} has {sector_size}-byte sectors: Brig installs onto disks of 512-byte sectors"
        ));
    }
    let target_sectors: u64 = fs::read_to_string(format!("{sys}/size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("reading the size of {device}"))?;
    let (_, found) = disk::read_table(&machine.disk)?;
    let mut guid_error = None;
    let mut new_guid = || {
        disk::random_bytes().map_or_else(
            |e| {
                guid_error = Some(e);
                Guid([0; 16])
            },
            Guid::from_random,
        )
    };
    let table = plan(&found.table, target_sectors, &device, &mut new_guid)?;
    if let Some(e) = guid_error {
        return Err(e);
    }
    let slot_label = machine.slot.label();
    let (_, boot_part) = table.find(BOOT_LABEL).ok_or("no boot partition planned")?;
    let (slot_number, slot_part) = table.find(slot_label).ok_or("no system slot planned")?;
    let (_, other_part) = table
        .find(machine.slot.other().label())
        .ok_or("no other slot planned")?;
    // The running version's entry and its command line, from the stick.
    let (entry, cmdline) = {
        let stick = Mounted::mount(machine, false)?;
        let entries = stick.entries()?;
        let running = entries.of(machine.slot).cloned().ok_or_else(|| {
            format!(
                "the boot partition names no entry for the running slot {}",
                machine.slot
            )
        })?;
        if running.name.version != version {
            return Err(format!(
                "the running slot {}'s boot entry names {}, and this system is {version}",
                machine.slot, running.name.version
            ));
        }
        let cmdline = retarget(&stick.cmdline(&running)?, slot_part.unique_guid);
        let entry = EntryName {
            generation: 1,
            version,
            counter: None,
        };
        (entry, cmdline)
    };
    let mut lba0 = [0u8; SECTOR as usize];
    File::open(format!("/dev/{}", machine.disk))
        .and_then(|f| f.read_exact_at(&mut lba0, 0))
        .map_err(|e| format!("reading the MBR of /dev/{}: {e}", machine.disk))?;
    // A Raspberry Pi's firmware finds its boot partition in a hybrid MBR.
    let hybrid = match gpt::is_hybrid_mbr(&lba0) {
        true => Some(gpt::hybrid_mbr(boot_part)?),
        false => None,
    };
    let sources = {
        let open = |number: u32| {
            let from = disk::partition_device(&machine.disk, number);
            File::open(&from)
                .map(|file| (from.clone(), file))
                .map_err(|e| format!("opening {from}: {e}"))
        };
        let (boot_number, _) = found.table.find(BOOT_LABEL).ok_or("no boot partition")?;
        let (boot_from, boot_file) = open(boot_number)?;
        let (slot_from, slot_file) = open(slot_number)?;
        let mut superblock = [0u8; 96];
        slot_file
            .read_exact_at(&mut superblock, 0)
            .map_err(|e| format!("reading {slot_from}: {e}"))?;
        let image = squashfs_length(&superblock)
            .filter(|l| *l <= slot_part.sectors() * SECTOR)
            .ok_or_else(|| format!("{slot_from} holds no system image (squashfs)"))?;
        [
            Region {
                label: BOOT_LABEL,
                from: boot_from,
                file: boot_file,
                offset: boot_part.first_lba * SECTOR,
                length: boot_part.sectors() * SECTOR,
            },
            Region {
                label: slot_label,
                from: slot_from,
                file: slot_file,
                offset: slot_part.first_lba * SECTOR,
                length: image,
            },
        ]
    };
    // O_EXCL: refused while anything holds the disk or a partition of it
    // (a mount, LVM, RAID, dm-crypt), as `brig flash` does.
    let target = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_EXCL | libc::O_CLOEXEC)
        .open(&device)
        .map_err(|e| match e.raw_os_error() {
            Some(libc::EBUSY) => format!(
                "{device} is in use (a partition of it is mounted, or LVM, RAID or dm-crypt holds it): nothing was written"
            ),
            _ => format!("opening {device}: {e}"),
        })?;
    let is_block = target
        .metadata()
        .map(|m| m.file_type().is_block_device())
        .unwrap_or(false);
    if !is_block {
        return Err(format!("{device} is not a block device"));
    }
    say(&format!(
        "installing {version} ({board}) from /dev/{} onto {device} ({} MiB); everything on {device} is erased",
        machine.disk,
        (target_sectors * SECTOR) >> 20
    ));

    // The old table goes first, and the kernel forgets its partitions: a
    // cut from here on leaves a disk with no table, not one whose table
    // names half-written partitions.
    let table_bytes = (1 + gpt::ENTRY_SECTORS) * SECTOR;
    write_at(
        &target,
        &device,
        &vec![0u8; table_bytes as usize + SECTOR as usize],
        0,
    )?;
    write_at(
        &target,
        &device,
        &vec![0u8; table_bytes as usize],
        (target_sectors - 1 - gpt::ENTRY_SECTORS) * SECTOR,
    )?;
    sync(&target, &device)?;
    reread_partitions(&target, &device)?;

    for region in &sources {
        region.copy(&target, &device, say)?;
    }
    // The other slot starts empty: nothing an earlier use left there may
    // pass for a system image.
    write_at(
        &target,
        &device,
        &vec![0u8; CHUNK],
        other_part.first_lba * SECTOR,
    )?;
    sync(&target, &device)?;
    for region in &sources {
        region.verify(&target, &device)?;
    }
    say(&format!("{device}: the copies read back the same"));

    // The copy's entries name the stick's slots: the running version's
    // becomes its only one, naming the new slot.
    {
        let (loop_device, open) = brig_runtime::image::attach_loop_over(
            &target,
            &device,
            boot_part.first_lba * SECTOR,
            boot_part.sectors() * SECTOR,
            true,
        )
        .map_err(|e| format!("the copied boot partition: {e}"))?;
        let boot = Mounted::mount_device(&loop_device.display().to_string(), true)?;
        drop(open);
        let keep = boot_slots::kernel_dir(machine.slot, version);
        boot_partition::remove_kernels_but(&boot.root, &keep)?;
        boot_partition::remove_salvaged(&boot.root)?;
        boot.keep_only(&board, machine.slot, entry, &cmdline)?;
    }
    sync(&target, &device)?;

    write_at(
        &target,
        &device,
        &table.backup(target_sectors),
        Table::backup_offset(target_sectors),
    )?;
    let primary = table.primary(target_sectors);
    match &hybrid {
        Some(mbr) => {
            write_at(&target, &device, mbr, 0)?;
            write_at(&target, &device, &primary[SECTOR as usize..], SECTOR)?;
        }
        None => write_at(&target, &device, &primary, 0)?,
    }
    sync(&target, &device)?;
    reread_partitions(&target, &device)?;
    Ok(format!(
        "installed {version} onto {device} (slot {}); its state partition is made at its first boot. Power off, remove the USB stick, and boot from {device}",
        machine.slot
    ))
}

fn sync(file: &File, device: &str) -> Result<(), String> {
    file.sync_all()
        .map_err(|e| format!("writing {device}: {e}"))
}

/// The machine's disks, as `/dev/NAME`: not loop, RAM, optical, network
/// or device-mapper devices.
fn disks() -> Vec<String> {
    let mut found: Vec<String> = fs::read_dir("/sys/class/block")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            !["loop", "ram", "zram", "sr", "fd", "nbd", "dm-", "md"]
                .iter()
                .any(|p| n.starts_with(p))
                && !std::path::Path::new(&format!("/sys/class/block/{n}/partition")).exists()
        })
        .map(|n| format!("/dev/{n}"))
        .collect();
    found.sort();
    found
}

fn write_at(file: &File, device: &str, data: &[u8], offset: u64) -> Result<(), String> {
    file.write_all_at(data, offset)
        .map_err(|e| format!("writing {device} at byte {offset}: {e}"))
}

/// What is copied from the stick: `length` bytes of the partition `from`
/// (open as `file`), to `offset` on the new disk.
struct Region {
    label: &'static str,
    from: String,
    file: File,
    offset: u64,
    length: u64,
}

impl Region {
    /// Copies the region onto `target`, saying every 25%.
    fn copy(&self, target: &File, device: &str, say: &mut dyn FnMut(&str)) -> Result<(), String> {
        let mut buffer = vec![0u8; CHUNK];
        let mut shown = 0;
        self.each_chunk(|done, n| {
            self.read(&mut buffer[..n], done)?;
            write_at(target, device, &buffer[..n], self.offset + done)?;
            let percent = (done + n as u64) * 100 / self.length;
            if percent >= shown + 25 {
                shown = percent - percent % 25;
                say(&format!(
                    "{}: {shown}% of {} MiB",
                    self.label,
                    self.length >> 20
                ));
            }
            Ok(())
        })
    }

    /// Reads back what `copy` wrote, past the page cache, and compares.
    fn verify(&self, target: &File, device: &str) -> Result<(), String> {
        // SAFETY: the descriptor is open for the call's length; fadvise only
        // drops the cached pages, so the reads below come from the disk.
        unsafe { libc::posix_fadvise(target.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        let (mut wanted, mut got) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
        self.each_chunk(|done, n| {
            let at = self.offset + done;
            self.read(&mut wanted[..n], done)?;
            target
                .read_exact_at(&mut got[..n], at)
                .map_err(|e| format!("reading {device} back at byte {at}: {e}"))?;
            if wanted[..n] != got[..n] {
                return Err(format!(
                    "{device} does not read back what was written ({}, near byte {at}): the disk may be failing; it is left unbootable",
                    self.label
                ));
            }
            Ok(())
        })
    }

    /// Calls `step(done, n)` for each chunk of the region, in order.
    fn each_chunk(
        &self,
        mut step: impl FnMut(u64, usize) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut done = 0u64;
        while done < self.length {
            let n = (self.length - done).min(CHUNK as u64) as usize;
            step(done, n)?;
            done += n as u64;
        }
        Ok(())
    }

    fn read(&self, buffer: &mut [u8], at: u64) -> Result<(), String> {
        self.file
            .read_exact_at(buffer, at)
            .map_err(|e| format!("reading {} at byte {at}: {e}", self.from))
    }
}

/// BLKRRPART: the kernel reads the new table (no partition of the disk is
/// in use: the exclusive open showed it).
fn reread_partitions(target: &File, device: &str) -> Result<(), String> {
    const BLKRRPART: libc::c_ulong = 0x125f;
    // SAFETY: BLKRRPART takes no argument; the descriptor is open.
    let r = unsafe { libc::ioctl(target.as_raw_fd(), BLKRRPART as _) };
    if r != 0 {
        return Err(format!(
            "telling the kernel about {device}'s new partitions: {}",
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::gpt::Partition;

    const MIB: u64 = (1 << 20) / SECTOR;

    fn stick() -> Table {
        let mut table = Table::new(Guid([1; 16]));
        let mut add = |name: &str, first: u64, last: u64, byte: u8| {
            table
                .add(
                    Partition {
                        type_guid: gpt::types::linux_filesystem(),
                        unique_guid: Guid([byte; 16]),
                        first_lba: first,
                        last_lba: last,
                        attributes: 0,
                        name: name.into(),
                    },
                    4096 * MIB,
                )
                .unwrap();
        };
        add(BOOT_LABEL, MIB, 65 * MIB - 1, 2);
        add("BRIG_SYSTEM_A", 65 * MIB, 321 * MIB - 1, 3);
        add("BRIG_SYSTEM_B", 321 * MIB, 577 * MIB - 1, 4);
        add("BRIG_STATE", 577 * MIB, 4000 * MIB - 1, 5);
        table
    }

    #[test]
    fn the_new_disk_has_the_sticks_layout_with_guids_of_its_own_and_no_state() {
        let mut next = 100u8;
        let mut guid = || {
            next += 1;
            Guid([next; 16])
        };
        let table = plan(&stick(), 2048 * MIB, "/dev/vdb", &mut guid).unwrap();
        assert_eq!(table.disk_guid, Guid([101; 16]));
        let names: Vec<(u32, &str, u64, u8)> = table
            .partitions()
            .map(|(n, p)| (n, p.name.as_str(), p.first_lba, p.unique_guid.0[0]))
            .collect();
        assert_eq!(
            names,
            [
                (1, BOOT_LABEL, MIB, 102),
                (2, "BRIG_SYSTEM_A", 65 * MIB, 103),
                (3, "BRIG_SYSTEM_B", 321 * MIB, 104),
            ]
        );
    }

    #[test]
    fn a_disk_without_room_for_a_state_partition_is_refused_with_the_sizes() {
        let mut guid = || Guid([9; 16]);
        let e = plan(&stick(), 600 * MIB, "/dev/vdb", &mut guid).unwrap_err();
        assert_eq!(
            e,
            "/dev/vdb holds 600 MiB; Brig needs 642 MiB (a boot partition, two system slots and at least 64 MiB for the state partition): nothing was written"
        );
        assert!(plan(&stick(), 642 * MIB, "/dev/vdb", &mut guid).is_ok());
        let mut no_slots = Table::new(Guid([1; 16]));
        no_slots.entries[0] = stick().entries[0].clone();
        let e = plan(&no_slots, 2048 * MIB, "/dev/vdb", &mut guid).unwrap_err();
        assert_eq!(e, "the boot disk has no partition BRIG_SYSTEM_A");
    }

    #[test]
    fn device_names_are_plain_names_in_dev() {
        assert_eq!(disk_name("/dev/vdb"), Ok("vdb"));
        assert_eq!(disk_name("nvme0n1"), Ok("nvme0n1"));
        for bad in [
            "/dev/../etc/passwd",
            "/dev/",
            "/tmp/disk.img",
            "/dev/disk/by-id/x",
        ] {
            let e = disk_name(bad).unwrap_err();
            assert!(
                e.ends_with("name a disk of this machine, as /dev/sdb or /dev/nvme0n1"),
                "{e}"
            );
        }
    }

    #[test]
    fn the_command_line_names_the_new_slot_and_keeps_the_rest() {
        let guid = Guid([0xab; 16]);
        let old =
            "console=ttyS0 brig.system=PARTUUID=01010101-0101-0101-0101-010101010101 panic=10";
        assert_eq!(
            retarget(old, guid),
            format!("console=ttyS0 panic=10 brig.system=PARTUUID={guid}")
        );
        assert_eq!(
            retarget("quiet", guid),
            format!("quiet brig.system=PARTUUID={guid}")
        );
    }

    #[test]
    fn a_slot_is_copied_as_far_as_its_squashfs_reaches() {
        let mut superblock = vec![0u8; 96];
        superblock[..4].copy_from_slice(b"hsqs");
        superblock[40..48].copy_from_slice(&5000u64.to_le_bytes());
        assert_eq!(squashfs_length(&superblock), Some(8192));
        superblock[0] = b'x';
        assert_eq!(squashfs_length(&superblock), None);
        assert_eq!(squashfs_length(b"hsqs"), None);
        superblock[0] = b'h';
        superblock[40..48].copy_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(squashfs_length(&superblock), None);
    }
}
