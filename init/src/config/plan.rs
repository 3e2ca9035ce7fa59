//! What PID 1 makes of a datasource's seed: cloud-config documents merged
//! (the image's default under the seed, the settings made with `brigctl
//! config set` over it), then the host name to set, sysctls, modules,
//! mounts and services for PID 1, and the files under /run/brig/config for
//! the system containers. Every problem is reported and the rest applies.

use std::path::{Path, PathBuf};

use brig_spec::cloud_config::{
    default_instance_id, interpret, merge, parse_meta_data, read_user_data, DEFAULT_FILE,
};
use brig_spec::paths::{
    EFFECTIVE_FILE, NETWORK_CONFIG, NTP_SERVERS_FILE, USER_DATA_FILE, WIFI_CONFIG,
};
use serde_json::{Map, Value};

use crate::config::Seed;

/// What to do with a seed: the host name to set and the files to write.
/// `brig-config` makes it and sends it to PID 1 as JSON (`ask`).
#[derive(Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
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
    #[serde(with = "named_services")]
    pub services: Vec<brig_spec::service::ServiceSpec>,
    /// `brig.update`.
    pub update: brig_spec::update_config::UpdateConfig,
    pub problems: Vec<String>,
    /// The effective cloud-config document (all sources merged).
    pub effective: Map<String, Value>,
}

/// Where a sysctl lives under /proc/sys.
/// None for a name that would lead out of it (absolute, or with `..`).
pub fn sysctl_path(name: &str) -> Option<PathBuf> {
    // As sysctl(8): dots separate levels unless slashes are used.
    let relative = if name.contains('/') {
        name.to_string()
    } else {
        name.replace('.', "/")
    };
    let relative = Path::new(&relative);
    let inside = relative
        .components()
        .all(|c| matches!(c, std::path::Component::Normal(_)));
    (inside && !name.is_empty()).then(|| Path::new("/proc/sys").join(relative))
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
    plan.problems
        .extend(problems.iter().map(|p| format!("cloud-config: {p}")));
    let mut base = None;
    if let Some(data) = default {
        let (read, problems) = read_user_data(data);
        plan.problems.extend(
            problems
                .iter()
                .map(|p| format!("{DEFAULT_FILE}: cloud-config: {p}")),
        );
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
    plan.problems
        .extend(problems.iter().map(|p| format!("cloud-config: {p}")));
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
        // Not YAML: the network container gets it to report where it is
        // broken, unless it may hold Wi-Fi keys, which it never sees.
        let for_netd = brig_spec::network::without_wifi_secrets(&text).unwrap_or_else(|| {
            if text.contains("wifis") {
                "# not YAML, and it names wifis: see `brigctl config validate`\n".into()
            } else {
                text.clone()
            }
        });
        plan.files.push((NETWORK_CONFIG.into(), for_netd));
        plan.files.push((WIFI_CONFIG.into(), text));
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
    plan.update = config.update.clone();
    if let Some(docker) = &config.docker {
        for file in [
            brig_spec::paths::DOCKER_CONFIG,
            brig_spec::paths::SWARM_CONFIG,
        ] {
            plan.files.push((file.into(), json_file(docker)));
        }
    }
    if let Some(logging) = &config.logging {
        plan.files
            .push((brig_spec::paths::LOGGING_CONFIG.into(), json_file(logging)));
    }
    let mut console = config.console.clone();
    console.instance_id = instance_id;
    plan.files
        .push((brig_spec::paths::CONSOLE_CONFIG.into(), json_file(&console)));
    plan.files
        .push((EFFECTIVE_FILE.into(), json_file(&config.document)));
    plan.effective = config.document.clone();
    plan
}

/// A config file for the containers: `value` as pretty JSON.
fn json_file<T: serde::Serialize>(value: &T) -> String {
    // Serialising plain data cannot fail.
    serde_json::to_string_pretty(value).unwrap_or_default() + "\n"
}

/// A spec's name is not one of its fields (it is its key's in
/// `brig.services`), so the plan carries it beside the spec; PID 1 checks
/// each spec again as it reads it, as a user service.
mod named_services {
    use brig_spec::service::ServiceSpec;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(specs: &[ServiceSpec], s: S) -> Result<S::Ok, S::Error> {
        let named: Vec<(&str, String)> = specs
            .iter()
            .map(|spec| (spec.name.as_str(), spec.to_json()))
            .collect();
        named.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<ServiceSpec>, D::Error> {
        let named = Vec::<(String, String)>::deserialize(d)?;
        named
            .into_iter()
            .map(|(name, json)| {
                ServiceSpec::from_json(&name, &json)
                    .and_then(|spec| spec.validate_user_service().map(|()| spec))
                    .map_err(|p| serde::de::Error::custom(format!("service {name}: {p}")))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::console;

    #[test]
    fn sysctl_names_map_to_proc() {
        assert_eq!(
            sysctl_path("vm.swappiness").unwrap(),
            Path::new("/proc/sys/vm/swappiness")
        );
        assert_eq!(
            sysctl_path("net/ipv4/conf/eth0.42/forwarding").unwrap(),
            Path::new("/proc/sys/net/ipv4/conf/eth0.42/forwarding")
        );
        for outside in ["/etc/shadow", "net/../../../etc/passwd", "..", ""] {
            assert_eq!(sysctl_path(outside), None, "{outside:?}");
        }
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
        assert_eq!(network.0, Path::new(NETWORK_CONFIG));
        let parsed = brig_spec::network::NetworkConfig::parse(&network.1);
        assert!(
            parsed.errors.is_empty() && parsed.config.devices.len() == 1,
            "{parsed:?}"
        );
        assert!(file(&p, NTP_SERVERS_FILE).contains("server ntp.example.com iburst"));
        let accounts: console::ConsoleConfig =
            serde_json::from_str(file(&p, brig_spec::paths::CONSOLE_CONFIG)).unwrap();
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
        // The network container's copy in JSON, without Wi-Fi secrets;
        // the wifi container's as written.
        assert_eq!(file(&p, NETWORK_CONFIG), "{\"version\":2}\n");
        assert_eq!(file(&p, WIFI_CONFIG), "version: 2\n");
        let console: console::ConsoleConfig =
            serde_json::from_str(file(&p, brig_spec::paths::CONSOLE_CONFIG)).unwrap();
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
            serde_json::from_str(file(&p, brig_spec::paths::CONSOLE_CONFIG)).unwrap();
        assert_eq!(
            console.instance_id,
            default_instance_id(b"#!/bin/sh\necho hi\n")
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
            .find(|(f, _)| f == Path::new(brig_spec::paths::CONSOLE_CONFIG))
            .unwrap()
            .1;
        assert!(console.contains("Asia/Tokyo"), "{console}");
    }
}
