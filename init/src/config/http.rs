//! A minimal HTTP/1.1 client for the datasources reached over the network
//! (the EC2 metadata service, `ds=nocloud;s=` seeds, `brig.config=` URLs):
//! plain `http://` only, one request per connection, bounded time and size.
//! Request framing and response parsing are pure, so they are unit tested.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

/// Larger answers are refused: user data is at most a few hundred KiB.
pub const MAX_BODY: usize = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// With the leading slash, and the query if any.
    pub path: String,
}

impl Url {
    pub fn parse(text: &str) -> Result<Url, String> {
        if text.starts_with("https://") {
            return Err(format!(
                "{text}: https is not supported (PID 1 carries no TLS); use http:// on a network you trust, or a local datasource"
            ));
        }
        let rest = text
            .strip_prefix("http://")
            .ok_or_else(|| format!("{text}: not an http:// URL"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let invalid = || format!("{text}: not a valid http:// URL");
        let (host, port) = match authority.strip_prefix('[') {
            // [IPv6] or [IPv6]:port
            Some(bracketed) => {
                let (host, after) = bracketed.split_once(']').ok_or_else(invalid)?;
                match after {
                    "" => (host, None),
                    a => (host, Some(a.strip_prefix(':').ok_or_else(invalid)?)),
                }
            }
            None => match authority.split_once(':') {
                Some((host, port)) => (host, Some(port)),
                None => (authority, None),
            },
        };
        let port = match port {
            Some(p) => p
                .parse()
                .map_err(|_| format!("{text}: {p:?} is not a port"))?,
            None => 80,
        };
        let safe = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if host.is_empty() || !safe(host) || !safe(path) || authority.contains('@') {
            return Err(invalid());
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }

    /// `path` resolved against this URL: absolute paths replace it, others
    /// are appended to its directory (as a seed URL ending in `/`).
    pub fn join(&self, path: &str) -> Url {
        let path = if path.starts_with('/') {
            path.to_string()
        } else {
            let dir = &self.path[..self.path.rfind('/').map_or(0, |i| i + 1)];
            format!("{dir}{path}")
        };
        Url {
            path,
            ..self.clone()
        }
    }
}

impl std::fmt::Display for Url {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}{}", self.host, self.port, self.path)
        } else {
            write!(f, "http://{}:{}{}", self.host, self.port, self.path)
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The bytes of a request with no body but `headers`.
pub fn request_bytes(method: &str, url: &Url, headers: &[(&str, &str)]) -> Vec<u8> {
    let host = if url.host.contains(':') {
        format!("[{}]", url.host)
    } else {
        url.host.clone()
    };
    let mut text = format!(
        "{method} {} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: brig-init\r\nAccept: */*\r\nConnection: close\r\n",
        url.path
    );
    if method == "PUT" || method == "POST" {
        text += "Content-Length: 0\r\n";
    }
    for (name, value) in headers {
        text += &format!("{name}: {value}\r\n");
    }
    text += "\r\n";
    text.into_bytes()
}

/// Parses a whole response (the connection was closed after it).
pub fn parse_response(data: &[u8]) -> Result<Response, String> {
    let end = data
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("the response ended inside its headers")?;
    let head = String::from_utf8_lossy(&data[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = status_code(status_line)?;
    let mut length = None;
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            length = Some(
                value
                    .parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {value:?}"))?,
            );
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.eq_ignore_ascii_case("chunked");
        }
    }
    let rest = &data[end + 4..];
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n)
            .ok_or_else(|| format!("the body ended after {} of {n} bytes", rest.len()))?
            .to_vec()
    } else {
        rest.to_vec()
    };
    Ok(Response { status, body })
}

/// `HTTP/1.1 200 OK` → 200.
fn status_code(line: &str) -> Result<u16, String> {
    line.strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP status line: {line:?}"))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    loop {
        let line_end = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("a chunk size line is cut off")?;
        let size_text = String::from_utf8_lossy(&data[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[line_end + 2..];
        if size == 0 {
            return Ok(body);
        }
        let chunk = data.get(..size).ok_or("a chunk is cut off")?;
        body.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("a chunk is cut off")?;
    }
}

/// Sends one request and reads the whole response: each step within
/// `timeout`, and all of it by `deadline`, so a server that trickles its
/// answer a byte at a time cannot hold the caller longer.
pub fn fetch(
    method: &str,
    url: &Url,
    headers: &[(&str, &str)],
    timeout: Duration,
    deadline: Instant,
) -> Result<Response, String> {
    // What is left of both bounds for the next step; none left is an error.
    let step = || -> io::Result<Duration> {
        match deadline.checked_duration_since(Instant::now()) {
            Some(left) if !left.is_zero() => Ok(timeout.min(left)),
            _ => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the whole exchange took longer than its deadline",
            )),
        }
    };
    let addresses: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("{url}: looking up {}: {e}", url.host))?
        .collect();
    let mut last = format!("{url}: no address for {}", url.host);
    for address in addresses {
        let connected = step().and_then(|within| TcpStream::connect_timeout(&address, within));
        let mut stream = match connected {
            Ok(s) => s,
            Err(e) => {
                last = format!("{url}: connecting to {address}: {e}");
                continue;
            }
        };
        let mut exchange = || -> io::Result<Vec<u8>> {
            stream.set_write_timeout(Some(step()?))?;
            stream.write_all(&request_bytes(method, url, headers))?;
            let mut data = Vec::new();
            let mut buf = [0u8; 16384];
            loop {
                stream.set_read_timeout(Some(step()?))?;
                match stream.read(&mut buf) {
                    Ok(0) => return Ok(data),
                    Ok(n) => data.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    // A read cut short by the deadline is the deadline's.
                    Err(e)
                        if matches!(
                            e.kind(),
                            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        ) && Instant::now() >= deadline =>
                    {
                        step()?;
                    }
                    Err(e) => return Err(e),
                }
                if data.len() > MAX_BODY + 64 * 1024 {
                    return Err(io::Error::other(format!(
                        "the answer is larger than {} MiB",
                        MAX_BODY >> 20
                    )));
                }
            }
        };
        let data = exchange().map_err(|e| format!("{method} {url}: {e}"))?;
        return parse_response(&data).map_err(|e| format!("{method} {url}: {e}"));
    }
    Err(last)
}

/// A body read as it arrives (an update bundle: too large to hold),
/// each read within `timeout`; its length from Content-Length.
pub struct Download {
    pub length: u64,
    body: io::Chain<io::Cursor<Vec<u8>>, io::Take<TcpStream>>,
}

impl Read for Download {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.body.read(buf)
    }
}

/// GETs `url` and returns its body as a stream once the headers are in:
/// status 200 and a Content-Length (chunked answers are refused, so that a
/// cut connection shows as a short body, never as a complete one).
pub fn download(url: &Url, timeout: Duration) -> Result<Download, String> {
    let addresses: Vec<_> = (url.host.as_str(), url.port)
        .to_socket_addrs()
        .map_err(|e| format!("{url}: looking up {}: {e}", url.host))?
        .collect();
    let address = addresses
        .first()
        .ok_or_else(|| format!("{url}: no address for {}", url.host))?;
    let fail = |e: io::Error| format!("GET {url}: {e}");
    let mut stream = TcpStream::connect_timeout(address, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    stream
        .write_all(&request_bytes("GET", url, &[]))
        .map_err(fail)?;
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    let end = loop {
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            break end;
        }
        if head.len() > 64 * 1024 {
            return Err(format!("GET {url}: headers longer than 64 KiB"));
        }
        match stream.read(&mut buf) {
            Ok(0) => return Err(format!("GET {url}: the answer ended inside its headers")),
            Ok(n) => head.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(fail(e)),
        }
    };
    let rest = head.split_off(end + 4);
    let text = String::from_utf8_lossy(&head[..end]).into_owned();
    let status_line = text.split("\r\n").next().unwrap_or_default();
    let status = status_code(status_line).map_err(|e| format!("GET {url}: {e}"))?;
    if status != 200 {
        return Err(format!("GET {url}: the server answered {status_line:?}"));
    }
    let header = |wanted: &str| {
        text.split("\r\n").skip(1).find_map(|l| {
            let (name, value) = l.split_once(':')?;
            name.eq_ignore_ascii_case(wanted)
                .then(|| value.trim().to_string())
        })
    };
    if header("transfer-encoding").is_some() {
        return Err(format!(
            "GET {url}: the server sent the body chunked; serve the file with a Content-Length"
        ));
    }
    let length: u64 = header("content-length")
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("GET {url}: the answer has no Content-Length"))?;
    let already = rest.len() as u64;
    Ok(Download {
        length,
        body: io::Cursor::new(rest).chain(stream.take(length.saturating_sub(already))),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        let u = Url::parse("http://169.254.169.254/latest/api/token").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("169.254.169.254", 80, "/latest/api/token")
        );
        let u = Url::parse("http://seed.example:8080").unwrap();
        assert_eq!((u.port, u.path.as_str()), (8080, "/"));
        let u = Url::parse("http://[fd00:ec2::254]/latest/").unwrap();
        assert_eq!((u.host.as_str(), u.port), ("fd00:ec2::254", 80));
        assert_eq!(u.to_string(), "http://[fd00:ec2::254]:80/latest/");
        assert!(Url::parse("https://x/")
            .unwrap_err()
            .contains("https is not supported"));
        assert!(Url::parse("ftp://x/").is_err());
        assert!(Url::parse("http://user@x/").is_err());
        assert!(Url::parse("http://x:99999/").is_err());
        assert!(Url::parse("http://x/a b").is_err());
        let seed = Url::parse("http://10.0.2.2:8000/seeds/node1/").unwrap();
        assert_eq!(seed.join("user-data").path, "/seeds/node1/user-data");
        assert_eq!(seed.join("/other").path, "/other");
    }

    #[test]
    fn requests_and_responses() {
        let u = Url::parse("http://169.254.169.254/latest/api/token").unwrap();
        let text = String::from_utf8(request_bytes(
            "PUT",
            &u,
            &[("X-aws-ec2-metadata-token-ttl-seconds", "21600")],
        ))
        .unwrap();
        assert!(text.starts_with("PUT /latest/api/token HTTP/1.1\r\nHost: 169.254.169.254\r\n"));
        assert!(text.contains("Content-Length: 0\r\n"));
        assert!(text.ends_with("X-aws-ec2-metadata-token-ttl-seconds: 21600\r\n\r\n"));

        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello"[..]));
        let r = parse_response(b"HTTP/1.0 404 Not Found\r\n\r\nnope").unwrap();
        assert_eq!((r.status, r.body.as_slice()), (404, &b"nope"[..]));
        let r = parse_response(
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n",
        )
        .unwrap();
        assert_eq!(r.body, b"hello world");
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").is_err());
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\nContent-Le").is_err());
    }

    /// A server on loopback that answers one GET with `answer`, then
    /// closes.
    fn serve_once(answer: Vec<u8>) -> Url {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            let _ = conn.write_all(&answer);
        });
        Url::parse(&format!("http://127.0.0.1:{port}/b.bundle")).unwrap()
    }

    #[test]
    fn a_download_streams_its_body_and_a_cut_one_comes_out_short() {
        let body: Vec<u8> = (0..300_000u32).map(|i| (i % 253) as u8).collect();
        let mut answer =
            format!("HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        answer.extend_from_slice(&body);
        let mut whole = download_of(answer.clone());
        assert_eq!(whole.length, 300_000);
        let mut got = Vec::new();
        whole.read_to_end(&mut got).unwrap();
        assert_eq!(got, body);

        answer.truncate(answer.len() - 1000);
        let mut cut = download_of(answer);
        let mut got = Vec::new();
        cut.read_to_end(&mut got).unwrap();
        assert_eq!(got.len(), 299_000, "short, never padded");

        let refused = |answer: &[u8]| {
            download(&serve_once(answer.to_vec()), Duration::from_secs(5))
                .err()
                .unwrap()
        };
        let e = refused(b"HTTP/1.1 404 Not Found\r\n\r\n");
        assert!(e.contains("404 Not Found"), "{e}");
        let e = refused(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n");
        assert!(e.contains("Content-Length"), "{e}");
    }

    fn download_of(answer: Vec<u8>) -> Download {
        download(&serve_once(answer), Duration::from_secs(5)).unwrap()
    }

    #[test]
    fn a_real_exchange_on_loopback() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut request = Vec::new();
            let mut buf = [0u8; 1024];
            while !request.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = conn.read(&mut buf).unwrap();
                request.extend_from_slice(&buf[..n]);
            }
            conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                .unwrap();
            String::from_utf8(request).unwrap()
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/latest/user-data")).unwrap();
        let r = fetch(
            "GET",
            &url,
            &[("X-aws-ec2-metadata-token", "t0k")],
            Duration::from_secs(5),
            Instant::now() + Duration::from_secs(30),
        )
        .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]));
        let request = server.join().unwrap();
        assert!(
            request.starts_with("GET /latest/user-data HTTP/1.1\r\n"),
            "{request}"
        );
        assert!(
            request.contains("X-aws-ec2-metadata-token: t0k\r\n"),
            "{request}"
        );
    }

    #[test]
    fn a_server_that_trickles_its_answer_is_given_up_on_at_the_deadline() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        // A byte every 100 ms, each well within the per-read timeout, for
        // up to 20 s: far past the deadline below, and bounded.
        let server = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n"
                .iter()
                .cycle()
                .take(200)
            {
                if conn.write_all(&[*byte]).is_err() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
        });
        let url = Url::parse(&format!("http://127.0.0.1:{port}/user-data")).unwrap();
        let deadline = Instant::now() + Duration::from_millis(1500);
        let e = fetch("GET", &url, &[], Duration::from_secs(1), deadline).unwrap_err();
        assert!(e.contains("took longer than its deadline"), "{e}");
        server.join().unwrap();
    }
}
