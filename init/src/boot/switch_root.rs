//! Leaving the initramfs: the kernel's rootfs cannot be pivot_root'ed away
//! from, so containers could not use pivot_root. PID 1 moves the initramfs'
//! contents into a tmpfs, moves its early mounts along, and makes the tmpfs
//! the root (mount --move + chroot, as switch_root does). The files are moved,
//! not copied, so the initramfs' memory is freed as it goes.

use std::fs;
use std::io;
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

/// What of the initramfs' top level is not moved: the mount points moved
/// along, the new root itself, and PID 1's own program, which stays where
/// it is, mapped (a copy would be a second one in memory for good; the
/// kernel's module requests reach it as /proc/1/exe, `modprobe::PATH`).
fn left_behind<'a>(mounts: &[&'a str]) -> Vec<&'a str> {
    let mut skip: Vec<&str> = mounts
        .iter()
        .filter_map(|m| m.trim_start_matches('/').split('/').next())
        .collect();
    skip.push(NEW_ROOT.trim_start_matches('/'));
    skip.push("init");
    skip
}

/// Moves every entry of `from` except `skip` (names) into `to`; cross-device,
/// so files are copied and then removed, one at a time.
pub fn move_tree(from: &Path, to: &Path, skip: &[&str]) -> io::Result<()> {
    for entry in fs::read_dir(from)? {
        let entry = entry?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        move_entry(&entry.path(), &to.join(&name))?;
    }
    Ok(())
}

fn move_entry(from: &Path, to: &Path) -> io::Result<()> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let meta = fs::symlink_metadata(from)?;
    let kind = meta.file_type();
    if kind.is_dir() {
        fs::create_dir_all(to)?;
        fs::set_permissions(to, fs::Permissions::from_mode(meta.mode() & 0o7777))?;
        for entry in fs::read_dir(from)? {
            let entry = entry?;
            move_entry(&entry.path(), &to.join(entry.file_name()))?;
        }
        fs::remove_dir(from)
    } else if kind.is_symlink() {
        std::os::unix::fs::symlink(fs::read_link(from)?, to)?;
        fs::remove_file(from)
    } else if kind.is_file() {
        fs::copy(from, to)?;
        fs::remove_file(from)
    } else {
        // Device nodes (/dev/console): devtmpfs provides them in the new root.
        fs::remove_file(from)
    }
}

/// Switches into a tmpfs root. `mounts` are the early mount points to carry
/// over (moved, so they stay the same filesystems).
pub fn switch(mounts: &[&str]) -> Result<(), String> {
    let new_root = Path::new(NEW_ROOT);
    fs::create_dir_all(new_root).map_err(|e| format!("creating {NEW_ROOT}: {e}"))?;
    nix::mount::mount(
        Some("rootfs"),
        new_root,
        Some("tmpfs"),
        MsFlags::empty(),
        Some("mode=0755"),
    )
    .map_err(|e| format!("mounting a tmpfs on {NEW_ROOT}: {e}"))?;
    move_tree(Path::new("/"), new_root, &left_behind(mounts))
        .map_err(|e| format!("moving the initramfs into {NEW_ROOT}: {e}"))?;
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
        // After the switch a tmpfs sits on top of rootfs.
        assert!(!on_initramfs(
            "1 1 0:2 / / rw - rootfs rootfs rw\n30 1 0:30 / / rw - tmpfs rootfs rw\n"
        ));
        assert!(!on_initramfs(
            "25 1 8:1 / / rw,relatime - ext4 /dev/sda1 rw\n"
        ));
        assert!(!on_initramfs(""));
    }

    #[test]
    fn moves_files_dirs_and_links_and_skips_mount_points() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir_all(from.path().join("lib/modules")).unwrap();
        fs::write(from.path().join("lib/modules/a.ko"), b"module").unwrap();
        fs::write(from.path().join("init"), b"elf").unwrap();
        std::os::unix::fs::symlink("init", from.path().join("linuxrc")).unwrap();
        fs::create_dir(from.path().join("proc")).unwrap();
        fs::write(from.path().join("proc/keep"), b"x").unwrap();
        move_tree(from.path(), to.path(), &["proc"]).unwrap();
        assert_eq!(
            fs::read(to.path().join("lib/modules/a.ko")).unwrap(),
            b"module"
        );
        assert_eq!(
            fs::read_link(to.path().join("linuxrc")).unwrap(),
            Path::new("init")
        );
        assert!(!from.path().join("lib").exists() && !from.path().join("init").exists());
        assert!(from.path().join("proc/keep").exists() && !to.path().join("proc").exists());
    }

    #[test]
    fn pid_1s_program_and_the_mount_points_stay_behind() {
        let skip = left_behind(&["/proc", "/sys", "/dev", "/run"]);
        assert_eq!(skip, ["proc", "sys", "dev", "run", "sysroot", "init"]);
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::write(from.path().join("init"), b"elf").unwrap();
        fs::create_dir(from.path().join("etc")).unwrap();
        move_tree(from.path(), to.path(), &skip).unwrap();
        assert!(from.path().join("init").exists() && !to.path().join("init").exists());
        assert!(to.path().join("etc").is_dir());
    }
}
