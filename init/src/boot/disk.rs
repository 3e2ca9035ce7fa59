//! The disk Brig booted from, when it is a disk image (`brig build --format
//! raw|qcow2`, docs/disk-images.md): its system partition (`BRIG_SYSTEM`,
//! the squashfs of the system containers, mounted over /lib/brig), and the
//! state partition in its free space: made on first boot, grown when the
//! disk is larger than the partition (an image written to a bigger disk).
//!
//! Deciding is pure (`choose_system`, `plan_state`) and unit-tested; the
//! device work (reading and writing the table, telling the kernel) is in
//! small functions the QEMU end-to-end tests run.

use std::fs;
use std::os::unix::fs::FileExt;

use brig_spec::gpt::{self, Guid, Partition, Table, SECTOR};

pub const SYSTEM_LABEL: &str = "BRIG_SYSTEM";
/// A system partition's possible names: a system disk's one, or a disk
/// image's two slots (docs/updates.md).
pub const SYSTEM_LABELS: [&str; 3] = [SYSTEM_LABEL, "BRIG_SYSTEM_A", "BRIG_SYSTEM_B"];
/// The state partition's GPT name; its ext4 label is the same
/// (`state::LABEL`), which is what finds it.
pub const STATE_LABEL: &str = crate::boot::state::LABEL;
/// Where the system partition is mounted: the system containers are then
/// at `services::IMAGES`.
pub const SYSTEM_MOUNT: &str = "/lib/brig";
/// Less free space than this is left alone: too small to keep anything.
pub const MIN_STATE: u64 = 64 << 20;
/// Growing by less than this is not worth a table write.
const GROW_MARGIN: u64 = 8 << 20;
/// How much of a new state partition's start is zeroed before it is
/// published: more than any signature `block_devices::other_filesystem`
/// looks for.
const WIPED: usize = 1 << 20;

/// A partition as the kernel lists it in /sys/class/block.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockPartition {
    /// `vda2`, `nvme0n1p2`.
    pub name: String,
    /// Its disk: `vda`, `nvme0n1`.
    pub disk: String,
    pub number: u32,
    /// The GPT partition name, if the table gives one.
    pub partname: Option<String>,
}

/// A partition from its sysfs `uevent` (DEVTYPE, PARTN, PARTNAME) and the
/// name of the directory above it (its disk).
pub fn parse_partition(name: &str, disk: &str, uevent: &str) -> Option<BlockPartition> {
    let value = |key: &str| {
        uevent
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    };
    if value("DEVTYPE") != Some("partition") {
        return None;
    }
    Some(BlockPartition {
        name: name.to_string(),
        disk: disk.to_string(),
        number: value("PARTN")?.parse().ok()?,
        partname: value("PARTNAME").map(str::to_string),
    })
}

/// Every partition the kernel knows, in name order.
pub fn partitions() -> Vec<BlockPartition> {
    let mut found = Vec::new();
    let Ok(entries) = fs::read_dir("/sys/class/block") else {
        return found;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // /sys/class/block/vda2 -> ../../devices/.../block/vda/vda2
        let Ok(target) = fs::read_link(entry.path()) else {
            continue;
        };
        let disk = target
            .parent()
            .and_then(|p| p.file_name())
            .map(|d| d.to_string_lossy().into_owned())
            .unwrap_or_default();
        let uevent = fs::read_to_string(entry.path().join("uevent")).unwrap_or_default();
        if let Some(p) = parse_partition(&name, &disk, &uevent) {
            found.push(p);
        }
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    found
}

/// The system partition among `partitions`: the `BRIG_SYSTEM` (or slot,
/// `BRIG_SYSTEM_A`/`_B`) one whose
/// GPT unique GUID (`guid_of(disk, number)`) is `wanted` (from
/// `brig.system=PARTUUID=`), or without `wanted` the only one. None: not
/// (yet) there.
pub fn choose_system<'a>(
    partitions: &'a [BlockPartition],
    wanted: Option<Guid>,
    guid_of: &mut dyn FnMut(&str, u32) -> Option<Guid>,
) -> Result<Option<&'a BlockPartition>, String> {
    let mut named = partitions.iter().filter(|p| {
        SYSTEM_LABELS
            .iter()
            .any(|l| p.partname.as_deref() == Some(l))
    });
    match wanted {
        Some(guid) => Ok(named.find(|p| guid_of(&p.disk, p.number) == Some(guid))),
        None => {
            let all: Vec<&BlockPartition> = named.collect();
            match all.as_slice() {
                [] => Ok(None),
                [one] => Ok(Some(one)),
                many => Err(format!(
                    "several system partitions ({}) and the kernel command line names none (brig.system=PARTUUID=…)",
                    many.iter().map(|p| format!("/dev/{}", p.name)).collect::<Vec<_>>().join(", ")
                )),
            }
        }
    }
}

/// `brig.system=PARTUUID=<guid>` from the kernel command line's value.
pub fn wanted_system(value: Option<&str>) -> Result<Option<Guid>, String> {
    match value {
        None => Ok(None),
        Some(v) => v
            .strip_prefix("PARTUUID=")
            .and_then(Guid::parse)
            .map(Some)
            .ok_or_else(|| format!("brig.system={v}: expected PARTUUID=<GUID>")),
    }
}

/// What to do for the state partition on the boot disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StatePlan {
    /// Nothing to do, and why (for the console).
    Leave(String),
    /// Make it in these sectors (inclusive).
    Create { first: u64, last: u64 },
    /// Move partition `number`'s end to `last`.
    Grow { number: u32, from: u64, last: u64 },
}

/// `state_elsewhere`: a volume labelled BRIG_STATE exists that is not a
/// partition of this disk's table named so (another disk, say): then none
/// is made here.
pub fn plan_state(table: &Table, disk_sectors: u64, state_elsewhere: bool) -> StatePlan {
    let sectors = |bytes: u64| bytes / SECTOR;
    if let Some((number, state)) = table.find(STATE_LABEL) {
        let is_last = table
            .partitions()
            .all(|(_, p)| p.last_lba <= state.last_lba);
        return match table.free_tail(disk_sectors) {
            Some((_, last)) if is_last && last >= state.last_lba + sectors(GROW_MARGIN) => {
                StatePlan::Grow {
                    number,
                    from: state.last_lba,
                    last,
                }
            }
            _ => StatePlan::Leave("the state partition fills its disk".into()),
        };
    }
    if state_elsewhere {
        return StatePlan::Leave(format!("a {STATE_LABEL} volume exists on another device"));
    }
    match table.free_tail(disk_sectors) {
        Some((first, last)) if last + 1 - first >= sectors(MIN_STATE) => {
            StatePlan::Create { first, last }
        }
        free => StatePlan::Leave(format!(
            "no room for a state partition ({} MiB free after the last partition, {} MiB needed)",
            free.map_or(0, |(f, l)| ((l + 1 - f) * SECTOR) >> 20),
            MIN_STATE >> 20
        )),
    }
}

/// Whether the kernel has `disk` read-only (a system disk QEMU attaches
/// `readonly=on`, a card with its lock switch on).
pub fn is_read_only(disk: &str) -> bool {
    fs::read_to_string(format!("/sys/class/block/{disk}/ro")).is_ok_and(|ro| ro.trim() == "1")
}

/// The device path of partition `number` of `disk` (`vda3`, `nvme0n1p3`).
pub fn partition_device(disk: &str, number: u32) -> String {
    if disk.ends_with(|c: char| c.is_ascii_digit()) {
        format!("/dev/{disk}p{number}")
    } else {
        format!("/dev/{disk}{number}")
    }
}

/// The disk's size in sectors and its partition table.
pub fn read_table(disk: &str) -> Result<(u64, gpt::Found), String> {
    let path = format!("/dev/{disk}");
    let sectors: u64 = fs::read_to_string(format!("/sys/class/block/{disk}/size"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| format!("reading the size of {path}"))?;
    let file = fs::File::open(&path).map_err(|e| format!("opening {path}: {e}"))?;
    let mut read_at = |offset: u64, length: usize| {
        let mut buf = vec![0u8; length];
        file.read_exact_at(&mut buf, offset)
            .map(|()| buf)
            .map_err(|e| format!("reading {path} at {offset}: {e}"))
    };
    let primary = read_at(0, gpt::PRIMARY_BYTES as usize)?;
    let found = gpt::read(&primary, sectors, &mut read_at).map_err(|e| format!("{path}: {e}"))?;
    Ok((sectors, found))
}

/// The unique GUID of partition `number` on `disk`, from its table.
pub fn partition_guid(disk: &str, number: u32) -> Option<Guid> {
    let (_, found) = read_table(disk).ok()?;
    let guid = found
        .table
        .partitions()
        .find(|(n, _)| *n == number)
        .map(|(_, p)| p.unique_guid);
    guid
}

/// Carries out `plan` on `disk` (whose table is `table`): writes the new
/// table, backup copy first (a power cut in between leaves one whole copy,
/// which the kernel and `gpt::read` fall back to), then tells the kernel.
/// Returns the state partition's device.
pub fn apply(disk: &str, sectors: u64, table: &Table, plan: &StatePlan) -> Result<String, String> {
    let mut table = table.clone();
    let (number, first, last) = match plan {
        StatePlan::Leave(_) => return Err("nothing to do".into()),
        StatePlan::Create { first, last } => {
            let number = table
                .add(
                    Partition {
                        type_guid: gpt::types::linux_filesystem(),
                        unique_guid: Guid::from_random(random_bytes()?),
                        first_lba: *first,
                        last_lba: *last,
                        attributes: 0,
                        name: STATE_LABEL.into(),
                    },
                    sectors,
                )
                .map_err(|e| e.to_string())?;
            (number, *first, *last)
        }
        StatePlan::Grow { number, last, .. } => {
            table
                .grow(*number, *last, sectors)
                .map_err(|e| e.to_string())?;
            let first = table
                .partitions()
                .find(|(n, _)| n == number)
                .map(|(_, p)| p.first_lba)
                .ok_or("the grown partition vanished")?;
            (*number, first, *last)
        }
    };
    let path = format!("/dev/{disk}");
    let file = fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("opening {path} to write its partition table: {e}"))?;
    let write = |offset: u64, data: &[u8]| {
        file.write_all_at(data, offset)
            .and_then(|()| file.sync_data())
            .map_err(|e| format!("writing the partition table of {path}: {e}"))
    };
    if let StatePlan::Create { .. } = plan {
        // Whatever an earlier use of the card left there goes before the
        // table names the partition: a state partition found without a
        // filesystem then holds only zeros unless someone else wrote to it.
        write(first * SECTOR, &vec![0u8; WIPED])?;
    }
    write(Table::backup_offset(sectors), &table.backup(sectors))?;
    let mut lba0 = [0u8; SECTOR as usize];
    file.read_exact_at(&mut lba0, 0)
        .map_err(|e| format!("reading the MBR of {path}: {e}"))?;
    let primary = table.primary(sectors);
    // A Raspberry Pi's firmware finds its boot partition in a hybrid MBR:
    // that stays, the GUID table after it is rewritten.
    if gpt::is_hybrid_mbr(&lba0) {
        write(SECTOR, &primary[SECTOR as usize..])?;
    } else {
        write(0, &primary)?;
    }
    let op = match plan {
        StatePlan::Create { .. } => BLKPG_ADD_PARTITION,
        _ => BLKPG_RESIZE_PARTITION,
    };
    tell_kernel(
        &file,
        op,
        number,
        first * SECTOR,
        (last + 1 - first) * SECTOR,
    )
    .map_err(|e| format!("telling the kernel about partition {number} of {path}: {e}"))?;
    Ok(partition_device(disk, number))
}

const BLKPG: libc::c_ulong = 0x1269;
const BLKPG_ADD_PARTITION: i32 = 1;
const BLKPG_RESIZE_PARTITION: i32 = 3;

/// `struct blkpg_partition` (linux/blkpg.h).
#[repr(C)]
struct BlkpgPartition {
    start: i64,
    length: i64,
    pno: i32,
    devname: [u8; 64],
    volname: [u8; 64],
}

/// `struct blkpg_ioctl_arg`.
#[repr(C)]
struct BlkpgArg {
    op: i32,
    flags: i32,
    datalen: i32,
    data: *mut BlkpgPartition,
}

/// BLKPG: adds or resizes one partition in the kernel's view of the disk,
/// which works while other partitions of it are in use (re-reading the
/// whole table would not).
fn tell_kernel(
    disk: &fs::File,
    op: i32,
    number: u32,
    start: u64,
    length: u64,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let mut partition = BlkpgPartition {
        start: start as i64,
        length: length as i64,
        pno: number as i32,
        devname: [0; 64],
        volname: [0; 64],
    };
    let mut arg = BlkpgArg {
        op,
        flags: 0,
        datalen: std::mem::size_of::<BlkpgPartition>() as i32,
        data: &mut partition,
    };
    // SAFETY: BLKPG with a valid blkpg_ioctl_arg pointing at a live
    // blkpg_partition, both outliving the call.
    let r = unsafe { libc::ioctl(disk.as_raw_fd(), BLKPG as _, &mut arg) };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn random_bytes() -> Result<[u8; 16], String> {
    let mut bytes = [0u8; 16];
    fs::File::open("/dev/urandom")
        .and_then(|f| f.read_exact_at(&mut bytes, 0))
        .map_err(|e| format!("reading /dev/urandom: {e}"))?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = (1 << 20) / SECTOR;

    fn part(name: &str, disk: &str, number: u32, partname: Option<&str>) -> BlockPartition {
        BlockPartition {
            name: name.into(),
            disk: disk.into(),
            number,
            partname: partname.map(str::to_string),
        }
    }

    fn image_table(disk_sectors: u64) -> Table {
        let mut t = Table::new(Guid::from_random([1; 16]));
        for (name, first, last) in [
            ("BRIG_BOOT", MIB, 65 * MIB - 1),
            (SYSTEM_LABEL, 65 * MIB, 321 * MIB - 1),
        ] {
            t.add(
                Partition {
                    type_guid: gpt::types::linux_filesystem(),
                    unique_guid: Guid::from_random([2; 16]),
                    first_lba: first,
                    last_lba: last,
                    attributes: 0,
                    name: name.into(),
                },
                disk_sectors,
            )
            .unwrap();
        }
        t
    }

    #[test]
    fn partitions_come_from_their_uevent() {
        let uevent = "MAJOR=253\nMINOR=2\nDEVNAME=vda2\nDEVTYPE=partition\nDISKSEQ=9\nPARTN=2\nPARTNAME=BRIG_SYSTEM\n";
        assert_eq!(
            parse_partition("vda2", "vda", uevent),
            Some(part("vda2", "vda", 2, Some(SYSTEM_LABEL)))
        );
        assert_eq!(parse_partition("vda", "block", "DEVTYPE=disk\n"), None);
        let unnamed = parse_partition("sda1", "sda", "DEVTYPE=partition\nPARTN=1\n").unwrap();
        assert_eq!(unnamed.partname, None);
    }

    #[test]
    fn the_system_partition_is_the_one_the_command_line_names() {
        let a = Guid::from_random([0xa; 16]);
        let b = Guid::from_random([0xb; 16]);
        let slot_b = Guid::from_random([0xbb; 16]);
        let parts = [
            part("sda2", "sda", 2, Some(SYSTEM_LABEL)),
            part("vda1", "vda", 1, Some("BRIG_BOOT")),
            part("vda2", "vda", 2, Some(SYSTEM_LABEL)),
            part("vdb2", "vdb", 2, Some("BRIG_SYSTEM_A")),
            part("vdb3", "vdb", 3, Some("BRIG_SYSTEM_B")),
        ];
        let mut guid_of = |disk: &str, n: u32| {
            Some(match (disk, n) {
                ("sda", _) => a,
                ("vdb", 3) => slot_b,
                ("vdb", _) => Guid::from_random([0xaa; 16]),
                _ => b,
            })
        };
        let found = choose_system(&parts, Some(b), &mut guid_of)
            .unwrap()
            .unwrap();
        assert_eq!(found.name, "vda2");
        let found = choose_system(&parts, Some(slot_b), &mut guid_of)
            .unwrap()
            .unwrap();
        assert_eq!(found.name, "vdb3", "an update's slot");
        let missing = Guid::from_random([0xc; 16]);
        assert_eq!(choose_system(&parts, Some(missing), &mut guid_of), Ok(None));
        let e = choose_system(&parts, None, &mut guid_of).unwrap_err();
        assert!(
            e.contains("/dev/sda2, /dev/vda2, /dev/vdb2, /dev/vdb3"),
            "{e}"
        );
        let one = choose_system(&parts[1..3], None, &mut guid_of)
            .unwrap()
            .unwrap();
        assert_eq!(one.name, "vda2");
        assert_eq!(choose_system(&parts[1..2], None, &mut guid_of), Ok(None));
    }

    #[test]
    fn the_command_line_value_is_a_partuuid() {
        let g = "57911168-8B41-4E3B-9B13-9157418C3BEE";
        assert_eq!(
            wanted_system(Some(&format!("PARTUUID={g}"))).unwrap(),
            Guid::parse(g)
        );
        assert_eq!(wanted_system(None), Ok(None));
        assert!(wanted_system(Some("LABEL=x"))
            .unwrap_err()
            .contains("PARTUUID="));
    }

    #[test]
    fn first_boot_makes_the_state_partition_in_the_free_space() {
        // A 1 GiB image on a 4 GiB disk: the table's backup is at 1 GiB.
        let disk = 4096 * MIB;
        let t = image_table(1024 * MIB);
        assert_eq!(
            plan_state(&t, disk, false),
            StatePlan::Create {
                first: 321 * MIB,
                last: 4095 * MIB - 1
            }
        );
        let StatePlan::Leave(why) = plan_state(&t, disk, true) else {
            panic!("a state volume elsewhere means none is made here");
        };
        assert!(why.contains("another device"), "{why}");
        let StatePlan::Leave(why) = plan_state(&t, 350 * MIB, false) else {
            panic!("too small");
        };
        assert!(why.contains("no room"), "{why}");
    }

    #[test]
    fn a_state_partition_short_of_the_disk_end_grows_and_one_that_fills_it_stays() {
        let mut t = image_table(1024 * MIB);
        t.add(
            Partition {
                type_guid: gpt::types::linux_filesystem(),
                unique_guid: Guid::from_random([3; 16]),
                first_lba: 321 * MIB,
                last_lba: 1023 * MIB - 1,
                attributes: 0,
                name: STATE_LABEL.into(),
            },
            1024 * MIB,
        )
        .unwrap();
        assert_eq!(
            plan_state(&t, 4096 * MIB, false),
            StatePlan::Grow {
                number: 3,
                from: 1023 * MIB - 1,
                last: 4095 * MIB - 1
            }
        );
        assert!(matches!(
            plan_state(&t, 1024 * MIB, false),
            StatePlan::Leave(_)
        ));
        // A few MiB more is not worth rewriting the table.
        assert!(matches!(
            plan_state(&t, 1028 * MIB, false),
            StatePlan::Leave(_)
        ));
    }

    #[test]
    fn partition_devices_are_named_as_the_kernel_names_them() {
        assert_eq!(partition_device("vda", 3), "/dev/vda3");
        assert_eq!(partition_device("nvme0n1", 3), "/dev/nvme0n1p3");
        assert_eq!(partition_device("mmcblk0", 3), "/dev/mmcblk0p3");
    }
}
