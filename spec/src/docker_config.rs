//! cloud-config `brig.docker`: the user's Docker Engine. The common
//! `daemon.json` settings under their cloud-config names, checked here, and
//! extra `dockerd` arguments. PID 1 writes the parsed result to
//! `CONFIG_FILE`; brig-dockerd turns it into `/etc/docker/daemon.json`
//! (docs/docker.md).

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::problem::Problem;

/// The group that may use the Docker socket, the same in the docker and
/// console containers (the user `brig` is in it).
pub const DOCKER_GROUP: &str = "docker";
pub const DOCKER_GID: u32 = 999;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DockerConfig {
    /// daemon.json as dockerd reads it (its own key names).
    #[serde(default)]
    pub daemon: Map<String, Value>,
    /// More `dockerd` arguments, after Brig's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_args: Vec<String>,
    /// TCP addresses the Docker API listens on besides the socket
    /// (`tcp://0.0.0.0:2376`); only with `tls`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listen: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<Tls>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<Swarm>,
}

/// The Docker API's TLS: this node's certificate and key, and the CA whose
/// certificates clients must present (dockerd's `--tlsverify`). The same
/// certificate is this node's client identity toward other nodes' APIs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    pub ca: String,
    pub cert: String,
    pub key: String,
}

impl Tls {
    /// Writes `ca.pem`, `cert.pem` and `key.pem` (root's only) into `dir`,
    /// as dockerd and the docker CLI take them; an error names the file.
    pub fn write_to(&self, dir: &std::path::Path) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let at = |path: &std::path::Path, doing: &str, e: std::io::Error| {
            std::io::Error::new(e.kind(), format!("{doing} {}: {e}", path.display()))
        };
        std::fs::create_dir_all(dir).map_err(|e| at(dir, "making", e))?;
        for (name, text, mode) in [
            ("ca.pem", &self.ca, 0o644),
            ("cert.pem", &self.cert, 0o644),
            ("key.pem", &self.key, 0o600),
        ] {
            let path = dir.join(name);
            std::fs::write(&path, text)
                .and_then(|()| {
                    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode))
                })
                .map_err(|e| at(&path, "writing", e))?;
        }
        Ok(())
    }
}

/// Swarm membership from config alone.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// Create the swarm on this node (its first manager).
    #[serde(default)]
    pub init: bool,
    /// Managers to join through, `host[:port]` (port 2377 by default).
    #[serde(default)]
    pub join: Vec<String>,
    /// Join as a worker or a manager.
    #[serde(default)]
    pub role: SwarmRole,
    /// The join token; without one it is asked of a manager's Docker API
    /// over TLS (port `API_TLS_PORT`), with this node's `tls` certificate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    /// The address other nodes reach this one at: an IP address or an
    /// interface name; dockerd's choice when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub advertise_addr: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SwarmRole {
    #[default]
    Worker,
    Manager,
}

impl SwarmRole {
    pub fn name(self) -> &'static str {
        match self {
            SwarmRole::Worker => "worker",
            SwarmRole::Manager => "manager",
        }
    }
}

/// Docker's registered port for its API over TLS.
pub const API_TLS_PORT: u16 = 2376;
/// Swarm's cluster management port.
pub const SWARM_PORT: u16 = 2377;

/// dockerd options Brig sets itself (the socket, its group, where dockerd
/// keeps its state and config), not to be given again.
const BRIG_ARGS: &[&str] = &["host", "group", "pidfile", "exec-root", "config-file"];

/// Parses `brig.docker`; problems carry the key below `brig.docker`. A bad
/// setting is left out, the rest applies.
pub fn parse(value: &Value) -> (DockerConfig, Vec<Problem>) {
    let mut config = DockerConfig::default();
    let mut problems: Vec<Problem> = Vec::new();
    let Some(map) = value.as_object() else {
        problems.push(Problem::new(
            String::new(),
            format!("expected a mapping, not {value}"),
        ));
        return (config, problems);
    };
    for (key, value) in map {
        let daemon_key = key.replace('_', "-");
        let checked = match key.as_str() {
            "registry_mirrors" => list(value, url),
            "insecure_registries" => list(value, registry),
            "dns" => list(value, ip_address),
            "log_driver" | "storage_driver" => word(value),
            "log_opts" => log_opts(value),
            "default_address_pools" => address_pools(value),
            "live_restore" | "debug" | "ip_forward" | "iptables" | "ipv6" | "userland_proxy" => {
                match value {
                    Value::Bool(_) => Ok(value.clone()),
                    other => Err(format!("expected true or false, not {other}")),
                }
            }
            "data_root" => match value.as_str() {
                Some(p) if p.starts_with('/') && !p.split('/').any(|c| c == "..") => {
                    Ok(value.clone())
                }
                _ => Err(format!("expected an absolute path, not {value}")),
            },
            "mtu" => match value.as_u64() {
                Some(68..=65535) => Ok(value.clone()),
                _ => Err(format!("expected an MTU from 68 to 65535, not {value}")),
            },
            "bip" | "fixed_cidr" => cidr(value).map(|_| value.clone()),
            "extra_args" => {
                match value.as_array().and_then(|a| {
                    a.iter()
                        .map(|v| v.as_str().map(str::to_string))
                        .collect::<Option<Vec<_>>>()
                }) {
                    Some(args) => {
                        let brig_owns = |a: &&String| {
                            let name = a.trim_start_matches('-').split('=').next();
                            a.starts_with("-H")
                                || a.starts_with("-G")
                                || (a.starts_with("--") && BRIG_ARGS.contains(&name.unwrap_or("")))
                        };
                        match args.iter().find(brig_owns) {
                            Some(a) => problems.push(Problem::new(
                                key.clone(),
                                format!(
                                    "{a:?} is set by Brig (docs/docker.md); extra_args ignored"
                                ),
                            )),
                            None => config.extra_args = args,
                        }
                    }
                    None => problems.push(Problem::new(
                        key.clone(),
                        format!("expected a list of arguments, not {value}"),
                    )),
                }
                continue;
            }
            "listen" => {
                match list(value, tcp_address) {
                    Ok(_) => {
                        config.listen = value
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(|v| v.as_str().map(str::to_string))
                            .collect()
                    }
                    Err(e) => problems.push(Problem::new(key.clone(), e)),
                }
                continue;
            }
            "tls" => {
                match tls(value) {
                    Ok(t) => config.tls = Some(t),
                    Err(Problem {
                        key: sub,
                        problem: e,
                    }) => problems.push(Problem::new(join_key(key, &sub), e)),
                }
                continue;
            }
            "swarm" => {
                match swarm(value) {
                    Ok(s) => config.swarm = Some(s),
                    Err(Problem {
                        key: sub,
                        problem: e,
                    }) => problems.push(Problem::new(join_key(key, &sub), e)),
                }
                continue;
            }
            _ => {
                problems.push(Problem::new(key.clone(), "unknown key, ignored".into()));
                continue;
            }
        };
        match checked {
            Ok(v) => {
                config.daemon.insert(daemon_key, v);
            }
            Err(e) => problems.push(Problem::new(key.clone(), e)),
        }
    }
    if !config.listen.is_empty() && config.tls.is_none() {
        problems.push(Problem::new(
            "listen".into(),
            "the Docker API on TCP is root on this machine for whoever reaches it: give `tls` (client certificates are required); not listening".into(),
        ));
        config.listen.clear();
    }
    if let Some(s) = &config.swarm {
        if !s.join.is_empty() && s.token.is_none() && config.tls.is_none() {
            problems.push(Problem::new(
                "swarm".into(),
                "joining without a `token` asks a manager for one over TLS: give `tls` or `token`; not joining".into(),
            ));
            config.swarm = None;
        }
    }
    (config, problems)
}

fn join_key(key: &str, sub: &str) -> String {
    if sub.is_empty() {
        key.to_string()
    } else {
        format!("{key}.{sub}")
    }
}

/// `tcp://host:port`.
fn tcp_address(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("tcp://")
        .ok_or_else(|| format!("{text:?} is not a tcp://host:port address"))?;
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or_else(|| format!("{text:?} has no port"))?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(format!("{text:?} is not a tcp://host:port address"));
    }
    Ok(())
}

fn tls(value: &Value) -> Result<Tls, Problem> {
    let map = value.as_object().ok_or_else(|| {
        Problem::new(
            String::new(),
            format!("expected a mapping of ca, cert, key, not {value}"),
        )
    })?;
    let pem = |key: &str, label: &str| -> Result<String, Problem> {
        match map.get(key).and_then(Value::as_str) {
            Some(text) if text.contains(&format!("-----BEGIN {label}")) => Ok(text.to_string()),
            Some(_) => Err(Problem::new(
                key.into(),
                format!("expected PEM text with a {label}"),
            )),
            None => Err(Problem::new(key.into(), "missing".into())),
        }
    };
    if let Some(k) = map
        .keys()
        .find(|k| !["ca", "cert", "key"].contains(&k.as_str()))
    {
        return Err(Problem::new(k.clone(), "unknown key".into()));
    }
    Ok(Tls {
        ca: pem("ca", "CERTIFICATE")?,
        cert: pem("cert", "CERTIFICATE")?,
        key: pem("key", "")?,
    })
}

fn swarm(value: &Value) -> Result<Swarm, Problem> {
    let map = value
        .as_object()
        .ok_or_else(|| Problem::new(String::new(), format!("expected a mapping, not {value}")))?;
    let mut swarm = Swarm {
        init: false,
        join: Vec::new(),
        role: SwarmRole::Worker,
        token: None,
        advertise_addr: None,
    };
    for (key, value) in map {
        let fail = |p: String| Problem::new(key.clone(), p);
        match key.as_str() {
            "init" => {
                swarm.init = value
                    .as_bool()
                    .ok_or_else(|| fail(format!("expected true or false, not {value}")))?
            }
            "join" => {
                let items: Vec<&Value> = match value {
                    Value::Array(a) => a.iter().collect(),
                    one => vec![one],
                };
                for item in items {
                    let text = item
                        .as_str()
                        .filter(|t| {
                            !t.is_empty()
                                && t.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b))
                        })
                        .ok_or_else(|| fail(format!("{item} is not a manager's host[:port]")))?;
                    swarm.join.push(text.to_string());
                }
            }
            "role" => {
                swarm.role = match value.as_str() {
                    Some("worker") => SwarmRole::Worker,
                    Some("manager") => SwarmRole::Manager,
                    _ => return Err(fail(format!("expected worker or manager, not {value}"))),
                }
            }
            "token" => match value.as_str() {
                Some(t) if t.starts_with("SWMTKN-") => swarm.token = Some(t.to_string()),
                _ => return Err(fail("expected a join token (SWMTKN-…)".into())),
            },
            "advertise_addr" => match value.as_str() {
                Some(a)
                    if !a.is_empty()
                        && a.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-:_".contains(&b)) =>
                {
                    swarm.advertise_addr = Some(a.to_string())
                }
                _ => {
                    return Err(fail(format!(
                        "expected an address or interface name, not {value}"
                    )))
                }
            },
            _ => return Err(fail("unknown key".into())),
        }
    }
    match (swarm.init, swarm.join.is_empty()) {
        (true, false) => Err(Problem::new(
            String::new(),
            "`init` and `join` exclude each other: a node creates the swarm or joins it".into(),
        )),
        (false, true) => Err(Problem::new(
            String::new(),
            "say `init: true` or the managers to `join`".into(),
        )),
        _ => Ok(swarm),
    }
}

fn list(value: &Value, item: fn(&str) -> Result<(), String>) -> Result<Value, String> {
    let items = value
        .as_array()
        .ok_or_else(|| format!("expected a list, not {value}"))?;
    for (i, v) in items.iter().enumerate() {
        let text = v
            .as_str()
            .ok_or_else(|| format!("[{i}]: expected text, not {v}"))?;
        item(text).map_err(|e| format!("[{i}]: {e}"))?;
    }
    Ok(value.clone())
}

fn url(text: &str) -> Result<(), String> {
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or_else(|| format!("{text:?} is not an http:// or https:// URL"))?;
    if rest.is_empty() || rest.starts_with('/') || rest.contains(char::is_whitespace) {
        return Err(format!("{text:?} has no host"));
    }
    Ok(())
}

/// `host[:port]`, or a CIDR.
fn registry(text: &str) -> Result<(), String> {
    if text.contains('/') {
        return cidr(&Value::String(text.into())).map(|_| ());
    }
    let valid = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b));
    if valid {
        Ok(())
    } else {
        Err(format!("{text:?} is not a registry host[:port] or CIDR"))
    }
}

fn ip_address(text: &str) -> Result<(), String> {
    text.parse::<std::net::IpAddr>()
        .map(|_| ())
        .map_err(|_| format!("{text:?} is not an IP address"))
}

fn cidr(value: &Value) -> Result<u8, String> {
    let text = value
        .as_str()
        .ok_or_else(|| format!("expected a CIDR such as 10.10.0.0/16, not {value}"))?;
    let (address, prefix) = text
        .split_once('/')
        .ok_or_else(|| format!("{text:?} is not a CIDR such as 10.10.0.0/16"))?;
    let address: std::net::IpAddr = address
        .parse()
        .map_err(|_| format!("{text:?}: {address:?} is not an IP address"))?;
    let max = if address.is_ipv4() { 32 } else { 128 };
    prefix
        .parse::<u8>()
        .ok()
        .filter(|p| *p <= max)
        .ok_or_else(|| format!("{text:?}: /{prefix} is not a prefix length"))
}

fn word(value: &Value) -> Result<Value, String> {
    match value.as_str() {
        Some(w)
            if !w.is_empty()
                && w.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)) =>
        {
            Ok(value.clone())
        }
        _ => Err(format!("expected a name such as overlay2, not {value}")),
    }
}

/// Log driver options are strings to dockerd; numbers are taken as text.
fn log_opts(value: &Value) -> Result<Value, String> {
    let map = value
        .as_object()
        .ok_or_else(|| format!("expected a mapping such as {{max-size: 10m}}, not {value}"))?;
    let mut out = Map::new();
    for (k, v) in map {
        let text = match v {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            Value::Bool(b) => b.to_string(),
            other => return Err(format!("{k}: expected a value, not {other}")),
        };
        out.insert(k.clone(), Value::String(text));
    }
    Ok(Value::Object(out))
}

/// `[{base: 10.10.0.0/16, size: 24}]`: the size no shorter than the base.
fn address_pools(value: &Value) -> Result<Value, String> {
    let pools = value
        .as_array()
        .ok_or_else(|| format!("expected a list of {{base, size}}, not {value}"))?;
    for (i, pool) in pools.iter().enumerate() {
        let base = pool
            .get("base")
            .ok_or_else(|| format!("[{i}]: no base"))
            .and_then(|b| cidr(b).map_err(|e| format!("[{i}].base: {e}")))?;
        let size = pool
            .get("size")
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("[{i}]: size is a prefix length such as 24"))?;
        if size < u64::from(base) || size > 128 {
            return Err(format!("[{i}]: size /{size} does not fit in /{base}"));
        }
        if let Some(k) = pool
            .as_object()
            .and_then(|m| m.keys().find(|k| *k != "base" && *k != "size"))
        {
            return Err(format!("[{i}]: unknown key {k:?}"));
        }
    }
    Ok(value.clone())
}

#[cfg(test)]
mod tests;
