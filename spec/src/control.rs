//! The control protocol between `brigctl` and PID 1: one JSON object per
//! line over the unix socket `/run/brig/control.sock` (root, and read-only
//! requests from the `adm` group). Every
//! request gets one response line; `logs` with `follow` then keeps sending
//! `Response::Log` lines until the client hangs up.

use serde::{Deserialize, Serialize};

/// The group that may read the machine's state without root: `brigctl
/// ps`, `status`, `logs` and `network` (Debian's `adm`, gid 4, whose
/// members read the logs there too). Changes still need root.
pub const READ_ONLY_GID: u32 = 4;
/// Longest request line PID 1 accepts.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
pub enum Request {
    Ps,
    /// The machine: version, board, boot, state partition, uptime.
    Status,
    Logs {
        service: String,
        #[serde(default)]
        tail: Option<usize>,
        #[serde(default)]
        follow: bool,
    },
    Start {
        service: String,
    },
    Stop {
        service: String,
    },
    Restart {
        service: String,
    },
    Reboot,
    Poweroff,
    /// Saves a setting over the datasource's cloud-config (`brigctl config
    /// set`); applies from the next boot (or, for a section a service reads
    /// at each start, when that service restarts).
    #[serde(rename = "config-set")]
    ConfigSet {
        key: String,
        value: serde_json::Value,
    },
    /// Removes a saved setting (`brigctl config unset`).
    #[serde(rename = "config-unset")]
    ConfigUnset {
        key: String,
    },
    /// Installs the update bundle at `url` in the other slot
    /// (`brigctl os upgrade`): progress comes as `Progress` lines, then
    /// one `Ok` or `Error`.
    #[serde(rename = "os-upgrade")]
    OsUpgrade {
        url: String,
        #[serde(default)]
        allow_downgrade: bool,
    },
    /// As `OsUpgrade`, from the file whose descriptor comes with this
    /// request (SCM_RIGHTS): the client opened it, in its own mount
    /// namespace and with its own rights. `name` is for messages only.
    #[serde(rename = "os-upgrade-file")]
    OsUpgradeFile {
        name: String,
        #[serde(default)]
        allow_downgrade: bool,
    },
    /// Versions in the slots, which booted and why (`brigctl os status`).
    #[serde(rename = "os-status")]
    OsStatus,
    /// Makes the other slot's version boot next (`brigctl os rollback`).
    #[serde(rename = "os-rollback")]
    OsRollback,
    /// Copies the running version onto the disk `device` (`/dev/sdb`),
    /// erasing it (`brigctl install`): progress as `Progress` lines, then
    /// one `Ok` or `Error`.
    #[serde(rename = "install")]
    Install {
        device: String,
    },
}

/// Lets the read-only group use a socket that PID 1 or a system container
/// serves read-only requests on: group `READ_ONLY_GID`, mode 0660.
pub fn open_to_read_only_group(socket: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::os::unix::fs::chown(socket, None, Some(READ_ONLY_GID))?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o660))
}

impl Request {
    /// Whether only root may make it: everything but reading the state.
    pub fn needs_root(&self) -> bool {
        // Not `os-status` either: each one is a process of PID 1's that
        // mounts the boot partition, which only root may make PID 1 do.
        !matches!(self, Request::Ps | Request::Status | Request::Logs { .. })
    }

    /// What it does, in a sentence's words ("restarting a service").
    pub fn what(&self) -> &'static str {
        match self {
            Request::Ps => "listing the services",
            Request::Status => "showing the status",
            Request::Logs { .. } => "showing logs",
            Request::Start { .. } => "starting a service",
            Request::Stop { .. } => "stopping a service",
            Request::Restart { .. } => "restarting a service",
            Request::Reboot => "rebooting",
            Request::Poweroff => "powering off",
            Request::ConfigSet { .. } => "changing the config",
            Request::ConfigUnset { .. } => "changing the config",
            Request::OsUpgrade { .. } | Request::OsUpgradeFile { .. } => "updating the OS",
            Request::OsStatus => "showing the OS versions",
            Request::OsRollback => "rolling the OS back",
            Request::Install { .. } => "installing onto a disk",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Response {
    Ok {
        message: String,
    },
    Error {
        error: String,
    },
    Services {
        services: Vec<ServiceStatus>,
    },
    /// Log lines; with `follow`, more of these keep coming.
    Log {
        lines: Vec<LogLine>,
    },
    Status {
        status: SystemStatus,
    },
    /// A step of a long request (an update), before its `Ok` or `Error`.
    Progress {
        message: String,
    },
    Os {
        status: OsStatus,
    },
}

/// `brigctl os status`: the slots and why this one booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OsStatus {
    pub running: String,
    /// "A" or "B"; None when the machine has no slots (a kernel booted
    /// directly, an image from before slots).
    pub slot: Option<String>,
    /// The other slot's version and its state, or that it is empty.
    pub other: Option<String>,
    /// Why this version booted: the newest install, a trial boot, a
    /// rollback from a version that failed.
    pub booted: String,
    /// The last update's outcome, if there was one.
    pub last_update: Option<String>,
}

/// `brigctl status`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SystemStatus {
    pub version: String,
    pub board: String,
    pub kernel: String,
    /// How this boot reached PID 1: "kernel and initramfs", ...
    pub boot: String,
    pub uptime_seconds: u64,
    pub state: StateStatus,
}

/// The state partition, or why there is none.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateStatus {
    /// The device mounted at /var/lib/brig; None when running from RAM.
    pub device: Option<String>,
    pub size_bytes: Option<u64>,
    pub used_bytes: Option<u64>,
    /// What PID 1 said about it at boot.
    pub detail: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    pub name: String,
    /// waiting, starting, running, ready, exited, stopping, stopped,
    /// backoff, crash-loop, failed
    pub state: String,
    pub pid: Option<u32>,
    /// Seconds since the current process started.
    pub uptime_seconds: Option<u64>,
    pub restarts: u32,
    /// memory.current of its cgroup, in bytes.
    pub memory_bytes: Option<u64>,
    /// Why it is not running, when it is not.
    pub detail: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    /// Seconds since boot (CLOCK_BOOTTIME), with milliseconds.
    pub time: f64,
    pub service: String,
    /// stdout, stderr, or brig (PID 1's own words about the service).
    pub stream: String,
    pub text: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reading_the_state_is_open_to_others_than_root() {
        let service = || "web".to_string();
        for open in [
            Request::Ps,
            Request::Status,
            Request::Logs {
                service: service(),
                tail: None,
                follow: true,
            },
        ] {
            assert!(!open.needs_root(), "{open:?}");
        }
        for closed in [
            Request::Start { service: service() },
            Request::Stop { service: service() },
            Request::Restart { service: service() },
            Request::Reboot,
            Request::Poweroff,
            Request::ConfigSet {
                key: "hostname".into(),
                value: "x".into(),
            },
            Request::ConfigUnset {
                key: "hostname".into(),
            },
            Request::OsStatus,
            Request::OsRollback,
            Request::OsUpgrade {
                url: "http://x/b".into(),
                allow_downgrade: false,
            },
            Request::OsUpgradeFile {
                name: "b".into(),
                allow_downgrade: false,
            },
            Request::Install {
                device: "/dev/sdb".into(),
            },
        ] {
            assert!(closed.needs_root(), "{closed:?}");
        }
    }

    #[test]
    fn requests_round_trip_as_single_json_lines() {
        let r = Request::Logs {
            service: "syslog".into(),
            tail: Some(10),
            follow: true,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"op":"logs","service":"syslog","tail":10,"follow":true}"#
        );
        assert_eq!(serde_json::from_str::<Request>(&line).unwrap(), r);
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"ps"}"#).unwrap(),
            Request::Ps
        );
        assert_eq!(
            serde_json::to_string(&Request::ConfigSet {
                key: "hostname".into(),
                value: "x".into()
            })
            .unwrap(),
            r#"{"op":"config-set","key":"hostname","value":"x"}"#
        );
        assert_eq!(
            serde_json::from_str::<Request>(r#"{"op":"logs","service":"x"}"#).unwrap(),
            Request::Logs {
                service: "x".into(),
                tail: None,
                follow: false
            }
        );
    }

    #[test]
    fn bad_requests_are_errors_not_panics() {
        for bad in [
            r#"{"op":"fly"}"#,
            r#"{"op":"stop"}"#,
            "not json",
            r#"{"op":"stop","service":"x","y":1}"#,
            "",
        ] {
            assert!(serde_json::from_str::<Request>(bad).is_err(), "{bad}");
        }
    }
}
