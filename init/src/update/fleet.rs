//! Updates a machine takes by itself (`brig.update.url`, docs/updates.md):
//! every `check_interval` a child process reads the bundle's signed
//! manifest and installs it when it is newer; the machine then reboots
//! into it now, in a daily window, or when the user reboots. Pure: the
//! process and the reboot are `Init`'s (`update::follow_updates`).

use std::time::{Duration, Instant};

use brig_spec::update_config::{Reboot, UpdateConfig};

/// A check that could not run (no network yet) or failed is tried again
/// after at most this long, whatever the interval.
pub const RETRY_AFTER: Duration = Duration::from_secs(600);
/// A check that is due while something holds it back (another OS job, a
/// version on trial) is looked at again after this long.
pub const BUSY_RETRY: Duration = Duration::from_secs(10);
/// While an installed update waits for its reboot window, the window is
/// looked at this often.
const WINDOW_EVERY: Duration = Duration::from_secs(60);

/// What the end of a check's process means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Checked {
    Installed,
    NothingNewer,
    Failed,
}

#[derive(Debug, Default)]
pub struct Fleet {
    pub config: UpdateConfig,
    /// When the next check is due (None: as soon as the machine is ready).
    next: Option<Instant>,
    /// The check's process, while it runs.
    pub checking: Option<i32>,
    /// An update was installed and waits for its reboot.
    pub waiting: bool,
}

impl Fleet {
    fn follows(&self) -> bool {
        self.config.url.is_some()
    }

    /// When the event loop must wake for this.
    pub fn wakeup(&self) -> Option<Instant> {
        (self.follows() && self.checking.is_none())
            .then_some(self.next)
            .flatten()
    }

    /// Whether a check is due (a machine that waits for its reboot checks
    /// no more).
    pub fn check_due(&self, now: Instant) -> bool {
        self.follows()
            && self.checking.is_none()
            && !self.waiting
            && self.next.is_none_or(|at| now >= at)
    }

    /// Whether the machine may reboot into its installed update now, at
    /// `minute` of the UTC day; if not, looks again in a minute.
    pub fn reboot_due(&mut self, now: Instant, minute: u16) -> bool {
        if !self.waiting || self.next.is_some_and(|at| now < at) {
            return false;
        }
        if self.config.reboot.allows(minute) {
            self.waiting = false;
            return true;
        }
        // `never`: the user's reboot; nothing to look at.
        self.next = (self.config.reboot != Reboot::Never).then_some(now + WINDOW_EVERY);
        false
    }

    /// New settings: a new URL or interval is checked at once (after the
    /// check under way, if any).
    pub fn configure(&mut self, config: UpdateConfig) {
        if config.url != self.config.url || config.check_interval != self.config.check_interval {
            self.next = None;
        }
        self.config = config;
    }

    /// Looks again at `at` (a check held back, see `BUSY_RETRY`).
    pub fn postpone(&mut self, at: Instant) {
        self.next = Some(at);
    }

    /// A check's process started at `now`.
    pub fn started(&mut self, pid: i32, now: Instant) {
        self.checking = Some(pid);
        self.next = Some(now + self.config.check_interval);
    }

    /// No check now (the network is not up, the process could not start):
    /// the next one comes sooner than the interval.
    pub fn not_now(&mut self, now: Instant) {
        self.next = Some(now + RETRY_AFTER.min(self.config.check_interval));
    }

    /// The check's process `pid` ended with `code` (0 installed, `nothing`
    /// for nothing newer); None if `pid` was not the check.
    pub fn ended(&mut self, pid: i32, code: i32, nothing: i32, now: Instant) -> Option<Checked> {
        if self.checking != Some(pid) {
            return None;
        }
        self.checking = None;
        Some(match code {
            0 => {
                self.waiting = true;
                self.next = None;
                Checked::Installed
            }
            c if c == nothing => Checked::NothingNewer,
            _ => {
                self.not_now(now);
                Checked::Failed
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fleet(reboot: Reboot) -> (Fleet, Instant) {
        let config = UpdateConfig {
            url: Some("http://server/b".into()),
            check_interval: Duration::from_secs(3600),
            reboot,
            ..UpdateConfig::default()
        };
        (
            Fleet {
                config,
                ..Fleet::default()
            },
            Instant::now(),
        )
    }

    #[test]
    fn checks_come_at_the_interval_and_an_install_reboots_now() {
        let (mut f, t) = fleet(Reboot::Now);
        assert!(f.check_due(t));
        f.started(7, t);
        assert!(!f.check_due(t) && f.wakeup().is_none());
        assert_eq!(f.ended(8, 0, 3, t), None, "not the check's process");
        assert_eq!(f.ended(7, 3, 3, t), Some(Checked::NothingNewer));
        assert_eq!(f.wakeup(), Some(t + Duration::from_secs(3600)));
        assert!(!f.check_due(t + Duration::from_secs(3599)));
        let later = t + Duration::from_secs(3600);
        assert!(f.check_due(later));
        f.started(9, later);
        assert_eq!(f.ended(9, 0, 3, later), Some(Checked::Installed));
        assert!(!f.check_due(later), "no checks while an update waits");
        assert!(f.reboot_due(later, 12 * 60));
        assert!(!f.reboot_due(later, 12 * 60), "one reboot");
    }

    #[test]
    fn a_failed_check_is_tried_again_sooner_and_a_window_is_waited_for() {
        let (mut f, t) = fleet(Reboot::Window(120, 240));
        f.started(1, t);
        assert_eq!(f.ended(1, 1, 3, t), Some(Checked::Failed));
        assert_eq!(f.wakeup(), Some(t + RETRY_AFTER));
        let t = t + RETRY_AFTER;
        f.started(2, t);
        assert_eq!(f.ended(2, 0, 3, t), Some(Checked::Installed));
        assert!(!f.reboot_due(t, 60), "01:00 is outside 02:00-04:00");
        assert!(
            !f.reboot_due(t + Duration::from_secs(30), 121),
            "looked at once a minute"
        );
        assert!(f.reboot_due(t + Duration::from_secs(60), 121));
    }

    #[test]
    fn never_rebooting_waits_for_the_user_and_no_url_does_nothing() {
        let (mut f, t) = fleet(Reboot::Never);
        f.started(1, t);
        f.ended(1, 0, 3, t);
        assert!(!f.reboot_due(t, 0) && !f.reboot_due(t + Duration::from_secs(86400), 0));
        assert_eq!(f.wakeup(), None, "never: no reason to wake");
        let idle = Fleet::default();
        assert!(!idle.check_due(t) && idle.wakeup().is_none());
    }
}
