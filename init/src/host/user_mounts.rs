//! cloud-config `mounts`: the user's disks, mounted by PID 1 before the
//! services start, under /mnt or /media (which the console container and
//! user services bind from the host). A disk that is missing or fails to
//! mount is reported and the boot goes on, as with `nofail`, which
//! cloud-init adds by default.

use brig_spec::mounts::{Device, MountEntry};
use nix::mount::MsFlags;

use crate::host::block_devices::Volume;
use crate::host::system::System;

/// mount(8) options as mount(2) takes them: flags and the filesystem's own
/// options. None for `noauto` (not mounted at boot). A disk is `nosuid` and
/// `nodev` unless its entry says `suid` or `dev`: a set-user-ID program or a
/// device node on a disk someone brought must not become root's.
pub fn mount_options(options: &[String]) -> Option<(MsFlags, String)> {
    let mut flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    let mut data = Vec::new();
    for option in options {
        let (set, clear) = match option.as_str() {
            "noauto" => return None,
            // What only fstab and mount(8) mean: every entry here is
            // mounted at boot, and a failure never stops the boot.
            "defaults" | "auto" | "nofail" | "_netdev" | "nouser" | "async" => {
                (MsFlags::empty(), MsFlags::empty())
            }
            o if o.starts_with("x-") || o.starts_with("comment=") => {
                (MsFlags::empty(), MsFlags::empty())
            }
            "ro" => (MsFlags::MS_RDONLY, MsFlags::empty()),
            "rw" => (MsFlags::empty(), MsFlags::MS_RDONLY),
            "nosuid" => (MsFlags::MS_NOSUID, MsFlags::empty()),
            "suid" => (MsFlags::empty(), MsFlags::MS_NOSUID),
            "nodev" => (MsFlags::MS_NODEV, MsFlags::empty()),
            "dev" => (MsFlags::empty(), MsFlags::MS_NODEV),
            "noexec" => (MsFlags::MS_NOEXEC, MsFlags::empty()),
            "exec" => (MsFlags::empty(), MsFlags::MS_NOEXEC),
            "noatime" => (MsFlags::MS_NOATIME, MsFlags::empty()),
            "nodiratime" => (MsFlags::MS_NODIRATIME, MsFlags::empty()),
            "relatime" => (MsFlags::MS_RELATIME, MsFlags::empty()),
            "strictatime" => (MsFlags::MS_STRICTATIME, MsFlags::empty()),
            "sync" => (MsFlags::MS_SYNCHRONOUS, MsFlags::empty()),
            "dirsync" => (MsFlags::MS_DIRSYNC, MsFlags::empty()),
            other => {
                data.push(other.to_string());
                (MsFlags::empty(), MsFlags::empty())
            }
        };
        flags = (flags | set) - clear;
    }
    Some((flags, data.join(",")))
}

/// The device node and filesystem type for `entry`, from the volumes found
/// on the machine.
pub fn resolve(
    entry: &MountEntry,
    volumes: &[(String, Volume)],
) -> Result<(String, String), String> {
    let found = volumes.iter().find(|(path, v)| match &entry.device {
        Device::Path(p) => p == path,
        Device::Label(l) => v.label.as_deref() == Some(l.as_str()),
        Device::Uuid(u) => v.uuid.as_deref().is_some_and(|x| x.eq_ignore_ascii_case(u)),
    });
    match (found, &entry.device, &entry.fstype) {
        (Some((path, _)), _, Some(fstype)) => Ok((path.clone(), fstype.clone())),
        (Some((path, v)), _, None) => Ok((path.clone(), v.fstype.to_string())),
        // A filesystem Brig does not recognise, with its type given.
        (None, Device::Path(p), Some(fstype)) => Ok((p.clone(), fstype.clone())),
        (None, Device::Path(p), None) => Err(format!(
            "no such device, or no filesystem Brig recognises on {p} (ext4, vfat, iso9660, squashfs); give the type"
        )),
        (None, device, _) => Err(format!("no volume with {device}")),
    }
}

/// Mounts each entry; returns what was mounted and what failed, as lines
/// for the console.
pub fn mount_all(
    sys: &dyn System,
    entries: &[MountEntry],
    volumes: &[(String, Volume)],
) -> Vec<Result<String, String>> {
    entries
        .iter()
        .filter_map(|entry| {
            let (flags, data) = mount_options(&entry.options)?;
            let what = format!("mounts: {} on {}", entry.device, entry.target);
            let result = resolve(entry, volumes).and_then(|(device, fstype)| {
                sys.create_dir_all(&entry.target)
                    .map_err(|e| format!("creating {}: {e}", entry.target))?;
                sys.mount(&device, &entry.target, &fstype, flags, &data)
                    .map_err(|e| format!("mounting {device} ({fstype}): {e}"))?;
                Ok(format!("{what}: {device} ({fstype}) mounted"))
            });
            Some(result.map_err(|e| format!("{what}: {e}; left unmounted")))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::fake::Recorder;

    fn strings(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_become_flags_and_filesystem_data() {
        let (flags, data) = mount_options(&strings(&[
            "defaults",
            "nofail",
            "ro",
            "noexec",
            "uid=1000",
            "x-systemd.after=x",
        ]))
        .unwrap();
        let safe = MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
        assert_eq!(flags, MsFlags::MS_RDONLY | MsFlags::MS_NOEXEC | safe);
        assert_eq!(data, "uid=1000");
        let (flags, data) = mount_options(&strings(&["ro", "rw", "errors=remount-ro"])).unwrap();
        assert_eq!(flags, safe, "a later rw wins; nosuid and nodev by default");
        assert_eq!(data, "errors=remount-ro");
        let (flags, _) = mount_options(&strings(&["suid", "dev"])).unwrap();
        assert_eq!(flags, MsFlags::empty(), "unless the entry asks");
        assert_eq!(mount_options(&strings(&["defaults", "noauto"])), None);
    }

    fn volumes() -> Vec<(String, Volume)> {
        vec![
            (
                "/dev/vdb".into(),
                Volume {
                    fstype: "ext4",
                    label: Some("data".into()),
                    uuid: Some("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into()),
                    ..Volume::default()
                },
            ),
            (
                "/dev/vdc".into(),
                Volume {
                    fstype: "vfat",
                    label: None,
                    uuid: Some("1234-ABCD".into()),
                    ..Volume::default()
                },
            ),
        ]
    }

    fn entry(device: Device, fstype: Option<&str>) -> MountEntry {
        MountEntry {
            device,
            target: "/mnt/x".into(),
            fstype: fstype.map(String::from),
            options: strings(&["defaults"]),
        }
    }

    #[test]
    fn devices_by_path_label_and_uuid() {
        let v = volumes();
        let ok = |d, t| resolve(&entry(d, t), &v);
        assert_eq!(
            ok(Device::Path("/dev/vdb".into()), None),
            Ok(("/dev/vdb".into(), "ext4".into()))
        );
        assert_eq!(
            ok(Device::Label("data".into()), None),
            Ok(("/dev/vdb".into(), "ext4".into()))
        );
        assert_eq!(
            ok(Device::Uuid("1234-abcd".into()), Some("msdos")),
            Ok(("/dev/vdc".into(), "msdos".into()))
        );
        assert_eq!(
            ok(Device::Path("/dev/vdd".into()), Some("xfs")),
            Ok(("/dev/vdd".into(), "xfs".into()))
        );
        assert!(ok(Device::Path("/dev/vdd".into()), None)
            .unwrap_err()
            .contains("give the type"));
        assert_eq!(
            ok(Device::Label("nope".into()), None),
            Err("no volume with LABEL=nope".into())
        );
    }

    #[test]
    fn each_entry_is_mounted_or_reported() {
        let sys = Recorder::default();
        let entries = vec![
            entry(Device::Label("data".into()), None),
            MountEntry {
                options: strings(&["noauto"]),
                ..entry(Device::Path("/dev/vdc".into()), None)
            },
            entry(Device::Label("missing".into()), None),
        ];
        let results = mount_all(&sys, &entries, &volumes());
        assert_eq!(results.len(), 2, "noauto is not mounted");
        assert_eq!(
            results[0],
            Ok("mounts: LABEL=data on /mnt/x: /dev/vdb (ext4) mounted".into())
        );
        assert!(results[1]
            .as_ref()
            .unwrap_err()
            .contains("no volume with LABEL=missing; left unmounted"));
        assert!(
            sys.calls()
                .iter()
                .any(|c| c.contains("/dev/vdb") && c.contains("/mnt/x")),
            "{:?}",
            sys.calls()
        );
    }
}
