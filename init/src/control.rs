//! The control socket's connection handling: non-blocking reads into a
//! buffer, one JSON request per line, bounded length; responses written
//! without blocking (a client that does not read its responses is dropped).
//! PID 1 never blocks on a client and survives any input.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;

use brig_spec::control::{Request, Response, MAX_REQUEST};

pub struct Client {
    pub stream: UnixStream,
    /// Connected as root (peer credentials): may change things, not only
    /// read them.
    pub root: bool,
    input: Vec<u8>,
    /// `logs -f`: the service whose new lines this client receives.
    pub follow: Option<String>,
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
        })
    }

    /// Reads what is available and returns the complete requests in it.
    pub fn read(&mut self) -> Vec<Input> {
        let mut buf = [0u8; 4096];
        let mut closed = false;
        loop {
            match self.stream.read(&mut buf) {
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

    /// Sends one response line; false if the client is gone or not reading.
    pub fn send(&mut self, response: &Response) -> bool {
        let mut line = serde_json::to_vec(response)
            .unwrap_or_else(|_| b"{\"type\":\"error\",\"error\":\"encoding\"}".to_vec());
        line.push(b'\n');
        matches!(self.stream.write_all(&line), Ok(()))
    }
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

#[cfg(test)]
mod tests {
    use super::*;

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
