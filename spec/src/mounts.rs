//! cloud-config `mounts:`: the user's disks, which PID 1 mounts at boot
//! before the services start. Entries are cloud-init's fstab-like lists:
//! `[ fs_spec, mount_point, fs_type, options, freq, passno ]`, e.g.
//! `[ vdb, /mnt/data ]` or `[ "LABEL=data", /mnt/data, ext4, "defaults,noatime" ]`.

use serde_json::Value;

use crate::problem::Problem;

/// Where mount points may be: the directories the console container and
/// user services see (they bind them from the host).
pub const MOUNT_ROOTS: &[&str] = &["/mnt", "/media"];

/// A mount point must be a plain path under one of `MOUNT_ROOTS`: the
/// parser's check, and PID 1's again on what `brig-config` planned.
pub fn check_target(target: &str) -> Result<(), String> {
    let under_root = MOUNT_ROOTS.iter().any(|r| {
        target
            .strip_prefix(r)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if !under_root || target.split('/').any(|p| p == ".." || p == ".") || target.ends_with('/') {
        return Err(format!(
            "mount point {target:?} must be a path under {} (what containers see of the host)",
            MOUNT_ROOTS.join(" or ")
        ));
    }
    Ok(())
}

/// cloud-init's default options for an entry that gives none.
const DEFAULT_OPTIONS: &str = "defaults,nofail";

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Device {
    /// `/dev/vdb` (also given as plain `vdb`).
    Path(String),
    /// `LABEL=data`: the filesystem label.
    Label(String),
    /// `UUID=…`: the filesystem UUID (ext4: `1b4e28ba-…`, FAT: `ABCD-1234`).
    Uuid(String),
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MountEntry {
    pub device: Device,
    pub target: String,
    /// None: found from the volume (`auto`).
    pub fstype: Option<String>,
    /// mount(8) options, e.g. `ro`, `noatime`, `uid=1000`.
    pub options: Vec<String>,
}

impl std::fmt::Display for Device {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Device::Path(p) => write!(f, "{p}"),
            Device::Label(l) => write!(f, "LABEL={l}"),
            Device::Uuid(u) => write!(f, "UUID={u}"),
        }
    }
}

/// Parses `mounts:`. A bad entry is reported (key `[i]`) and left out.
pub fn parse(value: &Value) -> (Vec<MountEntry>, Vec<Problem>) {
    let mut entries = Vec::new();
    let mut problems = Vec::new();
    let Some(list) = value.as_array() else {
        problems.push(Problem::new(
            String::new(),
            format!("expected a list of entries, not {value}"),
        ));
        return (entries, problems);
    };
    for (i, item) in list.iter().enumerate() {
        match entry(item) {
            Ok(e) => {
                if entries.iter().any(|o: &MountEntry| o.target == e.target) {
                    problems.push(Problem::new(
                        format!("[{i}]"),
                        format!(
                            "{} is already a mount point of an earlier entry; left out",
                            e.target
                        ),
                    ));
                } else {
                    entries.push(e);
                }
            }
            Err(p) => problems.push(Problem::new(
                format!("[{i}]"),
                format!("{p}; entry left out"),
            )),
        }
    }
    (entries, problems)
}

fn entry(item: &Value) -> Result<MountEntry, String> {
    let Some(fields) = item.as_array() else {
        return Err(format!(
            "expected a list such as [ vdb, /mnt/data ], not {item}"
        ));
    };
    // cloud-init takes numbers for the numeric fields and null for "none".
    let field = |n: usize| -> Result<Option<String>, String> {
        match fields.get(n) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
            Some(Value::Number(x)) => Ok(Some(x.to_string())),
            Some(other) => Err(format!("field {} is {other}, not text", n + 1)),
        }
    };
    if fields.len() > 6 {
        return Err("at most six fields: device, mount point, type, options, freq, passno".into());
    }
    let spec = field(0)?.ok_or("no device")?;
    let device = device(&spec)?;
    let target = field(1)?.ok_or("no mount point")?;
    if target == "swap" || field(2)?.as_deref() == Some("swap") {
        return Err("swap is not supported".into());
    }
    check_target(&target)?;
    let fstype = match field(2)?.as_deref() {
        None | Some("auto") => None,
        Some(t)
            if t.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') =>
        {
            Some(t.to_string())
        }
        Some(t) => return Err(format!("{t:?} is not a filesystem type")),
    };
    let options_text = field(3)?.unwrap_or_else(|| DEFAULT_OPTIONS.into());
    let mut options = Vec::new();
    for option in options_text
        .split(',')
        .map(str::trim)
        .filter(|o| !o.is_empty())
    {
        let safe = option
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_=.:/-+".contains(&b));
        if !safe {
            return Err(format!("{option:?} is not a mount option"));
        }
        options.push(option.to_string());
    }
    Ok(MountEntry {
        device,
        target,
        fstype,
        options,
    })
}

fn device(spec: &str) -> Result<Device, String> {
    let plain = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.:-".contains(&b))
    };
    if let Some(label) = spec.strip_prefix("LABEL=") {
        // Labels may hold spaces; they never hold a slash.
        return if !label.is_empty() && !label.contains('/') && label.len() <= 255 {
            Ok(Device::Label(label.to_string()))
        } else {
            Err(format!("{spec:?} is not a valid label"))
        };
    }
    if let Some(uuid) = spec.strip_prefix("UUID=") {
        return if uuid.len() <= 36 && uuid.bytes().all(|b| b.is_ascii_hexdigit() || b == b'-') {
            Ok(Device::Uuid(uuid.to_ascii_lowercase()))
        } else {
            Err(format!("{spec:?} is not a valid UUID"))
        };
    }
    if let Some(name) = spec.strip_prefix("/dev/") {
        return if name.split('/').all(|p| plain(p) && p != "..") {
            Ok(Device::Path(spec.to_string()))
        } else {
            Err(format!("{spec:?} is not a device path"))
        };
    }
    if spec.starts_with("ephemeral") || spec == "swap" {
        return Err(format!(
            "{spec:?} names a cloud's instance store, which Brig does not map; give the device (/dev/vdb, LABEL=, UUID=)"
        ));
    }
    if spec.contains(':') || spec.starts_with('/') {
        return Err(format!(
            "{spec:?}: network filesystems and files are not supported; give a block device"
        ));
    }
    if plain(spec) {
        return Ok(Device::Path(format!("/dev/{spec}")));
    }
    Err(format!(
        "{spec:?} is not a device (vdb, /dev/vdb, LABEL=, UUID=)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn cloud_init_documented_entries() {
        // cloud-init's mounts example, with Brig's mount points.
        let (entries, problems) = parse(&json!([
            ["/dev/ephemeral0", "/mnt", "auto", "defaults,noexec"],
            ["sdc", "/mnt/data"],
            ["xvdh", "/mnt/opt", "auto", "defaults,nofail", "0", "0"],
            ["LABEL=backup", "/media/backup", "ext4", "ro,noatime"],
            [
                "UUID=1B4E28BA-2FA1-11D2-883F-0016D3CCA427",
                "/mnt/u",
                null,
                null,
                0,
                2
            ]
        ]));
        assert_eq!(problems, vec![]);
        assert_eq!(entries.len(), 5);
        assert_eq!(entries[0].device, Device::Path("/dev/ephemeral0".into()));
        assert_eq!(entries[0].options, ["defaults", "noexec"]);
        assert_eq!(entries[1].device, Device::Path("/dev/sdc".into()));
        assert_eq!(entries[1].fstype, None);
        assert_eq!(entries[1].options, ["defaults", "nofail"]);
        assert_eq!(entries[3].device, Device::Label("backup".into()));
        assert_eq!(entries[3].fstype.as_deref(), Some("ext4"));
        assert_eq!(
            entries[4].device,
            Device::Uuid("1b4e28ba-2fa1-11d2-883f-0016d3cca427".into())
        );
    }

    #[test]
    fn bad_entries_are_reported_and_left_out() {
        let (entries, problems) = parse(&json!([
            ["vdb", "/mnt/ok"],
            ["vdc", "/etc"],
            ["ephemeral0", "/mnt/e"],
            ["vdd"],
            ["server:/export", "/mnt/nfs", "nfs"],
            ["vde", "/mnt/../etc"],
            ["vdf", "/mnt/ok"],
            ["vdg", "/mnt/x", "ext4", "defaults;rm -rf"],
            "vdh /mnt/y",
            ["vdi", "/mnt/s", "swap"],
            ["/dev/../dev/sda", "/mnt/z"]
        ]));
        assert_eq!(entries.len(), 1, "{entries:?}");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            ["[1]", "[2]", "[3]", "[4]", "[5]", "[6]", "[7]", "[8]", "[9]", "[10]"]
        );
        assert!(
            problems[0].problem.contains("under /mnt or /media"),
            "{problems:?}"
        );
        assert!(
            problems[2].problem.contains("no mount point"),
            "{problems:?}"
        );
        assert!(
            problems[3].problem.contains("network filesystems"),
            "{problems:?}"
        );
        assert!(
            problems[5].problem.contains("already a mount point"),
            "{problems:?}"
        );
        assert!(problems.iter().all(|p| !p.problem.is_empty()));
        let (_, problems) = parse(&json!("vdb"));
        assert!(problems[0].problem.contains("expected a list"));
    }
}
