//! brig-container: runs one service spec as a container in the foreground,
//! with PID 1's own runtime, like `crun run`. For root integration tests and
//! the start-latency benchmark.
//!
//! brig-container --spec FILE --rootfs IMAGE_OR_DIR [--name NAME]
//!                [--state DIR] [--cgroup-root DIR] [--netns-ahead] [--repeat N]
//!
//! `--netns-ahead` joins a network namespace prepared before the start, as
//! PID 1 keeps a few. `--unchecked-setup-deadline MS` (for the deadline's
//! test) starts without refusing FUSE sources, so a setup can hang, and
//! waits for it MS milliseconds instead of `SETUP_DEADLINE`. A `command` readiness check runs once after the start,
//! as PID 1 runs it, and its status is said on stderr.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use brig_runtime::{cgroup, image, netns, Paths};
use brig_spec::service::{Readiness, ServiceSpec};
use nix::sys::wait::{waitpid, WaitStatus};

struct Args {
    spec: PathBuf,
    rootfs: PathBuf,
    name: Option<String>,
    state: PathBuf,
    cgroup_root: Option<PathBuf>,
    repeat: usize,
    netns_ahead: bool,
    unchecked_deadline: Option<Duration>,
}

fn parse_args() -> Result<Args, String> {
    let mut args = Args {
        spec: PathBuf::new(),
        rootfs: PathBuf::new(),
        name: None,
        state: PathBuf::from("/run/brig-container"),
        cgroup_root: None,
        repeat: 0,
        netns_ahead: false,
        unchecked_deadline: None,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--spec" => args.spec = value()?.into(),
            "--rootfs" => args.rootfs = value()?.into(),
            "--name" => args.name = Some(value()?),
            "--state" => args.state = value()?.into(),
            "--cgroup-root" => args.cgroup_root = Some(value()?.into()),
            "--netns-ahead" => args.netns_ahead = true,
            "--unchecked-setup-deadline" => {
                let ms = value()?
                    .parse()
                    .map_err(|_| "--unchecked-setup-deadline takes milliseconds".to_string())?;
                args.unchecked_deadline = Some(Duration::from_millis(ms));
            }
            "--repeat" => {
                args.repeat = value()?
                    .parse()
                    .map_err(|_| "--repeat takes a number".to_string())?
            }
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    if args.spec.as_os_str().is_empty() || args.rootfs.as_os_str().is_empty() {
        return Err("usage: brig-container --spec FILE --rootfs IMAGE_OR_DIR [--name NAME] [--state DIR] [--cgroup-root DIR] [--netns-ahead] [--repeat N]".into());
    }
    Ok(args)
}

fn main() -> ExitCode {
    match run() {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("brig-container: {e}");
            ExitCode::from(125)
        }
    }
}

fn run() -> Result<u8, String> {
    let args = parse_args()?;
    let name = args.name.clone().unwrap_or_else(|| {
        args.spec
            .parent()
            .and_then(Path::file_name)
            .map_or("container".into(), |n| n.to_string_lossy().into_owned())
    });
    let text = std::fs::read_to_string(&args.spec)
        .map_err(|e| format!("reading {}: {e}", args.spec.display()))?;
    let spec = ServiceSpec::parse(&name, &text)
        .map_err(|problem| format!("{}: {problem}", args.spec.display()))?;

    let lower = args.state.join("images").join(&name);
    // A command-line tool: a link given here is the user's own choice.
    let rootfs = std::fs::canonicalize(&args.rootfs)
        .map_err(|e| format!("--rootfs {}: {e}", args.rootfs.display()))?;
    image::mount(&rootfs, &lower).map_err(|e| e.to_string())?;
    let result = run_mounted(&args, &spec, &lower);
    let _ = nix::mount::umount2(&lower, nix::mount::MntFlags::MNT_DETACH);
    result
}

fn run_mounted(args: &Args, spec: &ServiceSpec, lower: &Path) -> Result<u8, String> {
    let cgroup = match &args.cgroup_root {
        Some(root) if cgroup::is_v2(root) => {
            for e in cgroup::prepare(root) {
                eprintln!("brig-container: {e}");
            }
            Some(cgroup::create(root, &spec.name, &spec.limits).map_err(|e| e.to_string())?)
        }
        Some(root) => return Err(format!("{} is not a cgroup2 hierarchy", root.display())),
        None => None,
    };
    let paths = Paths {
        lower: lower.to_path_buf(),
        dir: args.state.join("containers").join(&spec.name),
        volumes: args.state.join("volumes"),
        cgroup,
    };
    if args.repeat == 0 {
        let netns = if args.netns_ahead {
            Some(netns::prepare().map_err(|e| e.to_string())?)
        } else {
            None
        };
        let started = match args.unchecked_deadline {
            Some(deadline) => {
                brig_runtime::spawn::spawn_checked(spec, &paths, netns.as_ref(), deadline)
            }
            None => brig_runtime::spawn_in(spec, &paths, netns.as_ref()),
        }
        .map_err(|e| e.to_string())?;
        let pid = started.pid;
        // A readiness command runs once, as PID 1 would run it, before the
        // thread below: it forks, and this process must be single-threaded.
        if let Readiness::Command { command, .. } = &spec.readiness {
            let check = brig_runtime::exec_in(spec, pid, command).map_err(|e| e.to_string())?;
            eprintln!(
                "brig-container: the readiness command exited with status {}",
                wait(check)
            );
        }
        // Forward stderr on a thread: this process is not PID 1 and may use one.
        let mut stderr = std::fs::File::from(started.stderr);
        let forward = std::thread::spawn(move || copy(&mut stderr, &mut std::io::stderr()));
        copy(
            &mut std::fs::File::from(started.stdout),
            &mut std::io::stdout(),
        );
        let _ = forward.join();
        return Ok(wait(pid));
    }
    // Benchmark: spawn-to-exec and spawn-to-exit, in microseconds; with the
    // network namespace created by the clone, and prepared ahead (as PID 1
    // keeps a few), the preparing not timed.
    for prepared in [false, true] {
        let mut to_exec = Vec::new();
        let mut to_exit = Vec::new();
        for _ in 0..args.repeat {
            let netns = if prepared {
                Some(netns::prepare().map_err(|e| e.to_string())?)
            } else {
                None
            };
            let t0 = Instant::now();
            let started =
                brig_runtime::spawn_in(spec, &paths, netns.as_ref()).map_err(|e| e.to_string())?;
            let t1 = Instant::now();
            drop((started.stdout, started.stderr));
            wait(started.pid);
            let t2 = Instant::now();
            to_exec.push(t1 - t0);
            to_exit.push(t2 - t0);
        }
        let prefix = if prepared { "prepared_netns_" } else { "" };
        println!(
            "{prefix}spawn_to_exec_median_us {}",
            median_us(&mut to_exec)
        );
        println!(
            "{prefix}spawn_to_exit_median_us {}",
            median_us(&mut to_exit)
        );
    }
    // Of the above, what building the seccomp filter takes (spawn_in
    // builds it each start; installing it is one system call in the child).
    let caps = brig_runtime::plan::capability_mask(spec);
    let mut build = Vec::new();
    for _ in 0..args.repeat {
        let t0 = Instant::now();
        let programs = brig_runtime::seccomp::filters(spec, caps)?;
        build.push(t0.elapsed());
        drop(programs);
    }
    println!("seccomp_filter_build_median_us {}", median_us(&mut build));
    Ok(0)
}

fn copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = [0u8; 8192];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).is_err() {
            break;
        }
        let _ = to.flush();
    }
}

/// Waits for the container's main process; its exit code (128+signal if killed).
fn wait(pid: i32) -> u8 {
    loop {
        match waitpid(nix::unistd::Pid::from_raw(pid), None) {
            Ok(WaitStatus::Exited(_, code)) => return code as u8,
            Ok(WaitStatus::Signaled(_, signal, _)) => return 128 + signal as u8,
            Ok(_) | Err(nix::Error::EINTR) => continue,
            Err(_) => return 125,
        }
    }
}

fn median_us(samples: &mut [Duration]) -> u128 {
    samples.sort();
    samples.get(samples.len() / 2).map_or(0, |d| d.as_micros())
}
