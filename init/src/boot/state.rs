//! The persistent state partition: an ext4 volume labelled `BRIG_STATE`,
//! mounted at /var/lib/brig, where everything Brig keeps across reboots
//! lives (the saved config and datasource, and the named volumes: homes,
//! ssh host keys, cloud-init's per-instance marks, ...). Without one, Brig
//! runs from RAM and says so. A volume that does not mount is reported and
//! left as it is.

use brig_spec::control::StateStatus;
use nix::mount::MsFlags;

use brig_spec::paths::STATE;

use crate::host::block_devices::Volume;
use crate::host::console::{say, say_error};
use crate::host::system::System;

pub const LABEL: &str = "BRIG_STATE";

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
    /// What became of it, for `brigctl status` (`error: …` when unusable).
    pub fn describe(&self) -> String {
        match self {
            State::Unusable { .. } => format!("error: {}", self.summary()),
            _ => self.summary(),
        }
    }

    /// Says what became of it on the console, as an error when unusable.
    pub fn announce(&self) {
        match self {
            State::Unusable { .. } => say_error(&self.summary()),
            _ => say(&self.summary()),
        }
    }

    fn summary(&self) -> String {
        match self {
            State::Mounted { device } => {
                format!("state: {device} ({LABEL}, ext4) mounted at {STATE}")
            }
            State::Absent => format!(
                "state: no state partition ({LABEL}): running from RAM, nothing is kept across reboots"
            ),
            State::Unusable { device, error } => format!(
                "state: {device} ({LABEL}): {error}; running from RAM, the volume is left untouched"
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
                nix::sys::statvfs::statvfs(STATE).ok().map(|v| {
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

/// What e2fsck's exit code (`-p`, preen) means for mounting: Ok with a word
/// for the console, or why the volume must be left alone.
pub fn fsck_verdict(code: i32, output: &str) -> Result<String, String> {
    let said = output
        .trim()
        .lines()
        .last()
        .unwrap_or_default()
        .trim()
        .to_string();
    match code {
        0 => Ok("clean".into()),
        1 | 2 => Ok(format!("errors corrected ({said})")),
        _ => Err(format!("e2fsck could not repair it (exit {code}): {said}")),
    }
}

/// Less than this left over on the device is not worth growing into.
const GROW_MARGIN: u64 = 8 << 20;

/// Whether the filesystem should grow to fill its device (a disk image
/// written to a larger disk).
pub fn should_grow(volume: &Volume) -> bool {
    matches!((volume.fs_bytes, volume.device_bytes), (Some(fs), Some(dev)) if dev > fs + GROW_MARGIN)
}

/// Finds the state partition among `volumes`, checks it with `check`
/// (e2fsck: what it said, or why not to mount), mounts it, and grows the
/// filesystem online when its device is larger (a grown partition, an
/// image on a larger disk).
pub fn mount(
    sys: &dyn System,
    volumes: &[(String, Volume)],
    check: &mut dyn FnMut(&str) -> Result<String, String>,
) -> State {
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
    match check(device) {
        Ok(said) => crate::host::console::say(&format!("state: {device}: {said}")),
        Err(e) => return unusable(e),
    }
    if let Err(e) = sys.create_dir_all(STATE) {
        return unusable(format!("creating {STATE}: {e}"));
    }
    // The kernel replays the journal: a power cut leaves it consistent.
    if let Err(e) = sys.mount(device, STATE, "ext4", MsFlags::MS_NOATIME, "") {
        return unusable(format!("mounting: {e}"));
    }
    if let (true, Some(bytes)) = (should_grow(volume), volume.device_bytes) {
        // Not growing is no reason to run from RAM: it keeps its size.
        match sys.grow_ext4(STATE, bytes) {
            Ok(()) => say(&format!(
                "state: {device}: grown online to fill its device ({} MiB)",
                bytes >> 20
            )),
            Err(e) => say_error(&format!(
                "state: growing {device} online: {e}; it keeps its size"
            )),
        }
    }
    State::Mounted {
        device: device.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::fake::Recorder;

    #[test]
    fn found_by_label_and_mounted() {
        let sys = Recorder::default();
        let volumes = vec![
            ("/dev/vda".to_string(), Volume::labelled("cidata", "vfat")),
            ("/dev/vdb".to_string(), Volume::labelled(LABEL, "ext4")),
        ];
        let state = mount(&sys, &volumes, &mut |_| Ok("clean".into()));
        assert_eq!(
            state,
            State::Mounted {
                device: "/dev/vdb".into()
            }
        );
        assert_eq!(sys.calls(), ["mount /var/lib/brig ext4 /dev/vdb"]);
        assert!(mount(&sys, &volumes[..1], &mut |_| Ok("clean".into()))
            .describe()
            .contains("running from RAM"));
    }

    #[test]
    fn unusable_volumes_are_left_alone() {
        let sys = Recorder::default();
        let two = vec![
            ("/dev/vdb".to_string(), Volume::labelled(LABEL, "ext4")),
            ("/dev/vdc".to_string(), Volume::labelled(LABEL, "ext4")),
        ];
        let state = mount(&sys, &two, &mut |_| Ok("clean".into())).describe();
        assert!(
            state.contains("/dev/vdc is labelled BRIG_STATE too"),
            "{state}"
        );
        let fat = vec![("/dev/vdb".to_string(), Volume::labelled(LABEL, "vfat"))];
        assert!(mount(&sys, &fat, &mut |_| Ok("clean".into()))
            .describe()
            .contains("holds vfat, not ext4"));
        assert!(sys.calls().is_empty(), "nothing mounted: {:?}", sys.calls());
        let mut failing = Recorder::default();
        failing
            .failures
            .insert("mount /var/lib/brig".into(), libc::EUCLEAN);
        let state = mount(&failing, &two[..1], &mut |_| Ok("clean".into()));
        assert!(
            matches!(&state, State::Unusable { error, .. } if error.starts_with("mounting: ")),
            "{state:?}"
        );
        assert!(state.describe().contains("left untouched"));
    }

    #[test]
    fn what_fsck_says_decides() {
        assert_eq!(
            fsck_verdict(0, "BRIG_STATE: clean, 11/65536 files"),
            Ok("clean".into())
        );
        assert_eq!(
            fsck_verdict(1, "BRIG_STATE: 12/65536 files (0.0% non-contiguous)"),
            Ok("errors corrected (BRIG_STATE: 12/65536 files (0.0% non-contiguous))".into())
        );
        let refused = fsck_verdict(
            4,
            "BRIG_STATE: UNEXPECTED INCONSISTENCY; RUN fsck MANUALLY.\n\t(i.e., without -a or -p options)",
        )
        .unwrap_err();
        assert!(refused.contains("exit 4"), "{refused}");
        assert!(fsck_verdict(8, "ext2fs_check_desc: Corrupt group descriptor").is_err());
        // An unusable verdict stops the mount, and nothing is mounted.
        let sys = Recorder::default();
        let volumes = vec![("/dev/vdb".to_string(), Volume::labelled(LABEL, "ext4"))];
        let state = mount(&sys, &volumes, &mut |_| {
            Err("e2fsck could not repair it (exit 4): x".into())
        });
        assert!(state.describe().contains("exit 4"), "{state:?}");
        assert!(sys.calls().is_empty());
    }

    #[test]
    fn a_filesystem_smaller_than_its_device_grows() {
        let sized = |fs: u64, dev: u64| Volume {
            fs_bytes: Some(fs),
            device_bytes: Some(dev),
            ..Volume::labelled(LABEL, "ext4")
        };
        assert!(should_grow(&sized(256 << 20, 1 << 30)));
        assert!(
            !should_grow(&sized(256 << 20, (256 << 20) + (1 << 20))),
            "a little slack"
        );
        assert!(
            !should_grow(&Volume::labelled(LABEL, "ext4")),
            "sizes unknown"
        );
        let sys = Recorder::default();
        let volumes = vec![("/dev/vdb".to_string(), sized(256 << 20, 1 << 30))];
        let state = mount(&sys, &volumes, &mut |_| Ok("clean".into()));
        assert!(matches!(state, State::Mounted { .. }));
        assert_eq!(
            sys.calls(),
            [
                "mount /var/lib/brig ext4 /dev/vdb",
                "grow-ext4 /var/lib/brig 1073741824"
            ]
        );
        // A failed growth leaves it mounted at its old size.
        let mut failing = Recorder::default();
        failing.failures.insert("grow-ext4".into(), libc::EINVAL);
        let state = mount(&failing, &volumes, &mut |_| Ok("clean".into()));
        assert!(matches!(state, State::Mounted { .. }), "{state:?}");
    }
}
