//! Creating a system container: clone3 into fresh namespaces and straight
//! into the service's cgroup, then in the child: an overlay root over the
//! read-only image, /proc, /dev, /sys, the spec's mounts, pivot_root, hostname,
//! sysctls, user, capabilities, no_new_privs, a clean signal state, exec.
//!
//! What to mount and which capabilities to keep are computed as plain data
//! first (`plan_mounts`, `capability_mask`, `resolve_user`), so the decisions
//! are unit-tested; the child then only executes them.

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use brig_spec::logs::{SYSLOG_DIR, SYSLOG_SOCKET};
use brig_spec::network::DNS_DIR;
use brig_spec::service::{
    capability_number, Mount, Namespace, Readiness, ServiceSpec, DEFAULT_CAPABILITIES,
};
use nix::mount::MsFlags;

use crate::clone::{self, CloneArgs, CLONE_INTO_CGROUP};

/// Where a container's pieces live on the host.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The read-only root: a mounted squashfs image or a directory.
    pub lower: PathBuf,
    /// Holds `upper/`, `work/` (the overlay's writable part) and `root/`.
    pub dir: PathBuf,
    /// Named volumes live in `<volumes>/<name>`.
    pub volumes: PathBuf,
    /// The service's cgroup, if cgroups are in use.
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        flags: MsFlags,
        data: String,
    },
    /// Bind `source` (a host path) onto `target`, creating the target as a
    /// file or directory like the source; optionally read-only.
    Bind {
        source: PathBuf,
        target: PathBuf,
        recursive: bool,
        read_only: bool,
    },
    Symlink {
        link: PathBuf,
        points_to: String,
    },
    /// A device node like the host's `source` (same type and numbers), made
    /// with mknod: cheaper than a bind mount to set up and to tear down.
    Device {
        source: PathBuf,
        target: PathBuf,
    },
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);
/// Device nodes every container gets (privileged ones see all of /dev).
const BASE_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The mounts that build the container's root at `paths.dir/root`, in order.
pub fn plan_mounts(spec: &ServiceSpec, paths: &Paths) -> Vec<MountOp> {
    let root = paths.dir.join("root");
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let mut ops = vec![MountOp::Mount {
        source: "overlay".into(),
        target: root.clone(),
        fstype: "overlay".into(),
        flags: MsFlags::empty(),
        data: format!(
            "lowerdir={},upperdir={},workdir={}",
            paths.lower.display(),
            paths.dir.join("upper").display(),
            paths.dir.join("work").display()
        ),
    }];
    let mount =
        |source: &str, target: &str, fstype: &str, flags: MsFlags, data: &str| MountOp::Mount {
            source: source.into(),
            target: at(target),
            fstype: fstype.into(),
            flags,
            data: data.into(),
        };
    ops.push(mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""));
    if spec.privileged {
        ops.push(MountOp::Bind {
            source: "/dev".into(),
            target: at("/dev"),
            recursive: true,
            read_only: false,
        });
    } else {
        ops.push(mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "mode=755,size=64k",
        ));
        let devices = BASE_DEVICES
            .iter()
            .map(|d| format!("/dev/{d}"))
            .chain(spec.devices.iter().cloned());
        for device in devices {
            ops.push(MountOp::Device {
                source: device.clone().into(),
                target: at(&device),
            });
        }
        ops.push(mount(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ));
        ops.push(MountOp::Symlink {
            link: at("/dev/ptmx"),
            points_to: "pts/ptmx".into(),
        });
        ops.push(mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            NOSUID_NODEV_NOEXEC,
            "mode=1777,size=64m",
        ));
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            ops.push(MountOp::Symlink {
                link: at(&format!("/dev/{name}")),
                points_to: target.into(),
            });
        }
    }
    let ro = if spec.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    ops.push(mount(
        "sysfs",
        "/sys",
        "sysfs",
        NOSUID_NODEV_NOEXEC | ro,
        "",
    ));
    ops.push(mount(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC | ro,
        "",
    ));
    // syslog(3) writes to /dev/log: the log service's socket, in a
    // directory shared read-only (a socket is still writable through it),
    // so the link keeps working when the log service restarts.
    ops.push(MountOp::Bind {
        source: SYSLOG_DIR.into(),
        target: at(SYSLOG_DIR),
        recursive: false,
        read_only: true,
    });
    if !spec.privileged {
        // Privileged containers see the host's /dev, where PID 1 made it.
        ops.push(MountOp::Symlink {
            link: at("/dev/log"),
            points_to: SYSLOG_SOCKET.into(),
        });
    }
    if spec.shares(Namespace::Net) {
        // DNS as the network container keeps it, updated in place.
        ops.push(MountOp::Bind {
            source: DNS_DIR.into(),
            target: at(DNS_DIR),
            recursive: false,
            read_only: true,
        });
        ops.push(MountOp::Symlink {
            link: at("/etc/resolv.conf"),
            points_to: format!("{DNS_DIR}/resolv.conf"),
        });
    }
    for m in &spec.mounts {
        ops.push(match m {
            Mount::Bind {
                source,
                target,
                read_only,
            } => MountOp::Bind {
                source: source.into(),
                target: at(target),
                recursive: true,
                read_only: *read_only,
            },
            Mount::Tmpfs { target, size } => {
                let data = size.map(|s| format!("size={s}")).unwrap_or_default();
                mount(
                    "tmpfs",
                    target,
                    "tmpfs",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    &data,
                )
            }
            Mount::Volume {
                name,
                target,
                read_only,
            } => MountOp::Bind {
                source: paths.volumes.join(name),
                target: at(target),
                recursive: false,
                read_only: *read_only,
            },
        });
    }
    ops
}

/// The capabilities kept: the default set plus the spec's grants, or all.
pub fn capability_mask(spec: &ServiceSpec) -> u64 {
    if spec.privileged {
        return u64::MAX;
    }
    DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .chain(spec.capabilities.iter().map(String::as_str))
        .filter_map(capability_number)
        .fold(0, |mask, n| mask | 1 << n)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `root`, `uid[:gid]` or a user name against the container's
/// /etc/passwd and /etc/group text.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<Ids, String> {
    let entry = |uid_match: &dyn Fn(&[&str]) -> bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 7 && uid_match(f))
    };
    let (name, uid, gid, home) = if let Some((u, g)) = numeric_ids(user) {
        let found = entry(&|f| f[2] == u.to_string());
        let gid = g
            .or_else(|| found.as_ref().and_then(|f| f[3].parse().ok()))
            .unwrap_or(u);
        let home = found.as_ref().map_or("/".to_string(), |f| f[5].to_string());
        (found.map(|f| f[0].to_string()), u, gid, home)
    } else {
        let f = entry(&|f| f[0] == user)
            .ok_or_else(|| format!("user {user:?} is not in the container's /etc/passwd"))?;
        let uid = f[2]
            .parse()
            .map_err(|_| format!("bad uid for {user:?} in /etc/passwd"))?;
        let gid = f[3]
            .parse()
            .map_err(|_| format!("bad gid for {user:?} in /etc/passwd"))?;
        (Some(user.to_string()), uid, gid, f[5].to_string())
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

fn numeric_ids(user: &str) -> Option<(u32, Option<u32>)> {
    if user == "root" {
        return Some((0, Some(0)));
    }
    match user.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, Some(g.parse().ok()?))),
        None => Some((user.parse().ok()?, None)),
    }
}

/// The clone flags for the spec's namespaces.
pub fn clone_flags(spec: &ServiceSpec) -> u64 {
    let mut flags = (libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) as u64;
    for (ns, flag) in [
        (Namespace::Pid, libc::CLONE_NEWPID),
        (Namespace::Uts, libc::CLONE_NEWUTS),
        (Namespace::Ipc, libc::CLONE_NEWIPC),
        (Namespace::Net, libc::CLONE_NEWNET),
    ] {
        if !spec.shares(ns) {
            flags |= flag as u64;
        }
    }
    flags
}

/// A started container: its main process and the read ends of its output.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), String> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| format!("creating a pipe: {e}"))
}

/// Starts the container. Blocks until the child has exec'd the service (or
/// failed, with the child's own account of what went wrong).
pub fn spawn(spec: &ServiceSpec, paths: &Paths) -> Result<Started, String> {
    spawn_in(spec, paths, None)
}

/// As `spawn`; a service with a private network joins `netns` (prepared
/// ahead, `netns::prepare`) instead of creating one.
pub fn spawn_in(
    spec: &ServiceSpec,
    paths: &Paths,
    netns: Option<&OwnedFd>,
) -> Result<Started, String> {
    let netns = netns.filter(|_| !spec.shares(Namespace::Net));
    for sub in ["upper", "work", "root"] {
        let dir = paths.dir.join(sub);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
    }
    for dir in [
        Some(SYSLOG_DIR),
        spec.shares(Namespace::Net).then_some(DNS_DIR),
    ]
    .into_iter()
    .flatten()
    {
        fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    }
    for m in &spec.mounts {
        if let Mount::Volume { name, .. } = m {
            let dir = paths.volumes.join(name);
            fs::create_dir_all(&dir)
                .map_err(|e| format!("creating volume {}: {e}", dir.display()))?;
        }
    }
    let cgroup_fd = match &paths.cgroup {
        Some(path) => Some(
            fs::File::open(path).map_err(|e| format!("opening cgroup {}: {e}", path.display()))?,
        ),
        None => None,
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let mounts = plan_mounts(spec, paths);
    let caps = capability_mask(spec);
    let cstr = |s: &str| CString::new(s).map_err(|_| format!("{s:?} contains a NUL byte"));
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err("the command is empty".into());
    }

    let mut flags = clone_flags(spec);
    if netns.is_some() {
        flags &= !(libc::CLONE_NEWNET as u64);
    }
    let mut args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    if let Some(fd) = &cgroup_fd {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // The child runs in this process's memory until it execs (clone.rs):
    // what it must keep alive through exec, and its account of a failure,
    // it leaves in these slots, which are freed here.
    let mut envp: Vec<CString> = Vec::new();
    let mut failure: Option<String> = None;
    let (out, err) = (out_write.as_raw_fd(), err_write.as_raw_fd());
    let netns_fd = netns.map(AsRawFd::as_raw_fd);
    let pid = clone::spawn(&args, || {
        // A panic must not unwind out of the child: it ends below, always.
        let error = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let plan = ChildPlan {
                netns: netns_fd,
                mounts: &mounts,
                caps,
                stdout: out,
                stderr: err,
                argv: &argv,
            };
            child(spec, paths, &plan, &mut envp)
        })) {
            Ok(Err(e)) => e,
            Ok(Ok(never)) => match never {},
            Err(_) => "internal error while setting up the container".to_string(),
        };
        failure = Some(error);
        // SAFETY: ending the child without running destructors, which
        // belong to PID 1 (the child shares its memory).
        unsafe { libc::_exit(127) }
    })
    .map_err(|e| format!("clone3: {e}"))?;
    drop((out_write, err_write, envp));
    if let Some(message) = failure {
        return Err(message);
    }
    Ok(Started {
        pid,
        stdout: out_read,
        stderr: err_read,
    })
}

type Never = std::convert::Infallible;

/// What the parent worked out for the child, borrowed by it.
struct ChildPlan<'a> {
    netns: Option<RawFd>,
    mounts: &'a [MountOp],
    caps: u64,
    /// Write ends of the pipes PID 1 reads.
    stdout: RawFd,
    stderr: RawFd,
    argv: &'a [CString],
}

/// The child: runs in the new namespaces and cgroup; only returns an error.
/// It shares PID 1's memory until exec (clone.rs): what must live through
/// the exec goes into `envp`, which the parent owns; everything else it
/// allocates is dropped before.
fn child(
    spec: &ServiceSpec,
    paths: &Paths,
    plan: &ChildPlan,
    envp: &mut Vec<CString>,
) -> Result<Never, String> {
    // Output to the pipes PID 1 reads; stdin from /dev/null.
    let null = fs::File::open("/dev/null").map_err(|e| format!("opening /dev/null: {e}"))?;
    for (from, to) in [(null.as_raw_fd(), 0), (plan.stdout, 1), (plan.stderr, 2)] {
        // SAFETY: dup2 onto the standard descriptors of this fresh child.
        if unsafe { libc::dup2(from, to) } < 0 {
            return Err(format!("dup2: {}", std::io::Error::last_os_error()));
        }
    }
    // Before /sys is mounted, which shows the namespace's interfaces.
    match plan.netns {
        // SAFETY: setns on an fd the parent keeps open across the clone.
        Some(fd) if unsafe { libc::setns(fd, libc::CLONE_NEWNET) } != 0 => {
            return Err(format!(
                "joining the prepared network namespace: {}",
                std::io::Error::last_os_error()
            ))
        }
        Some(_) => {}
        None if !spec.shares(Namespace::Net) => crate::netns::loopback_up()?,
        None => {}
    }
    let sys = |what: String, r: nix::Result<()>| r.map_err(|e| format!("{what}: {e}"));
    sys(
        "making mounts private".into(),
        nix::mount::mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        ),
    )?;
    for op in plan.mounts {
        run_mount(op)?;
    }
    let root = paths.dir.join("root");
    sys(
        format!("chdir {}", root.display()),
        nix::unistd::chdir(&root),
    )?;
    sys("pivot_root".into(), nix::unistd::pivot_root(".", "."))?;
    sys(
        "detaching the old root".into(),
        nix::mount::umount2(".", nix::mount::MntFlags::MNT_DETACH),
    )?;
    sys("chdir /".into(), nix::unistd::chdir("/"))?;
    // The writable layer outlives a run: the last run's readiness path
    // (a socket, a pid file) would have PID 1 take this one as ready at once.
    if let Readiness::Path { path, .. } = &spec.readiness {
        match fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            // A directory is left alone (the spec says: a socket, a file).
            Err(e) if e.raw_os_error() == Some(libc::EISDIR) => {}
            // Not worth failing the start: said in the service's log (a
            // raw write: std's stderr lock is PID 1's memory too).
            Err(e) => {
                let line = format!("brig: removing the last run's readiness path {path}: {e}\n");
                let _ = nix::unistd::write(std::io::stderr(), line.as_bytes());
            }
        }
    }
    if spec.read_only_root {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
        sys(
            "making the root read-only".into(),
            nix::mount::mount(None::<&str>, "/", None::<&str>, flags, None::<&str>),
        )?;
    }
    if !spec.shares(Namespace::Uts) {
        sys(
            format!("setting hostname {}", spec.name),
            nix::unistd::sethostname(&spec.name),
        )?;
    }
    for (key, value) in &spec.sysctls {
        let path = format!("/proc/sys/{}", key.replace('.', "/"));
        fs::write(&path, value).map_err(|e| format!("setting sysctl {key}={value}: {e}"))?;
    }
    if !spec.privileged {
        harden_proc(spec.owns_host_network())?;
    }
    {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let ids = resolve_user(&spec.user, &read("/etc/passwd"), &read("/etc/group"))?;
        switch_user(&ids, plan.caps)?;
        *envp = environment(spec, &ids.home)?;
    }
    if !spec.privileged {
        // SAFETY: prctl with integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            return Err(format!(
                "setting no_new_privs: {}",
                std::io::Error::last_os_error()
            ));
        }
    }
    reset_signals();
    sys(
        format!("chdir {}", spec.working_dir),
        nix::unistd::chdir(spec.working_dir.as_str()),
    )?;
    let program = &plan.argv[0];
    match nix::unistd::execve(program, plan.argv, envp) {
        Err(error) => Err(format!("exec {}: {error}", program.to_string_lossy())),
        Ok(never) => match never {},
    }
}

/// The service's environment: PATH, HOME, HOSTNAME, then the spec's `env`.
fn environment(spec: &ServiceSpec, home: &str) -> Result<Vec<CString>, String> {
    let mut env = vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".to_string(),
        format!("HOME={home}"),
        format!("HOSTNAME={}", spec.name),
    ];
    for (k, v) in &spec.env {
        env.retain(|e| !e.starts_with(&format!("{k}=")));
        env.push(format!("{k}={v}"));
    }
    env.into_iter()
        .map(|e| CString::new(e).map_err(|e| format!("the environment {e}")))
        .collect()
}

/// Parts of /proc that reach beyond the container: kept read-only, or
/// hidden behind /dev/null, as Docker and the OCI default spec do. Runs after
/// the spec's sysctls are written.
const PROC_READ_ONLY: &[&str] = &["/proc/sys", "/proc/sysrq-trigger", "/proc/irq", "/proc/bus"];
const PROC_MASKED: &[&str] = &["/proc/kcore", "/proc/keys", "/proc/timer_list"];

/// `writable_net`: /proc/sys/net stays writable (per-link settings such as
/// accept_ra), for a service that already owns the host's network.
fn harden_proc(writable_net: bool) -> Result<(), String> {
    let bind = |source: &str, target: &str, flags: MsFlags| {
        nix::mount::mount(Some(source), target, None::<&str>, flags, None::<&str>)
    };
    let remount = |target: &str, flags: MsFlags| {
        let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags;
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
    };
    // What this kernel lacks (ENOENT) needs no fence.
    for path in PROC_READ_ONLY {
        match bind(path, path, MsFlags::MS_BIND | MsFlags::MS_REC) {
            Err(nix::Error::ENOENT) => continue,
            r => r.and_then(|()| remount(path, MsFlags::MS_RDONLY)),
        }
        .map_err(|e| format!("making {path} read-only: {e}"))?;
    }
    if writable_net {
        let net = "/proc/sys/net";
        bind(net, net, MsFlags::MS_BIND)
            .and_then(|()| remount(net, MsFlags::empty()))
            .map_err(|e| format!("keeping {net} writable: {e}"))?;
    }
    for path in PROC_MASKED {
        match bind("/dev/null", path, MsFlags::MS_BIND) {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(e) => return Err(format!("masking {path}: {e}")),
        }
    }
    Ok(())
}

/// Each operation is tried first and its missing target made only when it
/// fails for that: most targets exist already (in the image, or in /dev
/// just mounted), and every path lookup through the overlay costs time on
/// the start's path.
fn run_mount(op: &MountOp) -> Result<(), String> {
    match op {
        MountOp::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            let data = (!data.is_empty()).then_some(data.as_str());
            let mount = || {
                nix::mount::mount(
                    Some(source.as_str()),
                    target,
                    Some(fstype.as_str()),
                    *flags,
                    data,
                )
            };
            if_missing(mount, || fs::create_dir_all(target))
                .map_err(|e| format!("mounting {fstype} on {}: {e}", target.display()))
        }
        MountOp::Bind {
            source,
            target,
            recursive,
            read_only,
        } => {
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            let bind = || {
                nix::mount::mount(
                    Some(source.as_path()),
                    target,
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
            };
            // A missing target is made like the source: a directory or a file.
            let make_target = || {
                if fs::metadata(source)?.is_dir() {
                    return fs::create_dir_all(target);
                }
                if let Some(parent) = target.parent() {
                    fs::create_dir_all(parent)?;
                }
                fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(target)
                    .map(drop)
            };
            let fail = |e: String| {
                format!(
                    "bind-mounting {} on {}: {e}",
                    source.display(),
                    target.display()
                )
            };
            if_missing(bind, make_target).map_err(fail)?;
            if *read_only {
                let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
                nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>)
                    .map_err(|e| fail(e.to_string()))?;
            }
            Ok(())
        }
        MountOp::Device { source, target } => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta =
                fs::metadata(source).map_err(|e| format!("device {}: {e}", source.display()))?;
            let kind = if meta.file_type().is_char_device() {
                nix::sys::stat::SFlag::S_IFCHR
            } else if meta.file_type().is_block_device() {
                nix::sys::stat::SFlag::S_IFBLK
            } else {
                return Err(format!("{} is not a device", source.display()));
            };
            let mode = nix::sys::stat::Mode::from_bits_truncate(meta.mode() & 0o777);
            let mknod = || match nix::sys::stat::mknod(target, kind, mode, meta.rdev()) {
                Err(nix::Error::EEXIST) => Ok(()),
                other => other,
            };
            if_missing(mknod, || create_parent(target))
                .map_err(|e| format!("creating device {}: {e}", target.display()))
        }
        MountOp::Symlink { link, points_to } => {
            let symlink = || std::os::unix::fs::symlink(points_to, link);
            let made = match symlink() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    create_parent(link).and_then(|()| symlink())
                }
                // Replaces what the image has there (an /etc/resolv.conf file).
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    if fs::read_link(link).is_ok_and(|t| t == Path::new(points_to)) {
                        return Ok(());
                    }
                    fs::remove_file(link).and_then(|()| symlink())
                }
                other => other,
            };
            made.map_err(|e| format!("creating symlink {}: {e}", link.display()))
        }
    }
}

/// Runs `attempt`; if it fails with ENOENT, runs `make` (which creates what
/// was missing) and tries once more.
fn if_missing(
    attempt: impl Fn() -> nix::Result<()>,
    make: impl FnOnce() -> std::io::Result<()>,
) -> Result<(), String> {
    match attempt() {
        Err(nix::Error::ENOENT) => {
            make().map_err(|e| format!("creating it: {e}"))?;
            attempt().map_err(|e| e.to_string())
        }
        other => other.map_err(|e| e.to_string()),
    }
}

fn create_parent(path: &Path) -> std::io::Result<()> {
    match path.parent() {
        Some(parent) => fs::create_dir_all(parent),
        None => Ok(()),
    }
}

/// Drops every capability outside `keep` from the bounding set, switches to
/// the user, and leaves exactly `keep` permitted, effective, inheritable
/// and (for non-root users, who would lose them at exec) ambient.
fn switch_user(ids: &Ids, keep: u64) -> Result<(), String> {
    let last_cap: u32 = fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    #[repr(C)]
    struct Header {
        version: u32,
        pid: i32,
    }
    #[repr(C)]
    #[derive(Clone, Copy, Default)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    }; // _LINUX_CAPABILITY_VERSION_3
       // A container keeps at most what its creator holds: "privileged" asks for
       // everything, and PID 1 itself may lack some when it runs nested.
    let mut held = [Data::default(); 2];
    // SAFETY: capget with a valid v3 header and room for two data words.
    if unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const Header,
            held.as_mut_ptr(),
        )
    } != 0
    {
        return Err(format!(
            "reading capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    let held = u64::from(held[0].permitted) | u64::from(held[1].permitted) << 32;
    let keep = keep & held & ((1u64 << (last_cap + 1)) - 1);
    for cap in 0..=last_cap {
        if keep & (1 << cap) == 0 {
            // SAFETY: prctl with integer arguments only.
            if unsafe { libc::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong, 0, 0, 0) } != 0 {
                return Err(format!(
                    "dropping capability {cap}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    // SAFETY: prctl with integer arguments only.
    unsafe { libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0) };
    let groups: Vec<nix::unistd::Gid> = ids
        .groups
        .iter()
        .map(|g| nix::unistd::Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&groups).map_err(|e| format!("setgroups {:?}: {e}", ids.groups))?;
    let gid = nix::unistd::Gid::from_raw(ids.gid);
    nix::unistd::setresgid(gid, gid, gid).map_err(|e| format!("setgid {}: {e}", ids.gid))?;
    let uid = nix::unistd::Uid::from_raw(ids.uid);
    nix::unistd::setresuid(uid, uid, uid).map_err(|e| format!("setuid {}: {e}", ids.uid))?;

    let word = |shift: u32| {
        let bits = (keep >> shift) as u32;
        Data {
            effective: bits,
            permitted: bits,
            inheritable: bits,
        }
    };
    let data = [word(0), word(32)];
    // SAFETY: capset with a valid v3 header and two data words, as the ABI requires.
    if unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) } != 0 {
        return Err(format!(
            "setting capabilities: {}",
            std::io::Error::last_os_error()
        ));
    }
    if ids.uid != 0 {
        for cap in (0..=last_cap).filter(|c| keep & (1 << c) != 0) {
            // SAFETY: prctl with integer arguments only.
            let r = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE,
                    cap as libc::c_ulong,
                    0,
                    0,
                )
            };
            if r != 0 {
                return Err(format!(
                    "raising ambient capability {cap}: {}",
                    std::io::Error::last_os_error()
                ));
            }
        }
    }
    Ok(())
}

/// Services start with no blocked signals and default dispositions (Rust's
/// runtime ignores SIGPIPE in PID 1; that must not leak into services).
fn reset_signals() {
    let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
    for signal in nix::sys::signal::Signal::iterator() {
        if !matches!(
            signal,
            nix::sys::signal::Signal::SIGKILL | nix::sys::signal::Signal::SIGSTOP
        ) {
            // SAFETY: restoring the default disposition installs no handler.
            unsafe {
                let _ = nix::sys::signal::signal(signal, nix::sys::signal::SigHandler::SigDfl);
            }
        }
    }
}

/// Makes an fd non-blocking (for PID 1's epoll).
pub fn set_nonblocking(fd: &OwnedFd) {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ServiceSpec {
        ServiceSpec::parse(
            "web",
            "t.toml",
            &format!("command = [\"/bin/sh\"]\n{extra}\n[rootfs]\npackages = [\"x\"]\n"),
        )
        .unwrap()
    }

    fn paths() -> Paths {
        Paths {
            lower: "/run/brig/images/web".into(),
            dir: "/run/brig/containers/web".into(),
            volumes: "/var/lib/brig/volumes".into(),
            cgroup: None,
        }
    }

    fn targets(ops: &[MountOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                MountOp::Mount { target, fstype, .. } => format!("{fstype} {}", target.display()),
                MountOp::Bind {
                    source,
                    target,
                    read_only,
                    ..
                } => {
                    format!(
                        "bind {} {}{}",
                        source.display(),
                        target.display(),
                        if *read_only { " ro" } else { "" }
                    )
                }
                MountOp::Symlink { link, points_to } => {
                    format!("link {} {points_to}", link.display())
                }
                MountOp::Device { source, target } => {
                    format!("device {} {}", source.display(), target.display())
                }
            })
            .collect()
    }

    #[test]
    fn default_container_gets_overlay_root_private_dev_and_read_only_sys() {
        let ops = plan_mounts(&spec(""), &paths());
        let t = targets(&ops);
        assert_eq!(t[0], "overlay /run/brig/containers/web/root");
        match &ops[0] {
            MountOp::Mount { data, .. } => assert_eq!(
                data,
                "lowerdir=/run/brig/images/web,upperdir=/run/brig/containers/web/upper,workdir=/run/brig/containers/web/work"
            ),
            other => panic!("{other:?}"),
        }
        assert!(t.contains(&"proc /run/brig/containers/web/root/proc".to_string()));
        assert!(t.contains(&"tmpfs /run/brig/containers/web/root/dev".to_string()));
        assert!(t.contains(&"device /dev/null /run/brig/containers/web/root/dev/null".to_string()));
        assert!(!t.iter().any(|x| x.contains("/dev/kvm")));
        assert!(t.contains(
            &"bind /run/brig/log /run/brig/containers/web/root/run/brig/log ro".to_string()
        ));
        assert!(t.contains(
            &"link /run/brig/containers/web/root/dev/log /run/brig/log/dev-log".to_string()
        ));
        let sys = ops
            .iter()
            .find(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "sysfs"))
            .unwrap();
        assert!(matches!(sys, MountOp::Mount { flags, .. } if flags.contains(MsFlags::MS_RDONLY)));
    }

    #[test]
    fn privileged_gets_host_dev_and_writable_sys() {
        let ops = plan_mounts(&spec("privileged = true"), &paths());
        assert!(targets(&ops).contains(&"bind /dev /run/brig/containers/web/root/dev".to_string()));
        let sys = ops
            .iter()
            .find(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "sysfs"))
            .unwrap();
        assert!(matches!(sys, MountOp::Mount { flags, .. } if !flags.contains(MsFlags::MS_RDONLY)));
        assert_eq!(capability_mask(&spec("privileged = true")), u64::MAX);
    }

    #[test]
    fn host_network_services_see_the_dns_the_network_container_writes() {
        let t = targets(&plan_mounts(&spec("host_namespaces = [\"net\"]"), &paths()));
        assert!(t.contains(
            &"bind /run/brig/dns /run/brig/containers/web/root/run/brig/dns ro".to_string()
        ));
        assert!(t.contains(
            &"link /run/brig/containers/web/root/etc/resolv.conf /run/brig/dns/resolv.conf"
                .to_string()
        ));
        let private = targets(&plan_mounts(&spec(""), &paths()));
        assert!(!private.iter().any(|m| m.contains("resolv.conf")));
    }

    #[test]
    fn spec_mounts_and_devices_come_after_the_base() {
        let s = spec(
            "devices = [\"/dev/net/tun\"]\n[[mounts]]\ntype = \"bind\"\nsource = \"/run/brig/dns\"\ntarget = \"/etc/dns\"\nread_only = true\n\
             [[mounts]]\ntype = \"volume\"\nname = \"data\"\ntarget = \"/data\"\n[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/scratch\"\nsize = \"1M\"",
        );
        let t = targets(&plan_mounts(&s, &paths()));
        let n = t.len();
        assert_eq!(
            t[n - 3],
            "bind /run/brig/dns /run/brig/containers/web/root/etc/dns ro"
        );
        assert_eq!(
            t[n - 2],
            "bind /var/lib/brig/volumes/data /run/brig/containers/web/root/data"
        );
        assert_eq!(t[n - 1], "tmpfs /run/brig/containers/web/root/scratch");
        assert!(t.contains(
            &"device /dev/net/tun /run/brig/containers/web/root/dev/net/tun".to_string()
        ));
    }

    #[test]
    fn capabilities_are_the_default_set_plus_grants() {
        let base = capability_mask(&spec(""));
        assert_eq!(base.count_ones() as usize, DEFAULT_CAPABILITIES.len());
        assert_ne!(base & (1 << capability_number("CHOWN").unwrap()), 0);
        assert_eq!(base & (1 << capability_number("SYS_ADMIN").unwrap()), 0);
        assert_eq!(base & (1 << capability_number("NET_ADMIN").unwrap()), 0);
        let granted = capability_mask(&spec("capabilities = [\"NET_ADMIN\"]"));
        assert_eq!(granted, base | 1 << 12);
    }

    #[test]
    fn namespaces_are_private_unless_shared() {
        let all = clone_flags(&spec(""));
        for f in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_ne!(all & f as u64, 0);
        }
        let host_net = clone_flags(&spec("host_namespaces = [\"net\", \"pid\"]"));
        assert_eq!(host_net & libc::CLONE_NEWNET as u64, 0);
        assert_eq!(host_net & libc::CLONE_NEWPID as u64, 0);
        assert_ne!(host_net & libc::CLONE_NEWNS as u64, 0);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbrig:x:1000:1000::/home/brig:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:brig\ndocker:x:990:brig,other\nbrig:x:1000:\n";

    #[test]
    fn users_by_name_number_and_root() {
        assert_eq!(
            resolve_user("root", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            }
        );
        assert_eq!(
            resolve_user("brig", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 27, 990],
                home: "/home/brig".into()
            }
        );
        assert_eq!(resolve_user("65534", PASSWD, GROUP).unwrap().gid, 65534);
        assert_eq!(
            resolve_user("4000:5000", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 4000,
                gid: 5000,
                groups: vec![5000],
                home: "/".into()
            }
        );
        let e = resolve_user("ghost", PASSWD, GROUP).unwrap_err();
        assert!(
            e.contains("\"ghost\" is not in the container's /etc/passwd"),
            "{e}"
        );
        // A root-only rootfs without /etc/passwd still runs root services.
        assert_eq!(resolve_user("root", "", "").unwrap().uid, 0);
    }
}
