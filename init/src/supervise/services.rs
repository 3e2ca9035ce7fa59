//! The system services at run time: loads the specs shipped in the image,
//! carries out the supervisor's actions with the container runtime (image
//! mounts, cgroups, spawn, signals, readiness checks) and keeps each
//! service's output.

use std::collections::HashMap;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Instant;

use brig_spec::control::{LogLine, ServiceStatus, READ_ONLY_GID};
use brig_spec::paths;
use brig_spec::service::{Readiness, ServiceSpec};
use nix::sys::signal::Signal;

use crate::supervise::containers::Runtime;
use crate::supervise::log_ring::{self, LogRing};
use crate::supervise::supervisor::{Action, State, Supervisor};

/// Where `brig build` puts each service's `<name>.json` (its service.toml,
/// checked and written as JSON) and `<name>.squashfs`.
pub const IMAGES: &str = "/lib/brig/containers";
/// Runtime directories that system containers share through bind mounts:
/// DNS and NTP sources written by the network container, its status
/// socket, and the config PID 1 hands out; with their modes and groups. The
/// NTP one also holds chronyd's command socket, which chronyd refuses to
/// create in a directory others can enter. The log service's query socket
/// is for root and the read-only group (`brigctl logs` without sudo).
pub const SHARED_DIRS: &[(&str, u32, u32)] = &[
    (brig_spec::paths::DNS_DIR, 0o755, 0),
    (brig_spec::paths::NTP_DIR, 0o750, 0),
    (paths::NETWORK_STATUS_DIR, 0o755, 0),
    (paths::CONFIG_DIR, 0o755, 0),
    (brig_spec::paths::SYSLOG_DIR, 0o755, 0),
    // PID 1's own socket to the log service: the log container's only.
    (brig_spec::paths::INIT_LOG_DIR, 0o700, 0),
    (brig_spec::paths::LOG_QUERY_DIR, 0o750, READ_ONLY_GID),
    // The Docker socket (its own mode and group say who may use it).
    (brig_spec::paths::DOCKER_SOCKET_DIR, 0o755, 0),
];

/// Reads every `<name>.json` in `dir`. Returns the valid specs, and for the
/// rest the name and what is wrong, so they show up as failed services.
/// JSON, not the service.toml: PID 1 carries no TOML parser (its size is
/// its memory, docs/design.md).
pub fn load_specs(dir: &Path) -> (Vec<ServiceSpec>, Vec<(String, String)>) {
    let mut specs = Vec::new();
    let mut broken = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return (specs, broken);
    };
    let mut files: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let name = file
            .file_stem()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let result = std::fs::read_to_string(&file)
            .map_err(|e| format!("reading {}: {e}", file.display()))
            .and_then(|text| {
                ServiceSpec::from_json(&name, &text)
                    .map_err(|problem| format!("{}: {problem}", file.display()))
            });
        match result {
            Ok(spec) => specs.push(spec),
            Err(e) => broken.push((name, e)),
        }
    }
    (specs, broken)
}

/// A stream of a service's output being read.
pub struct Pipe {
    pub service: String,
    pub stream: usize,
    pub fd: OwnedFd,
}

pub struct Services {
    pub supervisor: Supervisor,
    pub rings: HashMap<String, LogRing>,
    /// Readiness command checks running: pid -> service.
    checks: HashMap<i32, String>,
    runtime: Box<dyn Runtime>,
}

impl Services {
    /// The services whose specs are in `images`, run with `runtime`.
    pub fn new(images: &Path, runtime: Box<dyn Runtime>) -> Services {
        let (specs, broken) = load_specs(images);
        Services {
            supervisor: Supervisor::new(specs, broken),
            rings: HashMap::new(),
            checks: HashMap::new(),
            runtime,
        }
    }

    /// Prepares a network namespace ahead if fewer than `NETNS_AHEAD` are
    /// ready; on failure stops trying (starts then create their own) and
    /// says why, once.
    /// And mounts the image of one service waiting for its dependencies,
    /// while they start (the console's, while the network comes up).
    pub fn prepare_ahead(&mut self) -> Option<String> {
        let error = self.runtime.prepare_ahead().err();
        for service in &self.supervisor.services {
            if matches!(service.state, State::Waiting) && self.runtime.mount_ahead(&service.spec) {
                break;
            }
        }
        error
    }

    fn ring(&mut self, service: &str) -> &mut LogRing {
        self.rings.entry(service.to_string()).or_default()
    }

    /// Records PID 1's own word about a service in its log; returns the line.
    pub fn note(&mut self, service: &str, text: String, time: f64) -> LogLine {
        self.ring(service).note(service, text, time)
    }

    /// Carries out `action`. New output pipes are returned for the event
    /// loop to watch; log lines produced are returned too. `now` is read
    /// once a start is done: a start may wait for its setup, and a service's
    /// readiness timeout counts from when its process runs.
    pub fn perform(
        &mut self,
        action: Action,
        now: &dyn Fn() -> Instant,
        time: f64,
    ) -> (Vec<Pipe>, Vec<LogLine>) {
        let mut notes = Vec::new();
        let mut pipes = Vec::new();
        match action {
            Action::Start(name) => match self.start(&name) {
                Ok((pid, stdout, stderr)) => {
                    self.supervisor.started(&name, pid, now());
                    notes.push(self.note(&name, format!("started, pid {pid}"), time));
                    pipes.push(Pipe {
                        service: name.clone(),
                        stream: log_ring::STDOUT,
                        fd: stdout,
                    });
                    pipes.push(Pipe {
                        service: name,
                        stream: log_ring::STDERR,
                        fd: stderr,
                    });
                }
                Err(error) => {
                    notes.push(self.note(&name, format!("cannot start: {error}"), time));
                    match error {
                        // Starting it again would fail the same way.
                        brig_runtime::Error::Spec(_) => {
                            self.supervisor.cannot_run(&name, error.to_string())
                        }
                        _ => self
                            .supervisor
                            .start_failed(&name, error.to_string(), now()),
                    }
                }
            },
            Action::Terminate(name) => {
                if let Some(pid) = self.supervisor.get(&name).and_then(|s| s.pid) {
                    notes.push(self.note(&name, "stopping (SIGTERM)".into(), time));
                    self.runtime.signal(pid, Signal::SIGTERM);
                    self.supervisor.terminated(&name, now());
                }
            }
            Action::KillAll(name) => {
                notes.push(self.note(&name, "killing every process of the service".into(), time));
                self.kill_all(&name);
            }
            Action::CheckReady(name) => {
                if self.check_ready(&name) {
                    notes.push(self.note(&name, "ready".into(), time));
                }
            }
        }
        (pipes, notes)
    }

    fn start(&mut self, name: &str) -> Result<(i32, OwnedFd, OwnedFd), brig_runtime::Error> {
        let Some(service) = self.supervisor.get(name) else {
            return Err(brig_runtime::Error::Spec(format!("no service {name}")));
        };
        let started = self.runtime.start(&service.spec)?;
        // For the event loop; `run_tool` reads its tool's output blocking.
        brig_runtime::set_nonblocking(&started.stdout);
        brig_runtime::set_nonblocking(&started.stderr);
        Ok((started.pid, started.stdout, started.stderr))
    }

    /// Runs `command` in a container of service `name`'s image and waits
    /// for it: for the tools PID 1 needs before the services start (before
    /// its event loop, so it may wait here). Returns the exit code and the
    /// output (stdout, then stderr).
    pub fn run_tool(&mut self, name: &str, command: &[&str]) -> Result<(i32, String), String> {
        let mut spec = self
            .supervisor
            .get(name)
            .ok_or_else(|| format!("this image has no {name} container"))?
            .spec
            .clone();
        spec.command = command.iter().map(|c| c.to_string()).collect();
        let started = self.runtime.start(&spec).map_err(|e| e.to_string())?;
        // One stream after the other: the tools say little, far less than a
        // pipe holds, so stderr cannot fill up while stdout is read.
        let mut output = String::new();
        for stream in [started.stdout, started.stderr] {
            let _ = std::fs::File::from(stream).read_to_string(&mut output);
        }
        let code = self
            .runtime
            .wait(started.pid)
            .map_err(|e| format!("waiting for {}: {e}", command.join(" ")))?;
        Ok((code, output))
    }

    fn kill_all(&mut self, name: &str) {
        let pid = self.supervisor.get(name).and_then(|s| s.pid);
        self.runtime.kill_all(name, pid);
    }

    /// Checks readiness; true if the service just became ready.
    fn check_ready(&mut self, name: &str) -> bool {
        let Some(service) = self.supervisor.get(name) else {
            return false;
        };
        let Some(pid) = service.pid else { return false };
        match &service.spec.readiness {
            Readiness::Path { path, .. } => {
                if self.runtime.has_path(pid, path) {
                    return self.supervisor.ready(name);
                }
            }
            Readiness::Command { command, .. } => {
                if !self.checks.values().any(|s| s == name) {
                    let spec = &service.spec;
                    if let Some(check) = self.runtime.start_check(spec, pid, command) {
                        self.checks.insert(check, name.to_string());
                    }
                }
            }
            Readiness::Started | Readiness::Exit { .. } => {}
        }
        false
    }

    /// A child exited. Returns a line for the log if it was a service.
    pub fn exited(&mut self, pid: i32, code: i32, now: Instant, time: f64) -> Option<LogLine> {
        if let Some(name) = self.checks.remove(&pid) {
            if code != 0 || !self.supervisor.ready(&name) {
                return None;
            }
            return Some(self.note(&name, "ready".into(), time));
        }
        let name = self.supervisor.exited(pid, code, now)?;
        // Whatever the main process left behind goes with it.
        self.runtime.kill_leftovers(&name);
        let state = self
            .supervisor
            .get(&name)
            .map(|s| s.state.name())
            .unwrap_or("?");
        Some(self.note(
            &name,
            format!("exited with status {code}; now {state}"),
            time,
        ))
    }

    /// Output arrived on a pipe; returns the complete lines.
    pub fn output(&mut self, service: &str, stream: usize, data: &[u8], time: f64) -> Vec<LogLine> {
        self.ring(service).write(service, stream, data, time)
    }

    pub fn output_closed(&mut self, service: &str, stream: usize, time: f64) -> Vec<LogLine> {
        self.ring(service).close(service, stream, time)
    }

    /// `brigctl ps`.
    pub fn status(&self, now: Instant) -> Vec<ServiceStatus> {
        self.supervisor
            .services
            .iter()
            .map(|s| ServiceStatus {
                name: s.spec.name.clone(),
                state: s.state.name().to_string(),
                pid: s.pid.map(|p| p as u32),
                uptime_seconds: s
                    .pid
                    .and(s.started_at)
                    .map(|t| now.saturating_duration_since(t).as_secs()),
                restarts: s.restarts,
                memory_bytes: self.runtime.memory(&s.spec.name),
                detail: s.detail.clone(),
            })
            .collect()
    }

    /// Every enabled service has reached a settled state (up, done, or
    /// given up on for now): the moment to say `brig: ready`.
    pub fn settled(&self) -> bool {
        self.supervisor
            .services
            .iter()
            .all(|s| !matches!(s.state, State::Waiting | State::Starting))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::supervise::containers::Containers;

    #[test]
    fn broken_specs_are_loaded_as_failures_with_their_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("good.json"),
            r#"{"command": ["/bin/true"], "rootfs": {"packages": ["x"]}}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("bad.json"),
            r#"{"command": "not a list", "rootfs": {}}"#,
        )
        .unwrap();
        // Not a spec: left alone.
        std::fs::write(dir.path().join("old.toml"), "command = [\"/bin/true\"]\n").unwrap();
        std::fs::write(dir.path().join("good.squashfs"), b"").unwrap();
        let (specs, broken) = load_specs(dir.path());
        assert_eq!(specs.len(), 1);
        assert_eq!(specs[0].name, "good");
        assert_eq!(broken.len(), 1);
        assert_eq!(broken[0].0, "bad");
        assert!(
            broken[0].1.contains("bad.json") && broken[0].1.contains("expected a sequence"),
            "{}",
            broken[0].1
        );
        let services = Services::new(dir.path(), Box::new(Containers::new(dir.path(), None)));
        let status = services.status(Instant::now());
        let bad = status.iter().find(|s| s.name == "bad").unwrap();
        assert_eq!(bad.state, "failed");
        assert!(bad.detail.as_deref().unwrap().contains("bad.json"));
    }
}
