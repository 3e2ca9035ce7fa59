//! The query socket's clients (`brigctl logs`), open to the read-only
//! group: none of them can hold up logging. Nothing is waited for — a
//! request line is read as it comes, what a client is owed (the history
//! it asked for, then, following, new lines) is written as fast as it
//! reads — and what they can take is bounded: so many clients, so long to
//! send the request or to take some of what is owed, so many bytes owed.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::time::{Duration, Instant};

use brig_spec::logs::{Entry, Query};

/// Clients at once; one more is let go at once.
pub const MAX_CLIENTS: usize = 32;
/// The longest request line.
const MAX_REQUEST: usize = 64 * 1024;
/// To send the request line in, and then to read some of what is owed.
const PATIENCE: Duration = Duration::from_secs(5);
/// Owed to all clients together; a query whose history would go over it
/// is told to try later (a history is at most the store, but clients that
/// do not read would each hold one).
const MAX_OWED: usize = 64 << 20;
/// Owed to one follower in new lines before it counts as not keeping up.
const MAX_FOLLOWER_OWED: usize = 1 << 20;

struct Client {
    stream: UnixStream,
    /// The request line, until it has come.
    input: Vec<u8>,
    /// Once asked: what the client asked for.
    query: Option<Query>,
    /// Bytes owed; `sent` of them are written.
    owed: Vec<u8>,
    sent: usize,
    /// By when the request, or some reading of what is owed, must come.
    deadline: Option<Instant>,
}

impl Client {
    fn owes(&self) -> usize {
        self.owed.len() - self.sent
    }

    fn done(&self) -> bool {
        self.owes() == 0 && self.query.as_ref().is_some_and(|q| !q.follow)
    }
}

#[derive(Default)]
pub struct QueryClients {
    clients: Vec<Client>,
}

impl QueryClients {
    /// What to poll each client for: its request, or its going (readable),
    /// and its debt (writable).
    pub fn pollfds(&self) -> Vec<libc::pollfd> {
        self.clients
            .iter()
            .map(|c| libc::pollfd {
                fd: c.stream.as_raw_fd(),
                events: if c.owes() > 0 {
                    libc::POLLIN | libc::POLLOUT
                } else {
                    libc::POLLIN
                },
                revents: 0,
            })
            .collect()
    }

    /// How long poll may sleep: until the nearest deadline.
    pub fn poll_timeout(&self, now: Instant) -> libc::c_int {
        self.clients
            .iter()
            .filter_map(|c| c.deadline)
            .min()
            .map_or(-1, |d| {
                d.saturating_duration_since(now)
                    .as_millis()
                    .saturating_add(1)
                    .min(60_000) as libc::c_int
            })
    }

    /// Takes the connections waiting on `listener`; past the limit they
    /// are told so and closed.
    pub fn accept(&mut self, listener: &UnixListener, now: Instant) {
        while let Ok((mut stream, _)) = listener.accept() {
            if stream.set_nonblocking(true).is_err() {
                continue;
            }
            if self.clients.len() >= MAX_CLIENTS {
                let busy = format!("busy: {MAX_CLIENTS} clients of the log at once; try again");
                // A new socket's buffer takes the line: never waited for.
                let _ = stream.write_all(&error_line(&busy));
                continue;
            }
            self.clients.push(Client {
                stream,
                input: Vec::new(),
                query: None,
                owed: Vec::new(),
                sent: 0,
                deadline: Some(now + PATIENCE),
            });
        }
    }

    /// New entries, for the followers they match.
    pub fn publish(&mut self, new: &[Entry], now: Instant) {
        for c in &mut self.clients {
            let Some(query) = c.query.as_ref().filter(|q| q.follow) else {
                continue;
            };
            for entry in new.iter().filter(|e| query.matches(e)) {
                c.owed.extend(json_line(entry));
            }
            if c.owes() > 0 && c.deadline.is_none() {
                c.deadline = Some(now + PATIENCE);
            }
        }
        // A follower that does not keep up is let go (a history owed may be
        // larger: it is bounded by MAX_OWED).
        self.clients.retain(|c| {
            let following = c.query.as_ref().is_some_and(|q| q.follow);
            !following || c.owes() <= MAX_FOLLOWER_OWED
        });
    }

    /// Reads requests, answers them from `history`, writes what is owed,
    /// and lets go of the clients that are done, gone or out of time.
    pub fn serve(&mut self, history: &dyn Fn(&Query) -> Vec<Entry>, now: Instant) {
        let mut owed: usize = self.clients.iter().map(Client::owes).sum();
        self.clients.retain_mut(|c| {
            if c.query.is_none() {
                match read_request(c) {
                    Ok(None) => {}
                    Ok(Some(line)) => {
                        let (query, answer) = match serde_json::from_slice::<Query>(&line) {
                            Ok(query) => {
                                let lines: Vec<u8> =
                                    history(&query).iter().flat_map(json_line).collect();
                                if owed + lines.len() > MAX_OWED {
                                    let busy = "busy: too much asked of the log at once; try again";
                                    (Query::default(), error_line(busy))
                                } else {
                                    (query, lines)
                                }
                            }
                            // Said, and the client let go once it is written.
                            Err(e) => (Query::default(), error_line(&format!("bad query: {e}"))),
                        };
                        owed += answer.len();
                        c.query = Some(query);
                        c.owed = answer;
                        c.sent = 0;
                        c.deadline = (c.owes() > 0).then(|| now + PATIENCE);
                    }
                    Err(()) => return false,
                }
            } else if !still_there(c) {
                // A follower gone is let go now, not at the next line for
                // it: it would hold a place, and poll would say so forever.
                return false;
            }
            if c.owes() > 0 {
                match write_owed(c) {
                    Ok(0) => {}
                    Ok(_) => c.deadline = (c.owes() > 0).then(|| now + PATIENCE),
                    Err(()) => return false,
                }
            }
            if c.done() {
                return false;
            }
            c.deadline.is_none_or(|d| now < d)
        });
    }
}

/// The request line once it has all come; an error when the client is
/// gone or sends too much.
fn read_request(c: &mut Client) -> Result<Option<Vec<u8>>, ()> {
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = c.input.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut c.input);
            line.truncate(end);
            return Ok(Some(line));
        }
        if c.input.len() > MAX_REQUEST {
            return Err(());
        }
        match c.stream.read(&mut buf) {
            Ok(0) => return Err(()),
            Ok(n) => c.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(None),
            Err(_) => return Err(()),
        }
    }
}

/// Whether an answered client is still connected: it has nothing more to
/// say, so what it sends is dropped, and the end of its stream is its
/// going. A bounded batch a turn, so one that sends on and on cannot
/// keep the loop here.
fn still_there(c: &mut Client) -> bool {
    let mut buf = [0u8; 4096];
    for _ in 0..16 {
        match c.stream.read(&mut buf) {
            Ok(0) => return false,
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return e.kind() == ErrorKind::WouldBlock,
        }
    }
    true
}

/// Writes what the socket takes of what is owed: how many bytes; an
/// error when the client is gone.
fn write_owed(c: &mut Client) -> Result<usize, ()> {
    let mut written = 0;
    while c.owes() > 0 {
        match c.stream.write(&c.owed[c.sent..]) {
            Ok(0) => return Err(()),
            Ok(n) => {
                c.sent += n;
                written += n;
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(_) => return Err(()),
        }
    }
    if c.owes() == 0 {
        c.owed.clear();
        c.sent = 0;
    }
    Ok(written)
}

pub fn json_line(entry: &Entry) -> Vec<u8> {
    let mut line = serde_json::to_vec(entry).unwrap_or_default();
    line.push(b'\n');
    line
}

fn error_line(error: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&serde_json::json!({ "error": error })).unwrap_or_default();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};

    fn listener() -> (tempfile::TempDir, UnixListener) {
        let dir = tempfile::tempdir().unwrap();
        let listener = UnixListener::bind(dir.path().join("query.sock")).unwrap();
        listener.set_nonblocking(true).unwrap();
        (dir, listener)
    }

    fn connect(dir: &tempfile::TempDir) -> UnixStream {
        let stream = UnixStream::connect(dir.path().join("query.sock")).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        stream
    }

    fn entry_of(app: &str, message: String) -> Entry {
        Entry {
            time: "2026-12-04T19:00:00.000000Z".into(),
            source: "syslog".into(),
            priority: 13,
            host: None,
            app: Some(app.into()),
            pid: None,
            message,
        }
    }

    fn entry(n: usize) -> Entry {
        entry_of("bulk", format!("{n} {}", "x".repeat(200)))
    }

    /// One client that sent `request` and was served once from `history`.
    fn asked(
        request: &str,
        history: &dyn Fn(&Query) -> Vec<Entry>,
    ) -> (tempfile::TempDir, UnixStream, QueryClients, Instant) {
        let (dir, listener) = listener();
        let mut stream = connect(&dir);
        writeln!(stream, "{request}").unwrap();
        let mut clients = QueryClients::default();
        let now = Instant::now();
        clients.accept(&listener, now);
        clients.serve(history, now);
        (dir, stream, clients, now)
    }

    /// Read to its end: the client was let go.
    fn let_go(stream: &UnixStream) -> bool {
        matches!((&*stream).read(&mut [0u8; 1]), Ok(0))
    }

    #[test]
    fn past_the_limit_connections_are_told_so_and_closed() {
        let (dir, listener) = listener();
        let streams: Vec<UnixStream> = (0..MAX_CLIENTS + 8).map(|_| connect(&dir)).collect();
        let mut clients = QueryClients::default();
        clients.accept(&listener, Instant::now());
        assert_eq!(clients.clients.len(), MAX_CLIENTS);
        for stream in &streams[MAX_CLIENTS..] {
            let mut line = String::new();
            BufReader::new(stream).read_line(&mut line).unwrap();
            assert_eq!(
                line,
                "{\"error\":\"busy: 32 clients of the log at once; try again\"}\n"
            );
            assert!(let_go(stream));
        }
    }

    #[test]
    fn a_client_that_says_nothing_is_let_go_after_its_time_and_holds_up_nobody() {
        let (dir, listener) = listener();
        let silent = connect(&dir);
        let mut asking = connect(&dir);
        writeln!(asking, "{{\"service\":\"bulk\"}}").unwrap();
        let mut clients = QueryClients::default();
        let now = Instant::now();
        clients.accept(&listener, now);
        let history = |q: &Query| vec![entry(q.service.as_deref().map_or(0, str::len))];
        clients.serve(&history, now);
        // The asking one has its answer and is done; the silent one is
        // still given time.
        let mut line = String::new();
        BufReader::new(&asking).read_line(&mut line).unwrap();
        assert!(line.contains("\"4 xxx"), "{line}");
        assert!(let_go(&asking));
        assert_eq!(clients.clients.len(), 1);
        assert!(clients.poll_timeout(now) > 0);
        clients.serve(&history, now + PATIENCE);
        assert!(clients.clients.is_empty());
        assert!(let_go(&silent));
    }

    #[test]
    fn a_history_is_written_as_fast_as_it_is_read_and_not_waited_for() {
        // Far more than a socket's buffer.
        let entries: Vec<Entry> = (0..20_000).map(entry).collect();
        let history = |_: &Query| entries.clone();
        let (_dir, mut reader, mut clients, _) = asked("{}", &history);
        // Nobody reads yet: the serve returned, with the rest owed.
        let owed = clients.clients[0].owes();
        assert!(owed > 0 && owed < entries.iter().map(|e| json_line(e).len()).sum());
        let read = std::thread::spawn(move || BufReader::new(&mut reader).lines().count());
        let deadline = Instant::now() + Duration::from_secs(30);
        while !clients.clients.is_empty() {
            assert!(
                Instant::now() < deadline,
                "still owed: {}",
                clients.clients[0].owes()
            );
            clients.serve(&history, Instant::now());
            std::thread::yield_now();
        }
        assert_eq!(read.join().unwrap(), entries.len());
    }

    #[test]
    fn a_client_that_stops_reading_is_let_go_after_its_time() {
        let entries: Vec<Entry> = (0..20_000).map(entry).collect();
        let history = |_: &Query| entries.clone();
        let (_dir, _stalled, mut clients, now) = asked("{\"follow\":true}", &history);
        clients.serve(&history, now + PATIENCE / 2);
        assert_eq!(clients.clients.len(), 1);
        clients.serve(&history, now + PATIENCE);
        assert!(clients.clients.is_empty());
    }

    #[test]
    fn a_follower_that_goes_is_let_go_at_once() {
        let (_dir, follower, mut clients, now) =
            asked("{\"service\":\"quiet\",\"follow\":true}", &|_: &Query| {
                Vec::new()
            });
        clients.serve(&|_: &Query| Vec::new(), now);
        assert_eq!(clients.clients.len(), 1);
        drop(follower);
        clients.serve(&|_: &Query| Vec::new(), now);
        assert!(clients.clients.is_empty());
    }

    #[test]
    fn followers_get_what_matches_and_one_that_falls_behind_is_let_go() {
        let (dir, listener) = listener();
        let mut follower = connect(&dir);
        writeln!(follower, "{{\"service\":\"web\",\"follow\":true}}").unwrap();
        let mut clients = QueryClients::default();
        let now = Instant::now();
        clients.accept(&listener, now);
        clients.serve(&|_: &Query| Vec::new(), now);
        let web = entry_of("web", "hello".into());
        let db = entry_of("db", "hello".into());
        clients.publish(&[db, web.clone()], now);
        clients.serve(&|_: &Query| Vec::new(), now);
        let mut line = String::new();
        BufReader::new(&follower).read_line(&mut line).unwrap();
        let got: Entry = serde_json::from_str(&line).unwrap();
        assert_eq!(got, web);
        // More than it may be owed, unread.
        let many = vec![web; MAX_FOLLOWER_OWED / 20];
        clients.publish(&many, now);
        assert!(clients.clients.is_empty());
    }
}
