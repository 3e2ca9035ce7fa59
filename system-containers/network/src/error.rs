//! What went wrong in brig-netd, by kind: a system call or a socket
//! exchange failed (what was being done, and the system's error), or a
//! peer — the kernel, chronyd, a DHCP server — answered something that
//! does not hold together.

use std::fmt;
use std::io;

#[derive(Debug)]
pub enum Error {
    System { doing: String, source: io::Error },
    Protocol(String),
}

impl Error {
    /// `doing` what, failed with `source`.
    pub fn system(doing: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::System {
            doing: doing.into(),
            source: source.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::System { doing, source } => write!(f, "{doing}: {source}"),
            Error::Protocol(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::System { source, .. } => Some(source),
            Error::Protocol(_) => None,
        }
    }
}
