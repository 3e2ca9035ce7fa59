//! The hardware watchdog: when the machine has one (`/dev/watchdog`: the
//! i6300esb QEMU models, bcm2835-wdt on a Raspberry Pi), PID 1 opens it
//! and feeds it from its event loop. A PID 1 that stops turning — wedged,
//! stopped, stuck in the kernel — stops feeding it, and the machine
//! resets. Once open, the driver runs it until the machine goes down; it is
//! never closed with the magic 'V', so a shutdown that hangs resets too.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// The timeout PID 1 asks for unless `brig.watchdog=SECONDS` says another
/// (0: leave the watchdog alone). The driver may give less (bcm2835-wdt
/// goes to 15 s).
pub const DEFAULT_TIMEOUT: u32 = 30;

/// Fed this many times per timeout: a turn that comes late by up to two
/// intervals still keeps the machine up.
const FEEDS_PER_TIMEOUT: u32 = 3;

const DEVICE: &str = "/dev/watchdog";

// <linux/watchdog.h>: _IOR('W', 5, int), _IOWR('W', 6, int), _IOR('W', 7, int).
const WDIOC_KEEPALIVE: libc::c_ulong = 0x8004_5705;
const WDIOC_SETTIMEOUT: libc::c_ulong = 0xC004_5706;
const WDIOC_GETTIMEOUT: libc::c_ulong = 0x8004_5707;

/// When feeding is due, from the timeout the driver took.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    pub timeout: Duration,
    pub interval: Duration,
    pub last_fed: Instant,
}

impl Schedule {
    pub fn new(timeout_secs: u32, now: Instant) -> Schedule {
        let timeout = Duration::from_secs(u64::from(timeout_secs.max(1)));
        Schedule {
            timeout,
            interval: (timeout / FEEDS_PER_TIMEOUT).max(Duration::from_millis(500)),
            last_fed: now,
        }
    }

    pub fn due(&self) -> Instant {
        self.last_fed + self.interval
    }
}

/// The open watchdog.
pub struct Watchdog {
    file: File,
    pub schedule: Schedule,
    /// What the driver calls itself (`i6300ESB timer`).
    pub identity: String,
}

impl Watchdog {
    /// Opens the watchdog with `timeout` seconds; None when the machine
    /// has none (or `timeout` is 0).
    pub fn open(timeout: u32, now: Instant) -> Result<Option<Watchdog>, String> {
        if timeout == 0 {
            return Ok(None);
        }
        let file = match std::fs::OpenOptions::new().write(true).open(DEVICE) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("opening {DEVICE}: {e}")),
        };
        let took = set_timeout(&file, timeout);
        let identity = std::fs::read_to_string("/sys/class/watchdog/watchdog0/identity")
            .map(|s| s.trim().to_string())
            .unwrap_or_else(|_| "unknown".into());
        let watchdog = Watchdog {
            file,
            schedule: Schedule::new(took, now),
            identity,
        };
        watchdog.keepalive()?;
        Ok(Some(watchdog))
    }

    /// Asks for a longer timeout (the driver may cap it) and feeds it: for
    /// the shutdown, whose steps (the grace period, syncing a slow card)
    /// run outside the loop.
    pub fn stretch(&mut self, timeout: u32, now: Instant) -> Result<(), String> {
        let took = set_timeout(&self.file, timeout);
        self.schedule = Schedule::new(took, now);
        self.keepalive()
    }

    /// Feeds it now, whatever the schedule (between shutdown steps).
    pub fn feed_now(&mut self, now: Instant) -> Result<(), String> {
        self.schedule.last_fed = now;
        self.keepalive()
    }

    /// Feeds it if that is due; when it is next due.
    pub fn feed(&mut self, now: Instant) -> Result<Instant, String> {
        if now >= self.schedule.due() {
            self.keepalive()?;
            self.schedule.last_fed = now;
        }
        Ok(self.schedule.due())
    }

    fn keepalive(&self) -> Result<(), String> {
        let mut unused: libc::c_int = 0;
        // SAFETY: the ioctl takes a pointer to an int it does not need.
        if unsafe { libc::ioctl(self.file.as_raw_fd(), WDIOC_KEEPALIVE as _, &mut unused) } != 0 {
            return Err(format!(
                "feeding {DEVICE}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
}

/// Asks the driver for `timeout` seconds; the timeout it runs with (it may
/// cap or round the one asked for, or refuse it and keep its own).
fn set_timeout(file: &File, timeout: u32) -> u32 {
    let mut asked = timeout as libc::c_int;
    // SAFETY: the ioctl reads and writes one int, which `asked` is.
    unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_SETTIMEOUT as _, &mut asked) };
    let mut took: libc::c_int = 0;
    // SAFETY: as above, into `took`.
    let got = unsafe { libc::ioctl(file.as_raw_fd(), WDIOC_GETTIMEOUT as _, &mut took) };
    if got == 0 && took > 0 {
        took as u32
    } else {
        // A driver that cannot tell: assume a short one.
        10.min(timeout)
    }
}

/// `brig.watchdog=` from the command line: the timeout, or why not.
pub fn timeout_from(value: Option<&str>) -> Result<u32, String> {
    let Some(text) = value else {
        return Ok(DEFAULT_TIMEOUT);
    };
    match text.parse::<u32>() {
        Ok(0) => Ok(0),
        Ok(s) if (MIN_TIMEOUT..=3600).contains(&s) => Ok(s),
        Ok(s) if s < MIN_TIMEOUT => Err(format!(
            "brig.watchdog={text}: at least {MIN_TIMEOUT} s (a container's setup is waited for up to {} s between feedings)",
            brig_runtime::spawn::SETUP_DEADLINE.as_secs()
        )),
        _ => Err(format!(
            "brig.watchdog={text}: not a number of seconds (0, or {MIN_TIMEOUT}-3600)"
        )),
    }
}

/// The shortest timeout taken: PID 1 feeds it before each container start,
/// which may wait for the setup `SETUP_DEADLINE` (5 s), and otherwise
/// every third of the timeout, so 5 s plus the work around a start, or a
/// third plus a turn, must stay well below it.
pub const MIN_TIMEOUT: u32 = 8;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fed_three_times_per_timeout_never_more_often_than_twice_a_second() {
        let t = Instant::now();
        let s = Schedule::new(30, t);
        assert_eq!(s.interval, Duration::from_secs(10));
        assert_eq!(s.due(), t + Duration::from_secs(10));
        assert_eq!(Schedule::new(1, t).interval, Duration::from_millis(500));
        assert_eq!(Schedule::new(15, t).interval, Duration::from_secs(5));
    }

    #[test]
    fn the_command_line_sets_or_disables_it() {
        assert_eq!(timeout_from(None), Ok(30));
        assert_eq!(timeout_from(Some("0")), Ok(0));
        assert_eq!(timeout_from(Some("12")), Ok(12));
        assert!(timeout_from(Some("soon"))
            .unwrap_err()
            .contains("brig.watchdog=soon"));
        assert!(timeout_from(Some("99999")).is_err());
        assert!(timeout_from(Some("5"))
            .unwrap_err()
            .contains("at least 8 s"));
        // What MIN_TIMEOUT promises.
        let min = Schedule::new(MIN_TIMEOUT, Instant::now());
        assert!(min.interval + brig_runtime::spawn::SETUP_DEADLINE < min.timeout);
    }
}
