//! Each service's stdout and stderr, kept by PID 1 in a bounded ring of
//! lines (until the syslog container takes over forwarding). Partial lines
//! are held until their newline; very long lines are split.

use std::collections::VecDeque;

use brig_spec::control::LogLine;

/// Bytes kept per service: each line's text and `LINE_COST`.
pub const RING_BYTES: usize = 64 * 1024;
/// What a line costs the ring beyond its text, so that a flood of empty
/// lines (`yes ''`) is bounded like any other.
pub const LINE_COST: usize = 64;
/// Longest line kept whole.
pub const MAX_LINE: usize = 4096;

#[derive(Debug, Default)]
pub struct LogRing {
    /// The service's name, once for all its lines.
    service: String,
    lines: VecDeque<Kept>,
    bytes: usize,
    /// Unfinished line per stream (stdout, stderr).
    partial: [Vec<u8>; 2],
    /// Total lines ever added: lets followers ask for "everything after N".
    pub total: u64,
}

pub const STDOUT: usize = 0;
pub const STDERR: usize = 1;
/// A line PID 1 says about the service.
const NOTE: usize = 2;

/// A line as the ring keeps it: a flood of empty lines costs a few words
/// each, not three strings (`LogLine`, made again for `tail`).
#[derive(Debug)]
struct Kept {
    time: f64,
    stream: usize,
    text: Box<str>,
}

impl LogRing {
    /// Appends output `data` of `stream`; returns the complete lines added.
    pub fn write(&mut self, service: &str, stream: usize, data: &[u8], time: f64) -> Vec<LogLine> {
        let mut added = Vec::new();
        self.partial[stream].extend_from_slice(data);
        loop {
            let buf = &mut self.partial[stream];
            let cut = match buf.iter().position(|&b| b == b'\n') {
                Some(i) if i <= MAX_LINE => Some((i, i + 1)),
                _ if buf.len() > MAX_LINE => Some((MAX_LINE, MAX_LINE)),
                _ => None,
            };
            let Some((end, next)) = cut else { break };
            let text = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..next);
            let line = LogLine {
                time,
                service: service.into(),
                stream: stream_name(stream).into(),
                text,
            };
            self.push(service, stream, &line);
            added.push(line);
        }
        added
    }

    /// Flushes an unfinished line (the stream closed).
    pub fn close(&mut self, service: &str, stream: usize, time: f64) -> Vec<LogLine> {
        if self.partial[stream].is_empty() {
            return Vec::new();
        }
        self.write(service, stream, b"\n", time)
    }

    /// A line PID 1 itself says about the service (started, exited, …).
    pub fn note(&mut self, service: &str, text: String, time: f64) -> LogLine {
        let line = LogLine {
            time,
            service: service.into(),
            stream: stream_name(NOTE).into(),
            text,
        };
        self.push(service, NOTE, &line);
        line
    }

    fn push(&mut self, service: &str, stream: usize, line: &LogLine) {
        if self.service != service {
            self.service = service.to_string();
        }
        self.bytes += line.text.len() + LINE_COST;
        self.total += 1;
        self.lines.push_back(Kept {
            time: line.time,
            stream,
            text: line.text.as_str().into(),
        });
        while self.bytes > RING_BYTES {
            match self.lines.pop_front() {
                Some(old) => self.bytes -= old.text.len() + LINE_COST,
                None => break,
            }
        }
    }

    /// The last `n` lines (all with None).
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        let skip = n.map_or(0, |n| self.lines.len().saturating_sub(n));
        self.lines
            .iter()
            .skip(skip)
            .map(|kept| LogLine {
                time: kept.time,
                service: self.service.clone(),
                stream: stream_name(kept.stream).into(),
                text: kept.text.to_string(),
            })
            .collect()
    }
}

fn stream_name(stream: usize) -> &'static str {
    match stream {
        STDERR => "stderr",
        NOTE => "brig",
        _ => "stdout",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_on_newlines_and_partials_wait() {
        let mut ring = LogRing::default();
        assert_eq!(ring.write("s", STDOUT, b"hello\nwor", 1.0).len(), 1);
        assert_eq!(ring.write("s", STDERR, b"oops\n", 1.5).len(), 1);
        let added = ring.write("s", STDOUT, b"ld\n", 2.0);
        assert_eq!(added[0].text, "world");
        let texts: Vec<(String, String)> = ring
            .tail(None)
            .into_iter()
            .map(|l| (l.stream, l.text))
            .collect();
        assert_eq!(
            texts,
            [
                ("stdout".into(), "hello".into()),
                ("stderr".into(), "oops".into()),
                ("stdout".into(), "world".into())
            ]
        );
        assert_eq!(ring.tail(Some(1))[0].text, "world");
        assert_eq!(ring.tail(Some(10)).len(), 3);
    }

    #[test]
    fn unfinished_line_is_flushed_on_close() {
        let mut ring = LogRing::default();
        ring.write("s", STDOUT, b"no newline", 1.0);
        assert!(ring.tail(None).is_empty());
        assert_eq!(ring.close("s", STDOUT, 2.0)[0].text, "no newline");
        assert!(ring.close("s", STDOUT, 2.0).is_empty());
    }

    #[test]
    fn long_lines_are_split_and_the_ring_stays_bounded() {
        let mut ring = LogRing::default();
        let long = vec![b'x'; MAX_LINE * 2 + 10];
        ring.write("s", STDOUT, &long, 1.0);
        assert_eq!(ring.tail(None).len(), 2);
        for i in 0..10_000 {
            ring.write("s", STDOUT, format!("line {i}\n").as_bytes(), 1.0);
        }
        assert!(ring.bytes <= RING_BYTES);
        assert_eq!(ring.tail(Some(1))[0].text, "line 9999");
        assert_eq!(ring.total, 10_002);
    }

    #[test]
    fn a_flood_of_empty_lines_is_bounded_too() {
        let mut ring = LogRing::default();
        for _ in 0..100 {
            ring.write("s", STDOUT, &[b'\n'; 8192], 1.0);
        }
        assert!(ring.bytes <= RING_BYTES, "{}", ring.bytes);
        assert_eq!(ring.tail(None).len(), RING_BYTES / LINE_COST);
        assert_eq!(ring.total, 819_200);
    }

    #[test]
    fn invalid_utf8_is_kept_lossily() {
        let mut ring = LogRing::default();
        ring.write("s", STDOUT, b"a\xffb\n", 1.0);
        assert_eq!(ring.tail(None)[0].text, "a\u{fffd}b");
    }
}
