//! brig-console: sets up the console container from the config PID 1 wrote
//! (/run/brig/config/console/console.json) — accounts, host keys, write_files and
//! bootcmd — then runs sshd and a getty on each console, respawning gettys
//! as users log out, with runcmd and user-data scripts beside them. sshd exiting ends the
//! container, so PID 1's restart policy and crash-loop state apply to it.

use std::fs;
use std::path::Path;
use std::process::{Child, Command, ExitCode};
use std::time::{Duration, Instant};

use brig_console::{accounts, gettys, setup, steps};
use brig_spec::console::ConsoleConfig;
use brig_spec::failed::Failed;
use brig_spec::paths::CONSOLE_CONFIG;

/// The volume with the ssh host keys.
const HOST_KEYS: &str = "/var/lib/ssh";
/// Where sshd writes its pid once it listens (sshd_config `PidFile`; the
/// service's readiness path too).
const SSHD_PID_FILE: &str = "/run/sshd.pid";
/// A getty that ends sooner than this after starting counts as failing.
const QUICK_EXIT: Duration = Duration::from_secs(10);
/// Failing gettys in a row before one is given up.
const GETTY_ATTEMPTS: u32 = 5;

fn say(message: &str) {
    println!("{message}");
}

fn main() -> ExitCode {
    let signals = match block_signals() {
        Ok(set) => set,
        Err(e) => {
            say(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    let config = load_config();
    let rendered = match prepare(&config) {
        Ok(rendered) => rendered,
        Err(e) => {
            say(&format!("error: {e}"));
            return ExitCode::FAILURE;
        }
    };
    for line in steps::per_boot(&config, &rendered.passwd, &rendered.group) {
        say(&line);
    }
    run(&config, &signals)
}

/// The config, or the defaults (the `brig` user without keys) when there is
/// none; a broken file is reported.
fn load_config() -> ConsoleConfig {
    match fs::read_to_string(CONSOLE_CONFIG) {
        Ok(text) => serde_json::from_str(&text).unwrap_or_else(|e| {
            say(&format!("error: {CONSOLE_CONFIG}: {e}; using the defaults"));
            ConsoleConfig::default()
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => ConsoleConfig::default(),
        Err(e) => {
            say(&format!(
                "error: reading {CONSOLE_CONFIG}: {e}; using the defaults"
            ));
            ConsoleConfig::default()
        }
    }
}

/// Accounts, homes, /etc/hosts, host keys, sshd's runtime directory.
fn prepare(config: &ConsoleConfig) -> Result<accounts::Rendered, Failed> {
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "brig".into());
    for line in setup::host_keys(Path::new(HOST_KEYS), &format!("root@{hostname}"))? {
        say(&line);
    }
    fs::create_dir_all("/run/sshd").map_err(|e| Failed::new("making /run/sshd", e))?;
    // With its keys and runtime directory in place, sshd's start is tried
    // while the accounts are written: what it reads goes into the page
    // cache meanwhile.
    std::thread::spawn(|| {
        for line in setup::warm(setup::SSHD_PROGRAMS) {
            say(&line);
        }
    });
    let rendered = prepare_accounts(config, &hostname)?;
    // The docker CLI's default socket is the docker container's, shared
    // through SOCKET_DIR.
    if let Err(e) = setup::link(
        Path::new("/var/run/docker.sock"),
        Path::new(brig_spec::paths::DOCKER_SOCKET),
    ) {
        say(&format!("error: {e}; the docker CLI needs -H"));
    }
    Ok(rendered)
}

/// Accounts, homes, /etc/hosts and the time zone.
fn prepare_accounts(config: &ConsoleConfig, hostname: &str) -> Result<accounts::Rendered, Failed> {
    let rendered = accounts::render(config);
    let mut problems = rendered.problems.clone();
    problems.extend(setup::write_accounts(&rendered, Path::new("/etc"))?);
    problems.extend(setup::make_homes(&rendered.homes, Path::new("/etc/skel")));
    for p in &problems {
        say(&format!("config: {p}"));
    }
    let names: Vec<&str> = config.users.iter().map(|a| a.name.as_str()).collect();
    say(&format!("accounts: {}", names.join(", ")));
    if config
        .users
        .iter()
        .all(|a| a.ssh_authorized_keys.is_empty())
    {
        say("no ssh keys in the config: nobody can log in over ssh (see docs/console.md)");
    }

    setup::write_file(
        Path::new("/etc/hosts"),
        setup::hosts_file(hostname).as_bytes(),
        0o644,
        0,
        0,
    )?;
    if let Some(zone) = &config.timezone {
        say(&setup::timezone(zone, Path::new("/")));
    }
    Ok(rendered)
}

struct Getty {
    command: Vec<String>,
    child: Option<Child>,
    started: Instant,
    failures: u32,
    /// When to start it again.
    due: Option<Instant>,
}

fn spawn(command: &[String]) -> std::io::Result<Child> {
    Command::new(&command[0]).args(&command[1..]).spawn()
}

fn run(config: &ConsoleConfig, signals: &libc::sigset_t) -> ExitCode {
    let mut sshd = match spawn(&["/usr/sbin/sshd".into(), "-D".into(), "-e".into()]) {
        Ok(child) => child,
        Err(e) => {
            say(&format!("error: starting sshd: {e}"));
            return ExitCode::FAILURE;
        }
    };
    // For users to check the first connection against; after sshd starts.
    match setup::host_key_fingerprints(Path::new(HOST_KEYS)) {
        Ok(lines) => lines.iter().for_each(|line| say(line)),
        Err(e) => say(&format!("error: {e}")),
    }
    // Once sshd listens (it writes its pid file then), not beside its start.
    std::thread::spawn(|| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while !Path::new(SSHD_PID_FILE).exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        for line in setup::warm(setup::LOGIN_PROGRAMS) {
            say(&line);
        }
    });
    // runcmd and user-data scripts: beside sshd, so users can log in while
    // they run.
    let instance_steps = config.clone();
    std::thread::spawn(move || {
        for line in steps::per_instance(&instance_steps) {
            say(&line);
        }
    });
    let active = fs::read_to_string("/sys/class/tty/console/active").unwrap_or_default();
    let mut gettys: Vec<Getty> = gettys::commands(&active, config.autologin.as_deref())
        .into_iter()
        .filter(|c| {
            let tty = c.iter().rev().find(|a| a.starts_with("tty")).cloned();
            tty.is_some_and(|t| Path::new("/dev").join(t).exists())
        })
        .map(|command| Getty {
            command,
            child: None,
            started: Instant::now(),
            failures: 0,
            due: Some(Instant::now()),
        })
        .collect();

    loop {
        let now = Instant::now();
        for getty in &mut gettys {
            if getty.due.is_some_and(|due| due <= now) {
                getty.due = None;
                getty.started = now;
                match spawn(&getty.command) {
                    Ok(child) => getty.child = Some(child),
                    Err(e) => say(&format!("error: starting {}: {e}", getty.command.join(" "))),
                }
            }
        }
        let next = gettys.iter().filter_map(|g| g.due).min();
        let wait = next.map_or(Duration::from_secs(3600), |d| {
            d.saturating_duration_since(Instant::now())
        });
        match wait_signal(signals, wait) {
            Some(libc::SIGTERM) | Some(libc::SIGINT) => {
                stop(&mut sshd, &mut gettys);
                return ExitCode::SUCCESS;
            }
            _ => {}
        }
        if let Ok(Some(status)) = sshd.try_wait() {
            say(&format!("error: sshd exited ({status})"));
            stop(&mut sshd, &mut gettys);
            return ExitCode::FAILURE;
        }
        for getty in &mut gettys {
            let Some(child) = &mut getty.child else {
                continue;
            };
            let Ok(Some(status)) = child.try_wait() else {
                continue;
            };
            getty.child = None;
            if getty.started.elapsed() < QUICK_EXIT && !status.success() {
                getty.failures += 1;
            } else {
                getty.failures = 0;
            }
            if getty.failures >= GETTY_ATTEMPTS {
                say(&format!(
                    "error: {} failed {GETTY_ATTEMPTS} times in a row ({status}); not started again",
                    getty.command.join(" ")
                ));
            } else {
                // A logout restarts it at once; a failing one after a pause.
                let pause = Duration::from_secs(2 * u64::from(getty.failures));
                getty.due = Some(Instant::now() + pause);
            }
        }
    }
}

/// SIGTERM to sshd and the gettys; waits for them a little (PID 1 kills
/// what is left of the container after its grace period).
fn stop(sshd: &mut Child, gettys: &mut [Getty]) {
    let mut children: Vec<&mut Child> =
        gettys.iter_mut().filter_map(|g| g.child.as_mut()).collect();
    children.push(sshd);
    for child in &children {
        if let Ok(pid) = i32::try_from(child.id()) {
            // SAFETY: kill(2) on our own child's pid; no memory involved.
            unsafe { libc::kill(pid, libc::SIGTERM) };
        }
    }
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        if children
            .iter_mut()
            .all(|c| c.try_wait().is_ok_and(|s| s.is_some()))
        {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Blocks SIGTERM, SIGINT and SIGCHLD for normal delivery: they are taken
/// with sigtimedwait. Children get a clean mask from std's spawn.
fn block_signals() -> Result<libc::sigset_t, String> {
    // SAFETY: sigset manipulation on a local set, then sigprocmask on it;
    // results checked.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for signal in [libc::SIGTERM, libc::SIGINT, libc::SIGCHLD] {
            libc::sigaddset(&mut set, signal);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(format!(
                "blocking signals: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(set)
    }
}

/// The next of `signals`, or None after `timeout`.
fn wait_signal(signals: &libc::sigset_t, timeout: Duration) -> Option<i32> {
    let timeout = libc::timespec {
        tv_sec: timeout.as_secs().try_into().unwrap_or(3600),
        tv_nsec: timeout.subsec_nanos().into(),
    };
    // SAFETY: sigtimedwait reads the set and the timeout and writes the
    // info struct, all valid locals for the call.
    let signal = unsafe {
        let mut info: libc::siginfo_t = std::mem::zeroed();
        libc::sigtimedwait(signals, &mut info, &timeout)
    };
    (signal > 0).then_some(signal)
}
