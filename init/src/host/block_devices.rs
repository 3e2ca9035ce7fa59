//! What a block device holds, from its first bytes: the filesystem type,
//! label and UUID, for finding seed volumes (NoCloud `cidata`, ConfigDrive
//! `config-2`) and the disks cloud-config `mounts` names by `LABEL=` or
//! `UUID=`. Read directly, as blkid would, so PID 1 needs no blkid.

use std::fs;
use std::io::Read;

/// Enough of a volume's start to see a FAT boot sector, the ext2/3/4
/// superblock (at 1024) and an ISO 9660 primary volume descriptor (sector
/// 16 of 2048 bytes).
pub const HEAD: usize = 0x8000 + 2048;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Volume {
    /// The type to mount it with: `vfat`, `iso9660`, `ext4`, `squashfs`.
    pub fstype: &'static str,
    pub label: Option<String>,
    /// As blkid prints it: ext4 `1b4e28ba-2fa1-…` (lower case), FAT
    /// `ABCD-1234`.
    pub uuid: Option<String>,
    /// The filesystem's own size (ext4), to see whether it fills its device.
    pub fs_bytes: Option<u64>,
    /// The block device's size (set by `scan`).
    pub device_bytes: Option<u64>,
}

/// The filesystem on a volume, from its first bytes.
pub fn probe(head: &[u8]) -> Option<Volume> {
    let text = |bytes: &[u8]| {
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let label = String::from_utf8_lossy(&bytes[..end])
            .trim_end()
            .to_string();
        (!label.is_empty()).then_some(label)
    };
    let volume = |fstype, label, uuid| {
        Some(Volume {
            fstype,
            label,
            uuid,
            ..Volume::default()
        })
    };
    if head.len() >= HEAD && head[0x8000] == 1 && &head[0x8001..0x8006] == b"CD001" {
        return volume("iso9660", text(&head[0x8000 + 40..0x8000 + 72]), None);
    }
    if head.len() >= 2048 && head[1024 + 0x38..1024 + 0x3A] == [0x53, 0xEF] {
        let sb = &head[1024..2048];
        let u = &sb[0x68..0x78];
        let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
        let uuid = format!(
            "{}-{}-{}-{}-{}",
            hex(&u[0..4]),
            hex(&u[4..6]),
            hex(&u[6..8]),
            hex(&u[8..10]),
            hex(&u[10..16])
        );
        let le32 = |at: usize| {
            u64::from(u32::from_le_bytes([
                sb[at],
                sb[at + 1],
                sb[at + 2],
                sb[at + 3],
            ]))
        };
        // Block count: low 32 bits, and the high ones with the 64bit feature.
        let mut blocks = le32(0x04);
        if le32(0x60) & 0x80 != 0 {
            blocks |= le32(0x150) << 32;
        }
        let block_size = 1024u64 << le32(0x18).min(6);
        // The ext4 driver mounts ext2 and ext3 too.
        return Some(Volume {
            fs_bytes: Some(blocks * block_size),
            ..volume("ext4", text(&sb[0x78..0x88]), Some(uuid))?
        });
    }
    if head.len() >= 4 && &head[0..4] == b"hsqs" {
        return volume("squashfs", None, None);
    }
    if head.len() >= 512 && head[510..512] == [0x55, 0xAA] {
        let fat_id = |at: usize| {
            let id = u32::from_le_bytes([head[at], head[at + 1], head[at + 2], head[at + 3]]);
            Some(format!("{:04X}-{:04X}", id >> 16, id & 0xFFFF))
        };
        // FAT32 keeps its extended boot record further in than FAT12/16.
        if &head[82..87] == b"FAT32" && head[66] == 0x29 {
            return volume(
                "vfat",
                text(&head[71..82]).filter(|l| l != "NO NAME"),
                fat_id(67),
            );
        }
        if head[54..57] == *b"FAT" && head[38] == 0x29 {
            return volume(
                "vfat",
                text(&head[43..54]).filter(|l| l != "NO NAME"),
                fat_id(39),
            );
        }
    }
    None
}

/// Enough of a volume's start to see the signatures `other_filesystem`
/// looks for: btrfs keeps its superblock at 64 KiB.
pub const SIGNATURE_HEAD: usize = 0x10000 + 0x48;

/// What a volume holds that `probe` does not mount but that another tool
/// made (a filesystem, swap, an encrypted or LVM volume, a partition
/// table): a partition holding one is never taken for blank space.
pub fn other_filesystem(head: &[u8]) -> Option<&'static str> {
    let at = |offset: usize, magic: &[u8]| head.get(offset..offset + magic.len()) == Some(magic);
    let signatures: [(usize, &[u8], &'static str); 11] = [
        (0x10040, b"_BHRfS_M", "a btrfs filesystem"),
        (0, b"XFSB", "an XFS filesystem"),
        (0, b"LUKS\xba\xbe", "a LUKS encrypted volume"),
        (0x218, b"LVM2 001", "an LVM physical volume"),
        (0x1000 - 10, b"SWAPSPACE2", "swap"),
        (0x1000 - 10, b"SWAP-SPACE", "swap"),
        (0x10000 - 10, b"SWAPSPACE2", "swap"),
        (3, b"NTFS    ", "an NTFS filesystem"),
        (3, b"EXFAT   ", "an exFAT filesystem"),
        (0x400, &[0x10, 0x20, 0xF5, 0xF2], "an F2FS filesystem"),
        (0x1000, &[0xFC, 0x4E, 0x2B, 0xA9], "an md RAID member"),
    ];
    if let Some((_, _, what)) = signatures.iter().find(|(o, m, _)| at(*o, m)) {
        return Some(what);
    }
    if probe(head).is_some() {
        return None;
    }
    // A boot sector or partition table (no FAT of its own): a whole disk
    // someone put here.
    at(510, &[0x55, 0xAA]).then_some("a partition table or boot sector")
}

/// The first `len` bytes of a device (fewer if it is smaller).
pub fn read_head(device: &str, len: usize) -> std::io::Result<Vec<u8>> {
    let mut head = vec![0u8; len];
    let mut file = fs::File::open(device)?;
    let mut filled = 0;
    while filled < len {
        match file.read(&mut head[filled..])? {
            0 => break,
            n => filled += n,
        }
    }
    head.truncate(filled);
    Ok(head)
}

/// Every block device (but loop, ram and zram devices) with the volume on
/// it, by device path, in name order. Unreadable devices are skipped.
pub fn scan() -> Result<Vec<(String, Volume)>, String> {
    let mut names: Vec<String> = fs::read_dir("/sys/class/block")
        .map_err(|e| format!("listing /sys/class/block: {e}"))?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !["loop", "ram", "zram"].iter().any(|p| n.starts_with(p)))
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let device = format!("/dev/{name}");
        let Ok(head) = read_head(&device, HEAD) else {
            continue;
        };
        if let Some(mut volume) = probe(&head) {
            volume.device_bytes = fs::read_to_string(format!("/sys/class/block/{name}/size"))
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .map(|sectors| sectors * 512);
            found.push((device, volume));
        }
    }
    Ok(found)
}

#[cfg(test)]
impl Volume {
    /// A volume with this label and type, for tests.
    pub fn labelled(label: &str, fstype: &'static str) -> Volume {
        Volume {
            fstype,
            label: Some(label.into()),
            ..Volume::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fat16(label: &[u8; 11]) -> Vec<u8> {
        let mut head = vec![0u8; HEAD];
        head[38] = 0x29;
        head[39..43].copy_from_slice(&0x1234_ABCDu32.to_le_bytes());
        head[43..54].copy_from_slice(label);
        head[54..62].copy_from_slice(b"FAT16   ");
        head[510] = 0x55;
        head[511] = 0xAA;
        head
    }

    fn labelled(fstype: &'static str, label: &str) -> Option<Volume> {
        Some(Volume {
            fstype,
            label: Some(label.into()),
            ..Volume::default()
        })
    }

    #[test]
    fn fat_and_iso9660_volumes() {
        let fat = probe(&fat16(b"cidata     ")).unwrap();
        assert_eq!((fat.fstype, fat.label.as_deref()), ("vfat", Some("cidata")));
        assert_eq!(fat.uuid.as_deref(), Some("1234-ABCD"));
        let mut fat32 = vec![0u8; 512];
        fat32[66] = 0x29;
        fat32[71..82].copy_from_slice(b"CIDATA     ");
        fat32[82..90].copy_from_slice(b"FAT32   ");
        fat32[510..512].copy_from_slice(&[0x55, 0xAA]);
        assert_eq!(probe(&fat32).unwrap().label.as_deref(), Some("CIDATA"));
        let mut iso = vec![0u8; HEAD];
        iso[0x8000] = 1;
        iso[0x8001..0x8006].copy_from_slice(b"CD001");
        iso[0x8000 + 40..0x8000 + 72].copy_from_slice(&[b' '; 32]);
        iso[0x8000 + 40..0x8000 + 48].copy_from_slice(b"config-2");
        assert_eq!(probe(&iso), labelled("iso9660", "config-2"));
        assert_eq!(probe(&[0u8; 4096]), None);
        assert_eq!(probe(&fat16(b"NO NAME    ")).unwrap().label, None);
        assert_eq!(probe(&[0x55; 100]), None, "short");
    }

    #[test]
    fn ext4_label_and_uuid_and_squashfs() {
        let mut head = vec![0u8; 4096];
        head[1024 + 0x38..1024 + 0x3A].copy_from_slice(&[0x53, 0xEF]);
        head[1024 + 0x68..1024 + 0x78].copy_from_slice(&[
            0x1b, 0x4e, 0x28, 0xba, 0x2f, 0xa1, 0x11, 0xd2, 0x88, 0x3f, 0x00, 0x16, 0xd3, 0xcc,
            0xa4, 0x27,
        ]);
        head[1024 + 0x78..1024 + 0x7c].copy_from_slice(b"data");
        // 65536 blocks of 4 KiB (log2(4096/1024) = 2).
        head[1024 + 0x04..1024 + 0x08].copy_from_slice(&65536u32.to_le_bytes());
        head[1024 + 0x18] = 2;
        let v = probe(&head).unwrap();
        assert_eq!((v.fstype, v.label.as_deref()), ("ext4", Some("data")));
        assert_eq!(v.fs_bytes, Some(256 << 20));
        assert_eq!(
            v.uuid.as_deref(),
            Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427")
        );
        let mut sq = vec![0u8; 4096];
        sq[0..4].copy_from_slice(b"hsqs");
        assert_eq!(probe(&sq).unwrap().fstype, "squashfs");
    }

    /// Made by the real tools, as a user would make them on a partition.
    #[test]
    fn what_other_tools_made_is_never_taken_for_blank_space() {
        let dir = tempfile::tempdir().unwrap();
        let made = |name: &str, tool: &[&str]| {
            let path = dir.path().join(name);
            fs::write(&path, vec![0u8; 128 << 20]).unwrap();
            let out = std::process::Command::new(tool[0])
                .args(&tool[1..])
                .arg(&path)
                .output()
                .unwrap_or_else(|e| panic!("running {}: {e}", tool[0]));
            assert!(out.status.success(), "{tool:?}: {out:?}");
            read_head(path.to_str().unwrap(), SIGNATURE_HEAD).unwrap()
        };
        let btrfs = made("btrfs", &["mkfs.btrfs", "-q", "-f"]);
        assert_eq!(other_filesystem(&btrfs), Some("a btrfs filesystem"));
        assert_eq!(probe(&btrfs), None, "not something PID 1 mounts");
        assert_eq!(
            other_filesystem(&made("swap", &["mkswap", "-q"])),
            Some("swap")
        );
        let ext4 = made("ext4", &["mkfs.ext4", "-q", "-F"]);
        assert_eq!(other_filesystem(&ext4), None);
        assert_eq!(probe(&ext4).unwrap().fstype, "ext4");
        let table = dir.path().join("table");
        fs::write(&table, vec![0u8; 8 << 20]).unwrap();
        let mut sfdisk = std::process::Command::new("sfdisk")
            .args(["-q", table.to_str().unwrap()])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        sfdisk
            .stdin
            .take()
            .unwrap()
            .write_all(b"label: dos\n,,L\n")
            .unwrap();
        assert!(sfdisk.wait().unwrap().success());
        let head = read_head(table.to_str().unwrap(), SIGNATURE_HEAD).unwrap();
        assert_eq!(
            other_filesystem(&head),
            Some("a partition table or boot sector")
        );
        // Blank space, and a FAT seed volume PID 1 reads itself.
        assert_eq!(other_filesystem(&vec![0u8; SIGNATURE_HEAD]), None);
        assert_eq!(other_filesystem(&fat16(b"cidata     ")), None);
        assert_eq!(
            read_head(table.to_str().unwrap(), 1 << 30).unwrap().len(),
            8 << 20
        );
    }
}
