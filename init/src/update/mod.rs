//! OS updates on the machine (docs/updates.md): installing a signed bundle
//! in the other slot, `brigctl os status` and `rollback`. Each runs in a
//! child process that owns the client's connection, so PID 1 never waits
//! on a download or on the boot partition.

pub mod boot_partition;
pub mod entries;
pub mod install;

use std::io::Write;
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;

use brig_spec::control::{OsStatus, Response};

use crate::event_loop::Init;
use crate::host::console::say;
use crate::host::system::System;
use boot_partition::{Machine, Mounted};

/// An OS request, carried out in a child process.
pub enum Job {
    Upgrade { url: String, allow_downgrade: bool },
    Status,
    Rollback,
}

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
        let machine = self.machine.clone();
        // The child writes to the client itself; PID 1's copy closes below.
        // SAFETY: dup of an fd PID 1 owns (the client's, open in `sources`).
        let Ok(copy) = nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) }) else {
            return error("duplicating the client connection".into());
        };
        // SAFETY: PID 1 is single-threaded, so the child has a consistent
        // heap; it does its job, writes to its socket and _exits.
        match unsafe { nix::unistd::fork() } {
            Ok(nix::unistd::ForkResult::Child) => {
                let _ = nix::sys::signal::SigSet::empty().thread_set_mask();
                let mut client = UnixStream::from(copy);
                let _ = client.set_nonblocking(false);
                let code = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    run(job, machine.as_ref(), &mut client)
                }))
                .unwrap_or(2);
                // SAFETY: leave without running PID 1's destructors.
                unsafe { libc::_exit(code) }
            }
            Ok(nix::unistd::ForkResult::Parent { child }) => {
                drop(copy);
                self.forget(fd);
                if changes {
                    self.update_child = Some(child.as_raw());
                }
                None
            }
            Err(e) => error(format!("starting the OS request's process: {e}")),
        }
    }

    /// The reaper's part: an update or rollback process has ended.
    pub(crate) fn os_request_ended(&mut self, pid: i32, code: i32) -> bool {
        if self.update_child != Some(pid) {
            return false;
        }
        self.update_child = None;
        if code != 0 {
            say(&format!(
                "update: the request's process ended with code {code}"
            ));
        }
        true
    }
}

/// The child's whole job; its exit code.
fn run(job: Job, machine: Option<&Machine>, client: &mut UnixStream) -> i32 {
    let mut send = |response: &Response| {
        let mut line = serde_json::to_vec(response).unwrap_or_default();
        line.push(b'\n');
        let _ = client.write_all(&line);
    };
    let outcome = match job {
        Job::Upgrade {
            url,
            allow_downgrade,
        } => {
            let mut progress = |message: &str| {
                say(&format!("update: {message}"));
                send(&Response::Progress {
                    message: message.to_string(),
                });
            };
            let outcome = install::install(machine, &url, allow_downgrade, &mut progress);
            let (verb, text) = match &outcome {
                Ok(done) => ("", done.clone()),
                Err(e) => ("failed: ", e.clone()),
            };
            say(&format!("update: {verb}{text}"));
            install::record(&format!("{verb}{text} (from {url})"));
            outcome.map(|message| Response::Ok { message })
        }
        Job::Status => status(machine).map(|status| Response::Os { status }),
        Job::Rollback => rollback(machine).map(|message| {
            say(&format!("update: rollback: {message}"));
            Response::Ok { message }
        }),
    };
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
