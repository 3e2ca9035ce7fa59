//! Applying config: the seed planned and written for the containers, what
//! PID 1 applies itself (host name, sysctls, modules, mounts, the user's
//! services), a network datasource fetched by a helper process, and
//! `brigctl config set` re-planning the file a service reads.

use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::path::Path;

use brig_spec::cloud_config::DEFAULT_FILE;
use brig_spec::control::Response;
use brig_spec::paths::{self, LOCAL_FILE};

use crate::config::network::{self, Remote};
use crate::config::{self, ask, local_settings, plan, saved, Datasource};
use crate::event_loop::watch;
use crate::event_loop::NETWORK_SERVICE;

/// The container that joins Wi-Fi networks (`system-containers/wifi`).
const WIFI_SERVICE: &str = "wifi";
use crate::event_loop::{Init, Source};
use crate::host::console::{say, say_error};
use crate::host::hotplug::report_modules;
use crate::host::system::System;
use crate::host::{block_devices, user_mounts};

/// cloud-init config from what the datasource gave (or the saved one when
/// it gave nothing): the host name now, files under /run/brig/config for
/// the system containers. Problems are reported and the rest applies.
pub(crate) fn read_config(
    sys: &dyn System,
    found: Result<Option<config::Seed>, String>,
) -> Option<plan::Plan> {
    let saved_dir = Path::new(paths::SAVED_DIR);
    // The last step of the datasources' order; it reads and never fails.
    let mut last_seen = saved::Saved {
        sys,
        dir: saved_dir,
    };
    let seed = match found {
        Ok(Some(seed)) => {
            if let Err(e) = saved::save(sys, &seed, saved_dir) {
                say_error(&format!("config: {e}"));
            }
            Some(seed)
        }
        Ok(None) => last_seen.read().unwrap_or_default(),
        Err(e) => {
            say_error(&format!("config: {e}"));
            last_seen.read().unwrap_or_default()
        }
    };
    let local = local_settings::read(sys, Path::new(LOCAL_FILE)).unwrap_or_else(|e| {
        say_error(&format!("config: {e}; those settings are not applied"));
        Default::default()
    });
    let default = match sys.read_file(Path::new(DEFAULT_FILE)) {
        Ok(data) => {
            say(&format!(
                "config: the image's default config ({DEFAULT_FILE}) applies under the datasource"
            ));
            Some(data)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            say_error(&format!("config: reading {DEFAULT_FILE}: {e}"));
            None
        }
    };
    let seed = match seed {
        Some(seed) => seed,
        None if local.is_empty() && default.is_none() => {
            say("config: no datasource found; defaults apply");
            return None;
        }
        None => config::Seed {
            source: "no datasource".into(),
            ..Default::default()
        },
    };
    if !local.is_empty() {
        say(&format!(
            "config: {} settings from `brigctl config set` ({LOCAL_FILE}) apply over the datasource",
            local.len()
        ));
    }
    say(&format!("config: from {}", seed.source));
    let plan = ask::plan(sys, seed, default, local);
    for problem in &plan.problems {
        if problem.starts_with(ask::NOT_APPLIED) {
            say_error(&format!("config: {problem}"));
        } else {
            say(&format!("config: {problem}"));
        }
    }
    if let Some(name) = &plan.hostname {
        match sys.set_hostname(name) {
            Ok(()) => say(&format!("hostname {name} (from config)")),
            Err(e) => say_error(&format!("setting hostname {name:?}: {e}")),
        }
    }
    for (path, text) in &plan.files {
        if let Err(e) = write_config_file(sys, path, text) {
            say_error(&format!("config: {e}"));
        }
    }
    Some(plan)
}

/// Writes a config file for the containers, root's only: config can hold
/// password hashes and keys.
pub(crate) fn write_config_file(sys: &dyn System, path: &Path, text: &str) -> Result<(), String> {
    sys.write_file(path, text.as_bytes(), 0o600)
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// The answer to a config change of `key`, also said on the console. A
/// change to a section a service reads at each start is written to its
/// file now, for a restart of that service to apply.
pub(crate) fn config_change(
    sys: &dyn System,
    result: Result<String, String>,
    key: &str,
) -> Response {
    let mut message = match result {
        Ok(message) => message,
        Err(error) => return Response::Error { error },
    };
    if let Some((_, files, service)) = local_settings::applied_by_restart(key) {
        if let Err(e) = rewrite_service_configs(sys, files) {
            message = format!("{message}; but {e}, so restarting {service} will not apply it");
        }
    }
    say(&format!("config: {message}"));
    Response::Ok { message }
}

/// Writes `files` anew from the config as it is now (the saved datasource,
/// the image's default, the local settings), one plan for all of them, or
/// removes those the config no longer has. Without a plan every file stays
/// as it is.
pub(crate) fn rewrite_service_configs(sys: &dyn System, files: &[&str]) -> Result<(), String> {
    let local = local_settings::read(sys, Path::new(LOCAL_FILE))?;
    let plan = ask::replan(sys, &local)?;
    for file in files.iter().map(Path::new) {
        match plan.files.iter().find(|(path, _)| path == file) {
            Some((_, text)) => write_config_file(sys, file, text)?,
            None => sys
                .remove_file(file)
                .map_err(|e| format!("removing {}: {e}", file.display()))?,
        }
    }
    Ok(())
}

impl<S: System> Init<S> {
    /// Applies what config asks of PID 1 itself: sysctls, modules, mounts
    /// and the user's services (the rest went to files for the containers).
    pub(crate) fn apply_config(&mut self, plan: plan::Plan) {
        // Before the services they concern start: host-wide settings.
        for (name, value) in &plan.sysctl {
            // `ask::plan` kept only names inside /proc/sys.
            let Some(path) = plan::sysctl_path(name) else {
                say_error(&format!("config: sysctl {name:?}: not under /proc/sys"));
                continue;
            };
            match self.sys.set_sysctl(&path, value) {
                Ok(()) => say(&format!("sysctl {name} = {value} (from config)")),
                Err(e) => say_error(&format!("config: sysctl {name} = {value}: {e}")),
            }
        }
        if !plan.modules.is_empty() {
            let wanted: Vec<(String, String)> = plan
                .modules
                .iter()
                .map(|m| (m.clone(), String::new()))
                .collect();
            let outcome = self.load_modules(&wanted);
            report_modules("modules from config", &outcome);
        }
        if !plan.mounts.is_empty() {
            let volumes = block_devices::scan().unwrap_or_else(|e| {
                say_error(&format!("mounts: {e}"));
                Vec::new()
            });
            for line in user_mounts::mount_all(&self.sys, &plan.mounts, &volumes) {
                match line {
                    Ok(done) => say(&done),
                    Err(e) => say_error(&e.to_string()),
                }
            }
        }
        self.configure_updates(plan.update);
        for spec in plan.services {
            let name = spec.name.clone();
            match self.services.supervisor.add(spec) {
                Ok(()) => say(&format!("config: service {name} added (brig.services)")),
                Err(e) => say_error(&format!("config: `brig.services.{name}`: {e}; not added")),
            }
        }
    }

    /// Loads the kernel modules services name in `kernel_modules` (those
    /// the kernel never asks for), before any of them starts. Modules
    /// already loaded are skipped, so a second call loads only new ones.
    pub(crate) fn load_service_modules(&mut self) {
        let wanted: Vec<(String, String)> = self
            .services
            .supervisor
            .services
            .iter()
            .flat_map(|s| {
                let whom = format!(" (for {})", s.spec.name);
                s.spec
                    .kernel_modules
                    .iter()
                    .map(move |m| (m.clone(), whom.clone()))
            })
            .collect();
        let outcome = self.load_modules(&wanted);
        if !outcome.loaded.is_empty() || !outcome.errors.is_empty() {
            report_modules("service modules", &outcome);
        }
    }

    /// Starts only the network container, fetches the config in a helper
    /// process, and goes on in `config_fetched`.
    pub(crate) fn fetch_config(&mut self, remote: Remote) {
        say(&format!(
            "config: no local datasource; fetching from {remote} once the network is up"
        ));
        match network::spawn(&remote) {
            Ok(fd) => match watch(&self.epoll, fd.as_fd()) {
                Ok(()) => {
                    self.services.supervisor.hold_all_but(NETWORK_SERVICE);
                    self.sources.insert(
                        fd.as_raw_fd(),
                        Source::Datasource {
                            remote,
                            fd,
                            data: Vec::new(),
                        },
                    );
                }
                Err(e) => self
                    .config_fetched(&remote, Err(format!("watching the datasource helper: {e}"))),
            },
            Err(e) => self.config_fetched(&remote, Err(e)),
        }
    }

    /// The network datasource answered (or not): configure as a local one
    /// would have, restart the network container if its config changed,
    /// and let the other services start.
    pub(crate) fn config_fetched(&mut self, remote: &Remote, found: Result<config::Seed, String>) {
        let found = found.map(Some).map_err(|e| format!("{remote}: {e}"));
        let network_before = self.sys.read_file(Path::new(paths::NETWORK_CONFIG)).ok();
        let wifi_before = self.sys.read_file(Path::new(paths::WIFI_CONFIG)).ok();
        if let Some(plan) = read_config(&self.sys, found) {
            self.apply_config(plan);
            // The user's services, added just now.
            self.load_service_modules();
        }
        if self.sys.read_file(Path::new(paths::NETWORK_CONFIG)).ok() != network_before {
            say("config: the network config changed; restarting the network container");
            let now = self.sys.now();
            match self.services.supervisor.restart(NETWORK_SERVICE, now) {
                Ok(actions) => self.act(actions),
                Err(e) => say_error(&format!("restarting {NETWORK_SERVICE}: {e}")),
            }
        }
        // Wi-Fi keys reach only the wifi container's copy.
        let has_wifi = self
            .services
            .supervisor
            .services
            .iter()
            .any(|s| s.spec.name == WIFI_SERVICE);
        if has_wifi && self.sys.read_file(Path::new(paths::WIFI_CONFIG)).ok() != wifi_before {
            say("config: the Wi-Fi config changed; restarting the wifi container");
            let now = self.sys.now();
            match self.services.supervisor.restart(WIFI_SERVICE, now) {
                Ok(actions) => self.act(actions),
                Err(e) => say_error(&format!("restarting {WIFI_SERVICE}: {e}")),
            }
        }
        self.services.supervisor.release();
    }

    pub(crate) fn handle_datasource(&mut self, fd: RawFd) {
        let Some(Source::Datasource { data, fd: pipe, .. }) = self.sources.get_mut(&fd) else {
            return;
        };
        let mut buf = [0u8; 16384];
        match nix::unistd::read(&*pipe, &mut buf) {
            Ok(0) | Err(_) => {}
            Ok(n) => {
                data.extend_from_slice(&buf[..n]);
                return;
            }
        }
        if let Some(Source::Datasource { remote, data, .. }) = self.forget(fd) {
            self.config_fetched(&remote, network::outcome(&data));
        }
    }
}
