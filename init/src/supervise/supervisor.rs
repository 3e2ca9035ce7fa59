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

    /// Unknown dependencies and cycles fail the services involved.
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
            for dep in &s.spec.depends_on {
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
                State::Waiting => {
                    !self.shutting_down
                        && self.hold.as_ref().is_none_or(|h| h.contains(&s.spec.name))
                        && s.spec.depends_on.iter().all(|d| self.is_satisfied(d))
                }
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
                    // Not ready in time: counts as a failed start.
                    s.detail = Some("not ready in time".into());
                    s.after_stop = AfterStop::Retry;
                    s.state = State::Stopping {
                        kill_at: now,
                        killed: true,
                    };
                    actions.push(Action::KillAll(s.spec.name.clone()));
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
    pub fn next_deadline(&self) -> Option<Instant> {
        self.services
            .iter()
            .filter_map(|s| match s.state {
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

    /// The readiness check passed.
    pub fn ready(&mut self, name: &str) {
        if let Some(s) = self.get_mut(name) {
            if s.state == State::Starting {
                s.state = State::Running;
                s.ready_deadline = None;
                s.next_ready_check = None;
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
    /// Waiting to start, or stopped when the spec is not enabled.
    fn from_spec(spec: ServiceSpec) -> Service {
        let state = if spec.enabled {
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

    fn begin_stop(&mut self, now: Instant) -> Vec<Action> {
        match self.state {
            State::Stopping { .. } => Vec::new(),
            _ if self.pid.is_some() => {
                let kill_at = now + Duration::from_secs(self.spec.stop_grace_seconds.into());
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
        boards: Vec::new(),
        rootfs: Default::default(),
        command: Vec::new(),
        env: Default::default(),
        user: "root".into(),
        working_dir: "/".into(),
        host_namespaces: Vec::new(),
        capabilities: Vec::new(),
        privileged: false,
        read_only_root: false,
        mounts: Vec::new(),
        limits: Default::default(),
        devices: Vec::new(),
        sysctls: Default::default(),
        kernel_modules: Vec::new(),
        depends_on: Vec::new(),
        readiness: Readiness::Started,
        restart: RestartPolicy::Never,
        stop_grace_seconds: 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(name: &str, deps: &[&str]) -> ServiceSpec {
        ServiceSpec {
            name: name.into(),
            command: vec!["/bin/true".into()],
            depends_on: deps.iter().map(|d| d.to_string()).collect(),
            restart: RestartPolicy::Always,
            ..placeholder_spec()
        }
    }

    fn starts(actions: &[Action]) -> Vec<&str> {
        actions
            .iter()
            .filter_map(|a| {
                if let Action::Start(n) = a {
                    Some(n.as_str())
                } else {
                    None
                }
            })
            .collect()
    }

    #[test]
    fn starts_in_dependency_order_independent_ones_together() {
        let t = Instant::now();
        let mut sup = Supervisor::new(
            vec![
                spec("console", &["network", "syslog"]),
                spec("network", &[]),
                spec("syslog", &[]),
            ],
            vec![],
        );
        assert_eq!(starts(&sup.tick(t)), ["network", "syslog"]);
        sup.started("network", 10, t);
        assert!(starts(&sup.tick(t)).contains(&"syslog"));
        sup.started("syslog", 11, t);
        assert_eq!(starts(&sup.tick(t)), ["console"]);
    }

    #[test]
    fn services_from_config_join_the_graph_and_cannot_take_a_system_name() {
        let t = Instant::now();
        let mut sup = Supervisor::new(vec![spec("network", &[])], vec![]);
        assert!(sup
            .add(spec("network", &[]))
            .unwrap_err()
            .contains("exists already"));
        sup.add(spec("web", &["network"])).unwrap();
        sup.add(spec("orphan", &["nowhere"])).unwrap();
        assert_eq!(sup.get("orphan").unwrap().state, State::Failed);
        assert_eq!(starts(&sup.tick(t)), ["network"]);
        sup.started("network", 10, t);
        assert_eq!(starts(&sup.tick(t)), ["web"]);
    }

    #[test]
    fn a_hold_lets_only_the_network_and_its_needs_start() {
        let t = Instant::now();
        let mut sup = Supervisor::new(
            vec![
                spec("base", &[]),
                spec("network", &["base"]),
                spec("console", &["network"]),
                spec("other", &[]),
            ],
            vec![],
        );
        sup.hold_all_but("network");
        assert_eq!(starts(&sup.tick(t)), ["base"]);
        sup.started("base", 10, t);
        assert_eq!(starts(&sup.tick(t)), ["network"]);
        sup.started("network", 11, t);
        assert!(starts(&sup.tick(t)).is_empty(), "console and other wait");
        sup.release();
        assert_eq!(starts(&sup.tick(t)), ["console", "other"]);
    }

    #[test]
    fn readiness_gates_dependents() {
        let t = Instant::now();
        let mut net = spec("network", &[]);
        net.readiness = Readiness::Path {
            path: "/run/up".into(),
            timeout_seconds: 5,
        };
        let mut sup = Supervisor::new(vec![net, spec("app", &["network"])], vec![]);
        assert_eq!(starts(&sup.tick(t)), ["network"]);
        sup.started("network", 10, t);
        assert_eq!(sup.get("network").unwrap().state, State::Starting);
        let actions = sup.tick(t);
        assert_eq!(actions, [Action::CheckReady("network".into())]);
        // Polled again only after READY_POLL.
        assert!(sup.tick(t + READY_POLL / 2).is_empty());
        assert_eq!(
            sup.tick(t + READY_POLL),
            [Action::CheckReady("network".into())]
        );
        sup.ready("network");
        assert_eq!(starts(&sup.tick(t + READY_POLL)), ["app"]);
    }

    #[test]
    fn not_ready_in_time_is_killed_and_retried() {
        let t = Instant::now();
        let mut sup = killed_for_not_being_ready(RestartPolicy::Always, t);
        let killed = t + Duration::from_secs(2);
        sup.exited(7, 137, killed);
        // A failed start: retried after the first backoff, not left stopped.
        let slow = sup.get("slow").unwrap();
        assert_eq!(
            slow.state,
            State::Backoff {
                until: killed + backoff(1)
            }
        );
        assert_eq!(slow.detail.as_deref(), Some("not ready in time"));
        assert_eq!(starts(&sup.tick(killed + backoff(1))), ["slow"]);
    }

    #[test]
    fn never_ready_services_end_in_a_crash_loop_however_long_the_timeout() {
        let mut t = Instant::now();
        let mut s = spec("slow", &[]);
        s.readiness = Readiness::Path {
            path: "/run/ready".into(),
            timeout_seconds: 60,
        };
        let mut sup = Supervisor::new(vec![s], vec![]);
        for pid in 1..=CRASH_LOOP_AFTER as i32 {
            assert_eq!(starts(&sup.tick(t)), ["slow"]);
            sup.started("slow", pid, t);
            t += Duration::from_secs(60);
            sup.tick(t);
            sup.exited(pid, 137, t);
            if let State::Backoff { until } = sup.get("slow").unwrap().state {
                t = until;
            }
        }
        assert!(
            matches!(sup.get("slow").unwrap().state, State::CrashLoop { .. }),
            "{:?}",
            sup.get("slow").unwrap().state
        );
    }

    /// "slow" (ready once /run/ready exists, within 2 s), started at `t` as
    /// pid 7, then killed for not being ready at `t` + 2 s.
    fn killed_for_not_being_ready(restart: RestartPolicy, t: Instant) -> Supervisor {
        let mut s = spec("slow", &[]);
        s.restart = restart;
        s.readiness = Readiness::Path {
            path: "/run/ready".into(),
            timeout_seconds: 2,
        };
        let mut sup = Supervisor::new(vec![s], vec![]);
        sup.tick(t);
        sup.started("slow", 7, t);
        let actions = sup.tick(t + Duration::from_secs(2));
        assert!(
            actions.contains(&Action::KillAll("slow".into())),
            "{actions:?}"
        );
        sup
    }

    #[test]
    fn not_ready_in_time_with_restart_never_fails() {
        let t = Instant::now();
        let mut sup = killed_for_not_being_ready(RestartPolicy::Never, t);
        sup.exited(7, 137, t + Duration::from_secs(2));
        assert_eq!(sup.get("slow").unwrap().state, State::Failed);
    }

    #[test]
    fn a_stop_while_killed_for_not_being_ready_stays_stopped() {
        let t = Instant::now();
        let mut sup = killed_for_not_being_ready(RestartPolicy::Always, t);
        sup.stop("slow", t + Duration::from_secs(2)).unwrap();
        sup.exited(7, 137, t + Duration::from_secs(2));
        assert_eq!(sup.get("slow").unwrap().state, State::Stopped);
    }

    #[test]
    fn oneshot_is_done_when_it_exits_zero_and_unblocks_dependents() {
        let t = Instant::now();
        let mut setup = spec("setup", &[]);
        setup.readiness = Readiness::Exit {
            timeout_seconds: 10,
        };
        let mut sup = Supervisor::new(vec![setup, spec("app", &["setup"])], vec![]);
        sup.tick(t);
        sup.started("setup", 5, t);
        assert!(starts(&sup.tick(t)).is_empty());
        assert_eq!(sup.exited(5, 0, t).as_deref(), Some("setup"));
        assert_eq!(sup.get("setup").unwrap().state, State::Done);
        assert_eq!(starts(&sup.tick(t)), ["app"]);
    }

    #[test]
    fn crashes_back_off_exponentially_then_crash_loop() {
        let mut t = Instant::now();
        let mut sup = Supervisor::new(vec![spec("crashy", &[])], vec![]);
        let mut delays = Vec::new();
        sup.tick(t);
        for pid in 1..=CRASH_LOOP_AFTER as i32 {
            sup.started("crashy", pid, t);
            sup.exited(pid, 1, t + Duration::from_millis(10));
            match sup.get("crashy").unwrap().state {
                State::Backoff { until } => {
                    delays.push(until - t - Duration::from_millis(10));
                    assert!(sup.tick(until - Duration::from_millis(1)).is_empty());
                    t = until;
                    assert_eq!(starts(&sup.tick(t)), ["crashy"]);
                }
                State::CrashLoop { until } => {
                    assert_eq!(until - t - Duration::from_millis(10), CRASH_LOOP_RETRY);
                    assert_eq!(pid, CRASH_LOOP_AFTER as i32);
                }
                ref other => panic!("unexpected {other:?}"),
            }
        }
        let ms: Vec<u128> = delays.iter().map(|d| d.as_millis()).collect();
        assert_eq!(ms, [250, 500, 1000, 2000]);
        assert_eq!(sup.get("crashy").unwrap().restarts, CRASH_LOOP_AFTER - 1);
        assert_eq!(sup.get("crashy").unwrap().state.name(), "crash-loop");
        // A manual start clears it.
        sup.start("crashy").unwrap();
        assert_eq!(starts(&sup.tick(t)), ["crashy"]);
    }

    #[test]
    fn a_stable_run_resets_the_backoff() {
        let t = Instant::now();
        let mut sup = Supervisor::new(vec![spec("s", &[])], vec![]);
        sup.tick(t);
        sup.started("s", 1, t);
        sup.exited(1, 1, t);
        sup.started("s", 2, t);
        sup.exited(2, 1, t + STABLE_AFTER);
        match sup.get("s").unwrap().state {
            State::Backoff { until } => assert_eq!(until - (t + STABLE_AFTER), BACKOFF_START),
            ref other => panic!("{other:?}"),
        }
    }

    #[test]
    fn restart_policies() {
        let t = Instant::now();
        let mut never = spec("never", &[]);
        never.restart = RestartPolicy::Never;
        let mut on_failure = spec("onfail", &[]);
        on_failure.restart = RestartPolicy::OnFailure;
        let mut sup = Supervisor::new(vec![never, on_failure], vec![]);
        sup.tick(t);
        sup.started("never", 1, t);
        sup.started("onfail", 2, t);
        sup.exited(1, 3, t);
        sup.exited(2, 0, t);
        assert_eq!(sup.get("never").unwrap().state, State::Failed);
        assert_eq!(
            sup.get("never").unwrap().detail.as_deref(),
            Some("exited with status 3")
        );
        assert_eq!(sup.get("onfail").unwrap().state, State::Stopped);
    }

    #[test]
    fn stop_sends_sigterm_then_kills_the_cgroup_after_the_grace_period() {
        let t = Instant::now();
        let mut s = spec("svc", &[]);
        s.stop_grace_seconds = 3;
        let mut sup = Supervisor::new(vec![s], vec![]);
        sup.tick(t);
        sup.started("svc", 9, t);
        assert_eq!(
            sup.stop("svc", t).unwrap(),
            [Action::Terminate("svc".into())]
        );
        assert_eq!(sup.next_deadline(), Some(t + Duration::from_secs(3)));
        assert!(sup.tick(t + Duration::from_secs(2)).is_empty());
        assert_eq!(
            sup.tick(t + Duration::from_secs(3)),
            [Action::KillAll("svc".into())]
        );
        sup.exited(9, 137, t + Duration::from_secs(3));
        assert_eq!(sup.get("svc").unwrap().state, State::Stopped);
        // Stopped stays stopped.
        assert!(sup.tick(t + Duration::from_secs(60)).is_empty());
        assert!(sup.stop("nosuch", t).is_err());
    }

    #[test]
    fn restart_stops_then_starts() {
        let t = Instant::now();
        let mut sup = Supervisor::new(vec![spec("svc", &[])], vec![]);
        sup.tick(t);
        sup.started("svc", 9, t);
        assert_eq!(
            sup.restart("svc", t).unwrap(),
            [Action::Terminate("svc".into())]
        );
        sup.exited(9, 143, t);
        assert_eq!(starts(&sup.tick(t)), ["svc"]);
        sup.started("svc", 10, t);
        assert_eq!(sup.get("svc").unwrap().state, State::Running);
    }

    #[test]
    fn shutdown_stops_dependents_first() {
        let t = Instant::now();
        let mut sup = Supervisor::new(
            vec![
                spec("network", &[]),
                spec("console", &["network"]),
                spec("ntp", &["network"]),
            ],
            vec![],
        );
        sup.tick(t);
        sup.started("network", 1, t);
        sup.tick(t);
        sup.started("console", 2, t);
        sup.started("ntp", 3, t);
        let first = sup.shut_down(t);
        assert_eq!(
            first,
            [
                Action::Terminate("console".into()),
                Action::Terminate("ntp".into())
            ]
        );
        sup.exited(2, 0, t);
        assert!(sup.tick(t).is_empty(), "network waits for ntp");
        sup.exited(3, 0, t);
        assert_eq!(sup.tick(t), [Action::Terminate("network".into())]);
        sup.exited(1, 0, t);
        assert!(sup.all_stopped());
        assert_eq!(sup.get("console").unwrap().state, State::Stopped);
    }

    #[test]
    fn broken_specs_missing_dependencies_and_cycles_fail_only_those_involved() {
        let t = Instant::now();
        let sup_specs = vec![
            spec("a", &["b"]),
            spec("b", &["a"]),
            spec("c", &["nosuch"]),
            spec("d", &["broken"]),
            spec("ok", &[]),
        ];
        let mut sup = Supervisor::new(
            sup_specs,
            vec![("broken".into(), "service.toml: bad".into())],
        );
        assert_eq!(starts(&sup.tick(t)), ["ok"]);
        let state = |n: &str| {
            (
                sup.get(n).unwrap().state.clone(),
                sup.get(n).unwrap().detail.clone().unwrap_or_default(),
            )
        };
        assert_eq!(state("a").0, State::Failed);
        assert!(
            state("a").1.contains("cycle: a -> b -> a"),
            "{}",
            state("a").1
        );
        assert!(state("c").1.contains("\"nosuch\", which does not exist"));
        assert_eq!(
            state("d"),
            (State::Failed, "dependency broken failed".into())
        );
        assert_eq!(state("broken"), (State::Failed, "service.toml: bad".into()));
        assert!(sup.start("broken").is_err());
    }

    #[test]
    fn backoff_is_capped() {
        assert_eq!(backoff(1), Duration::from_millis(250));
        assert_eq!(backoff(8), BACKOFF_MAX);
        assert_eq!(backoff(1000), BACKOFF_MAX);
    }
}
