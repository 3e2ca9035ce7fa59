//! Private network namespaces for containers: the loopback interface up (as
//! docker and crun leave it, so a service can talk to itself on 127.0.0.1),
//! and namespaces prepared ahead of time, so that creating one (about half
//! a millisecond, most of a container's start) happens while PID 1 is idle
//! rather than when a service (re)starts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};

use crate::Error;

/// Sets `lo` up in the calling process's network namespace.
pub fn loopback_up() -> Result<(), Error> {
    let fail = |what: &str| Error::last_os_error(format!("{what} lo"));
    // SAFETY: a plain socket(2) call; the fd is owned right below.
    let socket = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if socket < 0 {
        return Err(fail("a socket to configure"));
    }
    // SAFETY: socket is a fresh fd owned by nobody else.
    let socket = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(socket) };
    // SAFETY: ifreq is plain data; zeroed is a valid value.
    let mut request: libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in request.ifr_name.iter_mut().zip(b"lo\0") {
        *slot = *byte as libc::c_char;
    }
    // SAFETY: SIOCGIFFLAGS/SIOCSIFFLAGS read and write `request`, which
    // names an interface and outlives the calls.
    unsafe {
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut request) < 0 {
            return Err(fail("reading the flags of"));
        }
        request.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(socket.as_raw_fd(), libc::SIOCSIFFLAGS as _, &request) < 0 {
            return Err(fail("setting up"));
        }
    }
    Ok(())
}

/// A new network namespace with `lo` up, held by the returned fd: a helper
/// process creates it, the fd is taken from /proc, the helper exits.
pub fn prepare() -> Result<OwnedFd, Error> {
    let pipe = || {
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(|e| Error::host("creating a pipe", e))
    };
    let (ready_read, ready_write) = pipe()?;
    let (hold_read, hold_write) = pipe()?;
    // SAFETY: the callers (PID 1, brig-container) are single-threaded; the
    // child only makes syscalls and _exits.
    match unsafe { nix::unistd::fork() } {
        Ok(nix::unistd::ForkResult::Child) => {
            drop((ready_read, hold_write));
            // SAFETY: unshare with a flag only affects this child.
            let made = if unsafe { libc::unshare(libc::CLONE_NEWNET) } == 0 {
                loopback_up()
            } else {
                Err(Error::last_os_error("unshare"))
            };
            let mut ready = File::from(ready_write);
            let _ = ready.write_all(
                match &made {
                    Ok(()) => b"ok".to_vec(),
                    Err(e) => e.to_string().into_bytes(),
                }
                .as_slice(),
            );
            drop(ready);
            // Hold the namespace until the parent has its fd (EOF).
            let _ = File::from(hold_read).read(&mut [0u8; 1]);
            // SAFETY: leave without running the parent's destructors.
            unsafe { libc::_exit(0) }
        }
        Ok(nix::unistd::ForkResult::Parent { child }) => {
            drop((ready_write, hold_read));
            let mut answer = String::new();
            let _ = File::from(ready_read).read_to_string(&mut answer);
            let opened = match answer.as_str() {
                "ok" => File::open(format!("/proc/{child}/ns/net"))
                    .map(OwnedFd::from)
                    .map_err(|e| {
                        Error::host(format!("opening the network namespace of {child}"), e)
                    }),
                "" => Err(Error::host(
                    "preparing a network namespace",
                    std::io::Error::other("the helper died"),
                )),
                error => Err(Error::host(
                    "preparing a network namespace",
                    std::io::Error::other(error.to_string()),
                )),
            };
            drop(hold_write);
            let _ = nix::sys::wait::waitpid(child, None);
            opened
        }
        Err(e) => Err(Error::host("forking the network namespace helper", e)),
    }
}

/// Namespaces prepared ahead, up to `target`.
#[derive(Debug)]
pub struct Pool {
    ready: Vec<OwnedFd>,
    target: usize,
}

impl Pool {
    pub fn new(target: usize) -> Pool {
        Pool {
            ready: Vec::new(),
            target,
        }
    }

    pub fn take(&mut self) -> Option<OwnedFd> {
        self.ready.pop()
    }

    /// Prepares one namespace if the pool is short; true if it did work.
    pub fn refill_one(&mut self) -> Result<bool, Error> {
        if self.ready.len() >= self.target {
            return Ok(false);
        }
        self.ready.push(prepare()?);
        Ok(true)
    }
}
