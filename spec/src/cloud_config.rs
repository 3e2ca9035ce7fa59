//! cloud-init user data: what PID 1 reads from a datasource. A document is
//! `#cloud-config` YAML, a `#!` script, or empty. Of cloud-config, the keys
//! Brig applies so far are parsed into types; keys cloud-init knows that
//! Brig does not apply yet, and unknown keys, are reported, never silently
//! dropped. A bad value loses only its own key: the rest still applies.

use serde_json::Value;

use crate::console::{self, ConsoleConfig};
use crate::docker_config::{self, DockerConfig};
use crate::log_config::{self, LoggingConfig};
use crate::mime;
use crate::mounts::{self, MountEntry};
use crate::problem::Problem;
use crate::service::ServiceSpec;
use crate::steps;
use crate::update_config::{self, UpdateConfig};
use brig_section::brig_section;
pub use meta_data::{parse_meta_data, MetaData};

mod brig_section;
mod meta_data;

/// The image's default user data (`brig build --user-data`): the datasource's
/// config merges over it.
pub const DEFAULT_FILE: &str = "/etc/brig/user-data";

#[derive(Debug, Clone, PartialEq)]
pub enum UserData {
    Empty,
    /// cloud-config, scripts (`console.scripts`), or both from MIME parts.
    CloudConfig(Box<CloudConfig>),
}

/// User data read but not yet interpreted: the cloud-config document (MIME
/// parts merged) and the `#!` scripts. Local settings merge into the
/// document before `interpret`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UserDocument {
    pub document: serde_json::Map<String, Value>,
    pub scripts: Vec<String>,
}

/// The cloud-config keys Brig applies.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CloudConfig {
    pub hostname: Option<String>,
    pub fqdn: Option<String>,
    pub ssh_authorized_keys: Vec<String>,
    pub ntp: Option<Ntp>,
    /// The `network:` section (network config v2), for the network
    /// container, which validates it itself.
    pub network: Option<Value>,
    /// Accounts and login settings for the console container (`users`,
    /// `user`, `ssh_authorized_keys`, `ssh_pwauth`, `disable_root`,
    /// `brig.console`).
    pub console: ConsoleConfig,
    /// `brig.sysctl`: kernel settings PID 1 writes at boot, by dotted name.
    pub sysctl: Vec<(String, String)>,
    /// `brig.modules`: kernel modules PID 1 loads at boot.
    pub modules: Vec<String>,
    /// `mounts`: the user's disks, mounted by PID 1 before the services.
    pub mounts: Vec<MountEntry>,
    /// `brig.services`: the user's own services, beside the system's.
    pub services: Vec<ServiceSpec>,
    /// `brig.logging`: where logs are kept and forwarded, for brig-logd.
    pub logging: Option<LoggingConfig>,
    /// `brig.docker`: the Docker Engine's settings, for brig-dockerd.
    pub docker: Option<DockerConfig>,
    /// `brig.update`: how a version on trial after an update is judged.
    pub update: UpdateConfig,
    /// The document all this came from (parts merged), for `brigctl config`.
    pub document: serde_json::Map<String, Value>,
}

/// cloud-init's `ntp:` key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ntp {
    pub enabled: bool,
    pub servers: Vec<String>,
    pub pools: Vec<String>,
}

/// cloud-init keys that Brig does not apply yet: reported as such.
const NOT_YET: &[&str] = &[
    "mount_default_fields",
    "swap",
    "ssh_keys",
    "chpasswd",
    "password",
];
/// cloud-init keys with no meaning on Brig (no package manager, no
/// distribution-specific setup): accepted and ignored, as they are harmless.
const IGNORED: &[&str] = &[
    "packages",
    "package_update",
    "package_upgrade",
    "package_reboot_if_required",
    "manage_etc_hosts",
    "preserve_hostname",
    "final_message",
];

impl CloudConfig {
    /// The hostname to set: `hostname`, else the first label of `fqdn`.
    pub fn effective_hostname(&self) -> Option<&str> {
        self.hostname
            .as_deref()
            .or_else(|| self.fqdn.as_deref().and_then(|f| f.split('.').next()))
    }
}

impl Ntp {
    /// chrony configuration for these servers and pools (what replaces the
    /// ntp container's default pool); empty when NTP is disabled.
    pub fn chrony_sources(&self) -> String {
        let mut text = String::from("# From cloud-config `ntp:` (written by brig-init).\n");
        if self.enabled {
            for s in &self.servers {
                text += &format!("server {s} iburst\n");
            }
            for p in &self.pools {
                text += &format!("pool {p} iburst\n");
            }
        }
        text
    }
}

/// Parses user data: `#cloud-config`, a `#!` script, or MIME multipart
/// with parts of those kinds. Problems are reported with the key concerned;
/// whatever is valid is kept.
pub fn parse_user_data(data: &[u8]) -> (UserData, Vec<Problem>) {
    let (read, mut problems) = read_user_data(data);
    match read {
        Some(user) => {
            let config = interpret(&user, &mut problems);
            (UserData::CloudConfig(Box::new(config)), problems)
        }
        None => (UserData::Empty, problems),
    }
}

/// The first half of `parse_user_data`: what kind of user data it is, the
/// document and scripts it holds. None when there is nothing usable.
pub fn read_user_data(data: &[u8]) -> (Option<UserDocument>, Vec<Problem>) {
    let mut problems = Vec::new();
    let text = String::from_utf8_lossy(data);
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return (None, problems);
    }
    let mut fail = |problem: String| {
        problems.push(Problem {
            key: String::new(),
            problem,
        });
        None
    };
    if data.starts_with(&[0x1f, 0x8b]) {
        let none = fail("gzip-compressed user data is not supported: give it uncompressed".into());
        return (none, problems);
    }
    if trimmed.starts_with("#!") {
        let read = match String::from_utf8(data.to_vec()) {
            Ok(script) => Some(UserDocument {
                scripts: vec![script],
                ..UserDocument::default()
            }),
            Err(_) => fail("user data is a script that is not UTF-8 text; not run".into()),
        };
        return (read, problems);
    }
    if mime::is_multipart(&text) {
        return multipart(data, problems);
    }
    if !trimmed.starts_with("#cloud-config") {
        let first = trimmed.lines().next().unwrap_or_default();
        let none = fail(format!(
            "user data starts with {first:?}: expected `#cloud-config`, a `#!` script or MIME multipart"
        ));
        return (none, problems);
    }
    let read = document(&text, &mut problems).map(|document| UserDocument {
        document,
        scripts: Vec::new(),
    });
    (read, problems)
}

/// The second half of `parse_user_data`: the keys Brig applies.
pub fn interpret(user: &UserDocument, problems: &mut Vec<Problem>) -> CloudConfig {
    let mut config = from_document(&user.document, problems);
    config.console.scripts.extend(user.scripts.iter().cloned());
    config
}

/// A `#cloud-config` document's top-level mapping, or None (reported).
fn document(text: &str, problems: &mut Vec<Problem>) -> Option<serde_json::Map<String, Value>> {
    let document: Value = match load_yaml(text, problems) {
        Ok(Value::Null) => Value::Object(Default::default()),
        Ok(v) => v,
        Err(e) => {
            let problem = e.to_string().lines().collect::<Vec<_>>().join(" ");
            problems.push(Problem {
                key: String::new(),
                problem: format!("not valid YAML: {problem}"),
            });
            return None;
        }
    };
    match document {
        Value::Object(map) => Some(map),
        _ => {
            problems.push(Problem {
                key: String::new(),
                problem: "expected a mapping of keys".into(),
            });
            None
        }
    }
}

/// MIME multipart user data: cloud-config parts merged in order (a later
/// part's keys replace an earlier part's; mappings merge key by key),
/// scripts kept in order for the console.
fn multipart(data: &[u8], mut problems: Vec<Problem>) -> (Option<UserDocument>, Vec<Problem>) {
    let parts = match mime::parts(data) {
        Ok(parts) => parts,
        Err(e) => {
            problems.push(Problem {
                key: String::new(),
                problem: format!("MIME multipart: {e}"),
            });
            return (None, problems);
        }
    };
    let mut merged = serde_json::Map::new();
    let mut scripts = Vec::new();
    for (i, part) in parts.iter().enumerate() {
        let name = format!("MIME part {} ({})", i + 1, part.content_type);
        let text = String::from_utf8_lossy(&part.body);
        let mut found = Vec::new();
        match part.content_type.as_str() {
            "text/cloud-config" => {
                if let Some(map) = document(&text, &mut found) {
                    merge(&mut merged, map);
                }
            }
            "text/x-shellscript" => match String::from_utf8(part.body.clone()) {
                Ok(script) if script.starts_with("#!") => scripts.push(script),
                _ => found.push(Problem {
                    key: String::new(),
                    problem: "a shell script starts with #! and is text; not run".into(),
                }),
            },
            other => found.push(Problem {
                key: String::new(),
                problem: format!("{other} parts are not supported; ignored"),
            }),
        }
        problems.extend(found.into_iter().map(|p| Problem {
            problem: format!("{name}: {}", p.problem),
            ..p
        }));
    }
    let read = UserDocument {
        document: merged,
        scripts,
    };
    (Some(read), problems)
}

/// Merges `later` into `earlier`: mappings key by key, anything else replaced.
pub fn merge(earlier: &mut serde_json::Map<String, Value>, later: serde_json::Map<String, Value>) {
    for (key, value) in later {
        match (earlier.get_mut(&key), value) {
            (Some(Value::Object(old)), Value::Object(new)) => merge(old, new),
            (_, value) => {
                earlier.insert(key, value);
            }
        }
    }
}

/// The keys Brig applies, from a cloud-config document's mapping.
pub fn from_document(
    map: &serde_json::Map<String, Value>,
    problems: &mut Vec<Problem>,
) -> CloudConfig {
    let mut config = CloudConfig {
        document: map.clone(),
        ..CloudConfig::default()
    };
    let mut users = None;
    let mut default_user = console::Account::default_user();
    for (key, value) in map {
        let mut problem = |p: String| {
            problems.push(Problem {
                key: key.clone(),
                problem: p,
            })
        };
        match key.as_str() {
            "hostname" => match host_name(value, 64) {
                Ok(h) => config.hostname = Some(h),
                Err(e) => problem(e),
            },
            "fqdn" => match host_name(value, 253) {
                Ok(h) => config.fqdn = Some(h),
                Err(e) => problem(e),
            },
            "ssh_authorized_keys" => match ssh_keys(value) {
                Ok(keys) => config.ssh_authorized_keys = keys,
                Err(e) => problem(e),
            },
            "ntp" => match ntp(value) {
                Ok(n) => config.ntp = Some(n),
                Err(Problem {
                    key: sub,
                    problem: e,
                }) => problems.push(Problem {
                    key: if sub.is_empty() {
                        key.clone()
                    } else {
                        format!("{key}.{sub}")
                    },
                    problem: e,
                }),
            },
            "network" => {
                // Checked as brig-netd will apply it, so `config validate`,
                // `brig build` and `config set` report what the network
                // container would; the value is passed on as written.
                let parsed = crate::network::NetworkConfig::parse_value(value);
                problems.extend(parsed.errors.into_iter().map(|p| p.under("network")));
                config.network = Some(value.clone());
            }
            "users" => {
                let (entries, found) = console::parse_users(value);
                users = Some(entries);
                problems.extend(found.into_iter().map(|p| sub_problem(key, p)));
            }
            "groups" => {
                let (entries, found) = console::parse_groups(value);
                config.console.groups = entries;
                problems.extend(found.into_iter().map(|p| sub_problem(key, p)));
            }
            "user" => {
                let (account, found) = console::parse_default_user(value);
                default_user = account;
                problems.extend(found.into_iter().map(|p| sub_problem(key, p)));
            }
            "ssh_pwauth" => match value {
                Value::Bool(b) => config.console.ssh_password_auth = *b,
                other => problem(format!("expected true or false, not {other}")),
            },
            "disable_root" => match value {
                Value::Bool(b) => config.console.root_login = !b,
                other => problem(format!("expected true or false, not {other}")),
            },
            "brig" => brig_section(value, &mut config, problems),
            "timezone" => match value.as_str() {
                Some(tz)
                    if !tz.is_empty()
                        && !tz.starts_with('/')
                        && !tz.split('/').any(|p| p == ".." || p.is_empty())
                        && tz
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"_+-/".contains(&b)) =>
                {
                    config.console.timezone = Some(tz.to_string())
                }
                _ => problem(format!(
                    "{value} is not a time zone name such as Europe/Berlin"
                )),
            },
            "write_files" => {
                let (files, found) = steps::parse_write_files(value);
                config.console.write_files = files;
                problems.extend(found.into_iter().map(|p| sub_problem(key, p)));
            }
            "mounts" => {
                let (entries, found) = mounts::parse(value);
                config.mounts = entries;
                problems.extend(found.into_iter().map(|p| sub_problem(key, p)));
            }
            "bootcmd" | "runcmd" => match steps::shell_script(value) {
                Ok(script) if key == "bootcmd" => config.console.bootcmd = Some(script),
                Ok(script) => config.console.runcmd = Some(script),
                Err(p) => problems.push(sub_problem(
                    key,
                    Problem::new(p.key, format!("{}; none of it runs", p.problem)),
                )),
            },
            k if NOT_YET.contains(&k) => problem("not applied by this Brig version yet".into()),
            k if IGNORED.contains(&k) => {}
            _ => problem("unknown key, ignored".into()),
        }
    }
    let (accounts, found) =
        console::resolve_users(users, default_user, &config.ssh_authorized_keys);
    config.console.users = accounts;
    if config.console.root_login {
        // As cloud-init: root gets the default user's keys.
        config.console.root_authorized_keys = config.ssh_authorized_keys.clone();
    }
    problems.extend(found.into_iter().map(|p| sub_problem("users", p)));
    let found = console::resolve_groups(&mut config.console.groups, &config.console.users);
    problems.extend(found.into_iter().map(|p| sub_problem("groups", p)));
    if let Some(name) = &config.console.autologin {
        if !config.console.users.iter().any(|a| &a.name == name) {
            problems.push(Problem {
                key: "brig.console.autologin".into(),
                problem: format!("there is no user {name:?}; no autologin"),
            });
            config.console.autologin = None;
        }
    }
    config
}

fn sub_problem(key: &str, problem: Problem) -> Problem {
    problem.under(key)
}

/// cloud-config YAML as cloud-init (PyYAML, YAML 1.1) reads it: `0644` is
/// octal. `!!binary` that is not text cannot be a string: the document is
/// read again with it as its base64 text, and that is reported.
pub(crate) fn load_yaml(
    text: &str,
    problems: &mut Vec<Problem>,
) -> Result<Value, serde_saphyr::Error> {
    let options = |ignore_binary| {
        let mut options = serde_saphyr::Options::default();
        options.legacy_octal_numbers = true;
        options.ignore_binary_tag_for_string = ignore_binary;
        options
    };
    let binary_not_text = |e: &serde_saphyr::Error| {
        let mut e = e;
        while let serde_saphyr::Error::WithSnippet { error, .. } = e {
            e = error;
        }
        matches!(e, serde_saphyr::Error::BinaryNotUtf8 { .. })
    };
    match serde_saphyr::from_str_with_options(text, options(false)) {
        Err(e) if binary_not_text(&e) => {
            let line = e.location().map_or(0, |l| l.line());
            problems.push(Problem {
                key: String::new(),
                problem: format!(
                    "line {line}: `!!binary` data that is not text is kept as its base64 text; for write_files use `encoding: b64`"
                ),
            });
            serde_saphyr::from_str_with_options(text, options(true))
        }
        other => other,
    }
}

/// The instance id when the datasource gives none: derived from the user
/// data, so new user data is a new instance (per-instance steps run again).
pub fn default_instance_id(user_data: &[u8]) -> String {
    let hash = user_data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("brig-{hash:016x}")
}

/// The problems in user data `data`, each placed in the source if it can
/// be (`name:line:column: …`), as `brigctl config validate` and `brig build
/// --user-data` report them.
pub fn report(name: &str, data: &[u8]) -> Vec<String> {
    let (_, problems) = parse_user_data(data);
    let locations = crate::key_path::locations(&String::from_utf8_lossy(data));
    problems
        .iter()
        .map(|p| match crate::key_path::locate(&locations, &p.key) {
            Some((line, column)) if !p.key.is_empty() => {
                format!("{name}:{line}:{column}: cloud-config: {p}")
            }
            _ => format!("{name}: cloud-config: {p}"),
        })
        .collect()
}

/// User data given as base64 (the kernel command line's `brig.config=`).
pub fn decode_base64(text: &str) -> Result<Vec<u8>, Problem> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(text.trim()))
        .map_err(|e| Problem::new(String::new(), format!("not valid base64: {e}")))
}

/// A host name (RFC 1123 labels: letters, digits, inner hyphens).
fn host_name(value: &Value, max: usize) -> Result<String, String> {
    let Some(name) = value.as_str() else {
        return Err(format!("expected a string, not {value}"));
    };
    let valid_label = |l: &str| {
        (1..=63).contains(&l.len())
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.len() > max || !name.split('.').all(valid_label) {
        return Err(format!(
            "{name:?} is not a valid host name (letters, digits, inner hyphens, dot-separated, at most {max} characters)"
        ));
    }
    Ok(name.to_string())
}

/// A list of OpenSSH public keys, one line each.
pub(crate) fn ssh_keys(value: &Value) -> Result<Vec<String>, String> {
    let list = match value {
        Value::String(s) => vec![s.as_str()],
        Value::Array(items) => items
            .iter()
            .map(|i| i.as_str().ok_or(format!("expected strings, not {i}")))
            .collect::<Result<_, _>>()?,
        other => return Err(format!("expected a list of keys, not {other}")),
    };
    list.into_iter()
        .map(|k| {
            let k = k.trim();
            let kind = k.split_whitespace().next().unwrap_or_default();
            let known =
                kind.starts_with("ssh-") || kind.starts_with("ecdsa-") || kind.starts_with("sk-");
            if !known || k.contains('\n') || k.split_whitespace().count() < 2 {
                Err(format!(
                    "{:?} is not an OpenSSH public key (type, then base64)",
                    k.chars().take(40).collect::<String>()
                ))
            } else {
                Ok(k.to_string())
            }
        })
        .collect()
}

/// `ntp:`: enabled, servers, pools (other cloud-init sub-keys are ignored:
/// Brig's NTP client is always chrony).
fn ntp(value: &Value) -> Result<Ntp, Problem> {
    let Some(map) = value.as_object() else {
        return Err(Problem::new(
            String::new(),
            format!("expected a mapping, not {value}"),
        ));
    };
    let names = |key: &str| -> Result<Vec<String>, Problem> {
        let Some(v) = map.get(key) else {
            return Ok(Vec::new());
        };
        let Some(items) = v.as_array() else {
            return Err(Problem::new(
                key.into(),
                format!("expected a list, not {v}"),
            ));
        };
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let name = item.as_str().unwrap_or_default();
                // A name or address only: it goes into chrony's configuration.
                let ok = !name.is_empty()
                    && name.len() <= 253
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-.:".contains(&b));
                if ok {
                    Ok(name.to_string())
                } else {
                    Err(Problem::new(
                        format!("{key}[{i}]"),
                        format!("{item} is not a host name or address"),
                    ))
                }
            })
            .collect()
    };
    let enabled = match map.get("enabled") {
        None => true,
        Some(Value::Bool(b)) => *b,
        Some(v) => {
            return Err(Problem::new(
                "enabled".into(),
                format!("expected true or false, not {v}"),
            ))
        }
    };
    Ok(Ntp {
        enabled,
        servers: names("servers")?,
        pools: names("pools")?,
    })
}

#[cfg(test)]
mod tests;
