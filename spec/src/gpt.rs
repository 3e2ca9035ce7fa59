//! GUID partition tables: the layout math and the on-disk bytes, shared by
//! `brig build` (which writes a disk image's table) and PID 1 (which adds
//! the state partition on first boot, or grows it, when the image lands on
//! a larger disk). Pure: reading and writing the device is the caller's.
//!
//! The format is UEFI 2.10 §5.3: a protective MBR in LBA 0, the header in
//! LBA 1 and 128 entries of 128 bytes from LBA 2; a backup copy (entries,
//! then header in the last LBA) at the end of the disk. Both copies carry
//! CRC32s, so a table half-written when the power failed is detected and
//! the other copy used.

use std::fmt;

pub const SECTOR: u64 = 512;
const ENTRIES: usize = 128;
const ENTRY_SIZE: usize = 128;
/// Sectors the entry array takes (128 × 128 bytes).
pub const ENTRY_SECTORS: u64 = (ENTRIES * ENTRY_SIZE) as u64 / SECTOR;
const HEADER_SIZE: usize = 92;
const SIGNATURE: &[u8; 8] = b"EFI PART";
const REVISION: u32 = 0x0001_0000;
/// Partitions start on 1 MiB boundaries (what every partitioning tool does;
/// right for flash erase blocks and 4K-sector disks).
pub const ALIGN: u64 = (1 << 20) / SECTOR;

/// A GUID as the UEFI spec stores it: the first three fields little-endian.
#[derive(Clone, Copy, PartialEq, Eq, Default, Hash)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// From the usual text form, `C12A7328-F81F-11D2-BA4B-00A0C93EC93B`.
    pub fn parse(text: &str) -> Option<Guid> {
        let hex: String = text.chars().filter(|c| *c != '-').collect();
        if hex.len() != 32 || text.len() != 36 {
            return None;
        }
        let mut b = [0u8; 16];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        // Text order to the mixed-endian storage order.
        b[0..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
        Some(Guid(b))
    }

    /// A version-4 (random) GUID from 16 bytes of randomness or of a hash.
    pub fn from_random(mut bytes: [u8; 16]) -> Guid {
        // Storage order: byte 7 holds the version's high nibble (field 3 is
        // little-endian), byte 8 the variant.
        bytes[7] = (bytes[7] & 0x0f) | 0x40;
        bytes[8] = (bytes[8] & 0x3f) | 0x80;
        Guid(bytes)
    }

    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02X}{:02X}{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-{:02X}{:02X}-",
            b[3], b[2], b[1], b[0], b[5], b[4], b[7], b[6], b[8], b[9]
        )?;
        b[10..].iter().try_for_each(|x| write!(f, "{x:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// Partition types Brig uses.
pub mod types {
    use super::Guid;
    pub const EFI_SYSTEM: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
    pub const LINUX_FILESYSTEM: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";

    pub fn efi_system() -> Guid {
        Guid::parse(EFI_SYSTEM).expect("a valid constant")
    }
    pub fn linux_filesystem() -> Guid {
        Guid::parse(LINUX_FILESYSTEM).expect("a valid constant")
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partition {
    pub type_guid: Guid,
    pub unique_guid: Guid,
    /// First and last sector, inclusive.
    pub first_lba: u64,
    pub last_lba: u64,
    pub attributes: u64,
    /// The partition label (`PARTLABEL`), up to 36 UTF-16 units.
    pub name: String,
}

impl Partition {
    pub fn sectors(&self) -> u64 {
        self.last_lba + 1 - self.first_lba
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Table {
    pub disk_guid: Guid,
    /// Slot `i` is partition number `i + 1`; `None` is an unused entry.
    pub entries: Vec<Option<Partition>>,
}

/// What a disk's table looks like once read, and whether it needs writing
/// back (a copy was damaged, or the disk grew past the backup's place).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub table: Table,
    /// Which copy it came from, and why the other was not used, if it was not.
    pub note: Option<String>,
}

/// Why a partition cannot go where it was asked to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// All 128 entries are in use.
    TableFull,
    /// There is no partition with that number.
    NoPartition(u32),
    /// Outside the disk's usable sectors (what, where).
    OffTheDisk(String),
    /// Over another partition (which, where).
    Overlap(String),
    /// A name GPT cannot hold (over 36 UTF-16 units).
    NameTooLong(String),
}

impl std::fmt::Display for LayoutError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LayoutError::TableFull => f.write_str("the partition table is full"),
            LayoutError::NoPartition(n) => write!(f, "there is no partition {n}"),
            LayoutError::OffTheDisk(what) | LayoutError::Overlap(what) => f.write_str(what),
            LayoutError::NameTooLong(name) => {
                write!(f, "partition name {name:?} is longer than 36 characters")
            }
        }
    }
}

impl std::error::Error for LayoutError {}

impl Table {
    pub fn new(disk_guid: Guid) -> Table {
        Table {
            disk_guid,
            entries: vec![None; ENTRIES],
        }
    }

    /// The first sector a partition may use, and the last, on a disk of
    /// `disk_sectors`.
    pub fn usable(disk_sectors: u64) -> (u64, u64) {
        (2 + ENTRY_SECTORS, disk_sectors - 2 - ENTRY_SECTORS)
    }

    /// Partitions in use, with their numbers (1-based).
    pub fn partitions(&self) -> impl Iterator<Item = (u32, &Partition)> {
        self.entries
            .iter()
            .enumerate()
            .filter_map(|(i, p)| p.as_ref().map(|p| (i as u32 + 1, p)))
    }

    pub fn find(&self, name: &str) -> Option<(u32, &Partition)> {
        self.partitions().find(|(_, p)| p.name == name)
    }

    /// The free space after the last partition, aligned: (first, last)
    /// sector, or None if none is left.
    pub fn free_tail(&self, disk_sectors: u64) -> Option<(u64, u64)> {
        let (first_usable, last_usable) = Table::usable(disk_sectors);
        let end = self
            .partitions()
            .map(|(_, p)| p.last_lba + 1)
            .max()
            .unwrap_or(first_usable);
        let first = end.max(first_usable).next_multiple_of(ALIGN);
        // Partitions end on an alignment boundary too, where the disk allows.
        let last = if last_usable + 1 >= ALIGN {
            ((last_usable + 1) / ALIGN * ALIGN).max(first) - 1
        } else {
            last_usable
        };
        (first <= last).then_some((first, last))
    }

    /// Adds a partition in the first unused slot; its number (1-based).
    pub fn add(&mut self, partition: Partition, disk_sectors: u64) -> Result<u32, LayoutError> {
        let slot = self
            .entries
            .iter()
            .position(Option::is_none)
            .ok_or(LayoutError::TableFull)?;
        self.check(&partition, slot, disk_sectors)?;
        self.entries[slot] = Some(partition);
        Ok(slot as u32 + 1)
    }

    /// Moves the end of partition `number` to `last_lba`, if nothing is in
    /// the way.
    pub fn grow(
        &mut self,
        number: u32,
        last_lba: u64,
        disk_sectors: u64,
    ) -> Result<(), LayoutError> {
        let slot = (number as usize).wrapping_sub(1);
        let mut grown = self
            .entries
            .get(slot)
            .cloned()
            .flatten()
            .ok_or(LayoutError::NoPartition(number))?;
        grown.last_lba = last_lba;
        self.check(&grown, slot, disk_sectors)?;
        self.entries[slot] = Some(grown);
        Ok(())
    }

    /// Whether `partition` fits in slot `slot`: on the disk, clear of the
    /// others, with a name GPT can hold.
    fn check(
        &self,
        partition: &Partition,
        slot: usize,
        disk_sectors: u64,
    ) -> Result<(), LayoutError> {
        let (first_usable, last_usable) = Table::usable(disk_sectors);
        if partition.first_lba < first_usable
            || partition.last_lba > last_usable
            || partition.first_lba > partition.last_lba
        {
            return Err(LayoutError::OffTheDisk(format!(
                "partition {:?} (sectors {}..={}) does not fit the disk's usable sectors {first_usable}..={last_usable}",
                partition.name, partition.first_lba, partition.last_lba
            )));
        }
        if let Some((n, other)) = self.partitions().find(|(n, p)| {
            *n as usize != slot + 1
                && p.first_lba <= partition.last_lba
                && partition.first_lba <= p.last_lba
        }) {
            return Err(LayoutError::Overlap(format!(
                "partition {:?} (sectors {}..={}) overlaps partition {n} {:?} ({}..={})",
                partition.name,
                partition.first_lba,
                partition.last_lba,
                other.name,
                other.first_lba,
                other.last_lba
            )));
        }
        if partition.name.encode_utf16().count() > 36 {
            return Err(LayoutError::NameTooLong(partition.name.clone()));
        }
        Ok(())
    }

    /// The primary copy: LBAs 0 to 33 (protective MBR, header, entries).
    pub fn primary(&self, disk_sectors: u64) -> Vec<u8> {
        let mut out = protective_mbr(disk_sectors);
        let entries = self.entry_bytes();
        let header = self.header(disk_sectors, 1, disk_sectors - 1, 2, &entries);
        out.extend_from_slice(&header);
        out.extend_from_slice(&entries);
        out
    }

    /// The backup copy, for the last 33 LBAs: entries, then the header.
    pub fn backup(&self, disk_sectors: u64) -> Vec<u8> {
        let entries = self.entry_bytes();
        let last = disk_sectors - 1;
        let header = self.header(disk_sectors, last, 1, last - ENTRY_SECTORS, &entries);
        let mut out = entries;
        out.extend_from_slice(&header);
        out
    }

    /// Where the backup copy starts, in bytes.
    pub fn backup_offset(disk_sectors: u64) -> u64 {
        (disk_sectors - 1 - ENTRY_SECTORS) * SECTOR
    }

    fn entry_bytes(&self) -> Vec<u8> {
        let mut out = vec![0u8; ENTRIES * ENTRY_SIZE];
        for (i, p) in self.entries.iter().enumerate() {
            let Some(p) = p else { continue };
            let e = &mut out[i * ENTRY_SIZE..(i + 1) * ENTRY_SIZE];
            e[0..16].copy_from_slice(&p.type_guid.0);
            e[16..32].copy_from_slice(&p.unique_guid.0);
            e[32..40].copy_from_slice(&p.first_lba.to_le_bytes());
            e[40..48].copy_from_slice(&p.last_lba.to_le_bytes());
            e[48..56].copy_from_slice(&p.attributes.to_le_bytes());
            for (j, unit) in p.name.encode_utf16().take(36).enumerate() {
                e[56 + 2 * j..58 + 2 * j].copy_from_slice(&unit.to_le_bytes());
            }
        }
        out
    }

    fn header(
        &self,
        disk_sectors: u64,
        my_lba: u64,
        other_lba: u64,
        entries_lba: u64,
        entries: &[u8],
    ) -> Vec<u8> {
        let (first_usable, last_usable) = Table::usable(disk_sectors);
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(SIGNATURE);
        h[8..12].copy_from_slice(&REVISION.to_le_bytes());
        h[12..16].copy_from_slice(&(HEADER_SIZE as u32).to_le_bytes());
        h[24..32].copy_from_slice(&my_lba.to_le_bytes());
        h[32..40].copy_from_slice(&other_lba.to_le_bytes());
        h[40..48].copy_from_slice(&first_usable.to_le_bytes());
        h[48..56].copy_from_slice(&last_usable.to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid.0);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&(ENTRIES as u32).to_le_bytes());
        h[84..88].copy_from_slice(&(ENTRY_SIZE as u32).to_le_bytes());
        h[88..92].copy_from_slice(&crc32(entries).to_le_bytes());
        let crc = crc32(&h[..HEADER_SIZE]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }
}

/// Bytes a reader needs from the start of the disk: LBA 0 to 33.
pub const PRIMARY_BYTES: u64 = (2 + ENTRY_SECTORS) * SECTOR;

/// Reads the table of a disk of `disk_sectors`, from its first
/// `PRIMARY_BYTES` and, when that copy is damaged, from the backup copy that
/// `read_at(offset, length)` fetches (the backup header's place follows
/// from the primary header if it is readable, else it is the last sector).
pub fn read(
    primary: &[u8],
    disk_sectors: u64,
    read_at: &mut dyn FnMut(u64, usize) -> Result<Vec<u8>, String>,
) -> Result<Found, String> {
    // Two headers and their entries, at the least (an empty card reader
    // says 0).
    if disk_sectors < 3 + 2 * ENTRY_SECTORS {
        return Err(format!(
            "the disk has {disk_sectors} sectors, too few for a GUID partition table"
        ));
    }
    let header = primary
        .get(SECTOR as usize..2 * SECTOR as usize)
        .unwrap_or_default();
    let primary_error = match parse_header(header, 1).and_then(|h| {
        let start = (h.entries_lba * SECTOR) as usize;
        let entries = primary
            .get(start..start + ENTRIES * ENTRY_SIZE)
            .ok_or("the primary entries are cut short")?;
        table_from(&h, entries).map(|t| (h, t))
    }) {
        Ok((h, table)) => {
            // A table from a smaller disk (an image written to a larger one)
            // has its backup short of the end; it is rewritten with the table.
            let note = (h.other_lba != disk_sectors - 1).then(|| {
                format!(
                    "the backup table is at sector {} but the disk ends at {}: the disk is larger than the table was made for",
                    h.other_lba,
                    disk_sectors - 1
                )
            });
            return Ok(Found { table, note });
        }
        Err(e) => e,
    };
    let last = disk_sectors - 1;
    let header = read_at(last * SECTOR, SECTOR as usize)?;
    let h = parse_header(&header, last)
        .map_err(|e| format!("primary table: {primary_error}; backup table: {e}"))?;
    let entries = read_at(h.entries_lba * SECTOR, ENTRIES * ENTRY_SIZE)?;
    let table = table_from(&h, &entries)
        .map_err(|e| format!("primary table: {primary_error}; backup table: {e}"))?;
    Ok(Found {
        table,
        note: Some(format!(
            "primary table: {primary_error}; the backup table was used"
        )),
    })
}

struct Header {
    other_lba: u64,
    entries_lba: u64,
    disk_guid: Guid,
    entries_crc: u32,
    count: usize,
    entry_size: usize,
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}
fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn parse_header(b: &[u8], lba: u64) -> Result<Header, String> {
    if b.len() < HEADER_SIZE || &b[0..8] != SIGNATURE {
        return Err(format!("no GPT header at sector {lba}"));
    }
    let size = le32(b, 12) as usize;
    if !(HEADER_SIZE..=b.len()).contains(&size) {
        return Err(format!("GPT header at sector {lba} has a bad size {size}"));
    }
    let mut copy = b[..size].to_vec();
    copy[16..20].fill(0);
    if crc32(&copy) != le32(b, 16) {
        return Err(format!("GPT header at sector {lba} fails its checksum"));
    }
    if le64(b, 24) != lba {
        return Err(format!(
            "GPT header at sector {lba} says it is at {}",
            le64(b, 24)
        ));
    }
    let count = le32(b, 80) as usize;
    let entry_size = le32(b, 84) as usize;
    if entry_size < ENTRY_SIZE || count == 0 || count * entry_size > 1 << 20 {
        return Err(format!(
            "GPT header at sector {lba}: unsupported entries ({count} of {entry_size} bytes)"
        ));
    }
    let mut disk_guid = [0u8; 16];
    disk_guid.copy_from_slice(&b[56..72]);
    Ok(Header {
        other_lba: le64(b, 32),
        entries_lba: le64(b, 72),
        disk_guid: Guid(disk_guid),
        entries_crc: le32(b, 88),
        count,
        entry_size,
    })
}

fn table_from(h: &Header, bytes: &[u8]) -> Result<Table, String> {
    let bytes = bytes
        .get(..h.count * h.entry_size)
        .ok_or("the partition entries are cut short")?;
    if crc32(bytes) != h.entries_crc {
        return Err("the partition entries fail their checksum".into());
    }
    let mut table = Table::new(h.disk_guid);
    table.entries = bytes
        .chunks(h.entry_size)
        .map(|e| {
            let mut type_guid = [0u8; 16];
            type_guid.copy_from_slice(&e[0..16]);
            if type_guid == [0; 16] {
                return None;
            }
            let mut unique = [0u8; 16];
            unique.copy_from_slice(&e[16..32]);
            let units: Vec<u16> = e[56..128]
                .chunks(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .take_while(|u| *u != 0)
                .collect();
            Some(Partition {
                type_guid: Guid(type_guid),
                unique_guid: Guid(unique),
                first_lba: le64(e, 32),
                last_lba: le64(e, 40),
                attributes: le64(e, 48),
                name: String::from_utf16_lossy(&units),
            })
        })
        .collect();
    // Keep the number of slots we write (128), holding what was read.
    table.entries.resize(ENTRIES.max(table.entries.len()), None);
    Ok(table)
}

/// LBA 0: an MBR with one partition of type 0xEE over the whole disk, so
/// MBR-only tools see the disk as in use.
fn protective_mbr(disk_sectors: u64) -> Vec<u8> {
    let mut mbr = vec![0u8; SECTOR as usize];
    let entry = &mut mbr[446..462];
    entry[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    entry[4] = 0xEE;
    entry[5..8].copy_from_slice(&[0xFF, 0xFF, 0xFF]);
    entry[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = (disk_sectors - 1).min(u32::MAX as u64) as u32;
    entry[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    mbr
}

/// A hybrid MBR for LBA 0: `boot` as an MBR partition (FAT32, LBA) in
/// the first slot, for firmware that reads only MBRs (the Raspberry Pi's),
/// and the protective entry (0xEE from LBA 1, up to `boot`) in the second,
/// which tells Linux and every GPT tool to use the GUID table.
pub fn hybrid_mbr(boot: &Partition) -> Result<Vec<u8>, String> {
    let end = boot.last_lba + 1;
    if boot.first_lba < 2 + ENTRY_SECTORS || end > u32::MAX as u64 {
        return Err(format!(
            "a hybrid MBR needs its partition between LBA {} and 2 TiB (it is at {}..{})",
            2 + ENTRY_SECTORS,
            boot.first_lba,
            boot.last_lba
        ));
    }
    let mut mbr = vec![0u8; SECTOR as usize];
    let mut entry = |slot: usize, kind: u8, first: u64, sectors: u64| {
        let e = &mut mbr[446 + 16 * slot..446 + 16 * (slot + 1)];
        // CHS fields say "use LBA" (beyond CHS), as partitioning tools do.
        e[1..4].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        e[4] = kind;
        e[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        e[8..12].copy_from_slice(&(first as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
    };
    entry(0, MBR_FAT32_LBA, boot.first_lba, boot.sectors());
    entry(1, MBR_GPT_PROTECTIVE, 1, boot.first_lba - 1);
    mbr[510] = 0x55;
    mbr[511] = 0xAA;
    Ok(mbr)
}

const MBR_FAT32_LBA: u8 = 0x0C;
const MBR_GPT_PROTECTIVE: u8 = 0xEE;

/// Whether LBA 0 is a hybrid MBR (an entry besides the protective one),
/// which a rewrite of the GUID table must leave as it is.
pub fn is_hybrid_mbr(lba0: &[u8]) -> bool {
    lba0.len() >= SECTOR as usize
        && lba0[510..512] == [0x55, 0xAA]
        && (0..4).any(|slot| {
            let kind = lba0[446 + 16 * slot + 4];
            kind != 0 && kind != MBR_GPT_PROTECTIVE
        })
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xEDB8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, &b| {
        TABLE[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests;
