//! OS updates on the machine (docs/updates.md): installing a signed bundle
//! in the other slot, `brigctl os status` and `rollback`, and judging a
//! version on trial after an update. Each change to the boot partition
//! runs in a child process (owning the client's connection, if any), so
//! PID 1 never waits on a download or on the boot partition after boot.

pub mod boot_partition;
pub mod entries;
pub mod fleet;
pub mod health;
pub mod install;
pub mod install_disk;
pub mod trial;

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;
use std::time::Instant;

use brig_spec::boot_slots::TRIES;
use brig_spec::control::{OsStatus, Response};
use brig_spec::update_config::{Reboot, UpdateConfig};

use crate::event_loop::Init;
use crate::host::console::{say, say_error};
use crate::host::system::{PowerAction, System};
use boot_partition::{Machine, Mounted};
use trial::{Phase, Trial, Verdict};

/// An OS request, carried out in a child process.
pub enum Job {
    Upgrade {
        source: install::BundleSource,
        allow_downgrade: bool,
        /// A check of `brig.update.url`, not a user's request.
        automatic: bool,
    },
    Status,
    Rollback,
    /// Mark the running version good (it was on trial and proved healthy).
    Bless,
    /// Copy the running version onto another disk (`brigctl install`).
    Install {
        device: String,
    },
}

/// The system container whose sshd must listen before a trial passes.
const CONSOLE_SERVICE: &str = "console";

impl<S: System> Init<S> {
    /// Hands the client at `fd` to a child process that does `job` and
    /// answers it; `None` when the child has it (PID 1 answers nothing).
    pub(crate) fn os_request(&mut self, fd: RawFd, job: Job) -> Option<Response> {
        let error = |error: String| Some(Response::Error { error });
        let changes = !matches!(job, Job::Status);
        if let (true, Some(pid)) = (changes, self.update_child) {
            return error(format!(
                "an update or rollback is under way (process {pid}); try again when it is done"
            ));
        }
        // Installing now would replace the other slot, the version this
        // one falls back to, while nothing has shown this one is good.
        // Nor is a version on trial copied to a disk as good.
        if let (Job::Upgrade { .. } | Job::Install { .. }, Some(trial)) = (&job, &self.trial) {
            if trial.phase != Phase::Blessed {
                return error(format!(
                    "{} is on trial: it is marked good once healthy for {} s (see brigctl os status); update or install after that",
                    trial.what,
                    trial.config.grace_time.as_secs()
                ));
            }
        }
        // The child writes to the client itself; PID 1's copy closes below.
        // SAFETY: dup of an fd PID 1 owns (the client's, open in `sources`).
        let Ok(copy) = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }) else {
            return error("duplicating the client connection".into());
        };
        match self.spawn_job(job, Some(copy)) {
            Ok(child) => {
                self.forget(fd);
                if changes {
                    self.update_child = Some(child);
                }
                None
            }
            Err(e) => error(e),
        }
    }

    /// Forks the process that does `job`, answering `client` if given.
    fn spawn_job(&self, job: Job, client: Option<OwnedFd>) -> Result<i32, String> {
        let machine = self.machine.clone();
        // SAFETY: PID 1 is single-threaded, so the child has a consistent
        // heap; it does its job, writes to its socket and _exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
                // Only what the job uses stays open: PID 1's other clients
                // must see their connection end when PID 1 closes it.
                let mut keep: Vec<RawFd> = client.iter().map(|c| c.as_raw_fd()).collect();
                keep.extend(crate::host::console::console_fd());
                if let Job::Upgrade {
                    source: install::BundleSource::File { file, .. },
                    ..
                } = &job
                {
                    keep.push(file.as_raw_fd());
                }
                close_all_but(&keep);
                // Whatever it waits on (a server sending a byte a minute, a
                // file that never ends), the job ends by this deadline:
                // SIGALRM's default action ends the process.
                // SAFETY: alarm only arms a timer for this process.
                unsafe { libc::alarm(JOB_DEADLINE.as_secs() as u32) };
                let mut client = client.map(UnixStream::from);
                if let Some(client) = &client {
                    let _ = client.set_nonblocking(false);
                }
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(job, machine.as_ref(), client.as_mut())
                }))
                .unwrap_or(2);
                // SAFETY: leave without running PID 1's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => Ok(child.as_raw()),
            Err(e) => Err(format!("starting the OS request's process: {e}")),
        }
    }

    /// The reaper's part: an update, rollback or blessing process has ended.
    pub(crate) fn os_request_ended(&mut self, pid: i32, code: i32) -> bool {
        if self.update_child != Some(pid) {
            return false;
        }
        self.update_child = None;
        let now = self.sys.now();
        if let Some(checked) = self.fleet.ended(pid, code, NOTHING_NEWER, now) {
            if checked == fleet::Checked::Installed {
                let when = match self.fleet.config.reboot {
                    Reboot::Now => "now".to_string(),
                    Reboot::Never => "at the next reboot (brig.update.reboot: never)".into(),
                    Reboot::Window(start, end) => format!(
                        "in the reboot window {:02}:{:02}-{:02}:{:02} UTC",
                        start / 60,
                        start % 60,
                        end / 60,
                        end % 60
                    ),
                };
                say(&format!(
                    "update: installed from brig.update.url; rebooting into it {when}"
                ));
            }
            return true;
        }
        if let Some(trial) = self
            .trial
            .as_mut()
            .filter(|t| t.phase == Phase::Blessing(pid))
        {
            if code == 0 {
                trial.phase = Phase::Blessed;
            } else {
                trial.blessing_failed(now);
                say_error(&format!(
                    "update: marking {} good failed; trying again in {} s",
                    trial.what,
                    trial::RETRY_BLESSING.as_secs()
                ));
            }
        } else if code == 128 + libc::SIGALRM {
            say_error(&format!(
                "update: the request was stopped after {} minutes",
                JOB_DEADLINE.as_secs() / 60
            ));
        } else if code != 0 {
            say(&format!(
                "update: the request's process ended with code {code}"
            ));
        }
        true
    }

    /// At boot, once the system slot is known: reads the boot entries to
    /// learn whether this version is on trial (then its health is watched
    /// from now on) or was rolled back to (then the console says so, and
    /// the rollback is returned for `install::record_rollback` once the
    /// state partition is mounted).
    pub(crate) fn begin_trial(&mut self) -> Option<install::Rollback> {
        let machine = self.machine.clone()?;
        self.check_boot_partition(&machine);
        let entries = match Mounted::mount(&machine, false).and_then(|boot| boot.entries()) {
            Ok(entries) => entries,
            Err(e) => {
                say_error(&format!(
                    "update: reading the boot entries: {e}; if this version is on trial, it is not marked good"
                ));
                return None;
            }
        };
        let running = install::running_version()
            .map(|v| v.to_string())
            .unwrap_or_else(|e| e);
        match entries.of(machine.slot).and_then(|e| e.name.counter) {
            Some((_, done)) => {
                let what = format!("{running} (slot {}, boot {done} of {TRIES})", machine.slot);
                let trial = Trial::new(what, UpdateConfig::default(), self.sys.now());
                say(&format!("update: {} is on trial", trial.what));
                self.trial = Some(trial);
                None
            }
            None => {
                let (booted, _) = entries.describe(machine.slot);
                if !booted.starts_with("rolled back") {
                    return None;
                }
                let outcome = format!("{booted}; {running} runs again");
                say(&format!("update: {outcome}"));
                let failed = entries.of(machine.slot.other())?;
                Some(install::Rollback {
                    installed: format!("installed {} in slot {}", failed.name.version, failed.slot),
                    outcome,
                })
            }
        }
    }

    /// fsck.fat on the boot partition, before anything reads it: a power
    /// cut while it was written (an update, a blessing) leaves it marked
    /// dirty with clusters that nothing owns, and without a check those
    /// leak the space the next update needs.
    fn check_boot_partition(&mut self, machine: &Machine) {
        let device = match machine.boot_device() {
            Ok(device) => device,
            Err(e) => return say_error(&format!("update: {e}")),
        };
        let checked = self.services.run_tool(
            crate::boot::sequence::STORAGE_TOOLS,
            &["/usr/sbin/fsck.fat", "-a", "-w", &device],
        );
        match checked {
            Ok((0, _)) => {}
            Ok((1, output)) => say(&format!(
                "boot partition {device}: fsck.fat repaired it: {}",
                fsck_fat_summary(&output)
            )),
            Ok((code, output)) => say_error(&format!(
                "boot partition {device}: fsck.fat could not repair it (exit {code}): {}",
                fsck_fat_summary(&output)
            )),
            Err(e) => say_error(&format!("boot partition {device}: running fsck.fat: {e}")),
        }
    }

    /// `brig.update` from the config.
    pub(crate) fn configure_updates(&mut self, config: UpdateConfig) {
        if let Some(trial) = self.trial.as_mut() {
            trial.config = config.clone();
        }
        self.fleet.configure(config);
    }

    /// Each turn, with `brig.update.url`: starts a check when one is due
    /// and the machine is free for it (ready, not on trial, no other OS
    /// job, an address to reach the server from); reboots into an update
    /// it installed when `brig.update.reboot` allows.
    pub(crate) fn follow_updates(&mut self) {
        let now = self.sys.now();
        self.follow_updates_now(now);
        // Whatever held it back (another OS job, a trial, a boot not yet
        // ready), a due time left in the past would keep the loop from
        // sleeping: look again a little later.
        if self.fleet.wakeup().is_some_and(|at| at <= now) {
            self.fleet.postpone(now + fleet::BUSY_RETRY);
        }
    }

    fn follow_updates_now(&mut self, now: Instant) {
        if self.pending_power.is_some() || self.update_child.is_some() {
            return;
        }
        if self.fleet.reboot_due(now, minute_of_day_utc()) {
            self.power(
                PowerAction::Reboot,
                "an update from brig.update.url was installed",
            );
            return;
        }
        let on_trial = self
            .trial
            .as_ref()
            .is_some_and(|t| t.phase != Phase::Blessed);
        if !self.fleet.check_due(now) || !self.announced_ready || on_trial {
            return;
        }
        let Some(url) = self.fleet.config.url.clone() else {
            return;
        };
        if self.machine.is_none() || health::network_problem().is_some() {
            self.fleet.not_now(now);
            return;
        }
        let job = Job::Upgrade {
            source: install::BundleSource::Url(url),
            allow_downgrade: false,
            automatic: true,
        };
        match self.spawn_job(job, None) {
            Ok(pid) => {
                self.update_child = Some(pid);
                self.fleet.started(pid, now);
            }
            Err(e) => {
                say_error(&format!("update: {e}"));
                self.fleet.not_now(now);
            }
        }
    }

    /// When the event loop must wake for the trial's next check.
    pub(crate) fn trial_wakeup(&self) -> Option<Instant> {
        self.trial.as_ref()?.next_check()
    }

    /// Each turn while on trial: checks health when due, and blesses the
    /// version or reboots when the verdict is in.
    pub(crate) fn watch_trial(&mut self) {
        let now = self.sys.now();
        let due = self.trial.as_ref().is_some_and(|t| t.due(now));
        if !due || self.pending_power.is_some() {
            return;
        }
        let problems = self.trial_problems(now);
        let busy = self.update_child;
        let Some(trial) = self.trial.as_mut() else {
            return;
        };
        let said = problems.join("; ");
        if said != trial.last_problems {
            if problems.is_empty() {
                say(&format!(
                    "update: {} is healthy; marked good after {} s more of it",
                    trial.what,
                    trial.config.grace_time.as_secs()
                ));
            } else {
                say(&format!(
                    "update: {} is not healthy yet: {said}",
                    trial.what
                ));
            }
            trial.last_problems = said;
        }
        match trial.judge(now, &problems) {
            Verdict::Wait(_) => {}
            Verdict::Bless if busy.is_some() => trial.blessing_failed(now),
            Verdict::Bless => match self.spawn_job(Job::Bless, None) {
                Ok(pid) => {
                    self.update_child = Some(pid);
                    if let Some(trial) = self.trial.as_mut() {
                        trial.phase = Phase::Blessing(pid);
                    }
                }
                Err(e) => {
                    say_error(&format!("update: {e}"));
                    if let Some(trial) = self.trial.as_mut() {
                        trial.blessing_failed(now);
                    }
                }
            },
            Verdict::Reboot(reasons) => {
                trial.phase = Phase::GaveUp;
                let message = format!(
                    "{} was not healthy {} s after boot: {reasons}; rebooting (after its last try the previous version boots again)",
                    trial.what,
                    trial.config.health_timeout.as_secs()
                );
                say_error(&format!("update: {message}"));
                install::record(&message);
                self.power(PowerAction::Reboot, "the version on trial is not healthy");
            }
        }
    }

    /// What keeps this boot from being healthy: system containers not up,
    /// no network address, sshd not listening; empty when healthy.
    fn trial_problems(&self, now: Instant) -> Vec<String> {
        let mut problems = Vec::new();
        let system = |name: &str| self.system_containers.iter().any(|n| n == name);
        let not_up: Vec<String> = self
            .services
            .status(now)
            .into_iter()
            .filter(|s| system(&s.name))
            .filter(|s| !matches!(s.state.as_str(), "running" | "done" | "stopped"))
            .map(|s| format!("{} {}", s.name, s.state))
            .collect();
        if !not_up.is_empty() {
            problems.push(format!("not ready: {}", not_up.join(", ")));
        }
        problems.extend(health::network_problem());
        if system(CONSOLE_SERVICE) {
            problems.extend(health::ssh_problem());
        }
        problems
    }
}

/// What fsck.fat did, in a line: its lines about changes (a dirty volume,
/// clusters reclaimed, files truncated), else its last line.
fn fsck_fat_summary(output: &str) -> String {
    let lines: Vec<&str> = output
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    let changes: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| {
            // Its version, the summary, and what is noise here: the boot
            // sector's dirty flag, which Linux sets in the primary only,
            // and the missing iconv tables of the storage container.
            let noise = [
                "fsck.fat ",
                "/",
                "Performing changes",
                "There are differences between boot sector",
                "This is mostly harmless",
                "Not automatically fixing",
                "65:",
                "Cannot initialize conversion",
                "Using internal CP850",
            ];
            !noise.iter().any(|n| l.starts_with(n))
        })
        .collect();
    match changes.is_empty() {
        true => lines.last().copied().unwrap_or("").to_string(),
        false => changes.join(" "),
    }
}

/// The minute of the UTC day, for reboot windows.
fn minute_of_day_utc() -> u16 {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    ((seconds % 86400) / 60) as u16
}

/// The longest an OS job may take: two reads of a large bundle over a
/// slow link fit; a server that trickles does not hold updates forever.
const JOB_DEADLINE: std::time::Duration = std::time::Duration::from_secs(2 * 3600);

/// Closes every descriptor of this process above stderr but `keep` (in a
/// child of PID 1, which holds its clients' sockets and more).
fn close_all_but(keep: &[RawFd]) {
    let open: Vec<RawFd> = std::fs::read_dir("/proc/self/fd")
        .map(|listing| {
            listing
                .flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    for fd in open {
        if fd > 2 && !keep.contains(&fd) {
            // SAFETY: closes this process's copy only; nothing here uses
            // it again (the job's own descriptors are in `keep`).
            unsafe { libc::close(fd) };
        }
    }
}

/// An automatic check's exit code when the bundle is not newer.
const NOTHING_NEWER: i32 = 3;

/// The child's whole job; its exit code.
fn run(job: Job, machine: Option<&Machine>, mut client: Option<&mut UnixStream>) -> i32 {
    // With no client (a blessing), a failure is said on the console; an
    // upgrade says its outcome itself.
    let unheard = client.is_none() && !matches!(job, Job::Upgrade { .. });
    let mut send = |response: &Response| {
        let mut line = serde_json::to_vec(response).unwrap_or_default();
        line.push(b'\n');
        if let Some(client) = client.as_mut() {
            let _ = client.write_all(&line);
        }
    };
    let outcome = match job {
        Job::Upgrade {
            source,
            allow_downgrade,
            automatic,
        } => {
            let mut progress = |message: &str| {
                say(&format!("update: {message}"));
                send(&Response::Progress {
                    message: message.to_string(),
                });
            };
            let from = source.to_string();
            let outcome =
                install::install(machine, source, allow_downgrade, automatic, &mut progress);
            let outcome = match outcome {
                Ok(install::Installed::NothingNewer(text)) => {
                    say(&format!("update: {text}"));
                    return NOTHING_NEWER;
                }
                Ok(install::Installed::Done(text)) => Ok(text),
                Err(e) => Err(e),
            };
            let (verb, text) = match &outcome {
                Ok(done) => ("", done.clone()),
                Err(e) => ("failed: ", e.clone()),
            };
            say(&format!("update: {verb}{text}"));
            install::record(&format!("{verb}{text} (from {from})"));
            outcome.map(|message| Response::Ok { message })
        }
        Job::Status => status(machine).map(|status| Response::Os { status }),
        Job::Rollback => rollback(machine).map(|message| {
            say(&format!("update: rollback: {message}"));
            Response::Ok { message }
        }),
        Job::Install { device } => {
            let mut progress = |message: &str| {
                say(&format!("install: {message}"));
                send(&Response::Progress {
                    message: message.to_string(),
                });
            };
            let outcome = install_disk::install(machine, &device, &mut progress);
            match &outcome {
                Ok(done) => say(&format!("install: {done}")),
                Err(e) => say_error(&format!("install onto {device}: {e}")),
            }
            outcome.map(|message| Response::Ok { message })
        }
        Job::Bless => bless(machine).map(|message| {
            say(&format!("update: {message}"));
            install::record(&message);
            Response::Ok { message }
        }),
    };
    if let Err(e) = &outcome {
        if unheard {
            say_error(&format!("update: {e}"));
        }
    }
    let failed = outcome.is_err();
    send(&outcome.unwrap_or_else(|error| Response::Error { error }));
    i32::from(failed)
}

fn status(machine: Option<&Machine>) -> Result<OsStatus, String> {
    let running = install::running_version()?.to_string();
    let last_update = std::fs::read_to_string(install::LAST_RESULT).ok();
    let Some(machine) = machine else {
        return Ok(OsStatus {
            running,
            slot: None,
            other: None,
            booted: "this machine did not boot from a system slot: it takes no updates".into(),
            last_update,
        });
    };
    let boot = Mounted::mount(machine, false)?;
    let (booted, other) = boot.entries()?.describe(machine.slot);
    Ok(OsStatus {
        running,
        slot: Some(machine.slot.to_string()),
        other: Some(other),
        booted,
        last_update,
    })
}

fn rollback(machine: Option<&Machine>) -> Result<String, String> {
    let machine = machine
        .ok_or("this machine did not boot from a system slot: there is nothing to roll back to")?;
    let running = install::running_version()?;
    let boot = Mounted::mount(machine, true)?;
    let (rename, message) = boot.entries()?.rollback(machine.slot, running)?;
    boot.rename(&rename)?;
    Ok(message)
}

/// Renames the running slot's entry to have no boot counter: the boot
/// loader then keeps choosing it without counting.
fn bless(machine: Option<&Machine>) -> Result<String, String> {
    let machine = machine.ok_or("this machine did not boot from a system slot")?;
    let running = install::running_version()?;
    let boot = Mounted::mount(machine, true)?;
    let Some(rename) = boot.entries()?.blessing(machine.slot) else {
        return Ok(format!(
            "{running} (slot {}) is already marked good",
            machine.slot
        ));
    };
    boot.rename(&rename)?;
    Ok(format!(
        "{running} (slot {}) booted healthy: marked good ({} is now {})",
        machine.slot, rename.from, rename.to
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fsck_fat_is_summed_up_by_what_it_changed() {
        // fsck.fat 4.2's words after a cut lost a file's directory entry.
        let output = "fsck.fat 4.2 (2021-01-31)\nThere are differences between boot sector and its backup.\nThis is mostly harmless. Differences: (offset:original/backup)\n  65:01/00\n  Not automatically fixing this.\nDirty bit is set. Fs was not properly unmounted and some data may be corrupt.\n Automatically removing dirty bit.\nReclaimed 9766 unused clusters (5000192 bytes) in 1 chain.\nCannot initialize conversion from codepage 850 to ANSI_X3.4-1968: Invalid argument\nUsing internal CP850 conversion table\nPerforming changes.\n/dev/vda1: 7 files, 3856/129022 clusters\n";
        assert_eq!(
            fsck_fat_summary(output),
            "Dirty bit is set. Fs was not properly unmounted and some data may be corrupt. Automatically removing dirty bit. Reclaimed 9766 unused clusters (5000192 bytes) in 1 chain."
        );
        assert_eq!(
            fsck_fat_summary(
                "fsck.fat 4.2 (2021-01-31)\n/dev/vda1: 7 files, 3856/129022 clusters\n"
            ),
            "/dev/vda1: 7 files, 3856/129022 clusters"
        );
    }
}
