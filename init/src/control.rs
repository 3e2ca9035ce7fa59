//! The control socket's connection handling: non-blocking reads into a
//! buffer, one JSON request per line, bounded length; responses written
//! without blocking (a client that does not read its responses is dropped).
//! PID 1 never blocks on a client and survives any input.

use std::fs;
use std::io::{self, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixListener;
use std::os::unix::net::UnixStream;
use std::path::Path;

use brig_spec::control::{Request, Response, SystemStatus, MAX_REQUEST};
use brig_spec::paths::CONTROL_SOCKET;
use brig_spec::paths::LOCAL_FILE;

use crate::config::apply::config_change;
use crate::config::local_settings;
use crate::event_loop::{watch, Init, Source};
use crate::host::console::{self, say_error};
use crate::host::system::{PowerAction, System};
use crate::supervise::services::Services;
use crate::supervise::supervisor::Action;
use crate::update::install::BundleSource;
use crate::update::Job;
use crate::VERSION;

pub struct Client {
    pub stream: UnixStream,
    /// Connected as root (peer credentials): may change things, not only
    /// read them.
    pub root: bool,
    input: Vec<u8>,
    /// `logs -f`: the service whose new lines this client receives.
    pub follow: Option<String>,
    /// A file a root client passed (SCM_RIGHTS), for `os-upgrade-file`;
    /// any other passed descriptor is closed on arrival.
    pub passed: Option<OwnedFd>,
}

/// What reading a client produced.
#[derive(Debug)]
pub enum Input {
    Request(Request),
    /// Answer with this error; the connection stays.
    Bad(String),
    /// Answer with this error and close.
    Fatal(String),
    Closed,
}

impl Client {
    /// A connection; `root` only when the kernel says the peer is uid 0
    /// (unknown credentials count as not root).
    pub fn new(stream: UnixStream) -> io::Result<Client> {
        stream.set_nonblocking(true)?;
        let root = peer_uid(&stream) == Some(0);
        Ok(Client {
            stream,
            root,
            input: Vec::new(),
            follow: None,
            passed: None,
        })
    }

    /// Reads what is available and returns the complete requests in it.
    pub fn read(&mut self) -> Vec<Input> {
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match self.receive(&mut buf) {
                Ok(0) => {
                    closed = true;
                    break;
                }
                Ok(n) => self.input.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => {
                    closed = true;
                    break;
                }
            }
            if self.input.len() > MAX_REQUEST {
                break;
            }
        }
        let mut out = take_requests(&mut self.input);
        if closed {
            out.push(Input::Closed);
        }
        out
    }

    /// One read, taking the descriptors that came with it: a root client's
    /// first is kept, the rest closed (by dropping them), so no client can
    /// make PID 1 hold descriptors.
    fn receive(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        // Room for the most one message can carry (the kernel's
        // SCM_MAX_FD); a stream socket gives one message's descriptors per
        // read. Should the kernel still cut the control data short (PID 1
        // at its descriptor limit), the descriptors it did install are in
        // what it wrote, and are closed like the rest: nix's parser stops
        // at a cut, so the walk is libc's.
        let mut control = [0u64; CONTROL_WORDS];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: an all-zero msghdr is valid (no name, no buffers yet).
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: `header` points at `iov` (into `buf`) and `control`, both
        // alive and writable for the call, with their true lengths.
        let n = unsafe {
            libc::recvmsg(
                self.stream.as_raw_fd(),
                &mut header,
                libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT,
            )
        };
        let received = if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        };
        for fd in passed_descriptors(&header) {
            if self.root && self.passed.is_none() {
                self.passed = Some(fd);
            }
        }
        received
    }

    /// Sends one response line; false if the client is gone or not reading.
    pub fn send(&mut self, response: &Response) -> bool {
        let mut line = serde_json::to_vec(response)
            .unwrap_or_else(|_| b"{\"type\":\"error\",\"error\":\"encoding\"}".to_vec());
        line.push(b'\n');
        matches!(self.stream.write_all(&line), Ok(()))
    }
}

/// The most descriptors one message can pass (include/net/scm.h).
const SCM_MAX_FD: usize = 253;
/// The control buffer, in 8-byte words (cmsg alignment): a header and
/// SCM_MAX_FD descriptors.
const CONTROL_WORDS: usize = (16 + SCM_MAX_FD * 4).div_ceil(8);

/// The descriptors in SCM_RIGHTS messages of the control data `header`
/// holds after a recvmsg, each owned (closed when dropped).
fn passed_descriptors(header: &libc::msghdr) -> Vec<OwnedFd> {
    let mut passed = Vec::new();
    if header.msg_control.is_null() {
        return passed;
    }
    // SAFETY: the CMSG_* macros walk the control data the kernel wrote,
    // within msg_controllen; each header's length bounds its data.
    unsafe {
        let mut message = libc::CMSG_FIRSTHDR(header);
        while !message.is_null() {
            let data = libc::CMSG_DATA(message);
            let length =
                ((*message).cmsg_len as usize).saturating_sub(data as usize - message as usize);
            if (*message).cmsg_level == libc::SOL_SOCKET && (*message).cmsg_type == libc::SCM_RIGHTS
            {
                for i in 0..length / std::mem::size_of::<RawFd>() {
                    let fd = std::ptr::read_unaligned(data.cast::<RawFd>().add(i));
                    // SAFETY: the kernel installed this descriptor in PID 1
                    // for this message; nothing else owns it.
                    passed.push(OwnedFd::from_raw_fd(fd));
                }
            }
            message = libc::CMSG_NXTHDR(header, message);
        }
    }
    passed
}

/// At most this many clients that are not root at once: the read-only
/// group may look, not take PID 1's file descriptors (root is trusted,
/// and so never turned away).
pub const MAX_READ_ONLY_CLIENTS: usize = 16;

/// Why a new client is turned away, if it is: it is not root and
/// `read_only_clients` others like it are connected already.
pub fn turned_away(root: bool, read_only_clients: usize) -> Option<Response> {
    (!root && read_only_clients >= MAX_READ_ONLY_CLIENTS).then(|| Response::Error {
        error: format!(
            "too many connections without root at once ({MAX_READ_ONLY_CLIENTS}): \
             try again, or use sudo"
        ),
    })
}

/// The uid of the process at the other end, as the kernel recorded it
/// when it connected.
fn peer_uid(stream: &UnixStream) -> Option<u32> {
    nix::sys::socket::getsockopt(stream, nix::sys::socket::sockopt::PeerCredentials)
        .ok()
        .map(|credentials| credentials.uid())
}

/// The answer to a request `root` may not make, if it may not.
pub fn refused(request: &Request, root: bool) -> Option<Response> {
    (request.needs_root() && !root).then(|| Response::Error {
        error: format!(
            "permission denied: {} needs root (sudo brigctl …)",
            request.what()
        ),
    })
}

/// Splits complete lines off `input` and parses them.
pub fn take_requests(input: &mut Vec<u8>) -> Vec<Input> {
    let mut out = Vec::new();
    while let Some(end) = input.iter().position(|&b| b == b'\n') {
        let line: Vec<u8> = input.drain(..=end).collect();
        let line = String::from_utf8_lossy(&line[..end]);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        out.push(match serde_json::from_str::<Request>(line) {
            Ok(request) => Input::Request(request),
            Err(e) => Input::Bad(format!("bad request: {e}")),
        });
    }
    if input.len() > MAX_REQUEST {
        input.clear();
        out.push(Input::Fatal(format!(
            "request longer than {MAX_REQUEST} bytes"
        )));
    }
    out
}

impl<S: System> Init<S> {
    pub(crate) fn status(&self) -> SystemStatus {
        let kernel = nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default();
        SystemStatus {
            // The image's version (`brig build --os-version`), which
            // updates compare; brig-init's own when an image has none.
            version: fs::read_to_string(brig_spec::paths::VERSION_FILE)
                .map(|v| v.trim().to_string())
                .unwrap_or_else(|_| VERSION.to_string()),
            board: fs::read_to_string(brig_spec::paths::BOARD_FILE)
                .map(|b| b.trim().to_string())
                .unwrap_or_else(|_| "unknown".into()),
            kernel,
            boot: self.boot.clone(),
            uptime_seconds: console::since_boot().as_secs(),
            state: self.state.status(),
        }
    }

    pub(crate) fn open_control_socket(&mut self) {
        let path = Path::new(CONTROL_SOCKET);
        if let Some(dir) = path.parent() {
            let _ = fs::create_dir_all(dir);
        }
        let _ = fs::remove_file(path);
        let listener = match UnixListener::bind(path) {
            Ok(l) => l,
            Err(e) => return say_error(&format!("control socket {CONTROL_SOCKET}: {e}")),
        };
        // Root, and the read-only group: each request is checked against
        // the peer's credentials (only root may change anything).
        if let Err(e) = brig_spec::control::open_to_read_only_group(path) {
            say_error(&format!(
                "control socket {CONTROL_SOCKET}: setting its owner and mode: {e}"
            ));
        }
        let _ = listener.set_nonblocking(true);
        if let Err(e) = watch(&self.epoll, listener.as_fd()) {
            return say_error(&format!("watching the control socket: {e}"));
        }
        self.sources
            .insert(listener.as_raw_fd(), Source::Listener(listener));
    }

    pub(crate) fn accept_clients(&mut self, fd: RawFd) {
        let Some(Source::Listener(listener)) = self.sources.get(&fd) else {
            return;
        };
        let mut accepted = Vec::new();
        while let Ok((stream, _)) = listener.accept() {
            accepted.push(stream);
        }
        for stream in accepted {
            let Ok(mut client) = Client::new(stream) else {
                continue;
            };
            let read_only = self
                .sources
                .values()
                .filter(|s| matches!(s, Source::Client(c) if !c.root))
                .count();
            if let Some(refusal) = turned_away(client.root, read_only) {
                client.send(&refusal);
                continue;
            }
            if watch(&self.epoll, client.stream.as_fd()).is_ok() {
                self.sources
                    .insert(client.stream.as_raw_fd(), Source::Client(Box::new(client)));
            }
        }
    }

    pub(crate) fn handle_client(&mut self, fd: RawFd) {
        let Some(Source::Client(client)) = self.sources.get_mut(&fd) else {
            return;
        };
        let inputs = client.read();
        for input in inputs {
            let root = match self.sources.get(&fd) {
                Some(Source::Client(client)) => client.root,
                _ => false,
            };
            let (response, close) = match input {
                Input::Request(request) => match refused(&request, root) {
                    Some(refusal) => (Some(refusal), false),
                    None => (self.answer(fd, request), false),
                },
                Input::Bad(error) => (Some(Response::Error { error }), false),
                Input::Fatal(error) => (Some(Response::Error { error }), true),
                Input::Closed => (None, true),
            };
            // A passed descriptor belongs to the request it came with:
            // one that request did not take is closed now.
            if let Some(Source::Client(client)) = self.sources.get_mut(&fd) {
                client.passed = None;
            }
            let sent = match (response, self.sources.get_mut(&fd)) {
                (Some(response), Some(Source::Client(client))) => client.send(&response),
                _ => true,
            };
            if close || !sent {
                self.forget(fd);
                return;
            }
        }
    }

    pub(crate) fn answer(&mut self, fd: RawFd, request: Request) -> Option<Response> {
        let now = self.sys.now();
        let ok = |message: String| Response::Ok { message };
        let known = |services: &Services, name: &str| services.supervisor.get(name).is_some();
        Some(match request {
            Request::Status => Response::Status {
                status: self.status(),
            },
            Request::Ps => Response::Services {
                services: self.services.status(now),
            },
            Request::Logs {
                service,
                tail,
                follow,
            } => {
                if !known(&self.services, &service) {
                    return Some(Response::Error {
                        error: format!("no service {service:?}"),
                    });
                }
                let lines = self
                    .services
                    .rings
                    .get(&service)
                    .map(|r| r.tail(tail))
                    .unwrap_or_default();
                if follow {
                    if let Some(Source::Client(client)) = self.sources.get_mut(&fd) {
                        client.follow = Some(service);
                    }
                }
                Response::Log { lines }
            }
            Request::Start { service } => match self.services.supervisor.start(&service) {
                Ok(()) => ok(format!("starting {service}")),
                Err(error) => Response::Error { error },
            },
            Request::Stop { service } => {
                let actions = self.services.supervisor.stop(&service, now);
                self.carry_out(actions, format!("stopping {service}"))
            }
            Request::Restart { service } => {
                let actions = self.services.supervisor.restart(&service, now);
                self.carry_out(actions, format!("restarting {service}"))
            }
            Request::Reboot => {
                self.power(PowerAction::Reboot, "brigctl reboot");
                ok("rebooting".into())
            }
            Request::Poweroff => {
                self.power(PowerAction::PowerOff, "brigctl poweroff");
                ok("powering off".into())
            }
            Request::ConfigSet { key, value } => {
                let change =
                    crate::config::ask::change(&self.sys, Path::new(LOCAL_FILE), &key, Some(value));
                self.config_changed(change, &key)
            }
            Request::ConfigUnset { key } => {
                let change =
                    crate::config::ask::change(&self.sys, Path::new(LOCAL_FILE), &key, None);
                self.config_changed(change, &key)
            }
            Request::OsUpgrade {
                url,
                allow_downgrade,
            } => {
                return self.os_request(
                    fd,
                    Job::Upgrade {
                        source: BundleSource::Url(url),
                        allow_downgrade,
                        automatic: false,
                    },
                )
            }
            Request::OsUpgradeFile {
                name,
                allow_downgrade,
            } => {
                let passed = match self.sources.get_mut(&fd) {
                    Some(Source::Client(client)) => client.passed.take(),
                    _ => None,
                };
                let Some(file) = passed else {
                    return Some(Response::Error {
                        error: format!("no open file came with the request for {name}"),
                    });
                };
                return self.os_request(
                    fd,
                    Job::Upgrade {
                        source: BundleSource::File { name, file },
                        allow_downgrade,
                        automatic: false,
                    },
                );
            }
            Request::OsStatus => return self.os_request(fd, Job::Status),
            Request::OsRollback => return self.os_request(fd, Job::Rollback),
            Request::Install { device } => return self.os_request(fd, Job::Install { device }),
        })
    }

    /// The answer to a config change; `brig.update` applies at once (PID 1
    /// reads it, no service does).
    fn config_changed(&mut self, change: Result<String, String>, key: &str) -> Response {
        let applied = change.is_ok() && (key == "brig" || key.starts_with("brig.update"));
        let response = config_change(&self.sys, change, key);
        if applied {
            match local_settings::read(&self.sys, Path::new(LOCAL_FILE)) {
                Ok(local) => {
                    // Without a plan the updates go on as they were.
                    match crate::config::ask::replan(&self.sys, &local) {
                        Ok(plan) => self.configure_updates(plan.update),
                        Err(e) => say_error(&format!("config: brig.update not applied now: {e}")),
                    }
                }
                Err(e) => say_error(&format!("config: brig.update: {e}")),
            }
        }
        response
    }

    /// Performs the supervisor's answer to a request, or reports its error.
    pub(crate) fn carry_out(
        &mut self,
        actions: Result<Vec<Action>, String>,
        done: String,
    ) -> Response {
        match actions {
            Ok(actions) => {
                self.act(actions);
                Response::Ok { message: done }
            }
            Err(error) => Response::Error { error },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[test]
    fn only_root_is_never_turned_away() {
        assert!(turned_away(false, MAX_READ_ONLY_CLIENTS - 1).is_none());
        assert!(turned_away(true, MAX_READ_ONLY_CLIENTS * 10).is_none());
        let Some(Response::Error { error }) = turned_away(false, MAX_READ_ONLY_CLIENTS) else {
            panic!("the 17th read-only client was let in");
        };
        assert!(
            error.starts_with("too many connections without root at once (16)"),
            "{error}"
        );
    }

    #[test]
    fn complete_lines_become_requests_partial_ones_wait() {
        let mut input = b"{\"op\":\"ps\"}\n{\"op\":\"stop\",\"serv".to_vec();
        let out = take_requests(&mut input);
        assert!(matches!(out.as_slice(), [Input::Request(Request::Ps)]));
        input.extend_from_slice(b"ice\":\"x\"}\n\n");
        let out = take_requests(&mut input);
        assert!(
            matches!(out.as_slice(), [Input::Request(Request::Stop { service })] if service == "x")
        );
        assert!(input.is_empty());
    }

    #[test]
    fn garbage_is_answered_not_fatal() {
        let mut input = b"\xff\xfe garbage\n{\"op\":\"ps\"}\n".to_vec();
        let out = take_requests(&mut input);
        assert!(matches!(&out[0], Input::Bad(e) if e.starts_with("bad request")));
        assert!(matches!(out[1], Input::Request(Request::Ps)));
    }

    #[test]
    fn an_endless_line_is_fatal() {
        let mut input = vec![b'a'; MAX_REQUEST + 1];
        let out = take_requests(&mut input);
        assert!(matches!(out.as_slice(), [Input::Fatal(_)]));
        assert!(input.is_empty());
    }

    #[test]
    fn changes_are_refused_to_others_than_root() {
        let restart = Request::Restart {
            service: "web".into(),
        };
        assert_eq!(refused(&restart, true), None);
        assert_eq!(
            refused(&restart, false),
            Some(Response::Error {
                error: "permission denied: restarting a service needs root (sudo brigctl …)".into()
            })
        );
        assert_eq!(refused(&Request::Ps, false), None);
    }

    /// Sends `line` with `count` descriptors of `file` attached.
    fn send_with_fds(peer: &UnixStream, line: &[u8], count: usize, file: &Path) {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        let files: Vec<fs::File> = (0..count).map(|_| fs::File::open(file).unwrap()).collect();
        let fds: Vec<RawFd> = files.iter().map(|f| f.as_raw_fd()).collect();
        let control = [ControlMessage::ScmRights(&fds)];
        sendmsg::<()>(
            peer.as_raw_fd(),
            &[io::IoSlice::new(line)],
            &control,
            MsgFlags::empty(),
            None,
        )
        .unwrap();
    }

    /// How many of this process's descriptors are open on `file`.
    fn open_on(file: &Path) -> usize {
        fs::read_dir("/proc/self/fd")
            .unwrap()
            .flatten()
            .filter(|fd| fs::read_link(fd.path()).is_ok_and(|target| target == file))
            .count()
    }

    #[test]
    fn a_root_client_passes_one_file_and_no_client_makes_pid1_hold_more() {
        let (peer, ours) = UnixStream::pair().unwrap();
        let mut client = Client::new(ours).unwrap();
        client.root = true;
        let bundle = tempfile::NamedTempFile::new().unwrap();
        let line = b"{\"op\":\"os-upgrade-file\",\"name\":\"b\"}\n";
        send_with_fds(&peer, line, 1, bundle.path());
        assert!(matches!(
            client.read().as_slice(),
            [Input::Request(Request::OsUpgradeFile { name, .. })] if name == "b"
        ));
        assert!(client.passed.is_some());

        // A flood of descriptors, from root or not: none is kept beyond the
        // first, and the rest are closed, not leaked.
        for root in [true, false] {
            let (peer, ours) = UnixStream::pair().unwrap();
            let mut client = Client::new(ours).unwrap();
            client.root = root;
            // A path only: the temporary file is not held open.
            let flood = tempfile::NamedTempFile::new().unwrap().into_temp_path();
            for _ in 0..20 {
                send_with_fds(&peer, b"{\"op\":\"ps\"}\n", SCM_MAX_FD, &flood);
                client.read();
            }
            assert_eq!(client.passed.is_some(), root);
            assert_eq!(open_on(&flood), usize::from(root), "root {root}");
        }
    }

    #[test]
    fn descriptors_the_kernel_installs_in_a_cut_short_message_are_closed_too() {
        let (peer, ours) = UnixStream::pair().unwrap();
        let file = tempfile::NamedTempFile::new().unwrap().into_temp_path();
        send_with_fds(&peer, b"x", 8, &file);
        // Room for 4: the kernel installs 4, closes the rest, says MSG_CTRUNC.
        let mut control = [0u64; (16 + 4 * 4) / 8];
        let mut byte = [0u8; 1];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        // SAFETY: as in Client::receive, with this test's buffers.
        let mut header: libc::msghdr = unsafe { std::mem::zeroed() };
        header.msg_iov = &mut iov;
        header.msg_iovlen = 1;
        header.msg_control = control.as_mut_ptr().cast();
        header.msg_controllen = std::mem::size_of_val(&control) as _;
        // SAFETY: the buffers outlive the call.
        let n = unsafe { libc::recvmsg(ours.as_raw_fd(), &mut header, libc::MSG_CMSG_CLOEXEC) };
        assert_eq!(n, 1);
        assert_ne!(
            header.msg_flags & libc::MSG_CTRUNC,
            0,
            "the control data was cut"
        );
        let passed = passed_descriptors(&header);
        assert_eq!(passed.len(), 4);
        assert_eq!(open_on(&file), 4);
        drop(passed);
        assert_eq!(open_on(&file), 0);
    }

    #[test]
    fn a_client_over_a_real_socket() {
        let (mut peer, ours) = UnixStream::pair().unwrap();
        let mut client = Client::new(ours).unwrap();
        // The kernel's credentials of the peer: this test's own uid.
        assert_eq!(client.root, nix::unistd::getuid().is_root());
        assert!(client.read().is_empty());
        peer.write_all(b"{\"op\":\"reboot\"}\n").unwrap();
        assert!(matches!(
            client.read().as_slice(),
            [Input::Request(Request::Reboot)]
        ));
        assert!(client.send(&Response::Ok {
            message: "ok".into()
        }));
        let mut reply = [0u8; 64];
        let n = peer.read(&mut reply).unwrap();
        assert_eq!(&reply[..n], b"{\"type\":\"ok\",\"message\":\"ok\"}\n");
        drop(peer);
        assert!(matches!(client.read().as_slice(), [Input::Closed]));
    }
}
