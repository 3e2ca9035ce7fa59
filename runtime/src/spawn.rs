//! The parent side of starting a container: the host directories it needs,
//! its output pipes and cgroup, then clone3 straight into fresh namespaces
//! and the cgroup, and back with the child's pid (or the child's own account
//! of why it failed).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsRawFd, OwnedFd};

use brig_spec::paths::DNS_DIR;
use brig_spec::paths::SYSLOG_DIR;
use brig_spec::service::{Mount, Namespace, ServiceSpec};

use crate::child::{child, ChildPlan};
use crate::clone3::{self, CloneArgs, CLONE_INTO_CGROUP};
use crate::plan::{capability_mask, clone_flags, plan_mounts, Paths};
use crate::Error;

/// A started container: its main process and the read ends of its output.
#[derive(Debug)]
pub struct Started {
    pub pid: i32,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
}

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(|e| Error::host("creating a pipe", e))
}

/// Starts the container. Blocks until the child has exec'd the service (or
/// failed, with the child's own account of what went wrong).
pub fn spawn(spec: &ServiceSpec, paths: &Paths) -> Result<Started, Error> {
    spawn_in(spec, paths, None)
}

/// As `spawn`; a service with a private network joins `netns` (prepared
/// ahead, `netns::prepare`) instead of creating one.
pub fn spawn_in(
    spec: &ServiceSpec,
    paths: &Paths,
    netns: Option<&OwnedFd>,
) -> Result<Started, Error> {
    let netns = netns.filter(|_| !spec.shares(Namespace::Net));
    refuse_fuse_sources(spec, || {
        fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    })?;
    for sub in ["upper", "work", "root"] {
        let dir = paths.dir.join(sub);
        fs::create_dir_all(&dir)
            .map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
    }
    for dir in [
        Some(SYSLOG_DIR),
        spec.shares(Namespace::Net).then_some(DNS_DIR),
    ]
    .into_iter()
    .flatten()
    {
        fs::create_dir_all(dir).map_err(|e| Error::host(format!("creating {dir}"), e))?;
    }
    for m in &spec.mounts {
        if let Mount::Volume { name, .. } = m {
            let dir = paths.volumes.join(name);
            fs::create_dir_all(&dir)
                .map_err(|e| Error::host(format!("creating volume {}", dir.display()), e))?;
        }
    }
    let cgroup_fd = match &paths.cgroup {
        Some(path) => Some(
            fs::File::open(path)
                .map_err(|e| Error::host(format!("opening cgroup {}", path.display()), e))?,
        ),
        None => None,
    };
    let (out_read, out_write) = pipe()?;
    let (err_read, err_write) = pipe()?;
    let mounts = plan_mounts(spec, paths);
    let caps = capability_mask(spec);
    let seccomp = crate::seccomp::filters(spec, caps).map_err(Error::Spec)?;
    let cstr =
        |s: &str| CString::new(s).map_err(|_| Error::Spec(format!("{s:?} contains a NUL byte")));
    let argv: Vec<CString> = spec
        .command
        .iter()
        .map(|a| cstr(a))
        .collect::<Result<_, _>>()?;
    if argv.is_empty() {
        return Err(Error::Spec("the command is empty".into()));
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
    // The child runs in this process's memory until it execs (clone3.rs):
    // what it must keep alive through exec, and its account of a failure,
    // it leaves in these slots, which are freed here.
    let mut envp: Vec<CString> = Vec::new();
    let mut failure: Option<String> = None;
    let (out, err) = (out_write.as_raw_fd(), err_write.as_raw_fd());
    let netns_fd = netns.map(AsRawFd::as_raw_fd);
    let pid = clone3::spawn(&args, || {
        // A panic must not unwind out of the child: it ends below, always.
        let error = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let plan = ChildPlan {
                netns: netns_fd,
                mounts: &mounts,
                caps,
                stdout: out,
                stderr: err,
                argv: &argv,
                seccomp: seccomp.as_ref(),
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
    .map_err(|e| Error::host("clone3", e))?;
    drop((out_write, err_write, envp));
    if let Some(message) = failure {
        return Err(Error::Setup(message));
    }

    Ok(Started {
        pid,
        stdout: out_read,
        stderr: err_read,
    })
}

/// The setup child runs in PID 1's memory and PID 1 waits for its exec
/// (clone3.rs): nothing may block it. A bind source or an image on a FUSE
/// filesystem could, for ever, once its server stops answering (a stalled
/// sshfs; a request the server has read is waited for even through
/// SIGKILL), so such a service is refused before anything starts, by what
/// mountinfo says of the path — the path itself is not touched.
/// `mountinfo` is read only for a spec that has such paths: most starts
/// (and the start benchmark) have none.
pub fn refuse_fuse_sources(
    spec: &ServiceSpec,
    mountinfo: impl FnOnce() -> String,
) -> Result<(), Error> {
    let binds = spec.mounts.iter().filter_map(|m| match m {
        Mount::Bind { source, .. } => Some(source.as_str()),
        _ => None,
    });
    let sources: Vec<&str> = binds.chain(spec.rootfs.image.as_deref()).collect();
    if sources.is_empty() {
        return Ok(());
    }
    let mounts = brig_spec::mountinfo::mounts(&mountinfo());
    for source in sources {
        let Some(on) = brig_spec::mountinfo::mount_of(&mounts, std::path::Path::new(source)) else {
            continue;
        };
        if on.fstype == "fuse" || on.fstype.starts_with("fuse.") {
            return Err(Error::Spec(format!(
                "{source} is on a FUSE filesystem ({} at {}): a FUSE server that stops \
                 answering would hang this start, and PID 1 with it; copy the data to a \
                 local disk instead",
                on.fstype, on.point
            )));
        }
    }
    Ok(())
}

/// The container's directory (its writable layer, and where its root is
/// put together) on a tmpfs of its own of at most `size` bytes, so a
/// container that fills its layer gets ENOSPC, and the machine's /run
/// stays as it was. Mounted at the first start; later starts (a restart
/// keeps the layer) find it there. PID 1 calls it for every service;
/// brig-container, whose layers live in a directory it is given, does not.
pub fn prepare_layer(dir: &std::path::Path, size: u64) -> Result<(), Error> {
    use std::os::unix::fs::MetadataExt;
    fs::create_dir_all(dir).map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
    let device = |path: &std::path::Path| {
        fs::metadata(path)
            .map(|m| m.dev())
            .map_err(|e| Error::host(format!("looking at {}", path.display()), e))
    };
    let parent = dir.parent().unwrap_or(std::path::Path::new("/"));
    if device(dir)? != device(parent)? {
        return Ok(());
    }
    use nix::mount::MsFlags;
    nix::mount::mount(
        Some("brig-layer"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(format!("size={size},mode=0700").as_str()),
    )
    .map_err(|e| {
        Error::host(
            format!("mounting the writable layer's tmpfs on {}", dir.display()),
            e,
        )
    })
}

/// Makes an fd non-blocking (for PID 1's epoll).
pub fn set_nonblocking(fd: &OwnedFd) {
    let flags = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_GETFL).unwrap_or(0);
    let flags = nix::fcntl::OFlag::from_bits_truncate(flags) | nix::fcntl::OFlag::O_NONBLOCK;
    let _ = nix::fcntl::fcntl(fd, nix::fcntl::FcntlArg::F_SETFL(flags));
}
