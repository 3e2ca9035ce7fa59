//! The child side of starting a container, in its new namespaces and
//! cgroup: the mounts the plan lists, pivot_root, /proc hardening,
//! hostname, sysctls, the user switch with its capabilities,
//! no_new_privs, a clean signal state, exec. It is a copy of PID 1
//! (clone3.rs), which waits for its exec with a deadline (spawn.rs).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use brig_spec::service::{Namespace, Readiness, ServiceSpec};
use nix::mount::MsFlags;

use crate::in_root::{fd_path, make_file, read_link_at, Root};
use crate::plan::{resolve_user, Ids, MountOp, Paths};

type Never = std::convert::Infallible;

/// What the parent worked out for the child, borrowed by it.
pub(crate) struct ChildPlan<'a> {
    pub(crate) netns: Option<RawFd>,
    pub(crate) mounts: &'a [MountOp],
    pub(crate) caps: u64,
    /// Write ends of the pipes PID 1 reads.
    pub(crate) stdout: RawFd,
    pub(crate) stderr: RawFd,
    pub(crate) argv: &'a [CString],
    /// Built by the parent: the child only installs them.
    pub(crate) seccomp: Option<&'a crate::seccomp::Program>,
}

/// The child: runs in the new namespaces and cgroup; only returns an error.
pub(crate) fn child(spec: &ServiceSpec, paths: &Paths, plan: &ChildPlan) -> Result<Never, String> {
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
        None if !spec.shares(Namespace::Net) => {
            crate::netns::loopback_up().map_err(|e| e.to_string())?
        }
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
    let root = paths.dir.join("root");
    // The first mount makes the root (the overlay); every later target is
    // resolved inside it.
    let mut inside: Option<Root> = None;
    for op in plan.mounts {
        run_mount(op, inside.as_ref())?;
        if inside.is_none() {
            inside =
                Some(Root::open(&root).map_err(|e| format!("opening {}: {e}", root.display()))?);
        }
    }
    drop(inside);
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
            // Not worth failing the start: said in the service's log.
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
    if let Some(adj) = spec.limits.oom_score_adj {
        // Before the user switch: lowering it takes CAP_SYS_RESOURCE.
        fs::write("/proc/self/oom_score_adj", adj.to_string())
            .map_err(|e| format!("setting oom_score_adj {adj}: {e}"))?;
    }
    if !spec.privileged {
        harden_proc(spec.owns_host_network())?;
    }
    let ids = resolve_user(
        &spec.user,
        &account_file("/etc/passwd")?,
        &account_file("/etc/group")?,
    )
    .map_err(|e| e.to_string())?;
    switch_user(&ids, plan.caps)?;
    let envp = environment(spec, &ids.home)?;
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
    // Last before the exec, so the setup above is not limited by it.
    sys(
        "installing the seccomp filter".into(),
        crate::seccomp::install(plan.seccomp),
    )?;
    let program = &plan.argv[0];
    match nix::unistd::execve(program, plan.argv, &envp) {
        Err(error) => Err(format!("exec {}: {error}", program.to_string_lossy())),
        Ok(never) => match never {},
    }
}

/// The container's `/etc/passwd` or `/etc/group`, none if it has none.
/// The container wrote its root: the file may be a FIFO or a device that
/// would block this child, and with it PID 1, which waits for the exec. It
/// is opened without blocking and read only if it is a regular file, and
/// only so much of it.
pub(crate) fn account_file(path: &str) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    const MOST: u64 = 4 << 20;
    let file = match fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
    {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(String::new()),
        Err(e) => return Err(format!("opening {path}: {e}")),
    };
    let meta = file
        .metadata()
        .map_err(|e| format!("reading {path}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{path} is not a regular file: the user cannot be looked up"
        ));
    }
    let mut text = String::new();
    file.take(MOST)
        .read_to_string(&mut text)
        .map_err(|e| format!("reading {path}: {e}"))?;
    Ok(text)
}

/// The service's environment: PATH, HOME, HOSTNAME, then the spec's `env`.
pub(crate) fn environment(spec: &ServiceSpec, home: &str) -> Result<Vec<CString>, String> {
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

/// Carries out one op. Its target is opened inside the root (in_root.rs)
/// and made only when missing: most targets exist already (in the image,
/// or in /dev just mounted), and every lookup through the overlay costs
/// time on the start's path.
fn run_mount(op: &MountOp, root: Option<&Root>) -> Result<(), String> {
    // Where an op acts: the root itself (its own mount, before `root` is
    // open), or a path resolved inside it.
    let within = |target: &Path| -> Option<(&Root, PathBuf)> {
        let root = root?;
        Some((root, root.relative(target)?.to_path_buf()))
    };
    match op {
        MountOp::Mount {
            source,
            target,
            fstype,
            flags,
            data,
        } => {
            let data = (!data.is_empty()).then_some(data.as_str());
            let at = match within(target) {
                Some((root, relative)) => open_or_make_dir(root, &relative)
                    .map(|fd| (fd_path(&fd), Some(fd)))
                    .map_err(|e| format!("mounting {fstype} on {}: {e}", target.display()))?,
                None => (target.clone(), None),
            };
            nix::mount::mount(
                Some(source.as_str()),
                &at.0,
                Some(fstype.as_str()),
                *flags,
                data,
            )
            .map_err(|e| format!("mounting {fstype} on {}: {e}", target.display()))
        }
        MountOp::Bind {
            source,
            target,
            recursive,
            read_only,
        } => {
            let fail = |e: String| {
                format!(
                    "bind-mounting {} on {}: {e}",
                    source.display(),
                    target.display()
                )
            };
            let (root, relative) = within(target).ok_or_else(|| fail("outside the root".into()))?;
            // A missing target is made like the source: a directory or a file.
            let opened = match root.open_in(&relative, 0) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    if fs::metadata(source)
                        .map_err(|e| fail(e.to_string()))?
                        .is_dir()
                    {
                        root.make_dirs(&relative)
                    } else {
                        root.parent_of(&relative)
                            .and_then(|(dir, name)| make_file(&dir, &name))
                            .and_then(|()| root.open_in(&relative, 0))
                    }
                }
                other => other,
            };
            let at = opened.map_err(|e| fail(format!("creating it: {e}")))?;
            let mut flags = MsFlags::MS_BIND;
            if *recursive {
                flags |= MsFlags::MS_REC;
            }
            nix::mount::mount(
                Some(source.as_path()),
                &fd_path(&at),
                None::<&str>,
                flags,
                None::<&str>,
            )
            .map_err(|e| fail(e.to_string()))?;
            if *read_only {
                // The bind's own root, now at the target.
                let mounted = root
                    .open_in(&relative, 0)
                    .map_err(|e| fail(e.to_string()))?;
                let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_RDONLY;
                nix::mount::mount(
                    None::<&str>,
                    &fd_path(&mounted),
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
                .map_err(|e| fail(e.to_string()))?;
            }
            Ok(())
        }
        MountOp::Device { source, target } => {
            use std::os::unix::fs::{FileTypeExt, MetadataExt};
            let meta =
                fs::metadata(source).map_err(|e| format!("device {}: {e}", source.display()))?;
            let kind = if meta.file_type().is_char_device() {
                libc::S_IFCHR
            } else if meta.file_type().is_block_device() {
                libc::S_IFBLK
            } else {
                return Err(format!("{} is not a device", source.display()));
            };
            let fail = |e: std::io::Error| format!("creating device {}: {e}", target.display());
            let (root, relative) = within(target)
                .ok_or_else(|| format!("device {} outside the root", target.display()))?;
            let (dir, name) = root.parent_of(&relative).map_err(fail)?;
            // SAFETY: mknodat with a live descriptor and a NUL-terminated name.
            let made = unsafe {
                libc::mknodat(
                    dir.as_raw_fd(),
                    name.as_ptr(),
                    kind | (meta.mode() & 0o777),
                    meta.rdev(),
                )
            };
            match made {
                0 => Ok(()),
                _ => match std::io::Error::last_os_error() {
                    e if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
                    e => Err(fail(e)),
                },
            }
        }
        MountOp::Symlink { link, points_to } => {
            let fail = |e: std::io::Error| format!("creating symlink {}: {e}", link.display());
            let (root, relative) = within(link)
                .ok_or_else(|| format!("symlink {} outside the root", link.display()))?;
            let (dir, name) = root.parent_of(&relative).map_err(fail)?;
            let target = CString::new(points_to.as_str())
                .map_err(|_| format!("{points_to:?} contains a NUL byte"))?;
            let symlink = || {
                // SAFETY: symlinkat with NUL-terminated strings and a live
                // descriptor.
                match unsafe { libc::symlinkat(target.as_ptr(), dir.as_raw_fd(), name.as_ptr()) } {
                    0 => Ok(()),
                    _ => Err(std::io::Error::last_os_error()),
                }
            };
            match symlink() {
                // Replaces what the image has there (an /etc/resolv.conf
                // file), unless it is this link already.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    if read_link_at(&dir, &name).is_ok_and(|t| t == Path::new(points_to)) {
                        return Ok(());
                    }
                    // SAFETY: unlinkat with a live descriptor and name;
                    // it removes the name, never follows it.
                    if unsafe { libc::unlinkat(dir.as_raw_fd(), name.as_ptr(), 0) } != 0 {
                        return Err(fail(std::io::Error::last_os_error()));
                    }
                    symlink().map_err(fail)
                }
                other => other.map_err(fail),
            }
        }
    }
}

/// Opens the directory `relative` inside `root`, made if missing.
fn open_or_make_dir(root: &Root, relative: &Path) -> std::io::Result<std::os::fd::OwnedFd> {
    match root.open_in(relative, libc::O_DIRECTORY) {
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => root.make_dirs(relative),
        other => other,
    }
}

/// Drops every capability outside `keep` from the bounding set, switches to
/// the user, and leaves exactly `keep` permitted, effective, inheritable
/// and (for non-root users, who would lose them at exec) ambient.
pub(crate) fn switch_user(ids: &Ids, keep: u64) -> Result<(), String> {
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
pub(crate) fn reset_signals() {
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
