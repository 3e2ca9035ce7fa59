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
fn a_service_starts_after_the_ones_it_names_have_settled_ready_or_not() {
    let t = Instant::now();
    let console = || ServiceSpec {
        readiness: Readiness::Path {
            path: "/run/sshd.pid".into(),
            timeout_seconds: 60,
        },
        ..spec("console", &[])
    };
    let docker = ServiceSpec {
        start_after: vec!["console".into(), "no-such-service".into()],
        ..spec("docker", &["network"])
    };
    let mut sup = Supervisor::new(
        vec![console(), spec("network", &[]), docker.clone()],
        vec![],
    );
    assert_eq!(starts(&sup.tick(t)), ["console", "network"]);
    sup.started("console", 10, t);
    sup.started("network", 11, t);
    // Its dependency is up, the console is still starting: not yet.
    assert!(starts(&sup.tick(t)).is_empty());
    let later = t + Duration::from_secs(1);
    assert!(sup.ready("console"));
    // Due at once: the loop must not sleep until something else wakes it.
    assert_eq!(sup.next_deadline(later), Some(later));
    assert_eq!(starts(&sup.tick(later)), ["docker"]);
    sup.started("docker", 12, later);
    assert_eq!(sup.next_deadline(later), None);

    // A console that fails holds nothing back: an order, not a need.
    let mut sup = Supervisor::new(vec![console(), spec("network", &[]), docker], vec![]);
    assert_eq!(starts(&sup.tick(t)), ["console", "network"]);
    sup.started("console", 10, t);
    sup.started("network", 11, t);
    assert!(starts(&sup.tick(t)).is_empty());
    sup.exited(10, 1, t);
    assert_eq!(starts(&sup.tick(t)), ["docker"]);
}

#[test]
fn start_after_waits_for_nothing_that_will_not_come_and_fails_in_a_cycle() {
    let t = Instant::now();
    let after = |name: &str, deps: &[&str], after: &[&str]| ServiceSpec {
        start_after: after.iter().map(|a| a.to_string()).collect(),
        ..spec(name, deps)
    };
    let tools = ServiceSpec {
        start_at_boot: false,
        ..spec("tools", &[])
    };
    // "uses-tools" waits for a service that is stopped until asked: it
    // will not start by itself, so "web" need not wait for it.
    let mut sup = Supervisor::new(
        vec![
            tools,
            spec("uses-tools", &["tools"]),
            after("web", &[], &["uses-tools"]),
        ],
        vec![],
    );
    assert_eq!(starts(&sup.tick(t)), ["web"]);
    // Held back (a config fetch holds all but the network): settled too.
    let mut sup = Supervisor::new(
        vec![
            spec("network", &[]),
            spec("app", &[]),
            after("probe", &[], &["app"]),
        ],
        vec![],
    );
    sup.hold_all_but("probe");
    assert_eq!(starts(&sup.tick(t)), ["probe"]);
    // A cycle through start_after would wait for ever: it fails.
    let sup = Supervisor::new(vec![after("a", &[], &["b"]), spec("b", &["a"])], vec![]);
    for s in &sup.services {
        assert_eq!(s.state, State::Failed, "{}", s.spec.name);
        assert!(
            s.detail
                .as_deref()
                .unwrap_or("")
                .starts_with("dependency cycle"),
            "{:?}",
            s.detail
        );
    }
}

#[test]
fn a_service_not_started_at_boot_stays_stopped_until_asked() {
    let t = Instant::now();
    let tools = ServiceSpec {
        start_at_boot: false,
        ..spec("storage", &[])
    };
    let mut sup = Supervisor::new(vec![spec("network", &[]), tools], vec![]);
    assert_eq!(starts(&sup.tick(t)), ["network"]);
    sup.started("network", 10, t);
    assert!(starts(&sup.tick(t)).is_empty());
    let storage = sup
        .services
        .iter()
        .find(|s| s.spec.name == "storage")
        .unwrap();
    assert_eq!(storage.state, State::Stopped);
    sup.start("storage").unwrap();
    assert_eq!(starts(&sup.tick(t)), ["storage"]);
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
        assert_eq!(sup.tick(t), [Action::Terminate("slow".into())]);
        sup.exited(pid, 143, t);
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
/// pid 7, then stopped for not being ready at `t` + 2 s.
fn killed_for_not_being_ready(restart: RestartPolicy, t: Instant) -> Supervisor {
    let mut sup = slow_to_get_ready(restart, t);
    let deadline = t + Duration::from_secs(2);
    // At the deadline, one last look ...
    assert_eq!(sup.tick(deadline), [Action::CheckReady("slow".into())]);
    // ... then, still not ready, a stop as any other: SIGTERM, the grace,
    // then every process of the cgroup.
    assert_eq!(sup.tick(deadline), [Action::Terminate("slow".into())]);
    let grace = Duration::from_secs(sup.get("slow").unwrap().spec.stop_grace_seconds.into());
    assert!(sup.tick(deadline + grace - READY_POLL).is_empty());
    assert_eq!(sup.tick(deadline + grace), [Action::KillAll("slow".into())]);
    sup
}

fn slow_to_get_ready(restart: RestartPolicy, t: Instant) -> Supervisor {
    let mut s = spec("slow", &[]);
    s.restart = restart;
    s.readiness = Readiness::Path {
        path: "/run/ready".into(),
        timeout_seconds: 2,
    };
    let mut sup = Supervisor::new(vec![s], vec![]);
    sup.tick(t);
    sup.started("slow", 7, t);
    sup
}

#[test]
fn a_service_ready_by_the_last_look_at_its_deadline_is_not_stopped() {
    // PID 1 was busy (starting others) from before the deadline to after it.
    let t = Instant::now();
    let mut sup = slow_to_get_ready(RestartPolicy::Always, t);
    let late = t + Duration::from_secs(5);
    assert_eq!(sup.tick(late), [Action::CheckReady("slow".into())]);
    sup.ready("slow");
    assert!(sup.tick(late).is_empty());
    let slow = sup.get("slow").unwrap();
    assert_eq!((&slow.state, slow.restarts), (&State::Running, 0));
}

#[test]
fn a_check_command_gets_a_moment_to_answer_the_last_look() {
    let t = Instant::now();
    let mut s = spec("slow", &[]);
    s.readiness = Readiness::Command {
        command: vec!["/bin/check".into()],
        timeout_seconds: 2,
    };
    let mut sup = Supervisor::new(vec![s], vec![]);
    sup.tick(t);
    sup.started("slow", 7, t);
    let deadline = t + Duration::from_secs(2);
    assert_eq!(sup.tick(deadline), [Action::CheckReady("slow".into())]);
    assert!(sup.tick(deadline).is_empty(), "its check is still running");
    assert_eq!(
        sup.tick(deadline + LAST_LOOK_FOR_COMMANDS),
        [Action::Terminate("slow".into())]
    );
    // A check that answers during the stop changes nothing.
    assert!(!sup.ready("slow"));
    assert_eq!(sup.get("slow").unwrap().state.name(), "stopping");
}

#[test]
fn the_grace_counts_from_the_sigterm_not_from_the_turn_that_decided_it() {
    let t = Instant::now();
    let mut sup = Supervisor::new(vec![spec("web", &[])], vec![]);
    sup.tick(t);
    sup.started("web", 7, t);
    assert_eq!(
        sup.stop("web", t).unwrap(),
        [Action::Terminate("web".into())]
    );
    let grace = Duration::from_secs(sup.get("web").unwrap().spec.stop_grace_seconds.into());
    // Sent 4 s later: the turn's starts before it took that long.
    sup.terminated("web", t + Duration::from_secs(4));
    assert!(sup.tick(t + grace).is_empty());
    assert_eq!(
        sup.tick(t + Duration::from_secs(4) + grace),
        [Action::KillAll("web".into())]
    );
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
    assert_eq!(sup.next_deadline(t), Some(t + Duration::from_secs(3)));
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
