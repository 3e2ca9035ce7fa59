//! The log service's records and its query protocol (brig-logd and
//! brigctl): a client sends one `Query` as a JSON line on the query socket
//! and reads `Entry` JSON lines back, until the service closes the stream
//! (or, with `follow`, for as long as it likes).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

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

/// RFC 3339 in UTC with microseconds: `2026-11-22T21:39:35.123456Z`.
pub fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or(Duration::ZERO);
    let secs = since.as_secs();
    let (year, month, day) = civil_from_days((secs / 86_400) as i64);
    let rest = secs % 86_400;
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since.subsec_micros()
    )
}

/// Days since 1970-01-01 to a (year, month, day) in the proleptic
/// Gregorian calendar (Howard Hinnant's `civil_from_days`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_from_the_epoch() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
        let end = UNIX_EPOCH + Duration::from_secs(4_102_444_799);
        assert_eq!(rfc3339(end), "2099-12-31T23:59:59.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_386_775_123_456);
        assert_eq!(rfc3339(t), "2026-11-22T22:32:55.123456Z");
    }

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
