//! The real `brig-config` program as PID 1 runs it (`config::ask::run`):
//! what it answers, how it is confined, and what PID 1 does when it fails,
//! hangs or babbles. Run as root (CI does): the program drops to a user of
//! its own.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use brig_init::config::ask::{run, Answer, Question, DEADLINE};
use brig_init::config::Seed;
use serde_json::Map;

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "brig-config runs as a user of its own, which takes root to arrange: run these tests as root (CI does)"
    );
}

/// The built program, copied where nobody may run it: the build directory
/// may be closed to others (a checkout in a `mktemp -d`).
fn program() -> &'static Path {
    static COPY: std::sync::OnceLock<(tempfile::TempDir, PathBuf)> = std::sync::OnceLock::new();
    let (_, path) = COPY.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("brig-config");
        std::fs::copy(env!("CARGO_BIN_EXE_brig-config"), &path).unwrap();
        (dir, path)
    });
    path
}

fn plan_of(user_data: &[u8]) -> Question {
    Question::Plan {
        seed: Seed {
            source: "test".into(),
            user_data: Some(user_data.to_vec()),
            ..Seed::default()
        },
        default: None,
        local: Map::new(),
    }
}

/// A program anyone may run, in a directory anyone may enter.
fn script(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, format!("#!/bin/sh\n{text}\n")).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn the_program_plans_a_config_and_checks_a_setting() {
    require_root();
    let user_data = b"#cloud-config\nhostname: web-1\nntp: {servers: [ntp.test]}\n\
brig:\n  services:\n    web:\n      rootfs: {image: /mnt/data/web.squashfs}\n      command: [/bin/httpd]\n";
    let Answer::Plan(plan) = run(program(), &plan_of(user_data), DEADLINE).unwrap() else {
        panic!("not a plan")
    };
    assert_eq!(plan.hostname.as_deref(), Some("web-1"));
    assert_eq!(plan.services[0].name, "web");
    assert!(
        plan.files.iter().any(|(_, text)| text.contains("ntp.test")),
        "{:?}",
        plan.files
    );
    let bad = b"#cloud-config\nhostname: [not, a, name]\n";
    let Answer::Plan(plan) = run(program(), &plan_of(bad), DEADLINE).unwrap() else {
        panic!("not a plan")
    };
    assert!(plan.hostname.is_none());
    assert!(
        plan.problems.iter().any(|p| p.contains("hostname")),
        "{:?}",
        plan.problems
    );
    let change = Question::Change {
        key: "users.shell".into(),
        value: Some(serde_json::json!("/bin/sh")),
        local: Map::new(),
        seed: Seed {
            source: "saved".into(),
            user_data: Some(b"#cloud-config\nusers: [default, {name: alice}]\n".to_vec()),
            ..Seed::default()
        },
        default: None,
    };
    let Answer::Change(refused) = run(program(), &change, DEADLINE).unwrap() else {
        panic!("not a change")
    };
    assert_eq!(
        refused.unwrap_err(),
        "not saved: `users` is a list in the config; setting users.shell would replace all of it"
    );
}

#[test]
fn hostile_yaml_ends_the_program_not_pid_1() {
    require_root();
    // A billion laughs: each alias ten of the one before.
    let mut bomb =
        String::from("#cloud-config\na0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb += &format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        );
    }
    // Nesting far deeper than any parser's stack.
    let deep = format!(
        "#cloud-config\nx: {}{}\n",
        "[".repeat(200_000),
        "]".repeat(200_000)
    );
    for (what, user_data) in [("aliases", bomb), ("nesting", deep)] {
        let started = Instant::now();
        let outcome = run(program(), &plan_of(user_data.as_bytes()), DEADLINE);
        let took = started.elapsed();
        eprintln!(
            "{what}: {outcome:?} in {took:?}",
            outcome = outcome.as_ref().map(|a| match a {
                Answer::Plan(p) => format!("a plan with problems {:?}", p.problems),
                other => format!("{other:?}"),
            })
        );
        match outcome {
            // Refused as a problem of the document: nothing of it applies.
            Ok(Answer::Plan(plan)) => assert!(
                plan.problems.iter().any(|p| p.contains("not valid YAML"))
                    && plan.effective.is_empty(),
                "{what}: {plan:?}"
            ),
            Ok(other) => panic!("{what}: {other:?}"),
            // Or the program died of it (its memory limit, its stack), and
            // PID 1 says so.
            Err(e) => assert!(e.contains("failed (killed by signal"), "{what}: {e}"),
        }
        assert!(took < DEADLINE + Duration::from_secs(5), "{what}: {took:?}");
    }
}

#[test]
fn the_program_runs_as_its_own_user_without_privileges_or_blocked_signals() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    std::fs::create_dir(&out).unwrap();
    std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o777)).unwrap();
    let probe = script(
        dir.path(),
        "probe",
        &format!(
            "id -u > {o}/uid; id -G > {o}/groups; grep -E '^(CapEff|CapPrm|NoNewPrivs|SigBlk):' /proc/self/status > {o}/status; \
             grep 'Max address space' /proc/self/limits > {o}/limits; cat > {o}/question",
            o = out.display()
        ),
    );
    // It prints no answer, which is reported.
    let e = run(&probe, &plan_of(b"#cloud-config\n"), DEADLINE).unwrap_err();
    assert!(e.contains("gave no answer"), "{e}");
    let read = |name: &str| std::fs::read_to_string(out.join(name)).unwrap();
    assert_eq!(read("uid").trim(), "65533");
    assert_eq!(read("groups").trim(), "65533");
    let status = read("status");
    for line in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "NoNewPrivs:\t1",
        "SigBlk:\t0000000000000000",
    ] {
        assert!(status.contains(line), "{line} not in:\n{status}");
    }
    assert!(
        read("limits").contains(&(512u64 << 20).to_string()),
        "{}",
        read("limits")
    );
    // The question came whole on stdin.
    let question: Question = serde_json::from_str(&read("question")).unwrap();
    assert!(matches!(question, Question::Plan { .. }));
}

#[test]
fn a_program_that_fails_hangs_or_babbles_is_reported_and_stopped() {
    require_root();
    let question = plan_of(b"#cloud-config\n");
    let dir = tempfile::tempdir().unwrap();
    let e = run(Path::new("/nonexistent/brig-config"), &question, DEADLINE).unwrap_err();
    assert!(e.starts_with("starting /nonexistent/brig-config:"), "{e}");
    let failing = script(dir.path(), "failing", "exit 3");
    let e = run(&failing, &question, DEADLINE).unwrap_err();
    assert!(e.ends_with("failed (exit status 3) on this config"), "{e}");
    let killed = script(dir.path(), "killed", "kill -SEGV $$");
    let e = run(&killed, &question, DEADLINE).unwrap_err();
    assert!(e.contains("failed (killed by signal 11)"), "{e}");
    // Echoes the question: output, but not an answer.
    let e = run(Path::new("/bin/cat"), &question, DEADLINE).unwrap_err();
    assert!(e.contains("gave no answer"), "{e}");
    // Never ends, holding its output open: stopped at the deadline.
    let hanging = script(dir.path(), "hanging", "exec sleep 600");
    let started = Instant::now();
    let e = run(&hanging, &question, Duration::from_secs(2)).unwrap_err();
    assert!(e.ends_with("no answer within 2 s; stopped"), "{e}");
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Answers nothing, closes its output and goes on: stopped at the
    // deadline too, not waited for.
    let lingering = script(dir.path(), "lingering", "exec >&-; exec sleep 600");
    let started = Instant::now();
    let e = run(&lingering, &question, Duration::from_secs(2)).unwrap_err();
    assert!(
        e.contains("did not end within 2 s of its question; stopped"),
        "{e}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    // Never ends, and never stops talking: stopped at the size limit.
    let e = run(
        Path::new("/usr/bin/yes"),
        &question,
        Duration::from_secs(120),
    )
    .unwrap_err();
    assert!(e.ends_with("its answer is over 128 MiB"), "{e}");
}
