//! /proc/self/mountinfo, parsed: what is mounted where, from which
//! source, as which filesystem. Read, never the mounts themselves, so a
//! check of a path cannot block on a filesystem that stopped answering.

use std::path::Path;

/// One line of /proc/self/mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The filesystem's device number, `8:1` (anonymous for btrfs).
    pub dev: String,
    pub point: String,
    pub fstype: String,
    /// `/dev/sda1`, `pool/root` for ZFS.
    pub source: String,
}

/// Mountinfo's lines, with the kernel's octal escapes (`\040` for a
/// space) undone.
pub fn mounts(mountinfo: &str) -> Vec<Mount> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let before: Vec<&str> = before.split(' ').collect();
            let mut after = after.split(' ');
            Some(Mount {
                dev: before.get(2)?.to_string(),
                point: unescape(before.get(4)?),
                fstype: after.next()?.to_string(),
                source: unescape(after.next()?),
            })
        })
        .collect()
}

fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let d = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(d, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(byte)) => {
                out.push(byte);
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount `path` is on, by its place alone (no access to `path`, which
/// could block): the one whose mount point is the longest above it, the
/// last mounted of those. `path` must be absolute and free of `..`.
pub fn mount_of<'a>(mounts: &'a [Mount], path: &Path) -> Option<&'a Mount> {
    let longest = mounts
        .iter()
        .filter(|m| path.starts_with(&m.point))
        .max_by_key(|m| Path::new(&m.point).components().count())?;
    mounts.iter().rev().find(|m| m.point == longest.point)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_are_unescaped_and_the_innermost_mount_wins() {
        let text = "22 1 8:1 / / rw - ext4 /dev/sda1 rw\n\
                    36 22 8:17 / /media/my\\040card rw,nosuid - vfat /dev/sdb1 rw\n\
                    40 22 0:50 / /mnt/remote rw - fuse.sshfs me@host:/ rw\n\
                    41 40 0:51 / /mnt/remote rw - tmpfs over rw\n\
                    garbage without a separator\n";
        let all = mounts(text);
        assert_eq!(all.len(), 4);
        assert_eq!(
            all[1],
            Mount {
                dev: "8:17".into(),
                point: "/media/my card".into(),
                fstype: "vfat".into(),
                source: "/dev/sdb1".into(),
            }
        );
        let of = |p: &str| mount_of(&all, Path::new(p)).map(|m| m.fstype.as_str());
        assert_eq!(of("/etc/passwd"), Some("ext4"));
        assert_eq!(of("/media/my card/x"), Some("vfat"));
        // Stacked: the last mounted there.
        assert_eq!(of("/mnt/remote/data"), Some("tmpfs"));
        // By components, not by text.
        assert_eq!(of("/mnt/remotely"), Some("ext4"));
    }
}
