//! The syscalls PID 1's logic needs, behind one small trait so that the logic
//! (mount order, coldplug, shutdown) is unit-tested with a recording fake and
//! the real path is exercised in QEMU.

use std::ffi::CString;
use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

use nix::mount::{MntFlags, MsFlags};
use nix::sys::reboot::RebootMode;
use nix::sys::signal::Signal;

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
    fn set_hostname(&self, name: &str) -> io::Result<()>;
    /// Sends `signal` to every process but PID 1.
    fn kill_all(&self, signal: Signal) -> io::Result<()>;
    /// Reaps exited children; returns false once no child is left.
    fn reap_children(&self) -> bool;
    fn sleep(&self, duration: Duration);
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

    fn sleep(&self, duration: Duration) {
        std::thread::sleep(duration);
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
        fn sleep(&self, duration: Duration) {
            self.calls
                .borrow_mut()
                .push(format!("sleep {}ms", duration.as_millis()));
        }
        fn sync(&self) {
            self.calls.borrow_mut().push("sync".into());
        }
        fn power(&self, action: PowerAction) -> io::Error {
            let _ = self.record(format!("power {action:?}"));
            io::Error::from_raw_os_error(libc::EPERM)
        }
    }
}
