//! Paths inside a container's root, resolved as if that root were `/`.
//!
//! The container's writable layer is the service's to fill: a link it
//! leaves there (`/data -> /etc`) must not lead the setup child, still in
//! the host's root while it mounts, to create or mount anything on the host.
//! Every target is opened with `openat2(RESOLVE_IN_ROOT)` under the root's
//! descriptor, made one component at a time under its resolved parent when
//! missing, and mounted on through `/proc/self/fd`, as runc does.

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// `struct open_how` of openat2(2) (libc's cannot be built by hand).
#[repr(C)]
struct OpenHow {
    flags: u64,
    mode: u64,
    resolve: u64,
}

/// A container's root: where its paths are resolved.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

impl Root {
    /// The root at `path` (a host path PID 1 chose: trusted).
    pub fn open(path: &Path) -> io::Result<Root> {
        let fd = open_at(
            libc::AT_FDCWD,
            path.as_os_str().as_bytes(),
            libc::O_PATH | libc::O_DIRECTORY,
            0,
        )?;
        Ok(Root {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// `target` below the root, as a path relative to it; None for the
    /// root itself or a path elsewhere.
    pub fn relative<'a>(&self, target: &'a Path) -> Option<&'a Path> {
        target
            .strip_prefix(&self.path)
            .ok()
            .filter(|r| !r.as_os_str().is_empty())
    }

    /// Opens `relative` (O_PATH, or `flags`), every link on the way resolved
    /// inside the root.
    pub fn open_in(&self, relative: &Path, flags: i32) -> io::Result<OwnedFd> {
        openat2(
            self.fd.as_raw_fd(),
            relative,
            flags | libc::O_PATH,
            libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS,
        )
    }

    /// Opens `relative`, making the directories missing on the way (mode
    /// 0755), each under its parent as resolved inside the root; a link on
    /// the way to a missing directory has that directory made, inside the
    /// root too.
    pub fn make_dirs(&self, relative: &Path) -> io::Result<OwnedFd> {
        self.make_dirs_following(relative, 0)
    }

    fn make_dirs_following(&self, relative: &Path, links: u32) -> io::Result<OwnedFd> {
        // As the kernel's limit on links in one lookup.
        if links > 40 {
            return Err(io::Error::from_raw_os_error(libc::ELOOP));
        }
        let mut made = PathBuf::new();
        let mut parent = self.open_in(Path::new("."), libc::O_DIRECTORY)?;
        for component in relative.components() {
            let Component::Normal(name) = component else {
                continue;
            };
            made.push(name);
            parent = match self.open_in(&made, libc::O_DIRECTORY) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    let name = c_path(name.as_bytes())?;
                    // SAFETY: mkdirat with a live descriptor and path.
                    if unsafe { libc::mkdirat(parent.as_raw_fd(), name.as_ptr(), 0o755) } != 0 {
                        let e = io::Error::last_os_error();
                        if e.raw_os_error() != Some(libc::EEXIST) {
                            return Err(e);
                        }
                        // There, but it does not resolve: a link to what is
                        // missing. Make its target, as seen from the root.
                        let points_to = read_link_at(&parent, &name)?;
                        let from = made.parent().unwrap_or(Path::new(""));
                        self.make_dirs_following(&inside(from, &points_to), links + 1)?;
                    }
                    self.open_in(&made, libc::O_DIRECTORY)?
                }
                Err(e) => return Err(e),
            };
        }
        Ok(parent)
    }

    /// The directory holding `relative` (made if missing, inside the
    /// root), and its last component: for the *at calls.
    pub fn parent_of(&self, relative: &Path) -> io::Result<(OwnedFd, CString)> {
        let name = relative
            .file_name()
            .ok_or_else(|| io::Error::from_raw_os_error(libc::EINVAL))?;
        let parent = relative.parent().unwrap_or(Path::new(""));
        Ok((self.make_dirs(parent)?, c_path(name.as_bytes())?))
    }
}

/// Where the link text `points_to`, found in directory `from` (relative to
/// the root), leads, relative to the root: absolute links start at the
/// root, and `..` stops there, as RESOLVE_IN_ROOT resolves them.
fn inside(from: &Path, points_to: &Path) -> PathBuf {
    let mut at = if points_to.is_absolute() {
        PathBuf::new()
    } else {
        from.to_path_buf()
    };
    for component in points_to.components() {
        match component {
            Component::Normal(name) => at.push(name),
            Component::ParentDir => {
                at.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    at
}

/// The text of the link `name` in `dir` (EINVAL if it is no link).
pub fn read_link_at(dir: &OwnedFd, name: &CString) -> io::Result<PathBuf> {
    let mut buf = [0u8; 4096];
    // SAFETY: readlinkat writes at most the buffer's size into it.
    let n = unsafe {
        libc::readlinkat(
            dir.as_raw_fd(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(PathBuf::from(std::ffi::OsStr::from_bytes(
        &buf[..n as usize],
    )))
}

/// A path naming what `fd` is, for calls that take paths (mount(2)).
pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates the empty regular file `name` in `dir` if it is not there,
/// never following a link at that name.
pub fn make_file(dir: &OwnedFd, name: &CString) -> io::Result<()> {
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_NOFOLLOW | libc::O_NONBLOCK;
    open_at(dir.as_raw_fd(), name.as_bytes(), flags, 0o644).map(drop)
}

/// Opens `path` (`flags`, close-on-exec) at no link at all: one put on the
/// way since it was resolved fails the open (ELOOP) instead of leading
/// elsewhere.
pub fn open_without_links(path: &Path, flags: i32) -> io::Result<OwnedFd> {
    openat2(
        libc::AT_FDCWD,
        path,
        flags,
        libc::RESOLVE_NO_SYMLINKS | libc::RESOLVE_NO_MAGICLINKS,
    )
}

fn openat2(dir: i32, path: &Path, flags: i32, resolve: u64) -> io::Result<OwnedFd> {
    let how = OpenHow {
        flags: (flags | libc::O_CLOEXEC) as u64,
        mode: 0,
        resolve,
    };
    let path = c_path(path.as_os_str().as_bytes())?;
    // SAFETY: openat2 reads a NUL-terminated path and an open_how of the
    // size passed, both alive across the call; the fd returned is ours.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_openat2,
            dir,
            path.as_ptr(),
            &how as *const OpenHow,
            std::mem::size_of::<OpenHow>(),
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn open_at(dir: i32, path: &[u8], flags: i32, mode: u32) -> io::Result<OwnedFd> {
    let path = c_path(path)?;
    // SAFETY: openat with a NUL-terminated path alive across the call; the
    // descriptor returned is ours.
    let fd = unsafe { libc::openat(dir, path.as_ptr(), flags | libc::O_CLOEXEC, mode) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a new descriptor nobody else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn c_path(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_lead_somewhere_inside_the_root_whatever_they_say() {
        let at = |from: &str, to: &str| inside(Path::new(from), Path::new(to));
        assert_eq!(at("", "/etc/cron.d"), Path::new("etc/cron.d"));
        assert_eq!(at("var", "../../../../etc"), Path::new("etc"));
        assert_eq!(at("var/lib", "./x/../y"), Path::new("var/lib/y"));
    }

    #[test]
    fn a_link_out_of_the_root_is_made_inside_it() {
        let dir = tempfile::tempdir().unwrap();
        let (root_dir, host) = (dir.path().join("root"), dir.path().join("host"));
        std::fs::create_dir_all(&root_dir).unwrap();
        std::fs::create_dir_all(&host).unwrap();
        std::os::unix::fs::symlink(&host, root_dir.join("data")).unwrap();
        let root = Root::open(&root_dir).unwrap();
        root.make_dirs(Path::new("data/cache")).unwrap();
        assert_eq!(
            std::fs::read_dir(&host).unwrap().count(),
            0,
            "the host is untouched"
        );
        let made = root_dir.join(host.strip_prefix("/").unwrap()).join("cache");
        assert!(made.is_dir(), "made inside: {}", made.display());
        // A file's directory, through the same link.
        let (parent, name) = root.parent_of(Path::new("data/kept/file")).unwrap();
        make_file(&parent, &name).unwrap();
        assert_eq!(std::fs::read_dir(&host).unwrap().count(), 0);
        assert!(root_dir
            .join(host.strip_prefix("/").unwrap())
            .join("kept/file")
            .is_file());
    }
}
