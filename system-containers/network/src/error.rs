//! What went wrong in brig-netd, by kind: a system call or a socket
//! exchange failed (what was being done, and the system's error), or a
//! peer — the kernel, chronyd, a DHCP server — answered something that
//! does not hold together.

use std::fmt;
use std::io;

use brig_spec::failed::Failed;

#[derive(Debug)]
pub enum Error {
    System(Failed),
    Protocol(String),
}

impl Error {
    /// `doing` what, failed with `source`.
    pub fn system(doing: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::System(Failed::new(doing, source))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::System(failed) => failed.fmt(f),
            Error::Protocol(what) => f.write_str(what),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::System(failed) => Some(failed),
            Error::Protocol(_) => None,
        }
    }
}
