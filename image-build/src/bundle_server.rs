//! `brig bundle serve DIR`: the update bundles in DIR over plain HTTP, for
//! machines running `brigctl os upgrade http://…` or following
//! `brig.update.url` (docs/updates.md). Plain HTTP is enough: a bundle is
//! signed, and a machine checks it whole before it writes anything.
//!
//! GET and HEAD of a file directly in DIR, by a plain name; nothing else.
//! One thread per connection, each connection one request.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};

/// A request's head may be this long, at most.
const MAX_HEAD: u64 = 8 << 10;
/// A client that sends nothing, or takes nothing, for this long is dropped.
const IDLE: Duration = Duration::from_secs(60);

/// Serves `dir` on `listener` until the process ends; each request is
/// logged on stderr.
pub fn serve(dir: &Path, listener: TcpListener) -> Result<()> {
    let dir = dir
        .canonicalize()
        .with_context(|| format!("serving {}", dir.display()))?;
    for stream in listener.incoming() {
        let Ok(stream) = stream else { continue };
        let dir = dir.clone();
        std::thread::spawn(move || {
            let peer = stream
                .peer_addr()
                .map_or_else(|_| "?".into(), |a| a.to_string());
            match answer(&dir, stream) {
                Ok(line) => eprintln!("{peer} {line}"),
                Err(e) => eprintln!("{peer} {e:#}"),
            }
        });
    }
    Ok(())
}

/// What a request asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Wanted {
    /// GET (true) or HEAD (false) of this file name.
    File { name: String, body: bool },
    /// Answered with this status line and nothing else.
    Refused(&'static str),
}

/// Reads a request line (`GET /name HTTP/1.1`) for a file directly in
/// the directory: a plain name, no `..`, no escapes, no query.
pub fn parse_request_line(line: &str) -> Wanted {
    let mut words = line.split_whitespace();
    let (Some(method), Some(target), Some(version)) = (words.next(), words.next(), words.next())
    else {
        return Wanted::Refused("400 Bad Request");
    };
    if !version.starts_with("HTTP/1.") || words.next().is_some() {
        return Wanted::Refused("400 Bad Request");
    }
    let body = match method {
        "GET" => true,
        "HEAD" => false,
        _ => return Wanted::Refused("405 Method Not Allowed"),
    };
    let Some(name) = target.strip_prefix('/') else {
        return Wanted::Refused("400 Bad Request");
    };
    let plain = !name.is_empty()
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+'));
    if !plain {
        return Wanted::Refused("404 Not Found");
    }
    Wanted::File {
        name: name.to_string(),
        body,
    }
}

/// Answers one connection; the line to log.
fn answer(dir: &Path, stream: TcpStream) -> Result<String> {
    stream.set_read_timeout(Some(IDLE))?;
    stream.set_write_timeout(Some(IDLE))?;
    let mut reader = BufReader::new((&stream).take(MAX_HEAD));
    let mut line = String::new();
    reader.read_line(&mut line).context("reading the request")?;
    // The headers, up to the blank line (none of them matters here).
    loop {
        let mut header = String::new();
        if reader.read_line(&mut header)? == 0 || header.trim().is_empty() {
            break;
        }
    }
    let request = line.trim().to_string();
    let mut out = &stream;
    let (name, body) = match parse_request_line(&request) {
        Wanted::File { name, body } => (name, body),
        Wanted::Refused(status) => {
            write!(
                out,
                "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )?;
            return Ok(format!("{request:?} {status}"));
        }
    };
    let path: PathBuf = dir.join(&name);
    let file = File::open(&path)
        .ok()
        .filter(|f| f.metadata().is_ok_and(|m| m.is_file()));
    let Some(mut file) = file else {
        write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        )?;
        return Ok(format!("{request:?} 404 Not Found"));
    };
    let length = file.metadata()?.len();
    write!(
        out,
        "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {length}\r\nConnection: close\r\n\r\n"
    )?;
    if body {
        std::io::copy(&mut file, &mut out).with_context(|| format!("sending {name}"))?;
    }
    out.flush()?;
    Ok(format!("{request:?} 200 ({} MiB)", length >> 20))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_names_in_the_directory_are_asked_for() {
        assert_eq!(
            parse_request_line("GET /brig-pc-x86_64-0.2.0.bundle HTTP/1.1"),
            Wanted::File {
                name: "brig-pc-x86_64-0.2.0.bundle".into(),
                body: true
            }
        );
        assert_eq!(
            parse_request_line("HEAD /b.bundle HTTP/1.0"),
            Wanted::File {
                name: "b.bundle".into(),
                body: false
            }
        );
        for (line, status) in [
            ("GET /../etc/passwd HTTP/1.1", "404 Not Found"),
            ("GET /%2e%2e/x HTTP/1.1", "404 Not Found"),
            ("GET /.hidden HTTP/1.1", "404 Not Found"),
            ("GET / HTTP/1.1", "404 Not Found"),
            ("GET /dir/file HTTP/1.1", "404 Not Found"),
            ("POST /b.bundle HTTP/1.1", "405 Method Not Allowed"),
            ("GET b.bundle HTTP/1.1", "400 Bad Request"),
            ("GET /b.bundle", "400 Bad Request"),
            ("", "400 Bad Request"),
        ] {
            assert_eq!(
                parse_request_line(line),
                Wanted::Refused(status),
                "{line:?}"
            );
        }
    }

    /// A real server on a loopback port, asked as a machine asks it.
    #[test]
    fn a_file_is_served_whole_and_nothing_outside_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        let served = dir.path().join("served");
        std::fs::create_dir(&served).unwrap();
        let data: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(served.join("b.bundle"), &data).unwrap();
        std::fs::write(dir.path().join("secret"), b"not served").unwrap();
        std::fs::create_dir(served.join("sub")).unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || serve(&served, listener));
        let ask = |line: &str| {
            let mut stream = TcpStream::connect(address).unwrap();
            write!(stream, "{line}\r\nHost: x\r\n\r\n").unwrap();
            let mut reply = Vec::new();
            stream.read_to_end(&mut reply).unwrap();
            reply
        };
        let reply = ask("GET /b.bundle HTTP/1.1");
        let head_end = reply.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
        let head = String::from_utf8_lossy(&reply[..head_end]).into_owned();
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
        assert!(head.contains("Content-Length: 300000\r\n"), "{head}");
        assert!(reply[head_end..] == data[..], "the body is not the file");
        let reply = ask("HEAD /b.bundle HTTP/1.1");
        assert!(reply.ends_with(b"Content-Length: 300000\r\nConnection: close\r\n\r\n"));
        for line in [
            "GET /../secret HTTP/1.1",
            "GET /secret HTTP/1.1",
            "GET /sub HTTP/1.1",
        ] {
            let reply = String::from_utf8(ask(line)).unwrap();
            assert!(
                reply.starts_with("HTTP/1.1 404 Not Found\r\n"),
                "{line}: {reply}"
            );
        }
    }
}
