//! What `Services` asks of the machine to run its containers, as one trait
//! (`Runtime`), so that the event loop is unit tested with a fake; the real
//! one (`Containers`) does it with brig-runtime: image mounts, cgroups,
//! prepared network namespaces, signals, readiness checks.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use brig_runtime::{cgroup, image, netns, Error, Paths, Started};
use brig_spec::paths::{RUN, VOLUMES};
use brig_spec::service::{Namespace, ServiceSpec, DEFAULT_WRITABLE_MAX};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

/// Network namespaces kept prepared: a restart, or a few services starting
/// together, need not create theirs.
const NETNS_AHEAD: usize = 2;

pub trait Runtime {
    /// Prepares one network namespace ahead if fewer are ready. On failure
    /// it stops trying (starts then make their own) and says why, once.
    fn prepare_ahead(&mut self) -> Result<(), String>;
    /// Mounts the image of `spec`, a service waiting for its dependencies,
    /// so that its start need not: whether it did work. Only the system
    /// partition's images; a failure is left for the start to report.
    fn mount_ahead(&mut self, spec: &ServiceSpec) -> bool;
    /// Starts `spec`'s container, mounting its image and making its cgroup
    /// first.
    fn start(&mut self, spec: &ServiceSpec) -> Result<Started, Error>;
    /// Waits for process `pid` (a tool run before the event loop); its
    /// exit code.
    fn wait(&mut self, pid: i32) -> Result<i32, String>;
    /// Sends `signal` to process `pid`.
    fn signal(&mut self, pid: i32, signal: Signal);
    /// Kills every process of service `name` (its cgroup; without one, its
    /// main process `pid`).
    fn kill_all(&mut self, name: &str, pid: Option<i32>);
    /// After the main process of `name` exited: kills what it left behind.
    fn kill_leftovers(&mut self, name: &str);
    /// Whether `path` exists in the root of process `pid` (readiness).
    fn has_path(&self, pid: i32, path: &str) -> bool;
    /// Starts a readiness `command` in the container of `spec` whose main
    /// process is `pid`, as the service runs (its user, capabilities and
    /// namespaces); its pid, reaped by the central reaper.
    fn start_check(&mut self, spec: &ServiceSpec, pid: i32, command: &[String]) -> Option<i32>;
    /// The memory service `name` uses now (its cgroup's).
    fn memory(&self, name: &str) -> Option<u64>;
}

/// The real runtime.
pub struct Containers {
    images: PathBuf,
    run: PathBuf,
    volumes: PathBuf,
    cgroup_root: Option<PathBuf>,
    mounted: HashSet<String>,
    /// Images that failed to mount ahead: not tried again before a start.
    not_ahead: HashSet<String>,
    netns: netns::Pool,
}

impl Containers {
    /// Images from `images` (`<name>.squashfs`), each service in a cgroup
    /// under `cgroup_root` if there is one.
    pub fn new(images: &Path, cgroup_root: Option<PathBuf>) -> Containers {
        Containers {
            images: images.to_path_buf(),
            run: PathBuf::from(RUN),
            volumes: PathBuf::from(VOLUMES),
            cgroup_root,
            mounted: HashSet::new(),
            not_ahead: HashSet::new(),
            netns: netns::Pool::new(NETNS_AHEAD),
        }
    }

    /// Where `spec`'s image is mounted, mounting it first if it is not.
    fn image(&mut self, spec: &ServiceSpec) -> Result<PathBuf, Error> {
        let name = spec.name.as_str();
        let lower = self.run.join("images").join(name);
        if !self.mounted.contains(name) {
            let source = match &spec.rootfs.image {
                // Where its links lead, checked (`refuse_fuse_here` did the
                // same a moment ago; this is the path opened).
                Some(path) => {
                    let mountinfo =
                        std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
                    let mounts = brig_spec::mountinfo::mounts(&mountinfo);
                    brig_runtime::spawn::resolve_image(Path::new(path), &mounts)?
                }
                None => self.images.join(format!("{name}.squashfs")),
            };
            image::mount(&source, &lower)?;
            self.mounted.insert(name.to_string());
        }
        Ok(lower)
    }

    fn cgroup_of(&self, name: &str) -> Option<PathBuf> {
        self.cgroup_root
            .as_ref()
            .map(|r| r.join(cgroup::SERVICES).join(name))
    }
}

impl Runtime for Containers {
    fn prepare_ahead(&mut self) -> Result<(), String> {
        self.netns.refill_one().map(|_| ()).map_err(|e| {
            self.netns = netns::Pool::new(0);
            format!("{e}; services create their network namespaces as they start")
        })
    }

    fn mount_ahead(&mut self, spec: &ServiceSpec) -> bool {
        let name = spec.name.as_str();
        // A user's image may be anywhere (a hung network mount): it is
        // opened at its start, after the FUSE check.
        if spec.rootfs.image.is_some()
            || self.mounted.contains(name)
            || self.not_ahead.contains(name)
        {
            return false;
        }
        if self.image(spec).is_err() {
            self.not_ahead.insert(name.to_string());
        }
        true
    }

    fn start(&mut self, spec: &ServiceSpec) -> Result<Started, Error> {
        let name = spec.name.as_str();
        // Before the image is opened, here in PID 1.
        brig_runtime::spawn::refuse_fuse_here(spec)?;
        let lower = self.image(spec)?;
        let cgroup = match &self.cgroup_root {
            Some(root) => Some(
                cgroup::create(root, name, &spec.limits)
                    .map_err(|e| Error::host(format!("preparing the cgroup of {name}"), e))?,
            ),
            None => None,
        };
        let dir = self.run.join("containers").join(name);
        brig_runtime::spawn::prepare_layer(
            &dir,
            spec.limits.writable_max.unwrap_or(DEFAULT_WRITABLE_MAX),
        )?;
        let paths = Paths {
            lower,
            dir,
            volumes: self.volumes.clone(),
            cgroup,
        };
        let netns = if spec.shares(Namespace::Net) {
            None
        } else {
            self.netns.take()
        };
        brig_runtime::spawn::spawn_checked(
            spec,
            &paths,
            netns.as_ref(),
            brig_runtime::spawn::SETUP_DEADLINE,
        )
    }

    fn wait(&mut self, pid: i32) -> Result<i32, String> {
        use nix::sys::wait::{waitpid, WaitStatus};
        loop {
            match waitpid(Pid::from_raw(pid), None) {
                Ok(WaitStatus::Exited(_, code)) => return Ok(code),
                Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(128 + signal as i32),
                Ok(_) => continue,
                Err(e) => return Err(e.to_string()),
            }
        }
    }

    fn signal(&mut self, pid: i32, signal: Signal) {
        let _ = nix::sys::signal::kill(Pid::from_raw(pid), signal);
    }

    fn kill_all(&mut self, name: &str, pid: Option<i32>) {
        match self.cgroup_of(name) {
            Some(path) if cgroup::kill(&path).is_ok() => {}
            _ => {
                if let Some(pid) = pid {
                    self.signal(pid, Signal::SIGKILL);
                }
            }
        }
    }

    fn kill_leftovers(&mut self, name: &str) {
        if let Some(path) = self.cgroup_of(name) {
            if cgroup::populated(&path) {
                let _ = cgroup::kill(&path);
            }
        }
    }

    fn has_path(&self, pid: i32, path: &str) -> bool {
        Path::new(&format!("/proc/{pid}/root{path}")).exists()
    }

    fn start_check(&mut self, spec: &ServiceSpec, pid: i32, command: &[String]) -> Option<i32> {
        brig_runtime::exec_in(spec, pid, command).ok()
    }

    fn memory(&self, name: &str) -> Option<u64> {
        cgroup::memory_current(&self.cgroup_of(name)?)
    }
}
