//! cloud-config `brig.logging`: where the log service keeps the logs and
//! which remote syslog servers it forwards them to. PID 1 parses and checks
//! it with the rest of the config and writes it, as JSON, to `CONFIG_FILE`
//! for brig-logd (docs/logging.md).

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::Problem;
use crate::service::parse_size;

/// A forwarding queue holds this much when the config does not say.
pub const DEFAULT_QUEUE: u64 = 1 << 20;
/// Logs kept in RAM are charged to the log container's memory limit.
pub const MAX_RAM_STORE: u64 = 16 << 20;
const MIN_STORE: u64 = 64 << 10;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    #[serde(default)]
    pub storage: Storage,
    /// The most the kept logs may take, old files deleted first; brig-logd's
    /// own default when unset (64 MiB on disk, 4 MiB in RAM).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_size: Option<u64>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<Remote>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    /// On the state partition when there is one, else in RAM.
    #[default]
    Auto,
    /// In RAM even when there is a state partition (spares an SD card).
    Ram,
}

/// A remote syslog server: messages go to it as RFC 5424.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Remote {
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    /// TLS: the CA certificates (PEM) that the server's certificate must
    /// chain to; the system's CA bundle when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca: Option<String>,
    /// TLS: a client certificate chain and its key (PEM), for servers that
    /// ask for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    /// TLS: the name the server's certificate must carry; `host` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
    /// Bytes of messages held while the server cannot be reached; the
    /// oldest go first beyond it.
    pub queue_size: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// RFC 5426: a message a datagram.
    Udp,
    /// RFC 6587 octet counting.
    Tcp,
    /// RFC 5425: octet counting over TLS.
    Tls,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Udp => "udp",
            Protocol::Tcp => "tcp",
            Protocol::Tls => "tls",
        }
    }

    /// The IANA port: syslog (514/udp), shell's 514/tcp as rsyslog and
    /// syslog-ng use it, syslog-tls (6514).
    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Udp | Protocol::Tcp => 514,
            Protocol::Tls => 6514,
        }
    }
}

impl Remote {
    /// `tcp://logs.example.com:514`, for messages.
    pub fn url(&self) -> String {
        if self.host.contains(':') {
            format!("{}://[{}]:{}", self.protocol.name(), self.host, self.port)
        } else {
            format!("{}://{}:{}", self.protocol.name(), self.host, self.port)
        }
    }
}

/// Parses `brig.logging`. Problems carry the key below `brig.logging`; a
/// bad remote is left out, the rest still applies.
pub fn parse(value: &Value) -> (LoggingConfig, Vec<Problem>) {
    let mut config = LoggingConfig::default();
    let mut problems = Vec::new();
    let Some(map) = value.as_object() else {
        problems.push(Problem::new(
            String::new(),
            format!("expected a mapping, not {value}"),
        ));
        return (config, problems);
    };
    for (key, value) in map {
        let mut problem = |p: String| problems.push(Problem::new(key.clone(), p));
        match key.as_str() {
            "storage" => match value.as_str() {
                Some("auto") => config.storage = Storage::Auto,
                Some("ram") => config.storage = Storage::Ram,
                _ => problem(format!("expected auto or ram, not {value}")),
            },
            "max_size" => match size(value) {
                Ok(n) if n < MIN_STORE => problem(format!("{n} bytes is less than 64K")),
                Ok(n) => config.max_size = Some(n),
                Err(e) => problem(e),
            },
            "remote" => {
                let Some(list) = value.as_array() else {
                    problem(format!("expected a list of servers, not {value}"));
                    continue;
                };
                for (i, item) in list.iter().enumerate() {
                    match remote(item) {
                        Ok(r) => config.remote.push(r),
                        Err(Problem {
                            key: sub,
                            problem: p,
                        }) => problems.push(Problem::new(
                            format!("remote[{i}]{}", if sub.is_empty() { "" } else { "." }) + &sub,
                            format!("{p}; not forwarded there"),
                        )),
                    }
                }
            }
            _ => problem("unknown key, ignored".into()),
        }
    }
    if config.storage == Storage::Ram {
        if let Some(n) = config.max_size.filter(|&n| n > MAX_RAM_STORE) {
            problems.push(Problem::new(
                "max_size".into(),
                format!(
                    "{} MiB is more than logs in RAM may take ({} MiB); {} MiB kept",
                    n >> 20,
                    MAX_RAM_STORE >> 20,
                    MAX_RAM_STORE >> 20
                ),
            ));
            config.max_size = Some(MAX_RAM_STORE);
        }
    }
    (config, problems)
}

fn size(value: &Value) -> Result<u64, String> {
    match value {
        Value::Number(n) => n
            .as_u64()
            .ok_or_else(|| format!("expected a size such as 64M, not {n}")),
        Value::String(s) => parse_size(s).map_err(|p| p.problem),
        other => Err(format!("expected a size such as 64M, not {other}")),
    }
}

/// One server: `"tcp://host:port"`, or a mapping with `url` and the TLS
/// settings.
fn remote(item: &Value) -> Result<Remote, Problem> {
    let (url, settings) = match item {
        Value::String(url) => (url.as_str(), None),
        Value::Object(map) => match map.get("url") {
            Some(Value::String(url)) => (url.as_str(), Some(map)),
            Some(other) => {
                return Err(Problem::new(
                    "url".into(),
                    format!("expected a URL, not {other}"),
                ))
            }
            None => {
                return Err(Problem::new(
                    String::new(),
                    "no `url` (such as tcp://host:514)".into(),
                ))
            }
        },
        other => {
            return Err(Problem::new(
                String::new(),
                format!("expected a URL such as udp://host:514 or a mapping, not {other}"),
            ))
        }
    };
    let (protocol, host, port) = parse_url(url).map_err(|e| Problem::new("url".to_string(), e))?;
    let mut remote = Remote {
        protocol,
        host,
        port,
        ca: None,
        cert: None,
        key: None,
        server_name: None,
        queue_size: DEFAULT_QUEUE,
    };
    for (key, value) in settings.into_iter().flatten() {
        let text = || {
            value
                .as_str()
                .map(str::to_string)
                .ok_or_else(|| Problem::new(key.clone(), format!("expected text, not {value}")))
        };
        let pem = |label: &str| {
            let text = text()?;
            if text.contains(&format!("-----BEGIN {label}")) {
                Ok(text)
            } else {
                Err(Problem::new(
                    key.clone(),
                    format!("expected PEM text with a {label}"),
                ))
            }
        };
        match key.as_str() {
            "url" => {}
            "ca" => remote.ca = Some(pem("CERTIFICATE")?),
            "cert" => remote.cert = Some(pem("CERTIFICATE")?),
            "key" => remote.key = Some(pem("")?),
            "server_name" => remote.server_name = Some(text()?),
            "queue_size" => match size(value) {
                Ok(n) if n >= 1024 => remote.queue_size = n,
                Ok(n) => {
                    return Err(Problem::new(
                        key.clone(),
                        format!("{n} bytes is less than 1K"),
                    ))
                }
                Err(e) => return Err(Problem::new(key.clone(), e)),
            },
            _ => return Err(Problem::new(key.clone(), "unknown key".into())),
        }
    }
    let tls_only = [
        ("ca", remote.ca.is_some()),
        ("cert", remote.cert.is_some()),
        ("key", remote.key.is_some()),
        ("server_name", remote.server_name.is_some()),
    ];
    if protocol != Protocol::Tls {
        if let Some((key, _)) = tls_only.iter().find(|(_, set)| *set) {
            return Err(Problem::new(
                key.to_string(),
                format!("only for tls://, not {}://", protocol.name()),
            ));
        }
    }
    if remote.cert.is_some() != remote.key.is_some() {
        return Err(Problem::new(
            String::new(),
            "`cert` and `key` go together: give both or neither".into(),
        ));
    }
    Ok(remote)
}

/// `udp://host[:port]`, `tcp://…`, `tls://…`; IPv6 addresses in brackets.
fn parse_url(url: &str) -> Result<(Protocol, String, u16), String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("{url:?} is not a URL such as tcp://logs.example.com:514"))?;
    let protocol = match scheme {
        "udp" => Protocol::Udp,
        "tcp" => Protocol::Tcp,
        "tls" => Protocol::Tls,
        other => return Err(format!("{other}:// is not udp://, tcp:// or tls://")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: no ] after the IPv6 address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match rest.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        }
    };
    let valid_host = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b".-_:%".contains(&b));
    if !valid_host {
        return Err(format!("{url:?}: {host:?} is not a host name or address"));
    }
    let port = match port {
        None => protocol.default_port(),
        Some(p) => p
            .parse::<u16>()
            .ok()
            .filter(|&p| p > 0)
            .ok_or_else(|| format!("{url:?}: {p:?} is not a port"))?,
    };
    Ok((protocol, host.to_string(), port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CA: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";

    #[test]
    fn servers_from_urls_and_mappings() {
        let (config, problems) = parse(&json!({
            "storage": "ram",
            "max_size": "8M",
            "remote": [
                "udp://10.0.0.1",
                {"url": "tcp://logs.example.com:1514", "queue_size": "256K"},
                {"url": "tls://[fd00::1]", "ca": CA, "server_name": "logs"},
            ],
        }));
        assert_eq!(problems, []);
        assert_eq!(config.storage, Storage::Ram);
        assert_eq!(config.max_size, Some(8 << 20));
        let urls: Vec<String> = config.remote.iter().map(Remote::url).collect();
        assert_eq!(
            urls,
            [
                "udp://10.0.0.1:514",
                "tcp://logs.example.com:1514",
                "tls://[fd00::1]:6514"
            ]
        );
        assert_eq!(config.remote[0].queue_size, DEFAULT_QUEUE);
        assert_eq!(config.remote[1].queue_size, 256 << 10);
        assert_eq!(config.remote[2].ca.as_deref(), Some(CA));
        assert_eq!(config.remote[2].server_name.as_deref(), Some("logs"));
        // What PID 1 writes is what brig-logd reads.
        let json = serde_json::to_string(&config).unwrap();
        assert_eq!(
            serde_json::from_str::<LoggingConfig>(&json).unwrap(),
            config
        );
    }

    #[test]
    fn a_bad_server_is_left_out_and_named() {
        let (config, problems) = parse(&json!({
            "remote": [
                "http://x",
                "tcp://host:99999",
                {"url": "udp://a", "ca": CA},
                {"url": "tls://a", "cert": CA},
                {"url": "tls://a", "ca": "not pem"},
                {"host": "a"},
                "tcp://ok",
            ],
            "storage": "sd",
            "colour": 1,
        }));
        assert_eq!(config.remote.len(), 1, "{problems:?}");
        assert_eq!(config.remote[0].url(), "tcp://ok:514");
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "colour",
                "remote[0].url",
                "remote[1].url",
                "remote[2].ca",
                "remote[3]",
                "remote[4].ca",
                "remote[5]",
                "storage"
            ]
        );
        assert!(
            problems[1].problem.contains("http:// is not udp://"),
            "{problems:?}"
        );
        assert!(
            problems[3].problem.contains("only for tls://"),
            "{problems:?}"
        );
        assert!(problems[4].problem.contains("`cert` and `key` go together"));
        assert!(problems[1].problem.ends_with("; not forwarded there"));
    }

    #[test]
    fn logs_in_ram_stay_within_the_containers_memory() {
        let (config, problems) = parse(&json!({"storage": "ram", "max_size": "1G"}));
        assert_eq!(config.max_size, Some(MAX_RAM_STORE));
        assert!(problems[0].problem.contains("16 MiB kept"), "{problems:?}");
        let (config, problems) = parse(&json!({"max_size": 1000}));
        assert_eq!(config.max_size, None);
        assert!(problems[0].problem.contains("less than 64K"));
    }
}
