//! A system call that failed, with what was being done: the one error shape
//! PID 1, the runtime and the daemons give for the host's refusals, so each
//! says `creating /run/brig/dns: Permission denied` alike.

use std::fmt;
use std::io;

#[derive(Debug)]
pub struct Failed {
    /// What was being done, to which path or device.
    pub doing: String,
    /// The system's error.
    pub source: io::Error,
}

impl Failed {
    pub fn new(doing: impl Into<String>, source: impl Into<io::Error>) -> Failed {
        Failed {
            doing: doing.into(),
            source: source.into(),
        }
    }

    /// As `new`, with the calling thread's last OS error.
    pub fn last_os_error(doing: impl Into<String>) -> Failed {
        Failed::new(doing, io::Error::last_os_error())
    }
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.doing, self.source)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}
