//! Leaving the initramfs: the kernel's rootfs cannot be pivot_root'ed away
//! from (it is the one mount with no parent), so containers could not use
//! pivot_root. PID 1 bind-mounts the rootfs onto a directory of itself,
//! moves its early mounts into that, and makes it the root (mount --move +
//! chroot, as switch_root does). The root is then the same files as a
//! mount with a parent, and nothing is copied: under TCG copying the
//! initramfs' 8 MiB into a tmpfs took a fifth of a second of every boot.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use nix::mount::MsFlags;

/// Where the new root is assembled.
pub const NEW_ROOT: &str = "/sysroot";

/// Whether `/` is the kernel's initramfs: the top-most mount on `/` in
/// /proc/self/mountinfo has filesystem type `rootfs`.
pub fn on_initramfs(mountinfo: &str) -> bool {
    let fstype = |line: &str| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let dash = fields.iter().position(|w| *w == "-")?;
        (fields.get(4) == Some(&"/")).then(|| fields.get(dash + 1).map(|t| t.to_string()))?
    };
    mountinfo
        .lines()
        .rev()
        .find_map(fstype)
        .is_some_and(|t| t == "rootfs")
}

/// Switches to a root that is the initramfs bound on itself. `mounts` are
/// the early mount points to carry over (moved, so they stay the same
/// filesystems).
pub fn switch(mounts: &[&str]) -> Result<(), String> {
    let new_root = Path::new(NEW_ROOT);
    fs::create_dir_all(new_root).map_err(|e| format!("creating {NEW_ROOT}: {e}"))?;
    // Not recursive: the early mounts are moved below, not duplicated.
    nix::mount::mount(
        Some("/"),
        new_root,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|e| format!("binding the initramfs on {NEW_ROOT}: {e}"))?;
    for mount in mounts.iter().filter(|m| m.matches('/').count() == 1) {
        let target = new_root.join(mount.trim_start_matches('/'));
        fs::create_dir_all(&target).map_err(|e| format!("creating {}: {e}", target.display()))?;
        nix::mount::mount(
            Some(*mount),
            &target,
            None::<&str>,
            MsFlags::MS_MOVE,
            None::<&str>,
        )
        .map_err(|e| format!("moving {mount} into the new root: {e}"))?;
    }
    nix::unistd::chdir(new_root).map_err(|e| format!("chdir {NEW_ROOT}: {e}"))?;
    nix::mount::mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(|e| format!("moving {NEW_ROOT} to /: {e}"))?;
    nix::unistd::chroot(".").map_err(|e| format!("chroot into the new root: {e}"))?;
    nix::unistd::chdir("/").map_err(|e| format!("chdir /: {e}"))?;
    // The bind's own mount point, seen through it: an empty directory.
    let _ = fs::remove_dir(new_root);
    // The kernel's rootfs is a tmpfs whose root is 1777 (the cpio has no
    // entry for `.`): the root of the machine is 0755, as a tmpfs mounted
    // with mode=0755 was.
    fs::set_permissions("/", fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("making / mode 0755: {e}"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_the_initramfs_root() {
        assert!(on_initramfs(
            "1 1 0:2 / / rw - rootfs rootfs rw\n22 1 0:21 / /proc rw - proc proc rw\n"
        ));
        // A root file system mounted over rootfs: not booted from the
        // initramfs.
        assert!(!on_initramfs(
            "1 1 0:2 / / rw - rootfs rootfs rw\n30 1 0:30 / / rw - tmpfs rootfs rw\n"
        ));
        assert!(!on_initramfs(
            "25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        ));
        assert!(!on_initramfs(""));
    }
}
