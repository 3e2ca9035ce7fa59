//! The log service's records and its query protocol (brig-logd and
//! brigctl): a client sends one `Query` as a JSON line on the query socket
//! and reads `Entry` JSON lines back, until the service closes the stream
//! (or, with `follow`, for as long as it likes).

use serde::{Deserialize, Serialize};

/// The query socket, in the directory every container shares with logd.
pub const QUERY_SOCKET: &str = "/run/brig/log/query.sock";
/// The syslog socket; `/dev/log` in every container points to it.
pub const SYSLOG_SOCKET: &str = "/run/brig/log/dev-log";

/// One stored record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// RFC 3339 UTC: when it was written (the sender's time when it gave
    /// one, else when logd received it).
    pub time: String,
    /// `kernel`, `syslog`, `service` (a service's output, from PID 1) or
    /// `init` (PID 1's own).
    pub source: String,
    /// Facility * 8 + severity.
    pub priority: u8,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// The program, or the service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<String>,
    pub message: String,
}

impl Entry {
    /// As a log line for people: `time app[pid]: message`.
    pub fn line(&self) -> String {
        let app = self.app.as_deref().unwrap_or(&self.source);
        match &self.pid {
            Some(pid) => format!("{} {app}[{pid}]: {}", self.time, self.message),
            None => format!("{} {app}: {}", self.time, self.message),
        }
    }
}

/// What to read. Empty fields select everything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Query {
    /// Only this service's (or program's) entries.
    #[serde(default)]
    pub service: Option<String>,
    /// Only the kernel's.
    #[serde(default)]
    pub kernel: bool,
    /// Only entries at or after this RFC 3339 time.
    #[serde(default)]
    pub since: Option<String>,
    /// Only the last N of those.
    #[serde(default)]
    pub tail: Option<usize>,
    /// Keep the stream open and send new entries as they come.
    #[serde(default)]
    pub follow: bool,
}

impl Query {
    pub fn matches(&self, entry: &Entry) -> bool {
        (!self.kernel || entry.source == "kernel")
            && self
                .service
                .as_ref()
                .is_none_or(|s| entry.app.as_deref() == Some(s.as_str()))
            && self
                .since
                .as_ref()
                .is_none_or(|since| entry.time.as_str() >= since.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(source: &str, app: &str, time: &str) -> Entry {
        Entry {
            time: time.into(),
            source: source.into(),
            priority: 6,
            host: None,
            app: Some(app.into()),
            pid: None,
            message: "m".into(),
        }
    }

    #[test]
    fn queries_select_by_service_kernel_and_time() {
        let net = entry("service", "network", "2026-11-22T10:00:00.000000Z");
        let kern = entry("kernel", "kernel", "2026-11-22T09:00:00.000000Z");
        let all = Query::default();
        assert!(all.matches(&net) && all.matches(&kern));
        let q = Query {
            service: Some("network".into()),
            ..Query::default()
        };
        assert!(q.matches(&net) && !q.matches(&kern));
        let q = Query {
            kernel: true,
            ..Query::default()
        };
        assert!(!q.matches(&net) && q.matches(&kern));
        let q = Query {
            since: Some("2026-11-22T09:30:00Z".into()),
            ..Query::default()
        };
        assert!(q.matches(&net) && !q.matches(&kern));
        assert!(serde_json::from_str::<Query>(r#"{"servce":"x"}"#).is_err());
        assert_eq!(net.line(), "2026-11-22T10:00:00.000000Z network: m");
    }
}
