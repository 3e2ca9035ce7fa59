//! Why a container did not start, by kind: the host could not be made ready
//! for it, its spec cannot run as written, or its own setup failed inside
//! the new namespaces. PID 1 reports each and decides from the kind, never
//! from the words.

use std::fmt;
use std::io;

use brig_spec::failed::Failed;

#[derive(Debug)]
pub enum Error {
    /// Preparing the host failed: what was being done (to which path or
    /// device), and the system's error.
    Host(Failed),
    /// The spec cannot run as written: an empty command, a NUL byte in an
    /// argument, a user its image does not have.
    Spec(String),
    /// The container's setup failed in its new namespaces (a mount, the
    /// user switch, the exec), as the child told it.
    Setup(String),
}

impl Error {
    /// A host error: `doing` what, failed with `source`.
    pub fn host(doing: impl Into<String>, source: impl Into<io::Error>) -> Error {
        Error::Host(Failed::new(doing, source))
    }

    /// As `host`, with the calling thread's last OS error.
    pub fn last_os_error(doing: impl Into<String>) -> Error {
        Error::host(doing, io::Error::last_os_error())
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Host(failed) => failed.fmt(f),
            Error::Spec(why) | Error::Setup(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Host(failed) => Some(failed),
            _ => None,
        }
    }
}
