//! Where PID 1 finds cloud-init configuration at boot, and what it makes of
//! it. In order: user data on the kernel command line (`brig.config=`,
//! base64); a NoCloud volume (`cidata`, vfat or ISO 9660) with `user-data`,
//! `meta-data` and `network-config`; the boot partition's `user-data`
//! (`BRIG_BOOT`); an OpenStack ConfigDrive (`config-2`); else the last one
//! saved. The image's default config (`brig build --user-data`) lies under
//! it. The config goes to the system containers as files under
//! /run/brig/config; every problem is reported and the rest still applies.

use std::fs;
use std::path::{Path, PathBuf};

use brig_spec::cloud_config::{
    default_instance_id, interpret, merge, parse_meta_data, read_user_data, DEFAULT_FILE,
};
use brig_spec::console;
use nix::mount::MsFlags;
use serde_json::{Map, Value};

use crate::host::block_devices;
use crate::host::system::System;

/// What a datasource gave.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Seed {
    /// Where it came from, for the boot log.
    pub source: String,
    pub user_data: Option<Vec<u8>>,
    pub meta_data: Option<String>,
    pub network_config: Option<String>,
}

/// What to do with a seed: the host name to set and the files to write.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Plan {
    pub hostname: Option<String>,
    pub files: Vec<(PathBuf, String)>,
    /// `brig.sysctl`: (dotted or slashed name, value).
    pub sysctl: Vec<(String, String)>,
    /// `brig.modules`.
    pub modules: Vec<String>,
    /// `mounts`.
    pub mounts: Vec<brig_spec::mounts::MountEntry>,
    /// `brig.services`.
    pub services: Vec<brig_spec::service::ServiceSpec>,
    pub problems: Vec<String>,
}

/// Where a sysctl lives under /proc/sys.
pub fn sysctl_path(name: &str) -> PathBuf {
    // As sysctl(8): dots separate levels unless slashes are used.
    let relative = if name.contains('/') {
        name.to_string()
    } else {
        name.replace('.', "/")
    };
    Path::new("/proc/sys").join(relative)
}

/// The effective cloud-config (datasource and local settings merged), for
/// `brigctl config get` and `export`.
pub const EFFECTIVE_FILE: &str = brig_spec::cloud_config::EFFECTIVE_FILE;
/// The user data as the datasource gave it, for `brigctl config validate`.
pub const USER_DATA_FILE: &str = brig_spec::cloud_config::USER_DATA_FILE;
/// Where the network container reads its config (network config v2).
pub const NETWORK_FILE: &str = brig_spec::network::CONFIG_FILE;
/// Replaces the ntp container's default servers (chrony's confdir).
pub const NTP_SERVERS_FILE: &str = "/run/brig/config/ntp/servers.conf";
/// Where a seed volume is mounted while it is read.
const SEED_MOUNT: &str = "/run/brig/seed";
/// The settings made with `brigctl config set`: a JSON mapping at `path`,
/// none when the file does not exist.
pub fn local_settings(path: &Path) -> Result<Map<String, Value>, String> {
    match fs::read_to_string(path) {
        Ok(text) => match serde_json::from_str(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(format!("{}: not a mapping", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

/// Where the last datasource's files are kept: a machine that boots once
/// without its datasource (a seed disk detached) keeps its users and keys.
pub const SAVED_DIR: &str = "/var/lib/brig/config/datasource";

/// Keeps `seed`'s files in `dir`, each replaced atomically.
pub fn save(seed: &Seed, dir: &Path) -> Result<(), String> {
    let what = |e: std::io::Error| format!("saving the datasource in {}: {e}", dir.display());
    fs::create_dir_all(dir).map_err(what)?;
    for (name, data) in [
        ("user-data", seed.user_data.clone()),
        ("meta-data", seed.meta_data.clone().map(String::into_bytes)),
        (
            "network-config",
            seed.network_config.clone().map(String::into_bytes),
        ),
    ] {
        let path = dir.join(name);
        let Some(data) = data else {
            match fs::remove_file(&path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(what(e)),
                _ => continue,
            }
        };
        let temporary = dir.join(format!(".{name}.new"));
        let written = fs::File::create(&temporary).and_then(|mut f| {
            std::io::Write::write_all(&mut f, &data)?;
            f.sync_all()
        });
        written
            .and_then(|()| fs::rename(&temporary, &path))
            .map_err(what)?;
    }
    fs::File::open(dir).and_then(|d| d.sync_all()).map_err(what)
}

/// The datasource saved by an earlier boot, if any.
pub fn saved(dir: &Path) -> Option<Seed> {
    let read = |name: &str| fs::read(dir.join(name)).ok();
    let user_data = read("user-data")?;
    Some(Seed {
        source: format!(
            "{} (saved at an earlier boot; no datasource now)",
            dir.display()
        ),
        user_data: Some(user_data),
        meta_data: read("meta-data").map(|d| String::from_utf8_lossy(&d).into_owned()),
        network_config: read("network-config").map(|d| String::from_utf8_lossy(&d).into_owned()),
    })
}

/// The plan for the settings `local` holds now, over the datasource this
/// boot saved in `saved_dir` and the image's default user data (for a
/// `brigctl config set` while the machine runs).
pub fn replan(saved_dir: &Path, default_file: &Path, local: &Map<String, Value>) -> Plan {
    let seed = saved(saved_dir).unwrap_or_else(|| Seed {
        source: "no datasource".into(),
        ..Default::default()
    });
    let default = fs::read(default_file).ok();
    plan(&seed, default.as_deref(), local)
}

/// User data from the kernel command line: `brig.config=` with base64.
pub fn from_cmdline(value: &str) -> Result<Seed, String> {
    let user_data = brig_spec::cloud_config::decode_base64(value)
        .map_err(|e| format!("brig.config= on the kernel command line: {e}"))?;
    Ok(Seed {
        source: "the kernel command line (brig.config=)".into(),
        user_data: Some(user_data),
        ..Seed::default()
    })
}

/// The FAT label of a boot partition that may carry `user-data` (with
/// `meta-data` and `network-config`, as NoCloud): SD cards are edited on
/// another computer, where only the boot partition is readable.
pub const BOOT_LABEL: &str = "BRIG_BOOT";

/// Looks for a datasource among the block devices, in order: a NoCloud
/// volume (`cidata`), the boot partition's `user-data`, an OpenStack
/// ConfigDrive (`config-2`); reads the first found.
pub fn find_local(sys: &dyn System) -> Result<Option<Seed>, String> {
    let volumes = block_devices::scan()?;
    let labelled = |label: &str, types: &[&str]| {
        volumes.iter().find(|(_, v)| {
            v.label
                .as_deref()
                .is_some_and(|l| l.eq_ignore_ascii_case(label))
                && types.contains(&v.fstype)
        })
    };
    if let Some((device, v)) = labelled("cidata", &["vfat", "iso9660"]) {
        let source = format!("{device} (NoCloud, {})", v.fstype);
        return read_volume(sys, device, v.fstype, |at| Ok(nocloud(at, source))).map(Some);
    }
    if let Some((device, v)) = labelled(BOOT_LABEL, &["vfat"]) {
        let source = format!("{device} (boot partition {BOOT_LABEL})");
        let seed = read_volume(sys, device, v.fstype, |at| Ok(nocloud(at, source)))?;
        if seed.user_data.is_some() {
            return Ok(Some(seed));
        }
    }
    if let Some((device, v)) = labelled("config-2", &["vfat", "iso9660"]) {
        let source = format!("{device} (OpenStack ConfigDrive, {})", v.fstype);
        return read_volume(sys, device, v.fstype, |at| config_drive(at, source)).map(Some);
    }
    Ok(None)
}

/// NoCloud's files in directory `at`.
fn nocloud(at: &Path, source: String) -> Seed {
    Seed {
        source,
        user_data: fs::read(at.join("user-data")).ok(),
        meta_data: fs::read_to_string(at.join("meta-data")).ok(),
        network_config: fs::read_to_string(at.join("network-config")).ok(),
    }
}

/// An OpenStack ConfigDrive in directory `at`: `openstack/latest/user_data`
/// and `meta_data.json` (its `uuid`, `hostname` and `public_keys` become
/// NoCloud meta data). `network_data.json` is OpenStack's own format, not
/// read: the network container's DHCP default applies unless user data
/// has `network:`.
pub fn config_drive(at: &Path, source: String) -> Result<Seed, String> {
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

/// Mounts `device` read-only, reads it with `read`, unmounts it.
fn read_volume(
    sys: &dyn System,
    device: &str,
    fstype: &str,
    read: impl FnOnce(&Path) -> Result<Seed, String>,
) -> Result<Seed, String> {
    sys.create_dir_all(SEED_MOUNT)
        .map_err(|e| format!("creating {SEED_MOUNT}: {e}"))?;
    sys.mount(device, SEED_MOUNT, fstype, MsFlags::MS_RDONLY, "")
        .map_err(|e| format!("mounting {device} ({fstype}): {e}"))?;
    let seed = read(Path::new(SEED_MOUNT));
    if let Err(e) = sys.unmount(SEED_MOUNT, true) {
        return Err(format!("unmounting {device}: {e}"));
    }
    seed
}

/// What `seed` asks for, over the image's default user data (`default`,
/// from `brig build --user-data`) and under the settings made with `brigctl
/// config set` (`local`): cloud-config documents merge in that order
/// (mappings key by key), scripts of both run. The host name: user data's,
/// else meta data's `local-hostname`. Network config: the seed's
/// `network-config` file, else user data's `network:` section (written as
/// JSON, which is YAML).
pub fn plan(seed: &Seed, default: Option<&[u8]>, local: &Map<String, Value>) -> Plan {
    let mut plan = Plan::default();
    let (meta, problems) = parse_meta_data(seed.meta_data.as_deref().unwrap_or(""));
    plan.problems.extend(problems.iter().map(|p| p.to_string()));
    let mut base = None;
    if let Some(data) = default {
        let (read, problems) = read_user_data(data);
        plan.problems
            .extend(problems.iter().map(|p| format!("{DEFAULT_FILE}: {p}")));
        base = read;
    }
    let user_data = seed.user_data.as_deref().unwrap_or_default();
    let (read, mut problems) = read_user_data(user_data);
    let read = match (base, read) {
        (None, None) if local.is_empty() && meta.public_keys.is_empty() => None,
        (base, read) => {
            let mut user = base.unwrap_or_default();
            if let Some(read) = read {
                merge(&mut user.document, read.document);
                user.scripts.extend(read.scripts);
            }
            if !meta.public_keys.is_empty() {
                let keys = user
                    .document
                    .entry("ssh_authorized_keys")
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::String(one) = keys {
                    *keys = Value::Array(vec![Value::String(one.clone())]);
                }
                if let Value::Array(list) = keys {
                    list.extend(meta.public_keys.iter().cloned().map(Value::String));
                }
            }
            merge(&mut user.document, local.clone());
            Some(user)
        }
    };
    let config = read.map(|user| interpret(&user, &mut problems));
    plan.problems.extend(problems.iter().map(|p| p.to_string()));
    let instance_id = meta.instance_id.clone().unwrap_or_else(|| {
        let all = [default.unwrap_or_default(), user_data].concat();
        default_instance_id(&all)
    });
    plan.hostname = config
        .as_ref()
        .and_then(|c| c.effective_hostname().map(String::from))
        .or(meta.local_hostname);
    let network = match (
        &seed.network_config,
        config.as_ref().and_then(|c| c.network.as_ref()),
    ) {
        (Some(text), _) => Some(text.clone()),
        (None, Some(section)) => Some(format!("{{\"network\": {section}}}\n")),
        (None, None) => None,
    };
    if let Some(text) = network {
        plan.files.push((NETWORK_FILE.into(), text));
    }
    if let Some(data) = seed.user_data.as_deref().or(default) {
        plan.files.push((
            USER_DATA_FILE.into(),
            String::from_utf8_lossy(data).into_owned(),
        ));
    }
    let Some(config) = config else {
        return plan;
    };
    if let Some(ntp) = &config.ntp {
        plan.files
            .push((NTP_SERVERS_FILE.into(), ntp.chrony_sources()));
    }
    plan.sysctl = config.sysctl.clone();
    plan.modules = config.modules.clone();
    plan.mounts = config.mounts.clone();
    plan.services = config.services.clone();
    if let Some(docker) = &config.docker {
        plan.files.push((
            brig_spec::docker_config::CONFIG_FILE.into(),
            json_file(docker),
        ));
    }
    if let Some(logging) = &config.logging {
        plan.files.push((
            brig_spec::log_config::CONFIG_FILE.into(),
            json_file(logging),
        ));
    }
    let mut console = config.console.clone();
    console.instance_id = instance_id;
    plan.files
        .push((console::CONFIG_PATH.into(), json_file(&console)));
    plan.files
        .push((EFFECTIVE_FILE.into(), json_file(&config.document)));
    plan
}

/// A config file for the containers: `value` as pretty JSON.
fn json_file<T: serde::Serialize>(value: &T) -> String {
    // Serialising plain data cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_data_on_the_command_line() {
        // "#cloud-config\nhostname: from-cmdline\n"
        let seed = from_cmdline("I2Nsb3VkLWNvbmZpZwpob3N0bmFtZTogZnJvbS1jbWRsaW5lCg==").unwrap();
        assert_eq!(
            plan(&seed, None, &Map::new()).hostname.as_deref(),
            Some("from-cmdline")
        );
        let e = from_cmdline("%%%").unwrap_err();
        assert!(
            e.starts_with("brig.config= on the kernel command line: not valid base64"),
            "{e}"
        );
    }

    #[test]
    fn sysctl_names_map_to_proc() {
        assert_eq!(
            sysctl_path("vm.swappiness"),
            Path::new("/proc/sys/vm/swappiness")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.42/forwarding"),
            Path::new("/proc/sys/net/ipv4/conf/eth0.42/forwarding")
        );
    }

    /// The text of the file the plan writes at `path`.
    fn file<'a>(plan: &'a Plan, path: &str) -> &'a str {
        &plan
            .files
            .iter()
            .find(|(p, _)| p == Path::new(path))
            .unwrap_or_else(|| panic!("no {path} in {:?}", plan.files))
            .1
    }

    #[test]
    fn a_seed_becomes_a_hostname_and_config_files() {
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(
                b"#cloud-config\nhostname: node7\nntp: {servers: [ntp.example.com]}\n\
                  network: {version: 2, ethernets: {eth0: {dhcp4: true}}}\nrumcmd: [x]\n"
                    .to_vec(),
            ),
            meta_data: Some("instance-id: i-1\nlocal-hostname: meta-name\n".into()),
            network_config: None,
        };
        let p = plan(&seed, None, &Map::new());
        assert_eq!(p.hostname.as_deref(), Some("node7"));
        assert_eq!(p.problems, ["cloud-config: `rumcmd`: unknown key, ignored"]);
        let network = &p.files[0];
        assert_eq!(network.0, Path::new(NETWORK_FILE));
        let parsed = brig_spec::network::NetworkConfig::parse(&network.1);
        assert!(
            parsed.errors.is_empty() && parsed.config.devices.len() == 1,
            "{parsed:?}"
        );
        assert!(file(&p, NTP_SERVERS_FILE).contains("server ntp.example.com iburst"));
        let accounts: console::ConsoleConfig =
            serde_json::from_str(file(&p, console::CONFIG_PATH)).unwrap();
        assert!(file(&p, USER_DATA_FILE).starts_with("#cloud-config\nhostname: node7"));
        assert_eq!(accounts.users, console::ConsoleConfig::default().users);
        assert_eq!(accounts.instance_id, "i-1", "from meta data");

        // The seed's network-config file wins; meta data names the host
        // when user data does not; a script goes to the console.
        let seed = Seed {
            user_data: Some(b"#!/bin/sh\necho hi\n".to_vec()),
            network_config: Some("version: 2\n".into()),
            ..seed
        };
        let p = plan(&seed, None, &Map::new());
        assert_eq!(p.hostname.as_deref(), Some("meta-name"));
        assert_eq!(
            p.files[0],
            (PathBuf::from(NETWORK_FILE), "version: 2\n".into())
        );
        let console: console::ConsoleConfig =
            serde_json::from_str(file(&p, console::CONFIG_PATH)).unwrap();
        assert_eq!(console.scripts, ["#!/bin/sh\necho hi\n"]);
        assert!(p.problems.is_empty(), "{:?}", p.problems);

        // Without meta data the instance is the user data.
        let p = plan(
            &Seed {
                meta_data: None,
                ..seed.clone()
            },
            None,
            &Map::new(),
        );
        let console: console::ConsoleConfig =
            serde_json::from_str(file(&p, console::CONFIG_PATH)).unwrap();
        assert_eq!(
            console.instance_id,
            default_instance_id(b"#!/bin/sh\necho hi\n")
        );
    }

    #[test]
    fn the_datasource_is_kept_for_boots_without_one() {
        let dir = tempfile::tempdir().unwrap();
        let saved_dir = dir.path().join("datasource");
        assert_eq!(saved(&saved_dir), None);
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(b"#cloud-config\nhostname: kept\n".to_vec()),
            meta_data: Some("instance-id: i-1\n".into()),
            network_config: Some("version: 2\n".into()),
        };
        save(&seed, &saved_dir).unwrap();
        let again = saved(&saved_dir).unwrap();
        assert_eq!(again.user_data, seed.user_data);
        assert_eq!(again.network_config, seed.network_config);
        assert!(again.source.contains("saved at an earlier boot"));
        // A newer datasource without network-config: the old one goes.
        save(
            &Seed {
                network_config: None,
                ..seed
            },
            &saved_dir,
        )
        .unwrap();
        assert_eq!(saved(&saved_dir).unwrap().network_config, None);
        assert_eq!(
            fs::read_dir(&saved_dir).unwrap().count(),
            2,
            "no temporary files"
        );
    }

    #[test]
    fn local_settings_merge_over_the_datasource() {
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(
                b"#cloud-config\nhostname: from-seed\nbrig: {sysctl: {vm.swappiness: 1}}\n"
                    .to_vec(),
            ),
            ..Seed::default()
        };
        let local: Map<String, Value> =
            serde_json::from_str(r#"{"hostname": "from-local", "brig": {"modules": ["dummy"]}}"#)
                .unwrap();
        let p = plan(&seed, None, &local);
        assert_eq!(p.hostname.as_deref(), Some("from-local"));
        assert_eq!(p.sysctl.len(), 1, "the seed's brig keys stay");
        assert_eq!(p.modules, ["dummy"]);
        let effective = &p
            .files
            .iter()
            .find(|(f, _)| f == Path::new(EFFECTIVE_FILE))
            .unwrap()
            .1;
        let effective: Value = serde_json::from_str(effective).unwrap();
        assert_eq!(effective["hostname"], "from-local");
        // Local settings alone, without any datasource.
        let p = plan(&Seed::default(), None, &local);
        assert_eq!(p.hostname.as_deref(), Some("from-local"));
    }

    #[test]
    fn a_change_while_running_is_planned_over_the_saved_datasource() {
        let dir = tempfile::tempdir().unwrap();
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(
                b"#cloud-config\nbrig: {docker: {registry_mirrors: ['https://a.test']}}\n".to_vec(),
            ),
            ..Seed::default()
        };
        save(&seed, dir.path()).unwrap();
        let docker = |p: &Plan| {
            p.files
                .iter()
                .find(|(f, _)| f == Path::new(brig_spec::docker_config::CONFIG_FILE))
                .map(|(_, text)| serde_json::from_str::<Value>(text).unwrap())
        };
        let absent = dir.path().join("no-default");
        let p = replan(dir.path(), &absent, &Map::new());
        let mirrors = |d: &Value| d["daemon"]["registry-mirrors"][0].clone();
        assert_eq!(mirrors(&docker(&p).unwrap()), "https://a.test");
        let local: Map<String, Value> =
            serde_json::from_str(r#"{"brig": {"docker": {"debug": true}}}"#).unwrap();
        let p = replan(dir.path(), &absent, &local);
        let d = docker(&p).unwrap();
        assert_eq!(mirrors(&d), "https://a.test", "{d}");
        assert_eq!(d["daemon"]["debug"], true, "{d}");
        // No datasource saved: the local settings alone.
        let p = replan(&dir.path().join("none"), &absent, &local);
        assert_eq!(docker(&p).unwrap()["daemon"]["debug"], true);
        assert!(docker(&replan(&dir.path().join("none"), &absent, &Map::new())).is_none());
    }

    #[test]
    fn the_images_default_config_is_under_the_datasource_and_local_settings() {
        let default = b"#cloud-config\nhostname: baked\ntimezone: Europe/Paris\n\
brig: {sysctl: {vm.swappiness: 7, kernel.panic: 5}}\ncolour: red\n";
        // Alone: it applies, and its problems say where they come from.
        let p = plan(&Seed::default(), Some(default), &Map::new());
        assert_eq!(p.hostname.as_deref(), Some("baked"));
        assert_eq!(p.sysctl.len(), 2);
        assert_eq!(
            p.problems,
            ["cloud-config: `colour`: unknown key, ignored"],
            "problems of the merged document"
        );
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(
                b"#cloud-config\nhostname: from-seed\nbrig: {sysctl: {vm.swappiness: 1}}\n"
                    .to_vec(),
            ),
            ..Seed::default()
        };
        let local: Map<String, Value> =
            serde_json::from_str(r#"{"timezone": "Asia/Tokyo"}"#).unwrap();
        let p = plan(&seed, Some(default), &local);
        assert_eq!(p.hostname.as_deref(), Some("from-seed"));
        let mut sysctl = p.sysctl.clone();
        sysctl.sort();
        assert_eq!(
            sysctl,
            [
                ("kernel.panic".into(), "5".into()),
                ("vm.swappiness".into(), "1".into())
            ],
            "mappings merge key by key"
        );
        let console = &p
            .files
            .iter()
            .find(|(f, _)| f == Path::new(console::CONFIG_PATH))
            .unwrap()
            .1;
        assert!(console.contains("Asia/Tokyo"), "{console}");
    }

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
        let seed = config_drive(dir.path(), "/dev/sr0".into()).unwrap();
        let p = plan(&seed, None, &Map::new());
        assert!(p.problems.is_empty(), "{:?}", p.problems);
        assert_eq!(p.hostname.as_deref(), Some("vm1"));
        let console: console::ConsoleConfig =
            serde_json::from_str(file(&p, console::CONFIG_PATH)).unwrap();
        assert_eq!(console.instance_id, "83679162-1378-4288-a2d4-70e13ec132aa");
        let brig = console.users.iter().find(|u| u.name == "brig").unwrap();
        assert_eq!(
            brig.ssh_authorized_keys,
            ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 me@host"]
        );
        // Without meta_data.json it is not a ConfigDrive.
        fs::remove_file(latest.join("meta_data.json")).unwrap();
        let err = config_drive(dir.path(), "/dev/sr0".into()).unwrap_err();
        assert!(err.contains("meta_data.json"), "{err}");
    }
}
