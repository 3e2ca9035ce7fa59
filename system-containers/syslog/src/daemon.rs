//! The service loop: one thread, `ppoll(2)` over the syslog socket, the
//! kernel log, the query socket and its clients (`query_clients`). Every
//! record becomes an `Entry`, is stored, and is sent to the followers it
//! matches. SIGTERM (PID 1 stopping it) ends the loop after the records
//! waiting then are stored.

use std::sync::atomic::{AtomicBool, Ordering};

use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use brig_spec::failed::Failed;
use brig_spec::log_config::Remote;
use brig_spec::logs::Entry;

use crate::forward::{self, Forwarders};
use crate::kmsg;
use crate::message::{self, Record};
use crate::query_clients::QueryClients;
use crate::store::{Limits, Store};

pub struct Config {
    /// The syslog socket (`dev-log`), bound here, writable by everyone.
    pub syslog_socket: PathBuf,
    /// PID 1's socket: its notes and the services' output, the only lines
    /// taken as theirs (root's only, and shown to no other container).
    pub init_socket: PathBuf,
    /// The query socket, root's and the read-only group's.
    pub query_socket: PathBuf,
    pub store_dir: PathBuf,
    pub limits: Limits,
    /// /dev/kmsg, or none (tests).
    pub kmsg: Option<PathBuf>,
    /// Remote syslog servers to forward to.
    pub remotes: Vec<Remote>,
}

/// Set by SIGTERM.
static TERMINATED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_sigterm(_: libc::c_int) {
    TERMINATED.store(true, Ordering::Relaxed);
}

/// SIGTERM blocked, handled only while the loop waits (`ppoll` unblocks it
/// for the wait alone), so one arriving between a check and the wait is
/// not missed. As its container's first process, brig-logd would otherwise
/// ignore SIGTERM, and each shutdown waited out its stop grace.
fn take_sigterm() -> std::io::Result<libc::sigset_t> {
    // SAFETY: plain libc signal-set and sigaction calls on values owned
    // here; the handler only stores to an atomic (async-signal-safe).
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = on_sigterm as *const () as libc::sighandler_t;
        libc::sigemptyset(&mut action.sa_mask);
        if libc::sigaction(libc::SIGTERM, &action, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        let mut term: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut term);
        libc::sigaddset(&mut term, libc::SIGTERM);
        let mut old: libc::sigset_t = std::mem::zeroed();
        if libc::pthread_sigmask(libc::SIG_BLOCK, &term, &mut old) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        libc::sigdelset(&mut old, libc::SIGTERM);
        Ok(old)
    }
}

/// Runs until SIGTERM or killed; an error is a setup that failed (a
/// socket, the store), or poll itself.
pub fn run(config: &Config) -> Result<(), Failed> {
    let wait_mask = take_sigterm().map_err(|e| Failed::new("taking SIGTERM", e))?;
    let mut store = Store::open(&config.store_dir, config.limits).map_err(|e| {
        Failed::new(
            format!("opening the store {}", config.store_dir.display()),
            e,
        )
    })?;
    // Every program in every container may log; only PID 1 reaches the other.
    let syslog = bind_datagram(&config.syslog_socket, 0o666)?;
    let init = bind_datagram(&config.init_socket, 0o600)?;
    let _ = std::fs::remove_file(&config.query_socket);
    let listener = UnixListener::bind(&config.query_socket)
        .map_err(|e| Failed::new(format!("binding {}", config.query_socket.display()), e))?;
    // Root's, and the read-only group's (`brigctl logs` without sudo).
    if let Err(e) = brig_spec::control::open_to_read_only_group(&config.query_socket) {
        eprintln!(
            "brig-logd: error: {}: opening it to the read-only group: {e}",
            config.query_socket.display()
        );
    }
    listener
        .set_nonblocking(true)
        .map_err(|e| Failed::new(config.query_socket.display().to_string(), e))?;
    let mut kmsg = match &config.kmsg {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(path)
                .map_err(|e| Failed::new(format!("opening {}", path.display()), e))?,
        ),
        None => None,
    };
    eprintln!(
        "brig-logd: listening on {}, keeping logs in {}",
        config.syslog_socket.display(),
        config.store_dir.display()
    );
    let forwarders = Forwarders::start(&config.remotes, &|m| eprintln!("brig-logd: {m}"));
    let mut clients = QueryClients::default();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let mut fds = vec![
            pollfd(syslog.as_raw_fd()),
            pollfd(init.as_raw_fd()),
            pollfd(listener.as_raw_fd()),
        ];
        if let Some(k) = &kmsg {
            fds.push(pollfd(k.as_raw_fd()));
        }
        fds.extend(clients.pollfds());
        let timeout = clients.poll_timeout(Instant::now());
        let timespec = (timeout >= 0).then(|| libc::timespec {
            tv_sec: (timeout / 1000) as libc::time_t,
            tv_nsec: (timeout % 1000) as libc::c_long * 1_000_000,
        });
        // SAFETY: `fds` is a valid array of pollfd for its length; the
        // timeout and mask live across the call.
        let n = unsafe {
            libc::ppoll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                timespec
                    .as_ref()
                    .map_or(std::ptr::null(), |t| t as *const _),
                &wait_mask,
            )
        };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() != ErrorKind::Interrupted {
                return Err(Failed::new("poll", e));
            }
        }
        let mut new = Vec::new();
        // A bounded batch per turn, so one source cannot starve the others.
        for (socket, from_pid1) in [(&syslog, false), (&init, true)] {
            for _ in 0..256 {
                match socket.recv(&mut buf) {
                    Ok(len) => new.push(from_syslog(
                        &message::parse(&buf[..len]),
                        SystemTime::now(),
                        from_pid1,
                    )),
                    Err(_) => break,
                }
            }
        }
        if let Some(k) = &mut kmsg {
            for _ in 0..256 {
                match k.read(&mut buf) {
                    Ok(0) => break,
                    Ok(len) => {
                        if let Some(r) = kmsg::parse(&buf[..len]) {
                            new.push(from_kernel(&r));
                        }
                    }
                    // EPIPE: records were overwritten before we read them; go on.
                    Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
                    Err(_) => break,
                }
            }
        }
        for entry in &new {
            store.append(entry);
        }
        // The host name is read once a batch, and only for a batch to send.
        if !forwarders.is_empty() && !new.is_empty() {
            forwarders.send(&new, &forward::hostname());
        }
        let now = Instant::now();
        clients.publish(&new, now);
        // Served before the new ones are taken: those gone make room first
        // (a new one's request is read on the next turn, at once).
        clients.serve(&|query| store.read(&|e| query.matches(e), query.tail), now);
        clients.accept(&listener, now);
        if TERMINATED.load(Ordering::Relaxed) {
            eprintln!("brig-logd: stopping (SIGTERM)");
            return Ok(());
        }
    }
}

fn pollfd(fd: RawFd) -> libc::pollfd {
    libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    }
}

fn bind_datagram(path: &PathBuf, mode: u32) -> Result<UnixDatagram, Failed> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Failed::new(format!("creating {}", dir.display()), e))?;
    }
    let _ = std::fs::remove_file(path);
    let socket = UnixDatagram::bind(path)
        .map_err(|e| Failed::new(format!("binding {}", path.display()), e))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Failed::new(path.display().to_string(), e))?;
    socket
        .set_nonblocking(true)
        .map_err(|e| Failed::new(path.display().to_string(), e))?;
    // Room for bursts while the store writes.
    let size: libc::c_int = 4 << 20;
    // SAFETY: setsockopt with a pointer to a live c_int and its size.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&size as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
    Ok(socket)
}

/// A syslog record as stored: the sender's RFC 3339 time if it gave one
/// (PID 1's replayed lines carry when they were written), else now.
/// PID 1 marks its own lines and the services' output by MSGID.
/// A syslog record as an entry. Only what came on PID 1's socket
/// (`from_pid1`) is PID 1's or a service's by its MSGID; what came on
/// /dev/log is syslog, whatever it says it is.
pub fn from_syslog(record: &Record, received: SystemTime, from_pid1: bool) -> Entry {
    let time = record
        .timestamp
        .as_deref()
        .filter(|t| is_rfc3339(t))
        .map(str::to_string)
        .unwrap_or_else(|| message::rfc3339(received));
    let source = match record.msgid.as_deref() {
        Some("service") if from_pid1 => "service",
        Some("init") if from_pid1 => "init",
        _ => "syslog",
    };
    Entry {
        time,
        source: source.into(),
        priority: record.priority(),
        host: record.hostname.clone(),
        app: record.app.clone(),
        pid: record.pid.clone(),
        message: record.message.clone(),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` at least.
fn is_rfc3339(text: &str) -> bool {
    let b = text.as_bytes();
    b.len() >= 19
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && [0, 1, 2, 3, 5, 6, 8, 9, 11, 12, 14, 15, 17, 18]
            .iter()
            .all(|&i| b[i].is_ascii_digit())
}

/// A kernel record, dated from its monotonic stamp.
fn from_kernel(record: &kmsg::KernelRecord) -> Entry {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec to a live local.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let since_boot = Duration::new(now.tv_sec as u64, now.tv_nsec as u32);
    let age = since_boot.saturating_sub(Duration::from_micros(record.usec));
    let when = SystemTime::now().checked_sub(age).unwrap_or(UNIX_EPOCH);
    Entry {
        time: message::rfc3339(when),
        source: "kernel".into(),
        priority: record.priority,
        host: None,
        app: Some("kernel".into()),
        pid: None,
        message: record.message.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pid1_lines_keep_their_time_and_source() {
        let at = UNIX_EPOCH + Duration::from_secs(1_795_386_775);
        let r = message::parse(
            b"<30>1 2026-11-22T20:00:00.000001Z - network 412 service - bound 10.0.2.15",
        );
        let e = from_syslog(&r, at, true);
        assert_eq!(e.time, "2026-11-22T20:00:00.000001Z");
        assert_eq!(e.source, "service");
        assert_eq!(e.app.as_deref(), Some("network"));
        // The same line from anyone else is syslog.
        assert_eq!(from_syslog(&r, at, false).source, "syslog");
        let r = message::parse(b"<30>Nov 22 21:39:35 sshd[412]: hello");
        let e = from_syslog(&r, at, false);
        assert_eq!(
            e.time, "2026-11-22T22:32:55.000000Z",
            "3164 times have no year: received time"
        );
        assert_eq!(e.source, "syslog");
    }
}
