//! Syslog messages: parsing what arrives (RFC 5424, RFC 3164 as BSD syslog
//! and glibc's `syslog(3)` write it, and anything else), and writing RFC
//! 5424 for remote receivers, with octet-counting framing for TCP (RFC
//! 6587). Never fails: text that follows no format is kept whole as the
//! message, at user.notice, as rsyslog does.

use std::fmt::Write as _;

use brig_spec::logs::Entry;

/// Longer messages are cut here (RFC 5424 §6.1 lets receivers truncate;
/// rsyslog's default maximum is 8 KiB too).
pub const MAX_MESSAGE: usize = 8192;

/// `user`, and `notice`: what a message without a priority gets.
const DEFAULT_FACILITY: u8 = 1;
const DEFAULT_SEVERITY: u8 = 5;

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Record {
    pub facility: u8,
    pub severity: u8,
    /// The sender's timestamp, as it wrote it (RFC 3339 or `Mmm dd hh:mm:ss`).
    pub timestamp: Option<String>,
    pub hostname: Option<String>,
    /// RFC 5424 APP-NAME, or RFC 3164's TAG.
    pub app: Option<String>,
    pub pid: Option<String>,
    pub msgid: Option<String>,
    /// RFC 5424 structured data, as it was written (`[id k="v"]...`).
    pub structured_data: Option<String>,
    pub message: String,
    /// Whether the message was cut at `MAX_MESSAGE`.
    pub truncated: bool,
}

pub const FACILITIES: [&str; 24] = [
    "kern",
    "user",
    "mail",
    "daemon",
    "auth",
    "syslog",
    "lpr",
    "news",
    "uucp",
    "cron",
    "authpriv",
    "ftp",
    "ntp",
    "security",
    "console",
    "solaris-cron",
    "local0",
    "local1",
    "local2",
    "local3",
    "local4",
    "local5",
    "local6",
    "local7",
];
pub const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

impl Record {
    /// A record for text that is not syslog (a service's stdout line).
    pub fn plain(app: &str, severity: u8, message: &str) -> Record {
        let (message, truncated) = cut(message);
        Record {
            facility: 3, // daemon
            severity,
            app: Some(app.to_string()),
            message,
            truncated,
            ..Record::default()
        }
    }

    pub fn priority(&self) -> u8 {
        self.facility * 8 + self.severity
    }

    /// `daemon.err` and the like.
    pub fn priority_name(&self) -> String {
        format!(
            "{}.{}",
            FACILITIES.get(self.facility as usize).unwrap_or(&"user"),
            SEVERITIES.get(self.severity as usize).unwrap_or(&"notice")
        )
    }
}

/// Cuts `text` at `MAX_MESSAGE` bytes, on a character boundary.
fn cut(text: &str) -> (String, bool) {
    if text.len() <= MAX_MESSAGE {
        return (text.to_string(), false);
    }
    let mut end = MAX_MESSAGE;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    (text[..end].to_string(), true)
}

/// Parses one datagram or frame. Invalid UTF-8 is replaced, trailing line
/// ends and NULs are dropped.
pub fn parse(raw: &[u8]) -> Record {
    let text = String::from_utf8_lossy(raw);
    let text = text.trim_end_matches(['\n', '\r', '\0']);
    let (facility, severity, rest) = match priority(text) {
        Some((pri, rest)) => (pri / 8, pri % 8, rest),
        None => {
            let (message, truncated) = cut(text);
            return Record {
                facility: DEFAULT_FACILITY,
                severity: DEFAULT_SEVERITY,
                message,
                truncated,
                ..Record::default()
            };
        }
    };
    let mut record = match rest.strip_prefix("1 ") {
        Some(rest) => rfc5424(rest),
        None => rfc3164(rest),
    };
    record.facility = facility;
    record.severity = severity;
    let (message, truncated) = cut(&record.message);
    record.message = message;
    record.truncated = truncated;
    record
}

/// `<PRI>`: 1 to 3 digits, at most 191.
fn priority(text: &str) -> Option<(u8, &str)> {
    let rest = text.strip_prefix('<')?;
    let end = rest.find('>')?;
    let digits = &rest[..end];
    if digits.is_empty() || digits.len() > 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let pri: u16 = digits.parse().ok()?;
    (pri <= 191).then_some((pri as u8, &rest[end + 1..]))
}

/// The next space-separated field and the rest; `-` is nil.
fn field(text: &str) -> (Option<String>, &str) {
    let (word, rest) = text.split_once(' ').unwrap_or((text, ""));
    let value = (word != "-" && !word.is_empty()).then(|| word.to_string());
    (value, rest)
}

fn rfc5424(text: &str) -> Record {
    let (timestamp, text) = field(text);
    let (hostname, text) = field(text);
    let (app, text) = field(text);
    let (pid, text) = field(text);
    let (msgid, text) = field(text);
    let (structured_data, text) = match text.strip_prefix('-') {
        Some(rest) => (None, rest),
        None => structured_data(text),
    };
    let message = text.strip_prefix(' ').unwrap_or(text);
    // A UTF-8 message may begin with a byte order mark (§6.4).
    let message = message.strip_prefix('\u{feff}').unwrap_or(message);
    Record {
        timestamp,
        hostname,
        app,
        pid,
        msgid,
        structured_data,
        message: message.to_string(),
        ..Record::default()
    }
}

/// `[id k="v" ...]...`: up to the end of the last element; `"`, `\` and
/// `]` are escaped with `\` inside values. Unterminated: all of it.
fn structured_data(text: &str) -> (Option<String>, &str) {
    let bytes = text.as_bytes();
    let mut at = 0;
    while bytes.get(at) == Some(&b'[') {
        let mut in_value = false;
        let mut i = at + 1;
        loop {
            match bytes.get(i) {
                None => return (Some(text.to_string()), ""),
                Some(b'\\') if in_value => i += 1,
                Some(b'"') => in_value = !in_value,
                Some(b']') if !in_value => break,
                _ => {}
            }
            i += 1;
        }
        at = i + 1;
    }
    if at == 0 {
        return (None, text);
    }
    (Some(text[..at].to_string()), &text[at..])
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `Mmm dd hh:mm:ss` (dd space-padded) at the start of `text`.
fn bsd_timestamp(text: &str) -> Option<(&str, &str)> {
    let stamp = text.get(..15)?;
    let b = stamp.as_bytes();
    // Bytes, not `&stamp[..3]`: a sender's multi-byte character there
    // would put that slice inside it.
    let ok = MONTHS.iter().any(|m| m.as_bytes() == &b[..3])
        && b[3] == b' '
        && (b[4] == b' ' || b[4].is_ascii_digit())
        && b[5].is_ascii_digit()
        && b[6] == b' '
        && b[9] == b':'
        && b[12] == b':'
        && [7, 8, 10, 11, 13, 14]
            .iter()
            .all(|&i| b[i].is_ascii_digit());
    ok.then(|| (stamp, text[15..].strip_prefix(' ').unwrap_or(&text[15..])))
}

/// RFC 3164: `[TIMESTAMP] [HOSTNAME] TAG[PID]: MSG`. glibc's syslog(3)
/// leaves out the host name, so a first word that ends in `:` or holds a
/// `[` is the tag.
fn rfc3164(text: &str) -> Record {
    let (timestamp, text) = match bsd_timestamp(text) {
        Some((stamp, rest)) => (Some(stamp.to_string()), rest),
        None => (None, text),
    };
    let mut record = Record {
        timestamp,
        ..Record::default()
    };
    let is_tag = |word: &str| word.ends_with(':') || word.contains('[');
    let mut text = text;
    if record.timestamp.is_some() {
        if let Some((word, rest)) = text.split_once(' ') {
            if !is_tag(word) && rest.split(' ').next().is_some_and(is_tag) {
                record.hostname = Some(word.to_string());
                text = rest;
            }
        }
    }
    match text.split_once(' ').filter(|(word, _)| is_tag(word)) {
        Some((word, rest)) => {
            let word = word.trim_end_matches(':');
            match word.split_once('[') {
                Some((app, pid)) => {
                    record.app = Some(app.to_string());
                    record.pid = Some(pid.trim_end_matches(']').to_string());
                }
                None => record.app = Some(word.to_string()),
            }
            record.message = rest.to_string();
        }
        None => record.message = text.to_string(),
    }
    record
}

pub use brig_spec::logs::rfc3339;

/// An entry as RFC 5424, for remote receivers: its own time, its sender's
/// host name or else `hostname`, and as MSGID where it came from when
/// that is not plain syslog (`kernel`, `service`, `init`).
pub fn to_rfc5424(entry: &Entry, hostname: &str) -> String {
    // Header fields are printable ASCII without spaces, and bounded (§6).
    let header = |v: Option<&str>, max: usize| -> String {
        let text: String = v
            .unwrap_or_default()
            .chars()
            .filter(|c| c.is_ascii_graphic())
            .take(max)
            .collect();
        if text.is_empty() {
            "-".into()
        } else {
            text
        }
    };
    let msgid = Some(entry.source.as_str()).filter(|s| *s != "syslog");
    let mut out = String::with_capacity(entry.message.len() + 96);
    let _ = write!(
        out,
        "<{}>1 {} {} {} {} {} -",
        entry.priority,
        header(Some(&entry.time), 32),
        header(entry.host.as_deref().or(Some(hostname)), 255),
        header(entry.app.as_deref(), 48),
        header(entry.pid.as_deref(), 128),
        header(msgid, 32),
    );
    if !entry.message.is_empty() {
        out.push(' ');
        out.push_str(&entry.message);
    }
    out
}

/// RFC 6587 octet counting: `LEN SP MSG`, for syslog over TCP and TLS.
pub fn octet_counted(message: &str) -> Vec<u8> {
    let mut frame = format!("{} ", message.len()).into_bytes();
    frame.extend_from_slice(message.as_bytes());
    frame
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glibc_syslog_has_no_host_name() {
        let r = parse(b"<30>Nov 22 21:39:35 sshd[412]: Accepted publickey for brig\n");
        assert_eq!(r.priority_name(), "daemon.info");
        assert_eq!(r.timestamp.as_deref(), Some("Nov 22 21:39:35"));
        assert_eq!(r.hostname, None);
        assert_eq!(r.app.as_deref(), Some("sshd"));
        assert_eq!(r.pid.as_deref(), Some("412"));
        assert_eq!(r.message, "Accepted publickey for brig");
    }

    /// Found by fuzzing: a multi-byte character where the month goes.
    #[test]
    fn a_character_across_the_month_is_no_timestamp() {
        let r = parse(b"<13>D\xca\x80\x80 0 00:00:15 host app[123]: hello");
        assert_eq!(r.timestamp, None);
        assert_eq!(parse("<13>Dé  5 17:32:18 x".as_bytes()).timestamp, None);
    }

    #[test]
    fn bsd_syslog_with_host_and_tag() {
        let r = parse(b"<13>Feb  5 17:32:18 box1 myapp: hello world");
        assert_eq!((r.facility, r.severity), (1, 5));
        assert_eq!(r.timestamp.as_deref(), Some("Feb  5 17:32:18"));
        assert_eq!(r.hostname.as_deref(), Some("box1"));
        assert_eq!(r.app.as_deref(), Some("myapp"));
        assert_eq!(r.pid, None);
        assert_eq!(r.message, "hello world");
        // `logger` without a tag, and no timestamp at all.
        let r = parse(b"<14>just text");
        assert_eq!(r.app, None);
        assert_eq!(r.message, "just text");
    }

    #[test]
    fn rfc5424_with_structured_data_and_bom() {
        let r = parse(
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Appli\\]cation\"][x@1 a=\"b\"] \u{feff}An application event".as_bytes(),
        );
        assert_eq!(r.priority_name(), "local4.notice");
        assert_eq!(r.timestamp.as_deref(), Some("2003-10-11T22:14:15.003Z"));
        assert_eq!(r.hostname.as_deref(), Some("mymachine.example.com"));
        assert_eq!(r.app.as_deref(), Some("evntslog"));
        assert_eq!(r.pid, None);
        assert_eq!(r.msgid.as_deref(), Some("ID47"));
        assert_eq!(
            r.structured_data.as_deref(),
            Some("[exampleSDID@32473 iut=\"3\" eventSource=\"Appli\\]cation\"][x@1 a=\"b\"]")
        );
        assert_eq!(r.message, "An application event");
        let r = parse(b"<34>1 - - su - - - ");
        assert_eq!(r.app.as_deref(), Some("su"));
        assert_eq!((r.structured_data, r.message.as_str()), (None, ""));
    }

    #[test]
    fn malformed_input_is_kept_whole() {
        for raw in [
            &b"no priority at all"[..],
            b"<999>too high",
            b"<>empty",
            b"<12",
            b"",
            b"\xff\xfe binary",
        ] {
            let r = parse(raw);
            assert_eq!(r.priority_name(), "user.notice", "{raw:?}");
            assert_eq!(
                r.message,
                String::from_utf8_lossy(raw).trim_end(),
                "{raw:?}"
            );
        }
        // Unterminated structured data, a lone tag: nothing panics, nothing is lost.
        let r = parse(b"<13>1 2026-01-01T00:00:00Z h a p m [id k=\"v");
        assert_eq!(r.structured_data.as_deref(), Some("[id k=\"v"));
        let r = parse(b"<13>Nov 22 21:39:35 ");
        assert_eq!(r.message, "");
    }

    #[test]
    fn oversized_messages_are_cut_on_a_character() {
        let long = format!("<13>tag: {}", "é".repeat(MAX_MESSAGE));
        let r = parse(long.as_bytes());
        assert!(r.truncated);
        assert!(r.message.len() <= MAX_MESSAGE && r.message.len() > MAX_MESSAGE - 2);
        assert!(r.message.chars().all(|c| c == 'é'));
        assert!(!parse(b"<13>tag: short").truncated);
    }

    #[test]
    fn written_as_rfc5424_and_read_back() {
        let mut entry = Entry {
            time: "2026-11-22T22:32:55.123456Z".into(),
            source: "syslog".into(),
            priority: 30,
            host: None,
            app: Some("sshd".into()),
            pid: Some("412".into()),
            message: "Accepted publickey".into(),
        };
        let line = to_rfc5424(&entry, "brig");
        assert_eq!(
            line,
            "<30>1 2026-11-22T22:32:55.123456Z brig sshd 412 - - Accepted publickey"
        );
        let back = parse(line.as_bytes());
        assert_eq!(back.app.as_deref(), Some("sshd"));
        assert_eq!(back.hostname.as_deref(), Some("brig"));
        assert_eq!(back.timestamp.as_deref(), Some(entry.time.as_str()));
        assert_eq!(back.message, "Accepted publickey");
        entry.source = "service".into();
        entry.host = Some("box one".into());
        entry.pid = None;
        entry.message.clear();
        assert_eq!(
            to_rfc5424(&entry, "brig"),
            "<30>1 2026-11-22T22:32:55.123456Z boxone sshd - service -"
        );
    }

    #[test]
    fn octet_counting_frames() {
        assert_eq!(
            octet_counted("<13>1 - - - - - - hé"),
            b"21 <13>1 - - - - - - h\xc3\xa9"
        );
    }
}
