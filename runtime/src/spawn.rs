//! The parent side of starting a container: the host directories it needs,
//! its output pipes and cgroup, then clone3 straight into fresh namespaces
//! and the cgroup, and back with the child's pid (or the child's own account
//! of why it failed).

use std::ffi::CString;
use std::fs;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

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

/// Starts the container. Waits until the child has exec'd the service (or
/// failed, with the child's own account of what went wrong), at most
/// `SETUP_DEADLINE`.
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
    refuse_fuse_here(spec)?;
    spawn_checked(spec, paths, netns, SETUP_DEADLINE)
}

/// As `spawn_in`, for a caller that has refused FUSE sources itself (PID 1
/// does, before it opens the image), waiting `deadline` for the setup (the
/// deadline's test passes a short one, and a source past the check).
pub fn spawn_checked(
    spec: &ServiceSpec,
    paths: &Paths,
    netns: Option<&OwnedFd>,
    deadline: Duration,
) -> Result<Started, Error> {
    let netns = netns.filter(|_| !spec.shares(Namespace::Net));
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
    // The child's account of a failure comes through this pipe; its write
    // end closes at the exec (O_CLOEXEC), which is how success is told.
    let (status_read, status_write) = pipe()?;
    let (out, err) = (out_write.as_raw_fd(), err_write.as_raw_fd());
    let status = status_write.as_raw_fd();
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
            child(spec, paths, &plan)
        })) {
            Ok(Err(e)) => e,
            Ok(Ok(never)) => match never {},
            Err(_) => "internal error while setting up the container".to_string(),
        };
        let bytes = error.as_bytes();
        // SAFETY: writing our own bytes to the pipe the parent reads.
        unsafe { libc::write(status, bytes.as_ptr().cast(), bytes.len().min(MAX_MESSAGE)) };
        // SAFETY: ending the child, a copy of PID 1, without running its
        // destructors (they are PID 1's, which goes on).
        unsafe { libc::_exit(127) }
    })
    .map_err(|e| Error::host("clone3", e))?;
    drop((out_write, err_write, status_write));
    if let Err(e) = wait_for_exec(pid, &status_read, deadline) {
        // Whatever went wrong, no child may go on to run a service that
        // nobody tracks.
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        return Err(e);
    }
    Ok(Started {
        pid,
        stdout: out_read,
        stderr: err_read,
    })
}

/// How long PID 1 waits for a container's setup to reach its exec. It
/// takes milliseconds (a few hundred under emulation); one that takes
/// longer is blocked on something it cannot finish.
pub const SETUP_DEADLINE: Duration = Duration::from_secs(5);

/// The most of a child's failure message that is read.
const MAX_MESSAGE: usize = 4096;

/// Waits until the child has exec'd (the status pipe closes with nothing
/// said), has said why it failed, or `deadline` has passed: then the start
/// fails with where it was stuck, and the caller kills it — from PID 1's
/// namespace, where SIGKILL reaches even the init of a PID namespace. The
/// child is reaped by whoever reaps (PID 1's loop). A child that dies
/// before its exec without a word (a signal) reads as exec'd: its exit
/// comes to the supervisor as any service's, and is restarted with backoff.
fn wait_for_exec(pid: i32, status: &OwnedFd, deadline: Duration) -> Result<(), Error> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let end = Instant::now() + deadline;
    let mut message = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        let mut fds = [PollFd::new(status.as_fd(), PollFlags::POLLIN)];
        let ms =
            PollTimeout::try_from(left.as_millis().min(60_000) as u32).unwrap_or(PollTimeout::MAX);
        match poll(&mut fds, ms) {
            Ok(0) if !message.is_empty() => {
                // It said why, and has not finished ending.
                return Err(Error::Setup(String::from_utf8_lossy(&message).into_owned()));
            }
            Ok(0) => {
                // Killed by the caller, on every error.
                return Err(Error::Setup(format!(
                    "the container's setup did not reach its exec within {} s{}: killed it \
                     (a path that never answers, such as a hung network or FUSE filesystem?)",
                    deadline.as_secs_f32(),
                    stuck_in(pid)
                )));
            }
            Ok(_) => {}
            Err(nix::Error::EINTR) => continue,
            Err(e) => return Err(Error::host("waiting for the container's setup", e)),
        }
        let mut buf = [0u8; 1024];
        match nix::unistd::read(status, &mut buf) {
            Ok(0) if message.is_empty() => return Ok(()),
            Ok(0) => return Err(Error::Setup(String::from_utf8_lossy(&message).into_owned())),
            Ok(n) if message.len() < MAX_MESSAGE => message.extend_from_slice(&buf[..n]),
            Ok(_) => {}
            Err(nix::Error::EINTR | nix::Error::EAGAIN) => {}
            Err(e) => return Err(Error::host("reading the container's setup status", e)),
        }
    }
}

/// Where a stuck child waits, from /proc (its kernel function), for the
/// message: ` (blocked in request_wait_answer)`.
fn stuck_in(pid: i32) -> String {
    match fs::read_to_string(format!("/proc/{pid}/wchan")) {
        Ok(wchan) if !wchan.trim().is_empty() && wchan.trim() != "0" => {
            format!(" (blocked in {})", wchan.trim())
        }
        _ => String::new(),
    }
}

/// PID 1 waits for the setup child's exec, for `SETUP_DEADLINE` at most,
/// and opens a rootfs image itself: a bind source or an image on a FUSE
/// filesystem could block either once its server stops answering (a
/// stalled sshfs; a request the server has read is waited for even through
/// SIGKILL, so the stuck child stays), so such a service is refused before
/// anything starts, by what mountinfo says of the path — the path itself is
/// not touched.
/// `mountinfo` is read only for a spec that has such paths: most starts
/// (and the start benchmark) have none.
/// `refuse_fuse_sources` with this host's mountinfo.
pub fn refuse_fuse_here(spec: &ServiceSpec) -> Result<(), Error> {
    refuse_fuse_sources(spec, || {
        fs::read_to_string("/proc/self/mountinfo").unwrap_or_default()
    })
}

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
        if is_fuse(&on.fstype) {
            return Err(Error::Spec(format!(
                "{source} is on a FUSE filesystem ({} at {}): a FUSE server that stops \
                 answering would hang this start, and PID 1 with it; copy the data to a \
                 local disk instead",
                on.fstype, on.point
            )));
        }
    }
    // The image: where its links lead too, for PID 1 opens it itself.
    if let Some(image) = &spec.rootfs.image {
        resolve_image(Path::new(image), &mounts)?;
    }
    Ok(())
}

fn is_fuse(fstype: &str) -> bool {
    fstype == "fuse" || fstype == "fuseblk" || fstype.starts_with("fuse.")
}

/// Filesystems whose server can stop answering: an open or a read there
/// may wait for it without end (a hard NFS mount waits for ever).
fn is_remote(fstype: &str) -> bool {
    is_fuse(fstype)
        || matches!(
            fstype,
            "nfs"
                | "nfs4"
                | "cifs"
                | "smb3"
                | "smbfs"
                | "ceph"
                | "9p"
                | "afs"
                | "virtiofs"
                | "autofs"
        )
}

/// Where the image at `path` is, its links followed by reading them one
/// at a time (`readlink` of a link on a local disk does not touch what it
/// points to), each step checked against `mounts` before it is touched: an
/// image on, or a link into, a FUSE or network filesystem is refused,
/// because PID 1 opens the image itself (the loop device, the squashfs
/// mount) and would wait there for a server that stopped answering. The
/// path returned has no links left; PID 1 opens that one.
pub fn resolve_image(
    path: &Path,
    mounts: &[brig_spec::mountinfo::Mount],
) -> Result<PathBuf, Error> {
    use std::collections::VecDeque;
    use std::path::Component;
    let refuse = |why: String| Error::Spec(format!("rootfs.image {}: {why}", path.display()));
    if !path.is_absolute() {
        return Err(refuse("not an absolute path".into()));
    }
    if mounts.is_empty() {
        return Err(refuse(
            "the mounts (/proc/self/mountinfo) could not be read to check where it is".into(),
        ));
    }
    let mut pending: VecDeque<PathBuf> = path
        .components()
        .map(|c| PathBuf::from(c.as_os_str()))
        .collect();
    let mut resolved = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = pending.pop_front() {
        match part.components().next() {
            Some(Component::RootDir) => resolved = PathBuf::from("/"),
            Some(Component::ParentDir) => {
                resolved.pop();
            }
            Some(Component::Normal(name)) => {
                let next = resolved.join(name);
                if let Some(on) = brig_spec::mountinfo::mount_of(mounts, &next) {
                    if is_remote(&on.fstype) {
                        return Err(refuse(format!(
                            "{} is on {} ({} at {}): a server that stops answering would hang \
                             this start, and PID 1 with it; copy the image to a local disk",
                            next.display(),
                            if is_fuse(&on.fstype) {
                                "a FUSE filesystem"
                            } else {
                                "a network filesystem"
                            },
                            on.fstype,
                            on.point
                        )));
                    }
                }
                let meta = fs::symlink_metadata(&next)
                    .map_err(|e| Error::host(format!("image {}", next.display()), e))?;
                if !meta.file_type().is_symlink() {
                    resolved = next;
                    continue;
                }
                links += 1;
                if links > 40 {
                    return Err(refuse("more than 40 links".into()));
                }
                let target = fs::read_link(&next)
                    .map_err(|e| Error::host(format!("reading the link {}", next.display()), e))?;
                for part in target.components().rev() {
                    pending.push_front(PathBuf::from(part.as_os_str()));
                }
            }
            _ => {}
        }
    }
    Ok(resolved)
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

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::mountinfo::Mount;
    use std::os::unix::fs::symlink;

    fn mount(point: &Path, fstype: &str) -> Mount {
        Mount {
            dev: "0:99".into(),
            point: point.display().to_string(),
            fstype: fstype.into(),
            source: "server:/export".into(),
        }
    }

    #[test]
    fn an_images_links_are_followed_by_reading_them_and_never_into_a_remote_filesystem() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::create_dir(d.join("images")).unwrap();
        std::fs::write(d.join("images/web.squashfs"), b"hsqs").unwrap();
        let root = vec![mount(Path::new("/"), "ext4")];
        // A chain: relative, absolute, through `..`.
        symlink("images/web.squashfs", d.join("current")).unwrap();
        symlink(d.join("current"), d.join("images/latest")).unwrap();
        let via = d.join("images/../images/latest");
        let real = d.join("images/web.squashfs");
        assert_eq!(resolve_image(&via, &root).unwrap(), real);
        assert_eq!(resolve_image(&real, &root).unwrap(), real);
        // Into a FUSE mount, or onto NFS: refused from mountinfo alone. The
        // targets do not even exist: touching them would be another error.
        let remote = d.join("remote");
        symlink(remote.join("web.squashfs"), d.join("to-fuse")).unwrap();
        for fstype in ["fuse.sshfs", "nfs4", "cifs"] {
            let mounts = vec![root[0].clone(), mount(&remote, fstype)];
            let e = resolve_image(&d.join("to-fuse"), &mounts)
                .unwrap_err()
                .to_string();
            assert!(
                e.contains(&format!("{} is on a", remote.display()))
                    && e.contains(&format!("({fstype} at {})", remote.display()))
                    && e.contains("copy the image to a local disk"),
                "{e}"
            );
            let e = resolve_image(&remote.join("x.squashfs"), &mounts).unwrap_err();
            assert!(e.to_string().contains(fstype), "{e}");
            // Its own files elsewhere are not refused.
            assert_eq!(resolve_image(&real, &mounts).unwrap(), real);
        }
        // A loop of links ends.
        symlink(d.join("loop-b"), d.join("loop-a")).unwrap();
        symlink(d.join("loop-a"), d.join("loop-b")).unwrap();
        let e = resolve_image(&d.join("loop-a"), &root).unwrap_err();
        assert!(e.to_string().contains("more than 40 links"), "{e}");
        let e = resolve_image(Path::new("images/web.squashfs"), &root).unwrap_err();
        assert!(e.to_string().contains("not an absolute path"), "{e}");
        let e = resolve_image(&real, &[]).unwrap_err();
        assert!(e.to_string().contains("could not be read"), "{e}");
        let e = resolve_image(&d.join("missing.squashfs"), &root).unwrap_err();
        assert!(e.to_string().contains("missing.squashfs"), "{e}");
    }
}
