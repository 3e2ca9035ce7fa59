//! The persistent state partition: an ext4 volume labelled `BRIG_STATE`,
//! mounted at /var/lib/brig, where everything Brig keeps across reboots
//! lives (the saved config and datasource, and the named volumes: homes,
//! ssh host keys, cloud-init's per-instance marks, ...). Without one, Brig
//! runs from RAM and says so. A volume that does not mount is reported and
//! left as it is.

use brig_spec::control::StateStatus;
use nix::mount::MsFlags;

use crate::system::System;
use crate::volume::Volume;

pub const LABEL: &str = "BRIG_STATE";
/// Where it is mounted: the parent of every path Brig keeps.
pub const MOUNT_POINT: &str = "/var/lib/brig";

/// What became of the state partition, for the console.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    Mounted {
        device: String,
    },
    /// None found: RAM only.
    Absent,
    /// Found but not usable: why; RAM only, the volume untouched.
    Unusable {
        device: String,
        error: String,
    },
}

impl State {
    pub fn describe(&self) -> String {
        match self {
            State::Mounted { device } => {
                format!("state: {device} ({LABEL}, ext4) mounted at {MOUNT_POINT}")
            }
            State::Absent => format!(
                "state: no state partition ({LABEL}): running from RAM, nothing is kept across reboots"
            ),
            State::Unusable { device, error } => format!(
                "error: state: {device} ({LABEL}): {error}; running from RAM, the volume is left untouched"
            ),
        }
    }
}

impl State {
    /// For `brigctl status`: the device and how full it is.
    pub fn status(&self) -> StateStatus {
        let (device, usage) = match self {
            State::Mounted { device } => (
                Some(device.clone()),
                // The field types differ between C libraries and arches.
                #[allow(clippy::unnecessary_cast)]
                nix::sys::statvfs::statvfs(MOUNT_POINT).ok().map(|v| {
                    let block = v.fragment_size() as u64;
                    let size = v.blocks() as u64 * block;
                    (size, size - v.blocks_free() as u64 * block)
                }),
            ),
            _ => (None, None),
        };
        StateStatus {
            device,
            size_bytes: usage.map(|u| u.0),
            used_bytes: usage.map(|u| u.1),
            detail: self.describe(),
        }
    }
}

/// Finds the state partition among `volumes` and mounts it.
pub fn mount(sys: &dyn System, volumes: &[(String, Volume)]) -> State {
    let mut found = volumes
        .iter()
        .filter(|(_, v)| v.label.as_deref() == Some(LABEL));
    let Some((device, volume)) = found.next() else {
        return State::Absent;
    };
    let unusable = |error: String| State::Unusable {
        device: device.clone(),
        error,
    };
    if let Some((other, _)) = found.next() {
        return unusable(format!(
            "{other} is labelled {LABEL} too; which one holds the state is unclear, so neither is used"
        ));
    }
    if volume.fstype != "ext4" {
        return unusable(format!("it holds {}, not ext4", volume.fstype));
    }
    if let Err(e) = sys.create_dir_all(MOUNT_POINT) {
        return unusable(format!("creating {MOUNT_POINT}: {e}"));
    }
    // The kernel replays the journal: a power cut leaves it consistent.
    match sys.mount(device, MOUNT_POINT, "ext4", MsFlags::MS_NOATIME, "") {
        Ok(()) => State::Mounted {
            device: device.clone(),
        },
        Err(e) => unusable(format!("mounting: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::system::fake::Recorder;

    fn volume(label: &str, fstype: &'static str) -> Volume {
        Volume {
            fstype,
            label: Some(label.into()),
            uuid: None,
        }
    }

    #[test]
    fn found_by_label_and_mounted() {
        let sys = Recorder::default();
        let volumes = vec![
            ("/dev/vda".to_string(), volume("cidata", "vfat")),
            ("/dev/vdb".to_string(), volume(LABEL, "ext4")),
        ];
        let state = mount(&sys, &volumes);
        assert_eq!(
            state,
            State::Mounted {
                device: "/dev/vdb".into()
            }
        );
        assert_eq!(sys.calls(), ["mount /var/lib/brig ext4 /dev/vdb"]);
        assert!(mount(&sys, &volumes[..1])
            .describe()
            .contains("running from RAM"));
    }

    #[test]
    fn unusable_volumes_are_left_alone() {
        let sys = Recorder::default();
        let two = vec![
            ("/dev/vdb".to_string(), volume(LABEL, "ext4")),
            ("/dev/vdc".to_string(), volume(LABEL, "ext4")),
        ];
        let state = mount(&sys, &two).describe();
        assert!(
            state.contains("/dev/vdc is labelled BRIG_STATE too"),
            "{state}"
        );
        let fat = vec![("/dev/vdb".to_string(), volume(LABEL, "vfat"))];
        assert!(mount(&sys, &fat)
            .describe()
            .contains("holds vfat, not ext4"));
        assert!(sys.calls().is_empty(), "nothing mounted: {:?}", sys.calls());
        let mut failing = Recorder::default();
        failing
            .failures
            .insert("mount /var/lib/brig".into(), libc::EUCLEAN);
        let state = mount(&failing, &two[..1]);
        assert!(
            matches!(&state, State::Unusable { error, .. } if error.starts_with("mounting: ")),
            "{state:?}"
        );
        assert!(state.describe().contains("left untouched"));
    }
}
