//! Forwarding to remote syslog servers (`brig.logging.remote`): each
//! server has a thread and a queue bounded in bytes. The service loop only
//! appends to the queues, so a slow or absent server never holds up
//! logging; when a queue is full its oldest messages go, and the server is
//! told how many once it is reached again. A lost connection is made anew
//! with backoff; what was queued meanwhile is sent then.
//!
//! Delivery is at least once for what is queued while the server is away,
//! and best effort for messages written just as it goes away (syslog over
//! TCP has no acknowledgements): before each write the connection is
//! checked for the server's close, which is how a server restart shows.

use std::collections::VecDeque;
use std::io::{self, ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::os::fd::AsRawFd;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::Duration;

use brig_spec::log_config::{Protocol, Remote};
use brig_spec::logs::Entry;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::message::{octet_counted, to_rfc5424};

/// The CA bundle of the container's `ca-certificates`.
pub const SYSTEM_CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const LAST_RETRY: Duration = Duration::from_secs(30);
/// What one write to a stream carries at most.
const BATCH: usize = 64 * 1024;

/// The forwarders of all configured servers.
pub struct Forwarders {
    queues: Vec<Arc<Shared>>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// Messages waiting for one server, RFC 5424 text.
struct Queue {
    messages: VecDeque<String>,
    bytes: u64,
    limit: u64,
    /// Dropped for want of room since the server last heard of it.
    dropped: u64,
    /// Taken from the front so far, dropped or delivered: tells a sender
    /// how much of what it sent is still queued.
    popped: u64,
}

impl Queue {
    fn new(limit: u64) -> Queue {
        Queue {
            messages: VecDeque::new(),
            bytes: 0,
            limit,
            dropped: 0,
            popped: 0,
        }
    }

    /// Appends, dropping the oldest beyond the bound.
    fn push(&mut self, message: String) {
        self.bytes += message.len() as u64;
        self.messages.push_back(message);
        while self.bytes > self.limit {
            match self.messages.pop_front() {
                Some(old) => {
                    self.bytes -= old.len() as u64;
                    self.dropped += 1;
                    self.popped += 1;
                }
                None => break,
            }
        }
    }

    /// The `n` messages from the front as it was at `popped == start` were
    /// delivered (those dropped since are gone already).
    fn delivered(&mut self, start: u64, n: usize) {
        let gone = (self.popped - start) as usize;
        let n = n.saturating_sub(gone).min(self.messages.len());
        for old in self.messages.drain(..n) {
            self.bytes -= old.len() as u64;
        }
        self.popped += n as u64;
    }
}

impl Forwarders {
    /// Starts a thread for each server whose settings are usable; the
    /// others are reported (`report`) and left out.
    pub fn start(remotes: &[Remote], report: &dyn Fn(String)) -> Forwarders {
        let mut queues = Vec::new();
        for remote in remotes {
            let tls = match remote.protocol {
                Protocol::Tls => match tls_config(remote) {
                    Ok(c) => Some(c),
                    Err(e) => {
                        report(format!(
                            "forwarding to {}: {e}; not forwarding there",
                            remote.url()
                        ));
                        continue;
                    }
                },
                _ => None,
            };
            let shared = Arc::new(Shared {
                queue: Mutex::new(Queue::new(remote.queue_size)),
                wake: Condvar::new(),
            });
            let worker = Worker {
                remote: remote.clone(),
                tls,
                shared: shared.clone(),
            };
            let spawned = thread::Builder::new()
                .name(format!("forward {}", remote.url()))
                .spawn(move || worker.run());
            match spawned {
                Ok(_) => {
                    report(format!(
                        "forwarding to {} (queue {} KiB)",
                        remote.url(),
                        remote.queue_size >> 10
                    ));
                    queues.push(shared);
                }
                Err(e) => report(format!(
                    "forwarding to {}: starting its thread: {e}",
                    remote.url()
                )),
            }
        }
        Forwarders { queues }
    }

    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Queues `entries` for every server, as from `hostname` when they do
    /// not name their host.
    pub fn send(&self, entries: &[Entry], hostname: &str) {
        let messages: Vec<String> = entries.iter().map(|e| to_rfc5424(e, hostname)).collect();
        for shared in &self.queues {
            let mut queue = shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            for m in &messages {
                queue.push(m.clone());
            }
            shared.wake.notify_one();
        }
    }
}

/// The machine's host name (the container shares the host's UTS namespace).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "-".into())
}

struct Worker {
    remote: Remote,
    tls: Option<Arc<ClientConfig>>,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self) {
        let url = self.remote.url();
        let mut retry = FIRST_RETRY;
        let mut last_error = String::new();
        loop {
            let mut link = match self.connect() {
                Ok(link) => link,
                Err(e) => {
                    let e = e.to_string();
                    // Said once, not at every retry.
                    if e != last_error {
                        eprintln!("brig-logd: forwarding to {url}: {e}; trying again");
                        last_error = e;
                    }
                    thread::sleep(retry);
                    retry = (retry * 2).min(LAST_RETRY);
                    continue;
                }
            };
            if !last_error.is_empty() {
                eprintln!("brig-logd: forwarding to {url}: connected");
                last_error.clear();
            }
            retry = FIRST_RETRY;
            if let Err(e) = self.serve(&mut link) {
                eprintln!("brig-logd: forwarding to {url}: {e}; connecting again");
                last_error = e.to_string();
            }
        }
    }

    fn connect(&self) -> io::Result<Link> {
        let addresses: Vec<SocketAddr> = (self.remote.host.as_str(), self.remote.port)
            .to_socket_addrs()
            .map_err(|e| io::Error::new(e.kind(), format!("resolving {}: {e}", self.remote.host)))?
            .collect();
        let mut last = io::Error::new(ErrorKind::NotFound, "no address");
        for address in addresses {
            let connected = match self.remote.protocol {
                Protocol::Udp => udp(address).map(Link::Udp),
                Protocol::Tcp => tcp(address).map(Link::Tcp),
                Protocol::Tls => tcp(address).and_then(|s| self.handshake(s)),
            };
            match connected {
                Ok(link) => return Ok(link),
                Err(e) => last = io::Error::new(e.kind(), format!("{address}: {e}")),
            }
        }
        Err(last)
    }

    fn handshake(&self, socket: TcpStream) -> io::Result<Link> {
        let config = self
            .tls
            .clone()
            .ok_or_else(|| io::Error::other("no TLS settings"))?;
        let name = self
            .remote
            .server_name
            .clone()
            .unwrap_or_else(|| self.remote.host.clone());
        let name = ServerName::try_from(name.clone())
            .map_err(|_| io::Error::other(format!("{name:?} is not a server name")))?;
        let connection = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut stream = StreamOwned::new(connection, socket);
        // Now rather than at the first write, so that a certificate the
        // client does not trust is reported as such.
        while stream.conn.is_handshaking() {
            stream
                .conn
                .complete_io(&mut stream.sock)
                .map_err(|e| io::Error::new(e.kind(), format!("TLS handshake: {e}")))?;
        }
        Ok(Link::Tls(Box::new(stream)))
    }

    /// Sends what is queued as it comes, until the connection fails.
    fn serve(&self, link: &mut Link) -> io::Result<()> {
        loop {
            let (batch, start, dropped) = {
                let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                while queue.messages.is_empty() {
                    let (q, _) = self
                        .shared
                        .wake
                        .wait_timeout(queue, Duration::from_secs(5))
                        .unwrap_or_else(|p| p.into_inner());
                    queue = q;
                    if queue.messages.is_empty() {
                        // Idle: notice a server that went away now, not
                        // with the next message.
                        drop(queue);
                        link.check()?;
                        queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                    }
                }
                let mut size = 0;
                let count = queue
                    .messages
                    .iter()
                    .take_while(|m| {
                        size += m.len() + 8;
                        size <= BATCH
                    })
                    .count()
                    .max(1);
                let batch: Vec<String> = queue.messages.iter().take(count).cloned().collect();
                (batch, queue.popped, queue.dropped)
            };
            link.check()?;
            if dropped > 0 {
                let note = to_rfc5424(
                    &Entry {
                        time: brig_spec::logs::rfc3339(std::time::SystemTime::now()),
                        source: "syslog".into(),
                        priority: 5 * 8 + 4, // syslog.warning
                        host: None,
                        app: Some("brig-logd".into()),
                        pid: None,
                        message: format!(
                            "{dropped} messages were dropped while the server could not be reached (queue of {} KiB full)",
                            self.remote.queue_size >> 10
                        ),
                    },
                    &hostname(),
                );
                link.send(&[note])?;
                let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
                queue.dropped -= dropped;
            }
            link.send(&batch)?;
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.delivered(start, batch.len());
        }
    }
}

/// A connection to one server.
enum Link {
    Udp(UdpSocket),
    Tcp(TcpStream),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

impl Link {
    fn send(&mut self, messages: &[String]) -> io::Result<()> {
        match self {
            Link::Udp(socket) => {
                // One message a datagram (messages are cut at 8 KiB when
                // received, far below a datagram's limit).
                for m in messages {
                    socket.send(m.as_bytes())?;
                }
                Ok(())
            }
            Link::Tcp(stream) => stream.write_all(&frames(messages)),
            Link::Tls(stream) => {
                stream.write_all(&frames(messages))?;
                stream.flush()
            }
        }
    }

    /// Fails if the server has closed the connection (or a datagram
    /// came back refused).
    fn check(&mut self) -> io::Result<()> {
        match self {
            Link::Udp(socket) => match socket.take_error()? {
                Some(e) => Err(e),
                None => Ok(()),
            },
            Link::Tcp(stream) => match peek(stream)? {
                Peek::Closed => Err(closed()),
                Peek::Nothing | Peek::Data => Ok(()),
            },
            Link::Tls(stream) => match peek(&stream.sock)? {
                Peek::Closed => Err(closed()),
                Peek::Nothing => Ok(()),
                // Session tickets, or the server's close_notify.
                Peek::Data => {
                    stream.sock.set_nonblocking(true)?;
                    let read = stream.conn.read_tls(&mut stream.sock);
                    stream.sock.set_nonblocking(false)?;
                    read?;
                    let state = stream
                        .conn
                        .process_new_packets()
                        .map_err(io::Error::other)?;
                    if state.peer_has_closed() {
                        return Err(closed());
                    }
                    // Plaintext from a syslog server is not expected; discard it.
                    let mut sink = vec![0; state.plaintext_bytes_to_read()];
                    let _ = stream.conn.reader().read(&mut sink);
                    Ok(())
                }
            },
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(
        ErrorKind::ConnectionReset,
        "the server closed the connection",
    )
}

enum Peek {
    Nothing,
    Data,
    Closed,
}

/// Looks at the socket without waiting or taking anything.
fn peek(stream: &TcpStream) -> io::Result<Peek> {
    let mut byte = 0u8;
    // SAFETY: recv into one live byte of ours, on a socket we own.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&mut byte as *mut u8).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    match n {
        0 => Ok(Peek::Closed),
        n if n > 0 => Ok(Peek::Data),
        _ => {
            let e = io::Error::last_os_error();
            match e.kind() {
                ErrorKind::WouldBlock | ErrorKind::Interrupted => Ok(Peek::Nothing),
                _ => Err(e),
            }
        }
    }
}

fn frames(messages: &[String]) -> Vec<u8> {
    messages.iter().flat_map(|m| octet_counted(m)).collect()
}

fn udp(address: SocketAddr) -> io::Result<UdpSocket> {
    let local: SocketAddr = if address.is_ipv4() {
        "0.0.0.0:0".parse().expect("an address")
    } else {
        "[::]:0".parse().expect("an address")
    };
    let socket = UdpSocket::bind(local)?;
    // Connected, so that a refusal (ICMP) comes back as an error.
    socket.connect(address)?;
    Ok(socket)
}

fn tcp(address: SocketAddr) -> io::Result<TcpStream> {
    let stream = TcpStream::connect_timeout(&address, CONNECT_TIMEOUT)?;
    stream.set_write_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_read_timeout(Some(WRITE_TIMEOUT))?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The TLS client settings for `remote`: its CA certificates or the
/// system's, and its client certificate if it has one.
fn tls_config(remote: &Remote) -> Result<Arc<ClientConfig>, String> {
    let ca_pem = match &remote.ca {
        Some(pem) => pem.clone().into_bytes(),
        None => std::fs::read(SYSTEM_CA_BUNDLE)
            .map_err(|e| format!("no `ca` given and reading {SYSTEM_CA_BUNDLE}: {e}"))?,
    };
    let mut roots = RootCertStore::empty();
    let certs: Vec<CertificateDer> = CertificateDer::pem_slice_iter(&ca_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("`ca`: {e}"))?;
    let (added, _) = roots.add_parsable_certificates(certs);
    if added == 0 {
        return Err("`ca`: no usable CA certificate in it".into());
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots);
    let config = match (&remote.cert, &remote.key) {
        (Some(cert), Some(key)) => {
            let chain: Vec<CertificateDer<'static>> =
                CertificateDer::pem_slice_iter(cert.as_bytes())
                    .collect::<Result<_, _>>()
                    .map_err(|e| format!("`cert`: {e}"))?;
            if chain.is_empty() {
                return Err("`cert`: no certificate in it".into());
            }
            let key =
                PrivateKeyDer::from_pem_slice(key.as_bytes()).map_err(|e| format!("`key`: {e}"))?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| format!("`cert` and `key`: {e}"))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_queue_drops_its_oldest_and_counts_them() {
        let mut q = Queue::new(25);
        for m in ["aaaaaaaaaa", "bbbbbbbbbb", "cccccccccc"] {
            q.push(m.into());
        }
        assert_eq!(q.messages, ["bbbbbbbbbb", "cccccccccc"]);
        assert_eq!((q.bytes, q.dropped), (20, 1));
        // "bbbbbbbbbb" sent; meanwhile it was dropped for a newer one.
        let start = q.popped;
        q.push("dddddddddd".into());
        q.delivered(start, 1);
        assert_eq!(q.messages, ["cccccccccc", "dddddddddd"]);
        q.delivered(q.popped, 1);
        assert_eq!((q.messages.len(), q.bytes), (1, 10));
        // One message larger than the bound is not kept.
        q.push("x".repeat(30));
        assert!(q.messages.is_empty() && q.bytes == 0);
        assert_eq!(q.dropped, 4);
    }

    #[test]
    fn tcp_frames_count_octets() {
        assert_eq!(
            frames(&["<13>1 a".into(), "<13>1 é".into()]),
            b"7 <13>1 a8 <13>1 \xc3\xa9"
        );
    }
}
