//! `brig.update` in cloud-config: how a version on trial after an update
//! proves itself healthy (docs/updates.md).

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UpdateConfig {
    pub grace_time: Duration,
    pub health_timeout: Duration,
}

impl Default for UpdateConfig {
    fn default() -> Self {
        UpdateConfig {
            grace_time: DEFAULT_GRACE_TIME,
            health_timeout: DEFAULT_HEALTH_TIMEOUT,
        }
    }
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
        config = UpdateConfig::default();
    }
    (config, problems)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn settings_and_their_problems() {
        let (c, p) = parse(&json!({"grace_time": 5, "health_timeout": 40}));
        assert!(p.is_empty(), "{p:?}");
        assert_eq!(c.grace_time, Duration::from_secs(5));
        assert_eq!(c.health_timeout, Duration::from_secs(40));

        let (c, p) = parse(&json!({"grace_time": "soon", "health_timeout": 10, "url": 1}));
        assert_eq!(c, UpdateConfig::default());
        let said: Vec<String> = p
            .iter()
            .map(|p| format!("{}: {}", p.key, p.problem))
            .collect();
        assert_eq!(
            said,
            [
                "grace_time: expected a number of seconds (at most a day), not \"soon\"",
                "health_timeout: 10 s is too short to boot in; at least 30 s",
                "url: unknown key, ignored"
            ]
        );

        let (c, p) = parse(&json!({"grace_time": 900, "health_timeout": 300}));
        assert_eq!(c, UpdateConfig::default());
        assert!(p[0].problem.contains("could never be marked good"), "{p:?}");
    }
}
