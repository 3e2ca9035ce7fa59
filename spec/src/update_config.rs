//! `brig.update` in cloud-config: where a fleet's machines look for
//! updates and when they reboot into them, and how a version on trial
//! after an update proves itself healthy (docs/updates.md).

use std::time::Duration;

use serde_json::Value;

use crate::problem::Problem;

/// How long the machine must stay healthy before a version on trial is
/// marked good: long enough to see a service that crashes soon after start.
pub const DEFAULT_GRACE_TIME: Duration = Duration::from_secs(60);
/// How long after PID 1 starts a version on trial has to become healthy
/// before the machine reboots and uses one of its tries: DHCP on a slow
/// network and a Docker Engine start on an SD card both fit.
pub const DEFAULT_HEALTH_TIMEOUT: Duration = Duration::from_secs(600);
/// Less would reboot a healthy machine that is only slow to boot.
const MIN_HEALTH_TIMEOUT: Duration = Duration::from_secs(30);

/// How often a machine with `url` looks for a newer bundle by default.
pub const DEFAULT_CHECK_INTERVAL: Duration = Duration::from_secs(6 * 3600);
/// Less would have a fleet hammer its server.
const MIN_CHECK_INTERVAL: Duration = Duration::from_secs(60);
/// More is no longer following a URL (and keeps the time arithmetic far
/// from any overflow).
const MAX_CHECK_INTERVAL: Duration = Duration::from_secs(30 * 86400);

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct UpdateConfig {
    /// The bundle to follow (`http://server/brig-pc-x86_64.bundle`): when
    /// it holds a newer version than the running one, it is installed.
    pub url: Option<String>,
    pub check_interval: Duration,
    pub reboot: Reboot,
    pub grace_time: Duration,
    pub health_timeout: Duration,
}

/// When a machine reboots into an update it installed by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Reboot {
    Now,
    /// The user reboots (`brigctl reboot`); `brigctl os status` says an
    /// update waits.
    Never,
    /// Within this daily window, minutes after midnight UTC: [start, end),
    /// across midnight when end < start.
    Window(u16, u16),
}

impl Reboot {
    fn parse(text: &str) -> Result<Reboot, String> {
        let minutes = |hm: &str| -> Option<u16> {
            let (h, m) = hm.trim().split_once(':')?;
            let (h, m): (u16, u16) = (h.parse().ok()?, m.parse().ok()?);
            (h < 24 && m < 60 && hm.trim().len() == 5).then_some(h * 60 + m)
        };
        match text {
            "now" => Ok(Reboot::Now),
            "never" => Ok(Reboot::Never),
            window => match window.split_once('-') {
                Some((a, b)) => match (minutes(a), minutes(b)) {
                    (Some(a), Some(b)) if a != b => Ok(Reboot::Window(a, b)),
                    _ => Err(format!(
                        "{window:?} is not a window such as \"02:00-04:00\" (UTC, start and end differ)"
                    )),
                },
                None => Err(format!(
                    "expected now, never or a window such as \"02:00-04:00\" (UTC), not {window:?}"
                )),
            },
        }
    }

    /// Whether a reboot may happen at `minute` (of the UTC day).
    pub fn allows(self, minute: u16) -> bool {
        match self {
            Reboot::Now => true,
            Reboot::Never => false,
            Reboot::Window(start, end) if start < end => (start..end).contains(&minute),
            Reboot::Window(start, end) => minute >= start || minute < end,
        }
    }
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            url: None,
            check_interval: DEFAULT_CHECK_INTERVAL,
            reboot: Reboot::Now,
            grace_time: DEFAULT_GRACE_TIME,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
        }
    }
}

/// `6h`, `30m`, `90s`, `1d` or a number of seconds.
fn interval(value: &Value) -> Option<Duration> {
    if let Some(n) = value.as_u64() {
        return Some(Duration::from_secs(n));
    }
    let text = value.as_str()?.trim();
    let (number, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit())?);
    let n: u64 = number.parse().ok()?;
    let scale = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => return None,
    };
    n.checked_mul(scale).map(Duration::from_secs)
}

/// Parses `brig.update`; problems carry the key below it, and a bad value
/// keeps its default.
pub fn parse(value: &Value) -> (UpdateConfig, Vec<Problem>) {
    let mut config = UpdateConfig::default();
    let mut problems = Vec::new();
    let Some(map) = value.as_object() else {
        problems.push(Problem::new(
            String::new(),
            format!("expected a mapping, not {value}"),
        ));
        return (config, problems);
    };
    for (key, value) in map {
        let seconds = value.as_u64().filter(|&n| n <= 24 * 3600);
        let mut problem = |p: String| problems.push(Problem::new(key.clone(), p));
        match (key.as_str(), seconds) {
            ("url", _) => match value.as_str() {
                Some(url) if url.starts_with("http://") && url.len() > 7 => {
                    config.url = Some(url.to_string())
                }
                _ => problem(format!(
                    "expected an http:// URL of a bundle (bundles are signed: plain HTTP is enough), not {value}"
                )),
            },
            ("check_interval", _) => match interval(value) {
                Some(d) if d < MIN_CHECK_INTERVAL => problem(format!(
                    "{} s is too often; at least {} s",
                    d.as_secs(),
                    MIN_CHECK_INTERVAL.as_secs()
                )),
                Some(d) if d > MAX_CHECK_INTERVAL => problem(format!(
                    "{} s is more than 30 days; at most 30d",
                    d.as_secs()
                )),
                Some(d) => config.check_interval = d,
                None => problem(format!(
                    "expected an interval such as 6h, 30m or 3600, not {value}"
                )),
            },
            ("reboot", _) => match value.as_str().map(Reboot::parse) {
                Some(Ok(reboot)) => config.reboot = reboot,
                Some(Err(e)) => problem(e),
                None => problem(format!(
                    "expected now, never or a window such as \"02:00-04:00\", not {value}"
                )),
            },
            ("grace_time", Some(n)) => config.grace_time = Duration::from_secs(n),
            ("health_timeout", Some(n)) if Duration::from_secs(n) < MIN_HEALTH_TIMEOUT => {
                problem(format!(
                    "{n} s is too short to boot in; at least {} s",
                    MIN_HEALTH_TIMEOUT.as_secs()
                ))
            }
            ("health_timeout", Some(n)) => config.health_timeout = Duration::from_secs(n),
            ("grace_time" | "health_timeout", None) => problem(format!(
                "expected a number of seconds (at most a day), not {value}"
            )),
            _ => problem("unknown key, ignored".into()),
        }
    }
    if config.grace_time >= config.health_timeout {
        problems.push(Problem::new(
            "grace_time".into(),
            format!(
                "{} s does not fit in health_timeout ({} s): a version on trial could never be marked good; both keep their defaults",
                config.grace_time.as_secs(),
                config.health_timeout.as_secs()
            ),
        ));
        config.grace_time = DEFAULT_GRACE_TIME;
        config.health_timeout = DEFAULT_HEALTH_TIMEOUT;
    }
    (config, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// `key: problem`, one a problem.
    fn said(problems: &[Problem]) -> Vec<String> {
        problems
            .iter()
            .map(|p| format!("{}: {}", p.key, p.problem))
            .collect()
    }

    #[test]
    fn settings_and_their_problems() {
        let (c, p) = parse(&json!({"grace_time": 5, "health_timeout": 40}));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.grace_time, Duration::from_secs(5));
        assert_eq!(c.health_timeout, Duration::from_secs(40));

        let (c, p) =
            parse(&json!({"grace_time": "soon", "health_timeout": 10, "url": 1, "when": 2}));
        assert_eq!(c, UpdateConfig::default());
        let said = said(&p);
        assert_eq!(
            said,
            [
                "grace_time: expected a number of seconds (at most a day), not \"soon\"",
                "health_timeout: 10 s is too short to boot in; at least 30 s",
                "url: expected an http:// URL of a bundle (bundles are signed: plain HTTP is enough), not 1",
                "when: unknown key, ignored"
            ]
        );

        let (c, p) = parse(&json!({"grace_time": 900, "health_timeout": 300}));
        assert_eq!(c, UpdateConfig::default());
        assert!(p[0].problem.contains("could never be marked good"), "{p:?}");
    }

    #[test]
    fn fleets_follow_a_url_at_an_interval_and_reboot_when_told() {
        let (c, p) = parse(&json!({
            "url": "http://updates.example/brig-pc-x86_64.bundle",
            "check_interval": "30m",
            "reboot": "23:30-01:00"
        }));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(
            c.url.as_deref(),
            Some("http://updates.example/brig-pc-x86_64.bundle")
        );
        assert_eq!(c.check_interval, Duration::from_secs(1800));
        assert_eq!(c.reboot, Reboot::Window(23 * 60 + 30, 60));
        // Across midnight: 23:30 to 00:59 allows, 01:00 to 23:29 does not.
        for (minute, allowed) in [
            (23 * 60 + 30, true),
            (0, true),
            (59, true),
            (60, false),
            (12 * 60, false),
        ] {
            assert_eq!(c.reboot.allows(minute), allowed, "{minute}");
        }
        assert!(Reboot::Window(120, 240).allows(120) && !Reboot::Window(120, 240).allows(240));
        assert!(!Reboot::Never.allows(0) && Reboot::Now.allows(0));

        let (_, p) = parse(&json!({
            "url": "https://x/b", "check_interval": "5s", "reboot": "2:00-4:00"
        }));
        let said = said(&p);
        assert_eq!(
            said,
            [
                "check_interval: 5 s is too often; at least 60 s",
                "reboot: \"2:00-4:00\" is not a window such as \"02:00-04:00\" (UTC, start and end differ)",
                "url: expected an http:// URL of a bundle (bundles are signed: plain HTTP is enough), not \"https://x/b\"",
            ]
        );
        assert_eq!(interval(&json!("2d")), Some(Duration::from_secs(172800)));
        // Huge values are problems, never an overflow later on.
        for huge in [
            json!(10_000_000_000_000_000_000u64),
            json!("99999999999999999999d"),
            json!("31d"),
        ] {
            let (c, p) = parse(&json!({ "check_interval": huge }));
            assert_eq!(c.check_interval, DEFAULT_CHECK_INTERVAL);
            assert_eq!(p.len(), 1, "{p:?}");
        }
        assert_eq!(interval(&json!("6 h")), None);
    }
}
