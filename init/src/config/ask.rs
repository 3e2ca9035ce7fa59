//! PID 1 asks `brig-config` (src/bin/brig-config.rs) what a config means.
//!
//! Reading cloud-config takes a YAML parser and the whole cloud-config
//! schema: more than half of what PID 1's program would be, mapped into
//! its memory for good (docs/design.md: PID 1 under 2 MiB resident). So
//! PID 1 hands the bytes to a separate program (in the initramfs) and
//! reads back a `Plan` as JSON. It also means a parser bug that user data
//! can reach (a stack overflow, a runaway allocation) ends that program,
//! not PID 1: it runs as a user of its own, with no capabilities, no_new_privs, a
//! memory limit and a deadline, and only computes: PID 1 reads and writes
//! every file.

use std::io::{Read, Seek};
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brig_spec::cloud_config::DEFAULT_FILE;
use brig_spec::paths::{self, CONFIG_DIR};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::config::plan::{self, Plan};
use crate::config::saved::saved;
use crate::config::{local_settings, Seed};
use crate::host::system::System;

/// Where the program is: in the initramfs (`paths::CONFIG_PROGRAM` says why).
pub const PROGRAM: &str = paths::CONFIG_PROGRAM;
/// Planning takes milliseconds; a program still busy after this is stuck
/// on its input. As the container setup's: PID 1 waits for it in its loop,
/// and the shortest watchdog timeout it accepts (8 s) leaves room for it.
pub const DEADLINE: Duration = Duration::from_secs(5);
/// The answer's limit: the plan holds the config a few times over, and
/// user data is at most 16 MiB (`http::MAX_BODY`).
pub const MAX_ANSWER: usize = 128 << 20;
/// The program's address space: far above what a real config needs, far
/// below what would push the machine's services out of memory.
const MEMORY_LIMIT: u64 = 512 << 20;
/// brig-config's own user and group, in no image's /etc/passwd: a process
/// of a container's `nobody` (65534) cannot signal it.
pub const CONFIG_ID: u32 = 65533;

#[derive(Debug, Serialize, Deserialize)]
pub enum Question {
    /// `plan::plan` of these.
    Plan {
        seed: Seed,
        #[serde(with = "crate::config::base64_bytes")]
        default: Option<Vec<u8>>,
        local: Map<String, Value>,
    },
    /// `local_settings::checked`: `key` set to `value` (None: removed) in
    /// `local`, over the saved datasource `seed` and the image's default.
    Change {
        key: String,
        value: Option<Value>,
        local: Map<String, Value>,
        seed: Seed,
        #[serde(with = "crate::config::base64_bytes")]
        default: Option<Vec<u8>>,
    },
}

#[derive(Debug, Serialize, Deserialize)]
pub enum Answer {
    Plan(Box<Plan>),
    /// What to tell the user once the setting is saved, or why not.
    Change(Result<String, String>),
    /// The program caught a bug of its own.
    Crashed(String),
}

/// The answer, computed here: what `brig-config` runs, and the tests' fake
/// system.
pub fn answer(question: Question) -> Answer {
    match question {
        Question::Plan {
            seed,
            default,
            local,
        } => Answer::Plan(Box::new(plan::plan(&seed, default.as_deref(), &local))),
        Question::Change {
            key,
            value,
            local,
            seed,
            default,
        } => Answer::Change(local_settings::checked(&local, &key, value, |local| {
            plan::plan(&seed, default.as_deref(), local)
        })),
    }
}

/// Starts the one problem of a plan that could not be made.
pub const NOT_APPLIED: &str = "not applied: ";

/// The plan for `seed`, from `brig-config`. When it cannot answer, the
/// plan is empty but for the reason (`NOT_APPLIED`), which PID 1 reports.
pub fn plan(
    sys: &dyn System,
    seed: Seed,
    default: Option<Vec<u8>>,
    local: Map<String, Value>,
) -> Plan {
    let asked = sys.ask_config(&Question::Plan {
        seed,
        default,
        local,
    });
    plan_from(asked).unwrap_or_else(|why| Plan {
        problems: vec![format!("{NOT_APPLIED}{why}")],
        ..Plan::default()
    })
}

/// The plan in `asked`, the answer to `Question::Plan`, or why there is
/// none.
fn plan_from(asked: Result<Answer, String>) -> Result<Plan, String> {
    let mut plan = match asked? {
        Answer::Plan(plan) => *plan,
        other => return Err(unexpected(other)),
    };
    // Only the config files are PID 1's to write from a plan.
    let (files, elsewhere): (Vec<_>, Vec<_>) = std::mem::take(&mut plan.files)
        .into_iter()
        .partition(|(path, _)| {
            path.starts_with(CONFIG_DIR) && !path.components().any(|c| c.as_os_str() == "..")
        });
    plan.files = files;
    for (path, _) in elsewhere {
        plan.problems.push(format!(
            "{PROGRAM} planned a file outside {CONFIG_DIR}, not written: {}",
            path.display()
        ));
    }
    // Sysctls under /proc/sys, mounts under /mnt and /media: the checks
    // the program's parser makes, made again where PID 1 acts on them.
    let mut refused = Vec::new();
    plan.sysctl.retain(|(name, _)| {
        let bad = plan::sysctl_path(name).is_none();
        if bad {
            refused.push(format!("sysctl {name:?}"));
        }
        !bad
    });
    plan.mounts.retain(|m| {
        let bad = brig_spec::mounts::check_target(&m.target).is_err();
        if bad {
            refused.push(format!("mount on {:?}", m.target));
        }
        !bad
    });
    for what in refused {
        plan.problems.push(format!(
            "{PROGRAM} planned a {what} out of bounds, not applied"
        ));
    }
    Ok(plan)
}

/// The seed saved at this boot (or none) and the image's default: what a
/// plan made while the machine runs starts from.
fn saved_inputs(sys: &dyn System) -> (Seed, Option<Vec<u8>>) {
    let seed = saved(sys, Path::new(paths::SAVED_DIR)).unwrap_or_else(|| Seed {
        source: "no datasource".into(),
        ..Default::default()
    });
    (seed, sys.read_file(Path::new(DEFAULT_FILE)).ok())
}

/// The plan for the settings `local` holds now, over the datasource this
/// boot saved and the image's default (for a `brigctl config set` while
/// the machine runs), or why `brig-config` gave none: then nothing the
/// last plan set up may be undone.
pub fn replan(sys: &dyn System, local: &Map<String, Value>) -> Result<Plan, String> {
    let (seed, default) = saved_inputs(sys);
    plan_from(sys.ask_config(&Question::Plan {
        seed,
        default,
        local: local.clone(),
    }))
}

/// Sets or removes `key` in the settings file at `path`, if
/// `brig-config` finds the result valid; a message for the user.
pub fn change(
    sys: &dyn System,
    path: &Path,
    key: &str,
    value: Option<Value>,
) -> Result<String, String> {
    let local = local_settings::read(sys, path)?;
    // Made here, as checked there: what is saved is PID 1's own doing.
    let next = local_settings::with_key(&local, key, value.clone())?;
    let (seed, default) = saved_inputs(sys);
    let question = Question::Change {
        key: key.to_string(),
        value,
        local,
        seed,
        default,
    };
    match sys.ask_config(&question) {
        Ok(Answer::Change(Ok(message))) => {
            local_settings::save(sys, path, &next)?;
            Ok(message)
        }
        Ok(Answer::Change(Err(e))) => Err(e),
        Ok(other) => Err(format!("not saved: {}", unexpected(other))),
        Err(e) => Err(format!("not saved: {e}")),
    }
}

fn unexpected(answer: Answer) -> String {
    match answer {
        Answer::Crashed(why) => format!("{PROGRAM} crashed: {why}"),
        _ => format!("{PROGRAM} answered another question"),
    }
}

/// Runs `program` on `question` and reads its answer (the real system's
/// `ask_config`). The question goes in as a file (a memfd), so nothing
/// here waits on the program but the read of its answer, which has a
/// deadline and a size limit.
pub fn run(program: &Path, question: &Question, deadline: Duration) -> Result<Answer, String> {
    let name = program.display();
    let input = memfd().map_err(|e| format!("making the question for {name}: {e}"))?;
    let mut writer = std::io::BufWriter::new(input);
    serde_json::to_writer(&mut writer, question)
        .map_err(|e| format!("writing the question for {name}: {e}"))?;
    let mut input = writer
        .into_inner()
        .map_err(|e| format!("writing the question for {name}: {e}"))?;
    input
        .rewind()
        .map_err(|e| format!("writing the question for {name}: {e}"))?;
    let mut command = Command::new(program);
    command
        .arg0("brig-config")
        .env_clear()
        .current_dir("/")
        .stdin(Stdio::from(OwnedFd::from(input)))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .uid(CONFIG_ID)
        .gid(CONFIG_ID);
    // SAFETY: between fork and exec the closure makes only
    // async-signal-safe calls (sigprocmask, setrlimit, prctl) on memory it
    // owns; it allocates nothing.
    unsafe {
        command.pre_exec(|| {
            // PID 1 takes its signals from a signalfd, blocked.
            let empty = std::mem::zeroed::<libc::sigset_t>();
            libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
            let limit = libc::rlimit {
                rlim_cur: MEMORY_LIMIT,
                rlim_max: MEMORY_LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0
                || libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0
            {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command
        .spawn()
        .map_err(|e| format!("starting {name}: {e}"))?;
    let until = Instant::now() + deadline;
    let stdout = child.stdout.take().map(OwnedFd::from);
    let read = match stdout {
        Some(out) => read_until(out, until, deadline, MAX_ANSWER),
        None => Err("no output pipe".into()),
    };
    // Its output closed, it exits: waited for until the same deadline (a
    // program that closes its output and goes on is stopped there).
    let mut exited = None;
    while read.is_ok() && Instant::now() < until {
        match child.try_wait() {
            Ok(Some(status)) => {
                exited = Some(status);
                break;
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(2)),
            Err(e) => return Err(format!("waiting for {name}: {e}")),
        }
    }
    let status = match exited {
        Some(status) => status,
        None => {
            let _ = child.kill();
            let status = child
                .wait()
                .map_err(|e| format!("waiting for {name}: {e}"))?;
            read.as_ref().map_err(|e| format!("{name}: {e}"))?;
            return Err(format!(
                "{name} did not end within {} s of its question; stopped ({status})",
                deadline.as_secs()
            ));
        }
    };
    let data = read.map_err(|e| format!("{name}: {e}"))?;
    if !status.success() {
        let how = match status.signal() {
            Some(signal) => format!("killed by signal {signal}"),
            None => format!("exit status {}", status.code().unwrap_or(-1)),
        };
        return Err(format!("{name} failed ({how}) on this config"));
    }
    serde_json::from_slice(&data).map_err(|e| format!("{name} gave no answer: {e}"))
}

/// Reads `fd` to its end, giving up at `deadline` (`wait` after the
/// start) or past `limit` bytes.
fn read_until(
    fd: OwnedFd,
    deadline: Instant,
    wait: Duration,
    limit: usize,
) -> Result<Vec<u8>, String> {
    let flags = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_GETFL).map_err(|e| e.to_string())?;
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_SETFL(flags)).map_err(|e| e.to_string())?;
    let mut file = std::fs::File::from(fd);
    let mut data = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match file.read(&mut chunk) {
            Ok(0) => return Ok(data),
            Ok(n) if data.len() + n > limit => {
                return Err(format!("its answer is over {} MiB", limit >> 20))
            }
            Ok(n) => data.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(format!("no answer within {} s; stopped", wait.as_secs()));
                }
                let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
                let ms = PollTimeout::try_from(left.as_millis().min(60_000) as i32 + 1)
                    .unwrap_or(PollTimeout::MAX);
                let _ = poll(&mut fds, ms);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading its answer: {e}")),
        }
    }
}

/// An anonymous file, closed on exec (the child gets it as stdin).
fn memfd() -> std::io::Result<std::fs::File> {
    // SAFETY: the name is a NUL-terminated literal; the returned fd, when
    // valid, is new and owned by the File alone.
    let fd = unsafe { libc::memfd_create(c"brig-config-question".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just created and nothing else owns it.
    Ok(unsafe { std::fs::File::from_raw_fd(fd) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::saved::save;
    use crate::host::system::fake::Recorder;
    use brig_spec::paths::DOCKER_CONFIG;

    fn docker(p: &Plan) -> Option<Value> {
        p.files
            .iter()
            .find(|(f, _)| f == Path::new(DOCKER_CONFIG))
            .map(|(_, text)| serde_json::from_str::<Value>(text).unwrap())
    }

    #[test]
    fn a_change_while_running_is_planned_over_the_saved_datasource() {
        let sys = Recorder::default();
        let seed = Seed {
            source: "/dev/vdb".into(),
            user_data: Some(
                b"#cloud-config\nbrig: {docker: {registry_mirrors: ['https://a.test']}}\n".to_vec(),
            ),
            ..Seed::default()
        };
        let p = replan(&sys, &Map::new()).unwrap();
        assert!(docker(&p).is_none(), "no datasource saved, no settings");
        let local: Map<String, Value> =
            serde_json::from_str(r#"{"brig": {"docker": {"debug": true}}}"#).unwrap();
        assert_eq!(
            docker(&replan(&sys, &local).unwrap()).unwrap()["daemon"]["debug"],
            true
        );
        save(&sys, &seed, Path::new(paths::SAVED_DIR)).unwrap();
        let mirrors = |d: &Value| d["daemon"]["registry-mirrors"][0].clone();
        assert_eq!(
            mirrors(&docker(&replan(&sys, &Map::new()).unwrap()).unwrap()),
            "https://a.test"
        );
        let d = docker(&replan(&sys, &local).unwrap()).unwrap();
        assert_eq!(mirrors(&d), "https://a.test", "{d}");
        assert_eq!(d["daemon"]["debug"], true, "{d}");
    }

    #[test]
    fn a_plan_goes_over_the_wire_whole_with_its_services_named() {
        let user_data = b"#cloud-config\nhostname: web-1\nmounts: [[vdb, /mnt/data]]\n\
brig:\n  update: {url: 'http://10.0.2.2/b.bundle', reboot: '02:00-04:00'}\n  services:\n    web:\n      rootfs: {image: /mnt/data/web.squashfs}\n      command: [/bin/httpd, -f]\n      limits: {memory_max: 64M}\n";
        let seed = Seed {
            source: "test".into(),
            user_data: Some(user_data.to_vec()),
            ..Seed::default()
        };
        let here = plan::plan(&seed, None, &Map::new());
        assert_eq!(here.services[0].name, "web");
        assert!(here.update.url.is_some() && !here.mounts.is_empty());
        let json = serde_json::to_string(&Answer::Plan(Box::new(here))).unwrap();
        let Answer::Plan(there) = serde_json::from_str(&json).unwrap() else {
            panic!("{json}")
        };
        assert_eq!(*there, plan::plan(&seed, None, &Map::new()));
        // What PID 1 reads is checked again.
        let forged = json.replace("\"web\"", "\"../web\"");
        let e = serde_json::from_str::<Answer>(&forged).unwrap_err();
        assert!(e.to_string().contains("service ../web"), "{e}");
    }

    #[test]
    fn pid1_writes_only_config_files_from_a_plan() {
        let mount = |target: &str| brig_spec::mounts::MountEntry {
            device: brig_spec::mounts::Device::Path("/dev/vdb".into()),
            target: target.into(),
            fstype: None,
            options: Vec::new(),
        };
        let forged = Plan {
            files: vec![
                (Path::new(CONFIG_DIR).join("ntp/servers.conf"), "ok".into()),
                ("/etc/shadow".into(), "root::0:0:::::".into()),
                (Path::new(CONFIG_DIR).join("../../etc/passwd"), "x".into()),
            ],
            sysctl: vec![
                ("vm.swappiness".into(), "10".into()),
                ("/etc/shadow".into(), "x".into()),
                ("net/../../../etc/passwd".into(), "x".into()),
            ],
            mounts: vec![mount("/mnt/data"), mount("/etc"), mount("/mnt/../etc")],
            ..Plan::default()
        };
        let planned = plan_from(Ok(Answer::Plan(Box::new(forged)))).unwrap();
        assert_eq!(planned.files.len(), 1, "{:?}", planned.files);
        assert_eq!(planned.sysctl, [("vm.swappiness".into(), "10".into())]);
        assert_eq!(planned.mounts, [mount("/mnt/data")]);
        assert_eq!(planned.problems.len(), 6, "{:?}", planned.problems);
        assert!(planned.problems[0].contains("/etc/shadow"));
        assert!(planned.problems[2].contains("sysctl \"/etc/shadow\" out of bounds"));
        let failed = plan_from(Err("brig-config failed (killed by signal 9)".into()));
        assert_eq!(
            failed.unwrap_err(),
            "brig-config failed (killed by signal 9)"
        );
        let crashed = plan_from(Ok(Answer::Crashed("a bug".into()))).unwrap_err();
        assert!(crashed.contains("crashed: a bug"), "{crashed}");
    }
}
