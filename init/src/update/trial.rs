//! A version on trial after an update (docs/updates.md): PID 1 checks the
//! machine's health every few seconds; healthy without a break for the
//! grace time, it is marked good; not healthy by the health timeout, the
//! machine reboots and uses up one of the boot loader's tries, after the
//! last of which the previous version boots again. Pure: the checks
//! themselves are in `health`, the renaming in a child process.

use std::time::{Duration, Instant};

use brig_spec::update_config::UpdateConfig;

/// How often health is checked while on trial.
pub const CHECK_EVERY: Duration = Duration::from_secs(2);
/// A blessing that failed (the boot partition could not be written) is
/// tried again after this long.
pub const RETRY_BLESSING: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Phase {
    Watching,
    /// The process renaming the boot entry is running.
    Blessing(i32),
    Blessed,
    /// Not healthy in time: the machine is rebooting.
    GaveUp,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Check again at this moment.
    Wait(Instant),
    Bless,
    /// Not healthy by the timeout, for these reasons.
    Reboot(String),
}

#[derive(Debug, Clone)]
pub struct Trial {
    /// `0.2.0 (slot B), boot 1 of 3`, for messages.
    pub what: String,
    pub config: UpdateConfig,
    /// When PID 1 started: the health timeout counts from here.
    pub started: Instant,
    pub phase: Phase,
    healthy_since: Option<Instant>,
    next_check: Instant,
    /// The problems last seen, to say only when they change.
    pub last_problems: String,
}

impl Trial {
    pub fn new(what: String, config: UpdateConfig, started: Instant) -> Trial {
        Trial {
            what,
            config,
            started,
            phase: Phase::Watching,
            healthy_since: None,
            next_check: started,
            last_problems: String::new(),
        }
    }

    /// When the loop must wake for the next check, while one is due.
    pub fn next_check(&self) -> Option<Instant> {
        (self.phase == Phase::Watching).then_some(self.next_check)
    }

    pub fn due(&self, now: Instant) -> bool {
        self.phase == Phase::Watching && now >= self.next_check
    }

    /// What to do, given the health `problems` seen at `now` (none: healthy).
    pub fn judge(&mut self, now: Instant, problems: &[String]) -> Verdict {
        let verdict = if problems.is_empty() {
            let since = *self.healthy_since.get_or_insert(now);
            let good_at = since + self.config.grace_time;
            if now >= good_at {
                Verdict::Bless
            } else {
                Verdict::Wait(good_at.min(now + CHECK_EVERY))
            }
        } else {
            // Healthy means without a break: a service that crashes after
            // its start starts the grace time again.
            self.healthy_since = None;
            let deadline = self.started + self.config.health_timeout;
            if now >= deadline {
                Verdict::Reboot(problems.join("; "))
            } else {
                Verdict::Wait(deadline.min(now + CHECK_EVERY))
            }
        };
        if let Verdict::Wait(at) = verdict {
            self.next_check = at;
        }
        verdict
    }

    /// A blessing process failed: watch again, and try later.
    pub fn blessing_failed(&mut self, now: Instant) {
        self.phase = Phase::Watching;
        self.next_check = now + RETRY_BLESSING;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn trial(grace: u64, timeout: u64) -> (Trial, Instant) {
        let t = Instant::now();
        let config = UpdateConfig {
            grace_time: Duration::from_secs(grace),
            health_timeout: Duration::from_secs(timeout),
            ..UpdateConfig::default()
        };
        (Trial::new("0.2.0 (slot B)".into(), config, t), t)
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    #[test]
    fn healthy_for_the_whole_grace_time_is_blessed() {
        let (mut trial, t) = trial(10, 60);
        assert!(trial.due(t));
        assert_eq!(trial.judge(t + secs(3), &[]), Verdict::Wait(t + secs(5)));
        assert!(!trial.due(t + secs(4)));
        assert_eq!(trial.judge(t + secs(9), &[]), Verdict::Wait(t + secs(11)));
        assert_eq!(trial.judge(t + secs(13), &[]), Verdict::Bless);
    }

    #[test]
    fn a_break_in_health_starts_the_grace_time_again() {
        let (mut trial, t) = trial(10, 60);
        trial.judge(t, &[]);
        let problem = ["ssh is not listening".to_string()];
        assert_eq!(
            trial.judge(t + secs(8), &problem),
            Verdict::Wait(t + secs(10))
        );
        assert_eq!(trial.judge(t + secs(12), &[]), Verdict::Wait(t + secs(14)));
        assert_eq!(trial.judge(t + secs(21), &[]), Verdict::Wait(t + secs(22)));
        assert_eq!(trial.judge(t + secs(22), &[]), Verdict::Bless);
    }

    #[test]
    fn not_healthy_by_the_timeout_reboots_with_the_reasons() {
        let (mut trial, t) = trial(10, 30);
        let problems = [
            "no network address".to_string(),
            "ssh is not listening".to_string(),
        ];
        assert_eq!(
            trial.judge(t + secs(29), &problems),
            Verdict::Wait(t + secs(30))
        );
        assert_eq!(
            trial.judge(t + secs(30), &problems),
            Verdict::Reboot("no network address; ssh is not listening".into())
        );
    }

    #[test]
    fn healthy_at_the_timeout_finishes_its_grace_time() {
        let (mut trial, t) = trial(10, 30);
        assert_eq!(trial.judge(t + secs(28), &[]), Verdict::Wait(t + secs(30)));
        assert_eq!(trial.judge(t + secs(34), &[]), Verdict::Wait(t + secs(36)));
        assert_eq!(trial.judge(t + secs(38), &[]), Verdict::Bless);
    }

    #[test]
    fn a_failed_blessing_is_tried_again_later() {
        let (mut trial, t) = trial(0, 30);
        assert_eq!(trial.judge(t, &[]), Verdict::Bless);
        trial.phase = Phase::Blessing(42);
        assert_eq!(trial.next_check(), None);
        trial.blessing_failed(t + secs(1));
        assert_eq!(trial.next_check(), Some(t + secs(61)));
    }
}
