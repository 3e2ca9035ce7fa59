//! Orderly shutdown: stop everything, sync, unmount, then the reboot syscall.

use std::io;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::host::mounts;
use crate::host::system::{PowerAction, System};

/// How long processes get between SIGTERM and SIGKILL.
pub const GRACE: Duration = Duration::from_secs(5);
const POLL: Duration = Duration::from_millis(50);

/// Runs the shutdown sequence and asks the kernel for `action`. Returns only
/// if the kernel refused, with the error, so the caller can report it and
/// stay up.
pub fn shut_down(
    sys: &dyn System,
    action: PowerAction,
    mount_table: &str,
    say: &mut dyn FnMut(&str),
    feed_watchdog: &mut dyn FnMut(),
) -> io::Error {
    say(&format!("{}: stopping all processes", action.verb()));
    terminate_all(sys, say, feed_watchdog);
    feed_watchdog();
    sys.sync();
    feed_watchdog();
    for error in mounts::unmount_all(sys, &mounts::parse_mount_points(mount_table)) {
        say(&format!("shutdown: {error}"));
    }
    feed_watchdog();
    sys.sync();
    feed_watchdog();
    say(&format!("{} now", action.verb()));
    sys.power(action)
}

/// SIGTERM to everyone, wait up to GRACE for them to exit, then SIGKILL.
fn terminate_all(sys: &dyn System, say: &mut dyn FnMut(&str), feed_watchdog: &mut dyn FnMut()) {
    if let Err(e) = sys.kill_all(Signal::SIGTERM) {
        say(&format!("shutdown: sending SIGTERM to all processes: {e}"));
    }
    let mut waited = Duration::ZERO;
    while sys.reap_children() {
        if waited >= GRACE {
            say(&format!(
                "shutdown: processes still running after {}s, killing them",
                GRACE.as_secs()
            ));
            if let Err(e) = sys.kill_all(Signal::SIGKILL) {
                say(&format!("shutdown: sending SIGKILL to all processes: {e}"));
            }
            sys.sleep(POLL);
            sys.reap_children();
            return;
        }
        sys.sleep(POLL);
        waited += POLL;
        feed_watchdog();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::system::fake::Recorder;

    const MOUNTS: &str =
        "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\nsysfs /sys sysfs rw 0 0\n";

    #[test]
    fn sequence_without_stragglers() {
        let sys = Recorder::default();
        let mut said = Vec::new();
        // The watchdog is fed between the steps that run outside the loop.
        let mut feeds = 0;
        let err = shut_down(
            &sys,
            PowerAction::PowerOff,
            MOUNTS,
            &mut |m| said.push(m.to_string()),
            &mut || feeds += 1,
        );
        assert_eq!(feeds, 4);
        assert_eq!(err.raw_os_error(), Some(libc::EPERM));
        assert_eq!(
            sys.calls(),
            [
                "kill-all SIGTERM",
                "reap",
                "sync",
                "unmount /sys",
                "unmount /proc",
                "sync",
                "power PowerOff"
            ]
        );
        assert_eq!(
            said.first().unwrap(),
            "powering off: stopping all processes"
        );
        assert_eq!(said.last().unwrap(), "powering off now");
    }

    #[test]
    fn stragglers_get_sigkill_after_the_grace_period() {
        let sys = Recorder::default();
        *sys.children_alive_for.borrow_mut() = usize::MAX;
        let mut said = Vec::new();
        let mut feeds = 0;
        shut_down(
            &sys,
            PowerAction::Reboot,
            "",
            &mut |m| said.push(m.to_string()),
            &mut || feeds += 1,
        );
        // Each poll of the grace period too.
        assert!(feeds as u128 >= GRACE.as_millis() / POLL.as_millis());
        let calls = sys.calls();
        let sleeps = calls.iter().filter(|c| c.starts_with("sleep")).count();
        assert_eq!(sleeps as u128, GRACE.as_millis() / POLL.as_millis() + 1);
        let kill = calls
            .iter()
            .position(|c| c == "kill-all SIGKILL")
            .expect("SIGKILL sent");
        assert!(kill > calls.iter().position(|c| c == "kill-all SIGTERM").unwrap());
        assert_eq!(calls.last().unwrap(), "power Reboot");
        assert!(said.iter().any(|m| m.contains("killing them")));
    }

    #[test]
    fn children_exiting_within_grace_are_not_killed() {
        let sys = Recorder::default();
        *sys.children_alive_for.borrow_mut() = 3;
        shut_down(&sys, PowerAction::Halt, "", &mut |_| {}, &mut || {});
        assert!(!sys.calls().iter().any(|c| c == "kill-all SIGKILL"));
        assert_eq!(
            sys.calls()
                .iter()
                .filter(|c| c.starts_with("sleep"))
                .count(),
            3
        );
    }
}
