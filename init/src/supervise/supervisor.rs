//! The supervisor's decisions, as a pure state machine: which service to
//! start (dependency order, readiness), when to restart (policy, exponential
//! backoff, crash-loop), how to stop (dependents first, SIGTERM, grace, then
//! the whole cgroup). The runtime performs the returned actions and reports
//! back what happened; time is passed in, so everything here is unit-tested.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use brig_spec::service::{Readiness, RestartPolicy, ServiceSpec};

/// First restart delay; doubles with each consecutive failure.
pub const BACKOFF_START: Duration = Duration::from_millis(250);
pub const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// A run this long resets the failure count.
pub const STABLE_AFTER: Duration = Duration::from_secs(10);
/// After this many consecutive failures the service is in crash-loop ...
pub const CRASH_LOOP_AFTER: u32 = 5;
/// ... and is only retried this rarely, until someone restarts it.
pub const CRASH_LOOP_RETRY: Duration = Duration::from_secs(300);
/// How often readiness (path, command) is checked.
pub const READY_POLL: Duration = Duration::from_millis(50);
/// How long the last look at a service's readiness, at its deadline, waits
/// for a check command's answer.
pub const LAST_LOOK_FOR_COMMANDS: Duration = Duration::from_secs(1);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum State {
    /// Enabled, waiting for its dependencies.
    Waiting,
    /// Running, not ready yet.
    Starting,
    Running,
    /// A oneshot that exited 0.
    Done,
    Stopping {
        kill_at: Instant,
        killed: bool,
    },
    /// Stopped on request (or never started because disabled).
    Stopped,
    Backoff {
        until: Instant,
    },
    CrashLoop {
        until: Instant,
    },
    /// Cannot run until its spec or image is fixed, or a dependency failed.
    Failed,
}

impl State {
    pub fn name(&self) -> &'static str {
        match self {
            State::Waiting => "waiting",
            State::Starting => "starting",
            State::Running => "running",
            State::Done => "done",
            State::Stopping { .. } => "stopping",
            State::Stopped => "stopped",
            State::Backoff { .. } => "backoff",
            State::CrashLoop { .. } => "crash-loop",
            State::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    Start(String),
    /// SIGTERM to the service's main process.
    Terminate(String),
    /// `cgroup.kill`: every process of the service.
    KillAll(String),
    /// Check the readiness condition now.
    CheckReady(String),
}

#[derive(Debug)]
pub struct Service {
    pub spec: ServiceSpec,
    pub state: State,
    pub pid: Option<i32>,
    pub started_at: Option<Instant>,
    /// Restarts done by the supervisor (not counting the first start).
    pub restarts: u32,
    failures: u32,
    /// Why it is not running (spec error, exit status, …).
    pub detail: Option<String>,
    ready_deadline: Option<Instant>,
    next_ready_check: Option<Instant>,
    /// What follows once its stopping process has exited.
    after_stop: AfterStop,
}

/// What a stopping service does once its process has exited.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
enum AfterStop {
    /// Stays stopped (`brigctl stop`, shutdown).
    #[default]
    Stay,
    /// Starts again (`brigctl restart`).
    Start,
    /// Killed for not being ready in time: a failed start, retried with
    /// backoff as a crash is, unless its restart policy is `never`.
    Retry,
}

#[derive(Debug, Default)]
pub struct Supervisor {
    pub services: Vec<Service>,
    shutting_down: bool,
    /// While config is fetched over the network, only these services (the
    /// network container and what it needs) may start.
    hold: Option<HashSet<String>>,
}

impl Supervisor {
    /// `specs` in a stable order; errors found while loading (a name with an
    /// error) are added as failed services so that they show in `ps`.
    pub fn new(specs: Vec<ServiceSpec>, broken: Vec<(String, String)>) -> Supervisor {
        let mut services: Vec<Service> = specs.into_iter().map(Service::from_spec).collect();
        for (name, error) in broken {
            let spec = ServiceSpec {
                name,
                ..placeholder_spec()
            };
            services.push(Service::new(spec, State::Failed, Some(error)));
        }
        let mut supervisor = Supervisor {
            services,
            shutting_down: false,
            hold: None,
        };
        supervisor.check_graph();
        supervisor
    }

    /// Unknown dependencies and cycles (through `depends_on` and
    /// `start_after` alike: either would wait for ever) fail the services
    /// involved.
    fn check_graph(&mut self) {
        let names: HashSet<String> = self.services.iter().map(|s| s.spec.name.clone()).collect();
        for s in &mut self.services {
            if let Some(missing) = s.spec.depends_on.iter().find(|d| !names.contains(*d)) {
                s.state = State::Failed;
                s.detail = Some(format!("depends on {missing:?}, which does not exist"));
            }
        }
        for i in 0..self.services.len() {
            if let Some(cycle) = self.cycle_from(i) {
                let s = &mut self.services[i];
                s.state = State::Failed;
                s.detail = Some(format!("dependency cycle: {}", cycle.join(" -> ")));
            }
        }
    }

    fn cycle_from(&self, start: usize) -> Option<Vec<String>> {
        let start_name = &self.services[start].spec.name;
        let mut stack = vec![(start_name.clone(), vec![start_name.clone()])];
        let mut seen = HashSet::new();
        while let Some((name, path)) = stack.pop() {
            let Some(s) = self.get(&name) else { continue };
            for dep in s.spec.depends_on.iter().chain(&s.spec.start_after) {
                if dep == start_name {
                    let mut cycle = path.clone();
                    cycle.push(dep.clone());
                    return Some(cycle);
                }
                if seen.insert(dep.clone()) {
                    let mut next = path.clone();
                    next.push(dep.clone());
                    stack.push((dep.clone(), next));
                }
            }
        }
        None
    }

    /// Holds back every service but `name` and what it depends on, until
    /// `release`.
    pub fn hold_all_but(&mut self, name: &str) {
        let mut allowed = HashSet::new();
        let mut next = vec![name.to_string()];
        while let Some(n) = next.pop() {
            if allowed.insert(n.clone()) {
                if let Some(s) = self.get(&n) {
                    next.extend(s.spec.depends_on.iter().cloned());
                }
            }
        }
        self.hold = Some(allowed);
    }

    pub fn release(&mut self) {
        self.hold = None;
    }

    /// Adds a service from config (`brig.services`) before the first tick.
    pub fn add(&mut self, spec: ServiceSpec) -> Result<(), String> {
        if self.get(&spec.name).is_some() {
            return Err(format!(
                "a service named {:?} exists already (a system container); name it otherwise",
                spec.name
            ));
        }
        self.services.push(Service::from_spec(spec));
        self.check_graph();
        Ok(())
    }

    pub fn get(&self, name: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.spec.name == name)
    }

    fn get_mut(&mut self, name: &str) -> Option<&mut Service> {
        self.services.iter_mut().find(|s| s.spec.name == name)
    }

    fn is_satisfied(&self, dep: &str) -> bool {
        self.get(dep)
            .is_some_and(|d| matches!(d.state, State::Running | State::Done))
    }

    /// Whether waiting service `s` may start now: what it depends on is up,
    /// what it starts after has settled, nothing holds it back.
    fn may_start(&self, s: &Service) -> bool {
        !self.shutting_down
            && self.hold.as_ref().is_none_or(|h| h.contains(&s.spec.name))
            && s.spec.depends_on.iter().all(|d| self.is_satisfied(d))
            && s.spec.start_after.iter().all(|d| self.has_settled(d))
    }

    /// Whether a service named in `start_after` no longer holds the start
    /// back: it is not waiting or starting (it is ready, or failed, was
    /// stopped, backs off), or waits for what will not come by itself (it
    /// is held back, or a service it depends on is stopped), or there is no
    /// such service.
    fn has_settled(&self, name: &str) -> bool {
        let Some(s) = self.get(name) else {
            return true;
        };
        match s.state {
            State::Starting => false,
            State::Waiting => {
                self.hold
                    .as_ref()
                    .is_some_and(|h| !h.contains(&s.spec.name))
                    || s.spec
                        .depends_on
                        .iter()
                        .any(|d| self.get(d).is_some_and(|d| d.state == State::Stopped))
            }
            _ => true,
        }
    }

    /// Decides what to do at `now`.
    pub fn tick(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        // Dependencies that can never be met fail their dependents.
        loop {
            let failed: Vec<(usize, String)> = self
                .services
                .iter()
                .enumerate()
                .filter(|(_, s)| s.state == State::Waiting)
                .filter_map(|(i, s)| {
                    s.spec
                        .depends_on
                        .iter()
                        .find(|d| self.get(d).is_some_and(|d| d.state == State::Failed))
                        .map(|d| (i, d.clone()))
                })
                .collect();
            if failed.is_empty() {
                break;
            }
            for (i, dep) in failed {
                self.services[i].state = State::Failed;
                self.services[i].detail = Some(format!("dependency {dep} failed"));
            }
        }
        for i in 0..self.services.len() {
            let s = &self.services[i];
            let due = match &s.state {
                State::Waiting => self.may_start(s),
                State::Backoff { until } | State::CrashLoop { until } => {
                    !self.shutting_down && *until <= now
                }
                _ => false,
            };
            if due {
                actions.push(Action::Start(s.spec.name.clone()));
            }
            if let State::Stopping {
                kill_at,
                killed: false,
            } = s.state
            {
                if kill_at <= now {
                    self.services[i].state = State::Stopping {
                        kill_at,
                        killed: true,
                    };
                    actions.push(Action::KillAll(self.services[i].spec.name.clone()));
                }
            }
            let s = &mut self.services[i];
            if s.state == State::Starting {
                if s.ready_deadline.is_some_and(|d| d <= now) {
                    if s.next_ready_check.is_some() {
                        // One last look first: PID 1 may have been busy past
                        // the deadline (starting other services) while the
                        // service got ready. The next turn decides; a
                        // check command gets a moment to answer.
                        s.next_ready_check = None;
                        if matches!(s.spec.readiness, Readiness::Command { .. }) {
                            s.ready_deadline = Some(now + LAST_LOOK_FOR_COMMANDS);
                        }
                        actions.push(Action::CheckReady(s.spec.name.clone()));
                    } else {
                        // Not ready in time: a failed start. Stopped as any
                        // stop is (SIGTERM, the grace, then the cgroup), so
                        // the daemon can clean up what outlives it (a pid
                        // file, a socket) before it is started again.
                        s.detail = Some("not ready in time".into());
                        s.after_stop = AfterStop::Retry;
                        actions.extend(s.begin_stop(now));
                    }
                } else if s.next_ready_check.is_some_and(|t| t <= now) {
                    s.next_ready_check = Some(now + READY_POLL);
                    actions.push(Action::CheckReady(s.spec.name.clone()));
                }
            }
        }
        if self.shutting_down {
            actions.extend(self.stop_next_layer(now));
        }
        actions
    }

    /// When `tick` next needs to run, if anything is timed.
    pub fn next_deadline(&self, now: Instant) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| match s.state {
                // What it waited for came about in the turn just done (a
                // readiness check passed): start it in the next, not when
                // something else next wakes the loop.
                State::Waiting if self.may_start(s) => Some(now),
                State::Backoff { until } | State::CrashLoop { until } => Some(until),
                State::Stopping {
                    kill_at,
                    killed: false,
                } => Some(kill_at),
                State::Starting => [s.ready_deadline, s.next_ready_check]
                    .into_iter()
                    .flatten()
                    .min(),
                _ => None,
            })
            .min()
    }

    /// The runtime started the service's process.
    pub fn started(&mut self, name: &str, pid: i32, now: Instant) {
        let Some(s) = self.get_mut(name) else { return };
        if matches!(s.state, State::Backoff { .. } | State::CrashLoop { .. }) {
            s.restarts += 1;
        }
        s.pid = Some(pid);
        s.started_at = Some(now);
        s.detail = None;
        match &s.spec.readiness {
            Readiness::Started => s.state = State::Running,
            Readiness::Path {
                timeout_seconds, ..
            }
            | Readiness::Exit { timeout_seconds }
            | Readiness::Command {
                timeout_seconds, ..
            } => {
                s.state = State::Starting;
                s.ready_deadline = Some(now + Duration::from_secs((*timeout_seconds).into()));
                s.next_ready_check = match s.spec.readiness {
                    Readiness::Exit { .. } => None,
                    _ => Some(now),
                };
            }
        }
    }

    /// The runtime could not start it (bad image, missing binary, …): this is
    /// a failure like a crash, so the same backoff applies.
    pub fn start_failed(&mut self, name: &str, error: String, now: Instant) {
        let Some(s) = self.get_mut(name) else { return };
        if matches!(s.state, State::Backoff { .. } | State::CrashLoop { .. }) {
            s.restarts += 1;
        }
        s.pid = None;
        s.detail = Some(error);
        s.schedule_restart(now);
    }

    /// The service cannot run as its spec says (an empty command, a user
    /// its image lacks): failed, with `error`, and not started again until
    /// asked (`brigctl start`), since it would fail the same way.
    pub fn cannot_run(&mut self, name: &str, error: String) {
        let Some(s) = self.get_mut(name) else { return };
        s.pid = None;
        s.detail = Some(error);
        s.state = State::Failed;
    }

    /// The readiness check passed. Whether that made it ready (a check
    /// that answers once its service is being stopped does not).
    pub fn ready(&mut self, name: &str) -> bool {
        match self.get_mut(name) {
            Some(s) if s.state == State::Starting => {
                s.state = State::Running;
                s.ready_deadline = None;
                s.next_ready_check = None;
                true
            }
            _ => false,
        }
    }

    /// SIGTERM has just been sent: the grace counts from now, not from the
    /// turn that decided the stop (its starts may have taken seconds).
    pub fn terminated(&mut self, name: &str, now: Instant) {
        if let Some(s) = self.get_mut(name) {
            let grace = s.grace();
            if let State::Stopping {
                killed: false,
                ref mut kill_at,
            } = s.state
            {
                *kill_at = now + grace;
            }
        }
    }

    /// The main process of a service exited with `code` (128+signal if killed).
    /// Returns the service's name.
    pub fn exited(&mut self, pid: i32, code: i32, now: Instant) -> Option<String> {
        let shutting_down = self.shutting_down;
        let s = self.services.iter_mut().find(|s| s.pid == Some(pid))?;
        s.pid = None;
        let ran = s
            .started_at
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or_default();
        // A run that never got ready, however long, is no stable one.
        if ran >= STABLE_AFTER && s.after_stop != AfterStop::Retry {
            s.failures = 0;
        }
        match s.state {
            State::Stopping { .. } => match std::mem::take(&mut s.after_stop) {
                _ if shutting_down => s.state = State::Stopped,
                AfterStop::Stay => s.state = State::Stopped,
                AfterStop::Start => {
                    s.failures = 0;
                    s.state = State::Waiting;
                }
                AfterStop::Retry if s.spec.restart == RestartPolicy::Never => {
                    s.state = State::Failed;
                }
                AfterStop::Retry => s.schedule_restart(now),
            },
            State::Starting if matches!(s.spec.readiness, Readiness::Exit { .. }) && code == 0 => {
                s.state = State::Done;
            }
            _ => {
                s.detail = Some(format!("exited with status {code}"));
                let restart = match s.spec.restart {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => code != 0,
                    RestartPolicy::Never => false,
                };
                if restart && !shutting_down {
                    s.schedule_restart(now);
                } else {
                    s.state = if code == 0 {
                        State::Stopped
                    } else {
                        State::Failed
                    };
                }
            }
        }
        Some(s.spec.name.clone())
    }

    /// `brigctl stop`: stop it (dependents are not touched).
    pub fn stop(&mut self, name: &str, now: Instant) -> Result<Vec<Action>, String> {
        let s = self
            .get_mut(name)
            .ok_or_else(|| format!("no service {name:?}"))?;
        s.after_stop = AfterStop::Stay;
        Ok(s.begin_stop(now))
    }

    /// `brigctl start`: start a stopped, failed or crash-looping service now.
    pub fn start(&mut self, name: &str) -> Result<(), String> {
        let s = self
            .get_mut(name)
            .ok_or_else(|| format!("no service {name:?}"))?;
        match s.state {
            State::Running | State::Starting => Err(format!("{name} is already running")),
            State::Stopping { .. } => Err(format!("{name} is stopping; use restart")),
            _ if s.spec.command.is_empty() => Err(format!(
                "{name} cannot start: {}",
                s.detail.clone().unwrap_or_default()
            )),
            _ => {
                s.failures = 0;
                s.state = State::Waiting;
                Ok(())
            }
        }
    }

    /// `brigctl restart`: stop if running, then start again.
    pub fn restart(&mut self, name: &str, now: Instant) -> Result<Vec<Action>, String> {
        let s = self
            .get_mut(name)
            .ok_or_else(|| format!("no service {name:?}"))?;
        if s.pid.is_some() {
            s.after_stop = AfterStop::Start;
            return Ok(s.begin_stop(now));
        }
        self.start(name).map(|()| Vec::new())
    }

    /// Orderly shutdown: stop services whose dependents are all down, layer by
    /// layer, until nothing runs.
    pub fn shut_down(&mut self, now: Instant) -> Vec<Action> {
        self.shutting_down = true;
        for s in &mut self.services {
            if matches!(
                s.state,
                State::Waiting | State::Backoff { .. } | State::CrashLoop { .. }
            ) {
                s.state = State::Stopped;
            }
        }
        self.stop_next_layer(now)
    }

    fn stop_next_layer(&mut self, now: Instant) -> Vec<Action> {
        let mut actions = Vec::new();
        for i in 0..self.services.len() {
            let name = self.services[i].spec.name.clone();
            let has_live_dependent = self
                .services
                .iter()
                .any(|d| d.pid.is_some() && d.spec.depends_on.contains(&name));
            let s = &mut self.services[i];
            if s.pid.is_some() && !matches!(s.state, State::Stopping { .. }) && !has_live_dependent
            {
                actions.extend(s.begin_stop(now));
            }
        }
        actions
    }

    /// True once shutting down and no service process is left.
    pub fn all_stopped(&self) -> bool {
        self.services.iter().all(|s| s.pid.is_none())
    }
}

impl Service {
    /// Waiting to start, or stopped when the spec is not enabled or not
    /// started at boot.
    fn from_spec(spec: ServiceSpec) -> Service {
        let state = if spec.enabled && spec.start_at_boot {
            State::Waiting
        } else {
            State::Stopped
        };
        Service::new(spec, state, None)
    }

    fn new(spec: ServiceSpec, state: State, detail: Option<String>) -> Service {
        Service {
            spec,
            state,
            pid: None,
            started_at: None,
            restarts: 0,
            failures: 0,
            detail,
            ready_deadline: None,
            next_ready_check: None,
            after_stop: AfterStop::Stay,
        }
    }

    fn schedule_restart(&mut self, now: Instant) {
        self.failures += 1;
        if self.failures >= CRASH_LOOP_AFTER {
            self.state = State::CrashLoop {
                until: now + CRASH_LOOP_RETRY,
            };
        } else {
            self.state = State::Backoff {
                until: now + backoff(self.failures),
            };
        }
    }

    /// Between SIGTERM and killing the whole cgroup.
    fn grace(&self) -> Duration {
        Duration::from_secs(self.spec.stop_grace_seconds.into())
    }

    fn begin_stop(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Stopping { .. } => Vec::new(),
            _ if self.pid.is_some() => {
                let kill_at = now + self.grace();
                self.state = State::Stopping {
                    kill_at,
                    killed: false,
                };
                vec![Action::Terminate(self.spec.name.clone())]
            }
            _ => {
                self.state = State::Stopped;
                Vec::new()
            }
        }
    }
}

/// Delay before restart number `failures` (1-based): 250 ms, 500 ms, 1 s, …
pub fn backoff(failures: u32) -> Duration {
    let factor = 1u32 << failures.saturating_sub(1).min(16);
    (BACKOFF_START * factor).min(BACKOFF_MAX)
}

/// Stands in for a spec that could not be loaded, so the service shows in `ps`.
fn placeholder_spec() -> ServiceSpec {
    ServiceSpec {
        name: String::new(),
        description: String::new(),
        enabled: true,
        start_at_boot: true,
        boards: Vec::new(),
        rootfs: Default::default(),
        command: Vec::new(),
        env: Default::default(),
        user: "root".into(),
        working_dir: "/".into(),
        host_namespaces: Vec::new(),
        capabilities: Vec::new(),
        privileged: false,
        seccomp_allow: Vec::new(),
        read_only_root: false,
        mounts: Vec::new(),
        limits: Default::default(),
        devices: Vec::new(),
        sysctls: Default::default(),
        kernel_modules: Vec::new(),
        depends_on: Vec::new(),
        start_after: Vec::new(),
        readiness: Readiness::Started,
        restart: RestartPolicy::Never,
        stop_grace_seconds: 10,
    }
}

#[cfg(test)]
mod tests;
