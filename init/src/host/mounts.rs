//! Early mounts at boot, and unmounting everything at shutdown.

use nix::mount::MsFlags;

use crate::host::system::System;

/// A filesystem PID 1 mounts before anything else.
pub struct EarlyMount {
    pub target: &'static str,
    pub fstype: &'static str,
    pub source: &'static str,
    pub flags: MsFlags,
    pub data: &'static str,
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);

/// In mount order: each target's parent is mounted before it.
pub const EARLY_MOUNTS: &[EarlyMount] = &[
    EarlyMount {
        target: "/proc",
        fstype: "proc",
        source: "proc",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    EarlyMount {
        target: "/sys",
        fstype: "sysfs",
        source: "sysfs",
        flags: NOSUID_NODEV_NOEXEC,
        data: "",
    },
    EarlyMount {
        target: "/dev",
        fstype: "devtmpfs",
        source: "devtmpfs",
        flags: MsFlags::MS_NOSUID,
        data: "mode=0755",
    },
    EarlyMount {
        target: "/dev/pts",
        fstype: "devpts",
        source: "devpts",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NOEXEC),
        data: "mode=0620,ptmxmode=0666,gid=5",
    },
    EarlyMount {
        target: "/dev/shm",
        fstype: "tmpfs",
        source: "shm",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        data: "mode=1777",
    },
    EarlyMount {
        target: "/run",
        fstype: "tmpfs",
        source: "run",
        flags: MsFlags::MS_NOSUID.union(MsFlags::MS_NODEV),
        // Sockets, config files, leases: small. Each container's writable
        // layer is a tmpfs of its own below it, with its own size.
        data: "mode=0755,size=64m",
    },
    EarlyMount {
        target: "/sys/fs/cgroup",
        fstype: "cgroup2",
        source: "cgroup2",
        flags: NOSUID_NODEV_NOEXEC,
        data: "nsdelegate",
    },
];

/// Mounts the early filesystems. A failure is reported and the next one is
/// still tried: a missing /dev/shm must not cost the console.
pub fn mount_early(sys: &dyn System, already_mounted: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for m in EARLY_MOUNTS {
        if already_mounted.iter().any(|t| t == m.target) {
            continue;
        }
        if let Err(e) = sys.create_dir_all(m.target) {
            errors.push(format!("creating mount point {}: {e}", m.target));
            continue;
        }
        if let Err(e) = sys.mount(m.source, m.target, m.fstype, m.flags, m.data) {
            errors.push(format!(
                "mounting {} ({}) on {}: {e}",
                m.source, m.fstype, m.target
            ));
        }
    }
    errors
}

/// Mount points listed in /proc/self/mounts, in mount order. Octal escapes
/// (`\040` for a space) are decoded.
pub fn parse_mount_points(mounts: &str) -> Vec<String> {
    mounts
        .lines()
        .filter_map(|line| line.split_whitespace().nth(1))
        .map(unescape_octal)
        .collect()
}

fn unescape_octal(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\'
            && i + 3 < bytes.len()
            && bytes[i + 1..i + 4]
                .iter()
                .all(|b| (b'0'..=b'7').contains(b))
        {
            let v = (bytes[i + 1] - b'0') * 64 + (bytes[i + 2] - b'0') * 8 + (bytes[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Unmounts every mount but `/`, newest first. What cannot be unmounted (still
/// busy) is remounted read-only so that its data is safe for the power cut.
pub fn unmount_all(sys: &dyn System, mount_points: &[String]) -> Vec<String> {
    let mut errors = Vec::new();
    for target in mount_points.iter().rev().filter(|t| t.as_str() != "/") {
        if sys.unmount(target, false).is_ok() {
            continue;
        }
        if let Err(e) = sys.remount_read_only(target) {
            // Pseudo filesystems (proc, sysfs, devtmpfs) need neither: detach them.
            if sys.unmount(target, true).is_err() {
                errors.push(format!("unmounting {target}: {e}"));
            }
        }
    }
    errors
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::fake::Recorder;

    #[test]
    fn early_mounts_in_order_skipping_mounted() {
        let sys = Recorder::default();
        let errors = mount_early(&sys, &["/dev".to_string()]);
        assert!(errors.is_empty(), "{errors:?}");
        let targets: Vec<String> = sys
            .calls()
            .iter()
            .map(|c| c.split(' ').nth(1).unwrap().to_string())
            .collect();
        assert_eq!(
            targets,
            [
                "/proc",
                "/sys",
                "/dev/pts",
                "/dev/shm",
                "/run",
                "/sys/fs/cgroup"
            ]
        );
        assert!(sys.calls()[5].starts_with("mount /sys/fs/cgroup cgroup2"));
    }

    #[test]
    fn a_failed_mount_is_reported_and_the_rest_still_mount() {
        let mut sys = Recorder::default();
        sys.failures.insert("mount /dev/shm".into(), libc::ENODEV);
        let errors = mount_early(&sys, &[]);
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0].contains("/dev/shm") && errors[0].contains("tmpfs"),
            "{}",
            errors[0]
        );
        assert_eq!(sys.calls().len(), EARLY_MOUNTS.len());
    }

    #[test]
    fn parses_proc_mounts() {
        let text = "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n/dev/vda1 /mnt/my\\040disk ext4 rw 0 0\n";
        assert_eq!(parse_mount_points(text), ["/", "/proc", "/mnt/my disk"]);
    }

    #[test]
    fn unmounts_newest_first_and_remounts_busy_ones_read_only() {
        let mut sys = Recorder::default();
        sys.failures.insert("unmount /var".into(), libc::EBUSY);
        let points: Vec<String> = ["/", "/proc", "/var", "/var/log"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let errors = unmount_all(&sys, &points);
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            sys.calls(),
            [
                "unmount /var/log",
                "unmount /var",
                "remount-ro /var",
                "unmount /proc"
            ]
        );
    }

    #[test]
    fn busy_and_not_remountable_is_reported() {
        let mut sys = Recorder::default();
        sys.failures.insert("unmount /data".into(), libc::EBUSY);
        sys.failures.insert("remount-ro /data".into(), libc::EBUSY);
        let errors = unmount_all(&sys, &["/".to_string(), "/data".to_string()]);
        assert_eq!(
            sys.calls(),
            ["unmount /data", "remount-ro /data", "unmount /data detach"]
        );
        assert_eq!(errors.len(), 1);
        assert!(errors[0].contains("/data"));
    }
}
