//! An OpenStack ConfigDrive: a volume labelled `config-2` (ISO 9660 or FAT).

use std::fs;
use std::path::Path;

use serde_json::{Map, Value};

use crate::config::{Datasource, Seed, Volumes};

pub struct ConfigDrive<'a>(pub Volumes<'a>);

impl Datasource for ConfigDrive<'_> {
    fn read(&mut self) -> Result<Option<Seed>, String> {
        self.0
            .read_labelled("config-2", &["vfat", "iso9660"], |at, device, fstype| {
                files(at, format!("{device} (OpenStack ConfigDrive, {fstype})"))
            })
    }
}

/// An OpenStack ConfigDrive in directory `at`: `openstack/latest/user_data`
/// and `meta_data.json` (its `uuid`, `hostname` and `public_keys` become
/// NoCloud meta data). `network_data.json` is OpenStack's own format, not
/// read: the network container's DHCP default applies unless user data
/// has `network:`.
pub fn files(at: &Path, source: String) -> Result<Seed, String> {
    let dir = at.join("openstack/latest");
    let meta_path = dir.join("meta_data.json");
    let text = fs::read_to_string(&meta_path)
        .map_err(|e| format!("ConfigDrive: reading {}: {e}", meta_path.display()))?;
    let meta: Value = serde_json::from_str(&text)
        .map_err(|e| format!("ConfigDrive: {}: {e}", meta_path.display()))?;
    let mut nocloud_meta = Map::new();
    if let Some(uuid) = meta.get("uuid") {
        nocloud_meta.insert("instance-id".into(), uuid.clone());
    }
    if let Some(name) = meta.get("hostname").and_then(Value::as_str) {
        // OpenStack gives a full name (`vm1.novalocal`): its first label.
        let short = name.split('.').next().unwrap_or(name);
        nocloud_meta.insert("local-hostname".into(), Value::String(short.into()));
    }
    if let Some(keys) = meta.get("public_keys") {
        nocloud_meta.insert("public-keys".into(), keys.clone());
    }
    Ok(Seed {
        source,
        user_data: fs::read(dir.join("user_data")).ok(),
        // JSON is YAML: the meta data parser reads it as it is.
        meta_data: Some(Value::Object(nocloud_meta).to_string()),
        network_config: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::plan::plan;
    use brig_spec::console;

    #[test]
    fn an_openstack_config_drive_becomes_user_and_meta_data() {
        let dir = tempfile::tempdir().unwrap();
        let latest = dir.path().join("openstack/latest");
        fs::create_dir_all(&latest).unwrap();
        fs::write(latest.join("user_data"), "#cloud-config\ntimezone: UTC\n").unwrap();
        fs::write(
            latest.join("meta_data.json"),
            r#"{"uuid": "83679162-1378-4288-a2d4-70e13ec132aa", "hostname": "vm1.novalocal",
                "name": "vm1", "public_keys": {"mykey": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 me@host"}}"#,
        )
        .unwrap();
        let seed = files(dir.path(), "/dev/sr0".into()).unwrap();
        let p = plan(&seed, None, &Map::new());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.hostname.as_deref(), Some("vm1"));
        let console: console::ConsoleConfig = serde_json::from_str(
            &p.files
                .iter()
                .find(|(f, _)| f == Path::new(brig_spec::paths::CONSOLE_CONFIG))
                .unwrap()
                .1,
        )
        .unwrap();
        assert_eq!(console.instance_id, "83679162-1378-4288-a2d4-70e13ec132aa");
        let brig = console.users.iter().find(|u| u.name == "brig").unwrap();
        assert_eq!(
            brig.ssh_authorized_keys,
            ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 me@host"]
        );
        // Without meta_data.json it is not a ConfigDrive.
        fs::remove_file(latest.join("meta_data.json")).unwrap();
        let err = files(dir.path(), "/dev/sr0".into()).unwrap_err();
        assert!(err.contains("meta_data.json"), "{err}");
    }
}
