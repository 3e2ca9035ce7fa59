//! The syscalls PID 1's logic needs, behind one small trait so that the logic
//! (mount order, coldplug, shutdown) is unit-tested with a recording fake and
//! the real path is exercised in QEMU.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::mount::{MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;
use nix::sys::signal::Signal;

use crate::config::ask;

/// What to do once everything is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    PowerOff,
    Reboot,
    Halt,
}

impl PowerAction {
    pub fn verb(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "powering off",
            PowerAction::Reboot => "rebooting",
            PowerAction::Halt => "halting",
        }
    }
}

pub trait System {
    fn create_dir_all(&self, path: &str) -> io::Result<()>;
    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()>;
    /// Unmounts `target`; `detach` falls back to a lazy unmount.
    fn unmount(&self, target: &str, detach: bool) -> io::Result<()>;
    fn remount_read_only(&self, target: &str) -> io::Result<()>;
    /// Grows the mounted ext4 filesystem at `mount_point` to `bytes`, online
    /// (what resize2fs does for a mounted filesystem).
    fn grow_ext4(&self, mount_point: &str, bytes: u64) -> io::Result<()>;
    /// Loads the module file at `path` with `params` ("name=value ...").
    fn load_module(&self, path: &Path, params: &str) -> io::Result<()>;
    /// Loads modules that do not depend on one another: each (path,
    /// params), a result for each in the same order. One after another
    /// here; the real system loads them side by side.
    fn load_modules(&self, modules: &[(PathBuf, &str)]) -> Vec<io::Result<()>> {
        modules
            .iter()
            .map(|(path, params)| self.load_module(path, params))
            .collect()
    }
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    /// Sends `signal` to every process but PID 1.
    fn kill_all(&self, signal: Signal) -> io::Result<()>;
    /// Reaps exited children; returns false once no child is left.
    fn reap_children(&self) -> bool;
    /// Reaps one exited child: its pid and exit code (128 + the signal
    /// that killed it); None while no child has exited.
    fn reap(&self) -> Option<(i32, i32)>;
    /// The whole file at `path`.
    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>>;
    /// What `brig-config` answers (`config::ask`): the one place PID 1
    /// learns what a cloud-config means.
    fn ask_config(&self, question: &ask::Question) -> Result<ask::Answer, String>;
    /// Replaces the file at `path` with `data`, making its directory if
    /// needed: written beside it, synced, renamed over it, the directory
    /// synced, so a reader or a power cut sees the old file or the new,
    /// never a part. The file gets `mode`.
    fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()>;
    /// Writes `value` to the sysctl file at `path` (under /proc/sys).
    fn set_sysctl(&self, path: &Path, value: &str) -> io::Result<()>;
    /// Removes the file at `path`; one that is not there is no error.
    fn remove_file(&self, path: &Path) -> io::Result<()>;
    /// Makes `link` a symbolic link to `target`; an existing `link` is no
    /// error.
    fn symlink(&self, target: &str, link: &str) -> io::Result<()>;
    fn sleep(&self, duration: Duration);
    /// The monotonic clock: the supervisor's time (a fake one steps it).
    fn now(&self) -> Instant;
    fn sync(&self);
    /// Only returns on failure.
    fn power(&self, action: PowerAction) -> io::Error;
}

/// The real thing.
pub struct Linux;

fn errno(e: nix::Error) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

impl System for Linux {
    fn create_dir_all(&self, path: &str) -> io::Result<()> {
        std::fs::create_dir_all(path)
    }

    fn mount(
        &self,
        source: &str,
        target: &str,
        fstype: &str,
        flags: MsFlags,
        data: &str,
    ) -> io::Result<()> {
        let data = (!data.is_empty()).then_some(data);
        nix::mount::mount(Some(source), target, Some(fstype), flags, data).map_err(errno)
    }

    fn unmount(&self, target: &str, detach: bool) -> io::Result<()> {
        match nix::mount::umount2(target, MntFlags::empty()) {
            Err(_) if detach => nix::mount::umount2(target, MntFlags::MNT_DETACH).map_err(errno),
            result => result.map_err(errno),
        }
    }

    fn remount_read_only(&self, target: &str) -> io::Result<()> {
        let flags = MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
        nix::mount::mount(None::<&str>, target, None::<&str>, flags, None::<&str>).map_err(errno)
    }

    fn grow_ext4(&self, mount_point: &str, bytes: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        /// `EXT4_IOC_RESIZE_FS`: `_IOW('f', 16, __u64)`.
        const EXT4_IOC_RESIZE_FS: u64 = 0x4008_6610;
        // For ext4, statvfs's block size is the filesystem's block size.
        let block = nix::sys::statvfs::statvfs(mount_point)
            .map_err(errno)?
            .block_size() as u64;
        let blocks: u64 = bytes / block.max(1024);
        let dir = File::open(mount_point)?;
        // SAFETY: the ioctl reads one u64 (the new block count) from a
        // pointer to a live local.
        let r = unsafe { libc::ioctl(dir.as_raw_fd(), EXT4_IOC_RESIZE_FS as _, &blocks) };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    fn load_module(&self, path: &Path, params: &str) -> io::Result<()> {
        let file = File::open(path)?;
        let params = CString::new(params).map_err(|_| io::ErrorKind::InvalidInput)?;
        // Modules are stored uncompressed (the initramfs is compressed as a
        // whole), so no MODULE_INIT_COMPRESSED_FILE flag is needed.
        match nix::kmod::finit_module(&file, &params, nix::kmod::ModuleInitFlags::empty()) {
            Ok(()) | Err(nix::Error::EEXIST) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    /// A thread per module: most of a load is the kernel's (reading,
    /// checking the signature, relocating, the driver's probe), and under
    /// TCG each costs tens of milliseconds a vCPU could share.
    fn load_modules(&self, modules: &[(PathBuf, &str)]) -> Vec<io::Result<()>> {
        if modules.len() < 2 {
            return modules
                .iter()
                .map(|(path, params)| self.load_module(path, params))
                .collect();
        }
        std::thread::scope(|scope| {
            let loads: Vec<_> = modules
                .iter()
                .map(|(path, params)| {
                    std::thread::Builder::new()
                        .name("module".into())
                        .spawn_scoped(scope, move || self.load_module(path, params))
                })
                .collect();
            loads
                .into_iter()
                .zip(modules)
                .map(|(load, (path, params))| match load {
                    // Threads not to be had: load it here instead.
                    Err(_) => self.load_module(path, params),
                    Ok(handle) => handle
                        .join()
                        .unwrap_or_else(|_| Err(io::Error::other("the loading thread failed"))),
                })
                .collect()
        })
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(errno)
    }

    fn kill_all(&self, signal: Signal) -> io::Result<()> {
        // pid -1: every process we may signal except ourselves (PID 1).
        match nix::sys::signal::kill(nix::unistd::Pid::from_raw(-1), signal) {
            Ok(()) | Err(nix::Error::ESRCH) => Ok(()),
            Err(e) => Err(errno(e)),
        }
    }

    fn reap_children(&self) -> bool {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) => return true,
                Ok(_) => continue,
                Err(nix::Error::EINTR) => continue,
                // ECHILD: nobody left.
                Err(_) => return false,
            }
        }
    }

    fn reap(&self) -> Option<(i32, i32)> {
        use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
        loop {
            return match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => Some((pid.as_raw(), code)),
                Ok(WaitStatus::Signaled(pid, signal, _)) => {
                    Some((pid.as_raw(), 128 + signal as i32))
                }
                // Stopped or continued: not an exit.
                Ok(WaitStatus::StillAlive) | Err(_) => None,
                Ok(_) => continue,
            };
        }
    }

    fn ask_config(&self, question: &ask::Question) -> Result<ask::Answer, String> {
        ask::run(Path::new(ask::PROGRAM), question, ask::DEADLINE)
    }

    fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }

    fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir)?;
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        let temporary = dir.join(format!(".{name}.new"));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&temporary)?;
        // A leftover temporary file from a power cut may have another mode.
        file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        file.write_all(data)?;
        file.sync_all()?;
        std::fs::rename(&temporary, path)?;
        File::open(dir)?.sync_all()
    }

    fn set_sysctl(&self, path: &Path, value: &str) -> io::Result<()> {
        std::fs::write(path, value)
    }

    fn remove_file(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            result => result,
        }
    }

    fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
        match std::os::unix::fs::symlink(target, link) {
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            result => result,
        }
    }

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
    }

    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sync(&self) {
        nix::unistd::sync();
    }

    fn power(&self, action: PowerAction) -> io::Error {
        let mode = match action {
            PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
            PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
            PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
        };
        match nix::sys::reboot::reboot(mode) {
            Err(e) => errno(e),
            Ok(never) => match never {},
        }
    }
}

#[cfg(test)]
pub mod fake {
    //! A `System` that records calls, for unit tests.
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    pub type LoadHook = Box<dyn Fn(&Path)>;

    #[derive(Default)]
    pub struct Recorder {
        pub calls: RefCell<Vec<String>>,
        /// Call -> errno to fail with; matches the whole call or its leading
        /// words, e.g. "mount /dev/shm" fails "mount /dev/shm tmpfs shm".
        pub failures: HashMap<String, i32>,
        /// Called on each module load, to play the kernel adding devices.
        pub on_load: Option<LoadHook>,
        /// How many reap calls report children still alive.
        pub children_alive_for: RefCell<usize>,
        /// Children that have exited, for `reap`: (pid, code).
        pub exited: RefCell<std::collections::VecDeque<(i32, i32)>>,
        /// The files written, as a filesystem would hold them.
        pub files: RefCell<HashMap<std::path::PathBuf, Vec<u8>>>,
        /// The time `now` gives, stepped by `advance` (shared: a fake
        /// runtime may step it too, as a slow container start would).
        pub clock: std::rc::Rc<RefCell<Option<Instant>>>,
        /// The module names of each `load_modules` call: what the real
        /// system would load side by side.
        pub module_rounds: RefCell<Vec<Vec<String>>>,
    }

    impl Recorder {
        fn record(&self, call: String) -> io::Result<()> {
            let failure = self
                .failures
                .iter()
                .find(|(prefix, _)| call == **prefix || call.starts_with(&format!("{prefix} ")));
            self.calls.borrow_mut().push(call);
            match failure {
                Some((_, &code)) => Err(io::Error::from_raw_os_error(code)),
                None => Ok(()),
            }
        }

        pub fn calls(&self) -> Vec<String> {
            self.calls.borrow().clone()
        }

        /// Moves the clock on by `by`.
        pub fn advance(&self, by: Duration) {
            let now = self.now();
            *self.clock.borrow_mut() = Some(now + by);
        }

        /// The text of the file at `path`, if one was written there.
        pub fn file(&self, path: &str) -> Option<String> {
            let files = self.files.borrow();
            let data = files.get(Path::new(path))?;
            Some(String::from_utf8_lossy(data).into_owned())
        }
    }

    impl System for Recorder {
        fn create_dir_all(&self, _: &str) -> io::Result<()> {
            Ok(())
        }
        fn mount(
            &self,
            source: &str,
            target: &str,
            fstype: &str,
            _: MsFlags,
            data: &str,
        ) -> io::Result<()> {
            self.record(
                format!("mount {target} {fstype} {source} {data}")
                    .trim_end()
                    .to_string(),
            )
        }
        fn unmount(&self, target: &str, detach: bool) -> io::Result<()> {
            self.record(format!(
                "unmount {target}{}",
                if detach { " detach" } else { "" }
            ))
        }
        fn remount_read_only(&self, target: &str) -> io::Result<()> {
            self.record(format!("remount-ro {target}"))
        }
        fn grow_ext4(&self, mount_point: &str, bytes: u64) -> io::Result<()> {
            self.record(format!("grow-ext4 {mount_point} {bytes}"))
        }
        fn load_module(&self, path: &Path, params: &str) -> io::Result<()> {
            if let Some(hook) = &self.on_load {
                hook(path);
            }
            if params.is_empty() {
                self.record(format!("load {}", path.display()))
            } else {
                self.record(format!("load {} {params}", path.display()))
            }
        }
        fn load_modules(&self, modules: &[(PathBuf, &str)]) -> Vec<io::Result<()>> {
            self.module_rounds.borrow_mut().push(
                modules
                    .iter()
                    .map(|(path, _)| {
                        crate::host::module_index::module_name(&path.to_string_lossy())
                    })
                    .collect(),
            );
            modules
                .iter()
                .map(|(path, params)| self.load_module(path, params))
                .collect()
        }
        fn set_hostname(&self, name: &str) -> io::Result<()> {
            self.record(format!("hostname {name}"))
        }
        fn kill_all(&self, signal: Signal) -> io::Result<()> {
            self.record(format!("kill-all {}", signal.as_str()))
        }
        fn reap_children(&self) -> bool {
            let mut left = self.children_alive_for.borrow_mut();
            self.calls.borrow_mut().push("reap".into());
            if *left == 0 {
                return false;
            }
            *left -= 1;
            true
        }
        fn reap(&self) -> Option<(i32, i32)> {
            self.exited.borrow_mut().pop_front()
        }
        /// Answered here, through JSON as the real program's answer is.
        fn ask_config(&self, question: &ask::Question) -> Result<ask::Answer, String> {
            let wire = serde_json::to_string(question).map_err(|e| e.to_string())?;
            let answer = ask::answer(serde_json::from_str(&wire).map_err(|e| e.to_string())?);
            let wire = serde_json::to_string(&answer).map_err(|e| e.to_string())?;
            serde_json::from_str(&wire).map_err(|e| e.to_string())
        }
        fn read_file(&self, path: &Path) -> io::Result<Vec<u8>> {
            let files = self.files.borrow();
            files
                .get(path)
                .cloned()
                .ok_or(io::ErrorKind::NotFound.into())
        }
        fn write_file(&self, path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
            self.record(format!("write {} {mode:o}", path.display()))?;
            self.files.borrow_mut().insert(path.into(), data.to_vec());
            Ok(())
        }
        fn set_sysctl(&self, path: &Path, value: &str) -> io::Result<()> {
            self.record(format!("sysctl {} {value}", path.display()))
        }
        fn remove_file(&self, path: &Path) -> io::Result<()> {
            self.record(format!("remove {}", path.display()))?;
            self.files.borrow_mut().remove(path);
            Ok(())
        }
        fn symlink(&self, target: &str, link: &str) -> io::Result<()> {
            self.record(format!("symlink {link} -> {target}"))
        }
        fn sleep(&self, duration: Duration) {
            self.calls
                .borrow_mut()
                .push(format!("sleep {}ms", duration.as_millis()));
        }
        fn sync(&self) {
            self.calls.borrow_mut().push("sync".into());
        }
        fn now(&self) -> Instant {
            *self.clock.borrow_mut().get_or_insert_with(Instant::now)
        }
        fn power(&self, action: PowerAction) -> io::Error {
            let _ = self.record(format!("power {action:?}"));
            io::Error::from_raw_os_error(libc::EPERM)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn files_are_replaced_whole_with_their_mode_and_nothing_left_beside_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config/docker/daemon.json");
        Linux.write_file(&path, b"first", 0o600).unwrap();
        Linux.write_file(&path, b"second", 0o600).unwrap();
        assert_eq!(Linux.read_file(&path).unwrap(), b"second");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["daemon.json"], "no temporary file left");
        Linux.remove_file(&path).unwrap();
        Linux
            .remove_file(&path)
            .expect("a file already gone is no error");
        assert!(Linux.read_file(&path).is_err());
    }
}
