//! A container's read-only root: a squashfs image attached to a loop device
//! and mounted, or (for user services) a directory bind-mounted read-only.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;

use crate::Error;

const LOOP_CTL_GET_FREE: libc::Ioctl = 0x4C82;
const LOOP_CONFIGURE: libc::Ioctl = 0x4C0A;
const LO_FLAGS_READ_ONLY: u32 = 1;
/// The loop device detaches itself when its last user (the mount) goes.
const LO_FLAGS_AUTOCLEAR: u32 = 4;

/// `struct loop_info64`.
#[repr(C)]
struct LoopInfo64 {
    device: u64,
    inode: u64,
    rdevice: u64,
    offset: u64,
    sizelimit: u64,
    number: u32,
    encrypt_type: u32,
    encrypt_key_size: u32,
    flags: u32,
    file_name: [u8; 64],
    crypt_name: [u8; 64],
    encrypt_key: [u8; 32],
    init: [u64; 2],
}

/// `struct loop_config`.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    info: LoopInfo64,
    reserved: [u64; 8],
}

/// Mounts `image` read-only at `at`. A link at `image` is not followed
/// (a user's image is resolved first, `spawn::resolve_image`).
pub fn mount(image: &Path, at: &Path) -> Result<(), Error> {
    let meta = fs::symlink_metadata(image)
        .map_err(|e| Error::host(format!("image {}", image.display()), e))?;
    fs::create_dir_all(at).map_err(|e| Error::host(format!("creating {}", at.display()), e))?;
    if meta.is_dir() {
        // Bound through its open descriptor: what was checked is what is
        // bound, even if a directory on the way became a link since.
        let dir = crate::in_root::open_without_links(image, libc::O_PATH | libc::O_DIRECTORY)
            .map_err(|e| Error::host(format!("opening image {}", image.display()), e))?;
        let source = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
        let bind = |flags| {
            nix::mount::mount(
                Some(source.as_path()),
                at,
                None::<&str>,
                flags,
                None::<&str>,
            )
        };
        bind(MsFlags::MS_BIND | MsFlags::MS_REC)
            .and_then(|()| bind(MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY))
            .map_err(|e| {
                let doing = format!("bind-mounting {} on {}", image.display(), at.display());
                Error::host(doing, e)
            })
    } else {
        // The loop device's fd stays open until the mount holds the device:
        // with autoclear, closing it first would detach the device.
        let (device, _open) = attach_loop(image)?;
        let flags = MsFlags::MS_RDONLY | MsFlags::MS_NODEV;
        nix::mount::mount(
            Some(device.as_path()),
            at,
            Some("squashfs"),
            flags,
            None::<&str>,
        )
        .map_err(|e| {
            let doing = format!(
                "mounting {} ({}) as squashfs",
                image.display(),
                device.display()
            );
            match e {
                nix::Error::EINVAL => Error::host(
                    doing,
                    io::Error::other(format!("{e} (not a valid squashfs image?)")),
                ),
                e => Error::host(doing, e),
            }
        })
    }
}

/// Attaches `file` read-only to a free loop device; returns its path and
/// the open device.
fn attach_loop(file: &Path) -> Result<(PathBuf, File), Error> {
    // At no link: a user's image is resolved first (`spawn::resolve_image`),
    // and a directory on the way that became a link since fails here.
    let backing = crate::in_root::open_without_links(file, libc::O_RDONLY)
        .map(File::from)
        .map_err(|e| Error::host(format!("opening image {}", file.display()), e))?;
    let name = file.display().to_string();
    attach_loop_over(&backing, &name, 0, 0, false)
}

/// Attaches `length` bytes of the open `backing` (named `name` in errors)
/// from `offset` to a free loop device (0, 0: all of it), read-only unless
/// `writable`; returns its path and the open device. The device detaches
/// itself once nothing has it open or mounted.
pub fn attach_loop_over(
    backing: &File,
    name: &str,
    offset: u64,
    length: u64,
    writable: bool,
) -> Result<(PathBuf, File), Error> {
    let control = OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/loop-control")
        .map_err(|e| Error::host("opening /dev/loop-control (loop module loaded?)", e))?;
    // Another process may take the free device first: try again.
    let mut last_error = None;
    for _ in 0..10 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a number.
        let n = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE) };
        if n < 0 {
            return Err(Error::last_os_error("finding a free loop device"));
        }
        let path = PathBuf::from(format!("/dev/loop{n}"));
        let device = OpenOptions::new()
            .read(true)
            .write(writable)
            .open(&path)
            .map_err(|e| Error::host(format!("opening {}", path.display()), e))?;
        // SAFETY: LoopInfo64 and LoopConfig are plain integer arrays; all-zero
        // is their documented "nothing set" value.
        let mut config: LoopConfig = unsafe { std::mem::zeroed() };
        config.fd = backing.as_raw_fd() as u32;
        config.info.flags = LO_FLAGS_AUTOCLEAR;
        if !writable {
            config.info.flags |= LO_FLAGS_READ_ONLY;
        }
        config.info.offset = offset;
        config.info.sizelimit = length;
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config` we own.
        if unsafe {
            libc::ioctl(
                device.as_raw_fd(),
                LOOP_CONFIGURE,
                &config as *const LoopConfig,
            )
        } == 0
        {
            return Ok((path, device));
        }
        last_error = Some(Error::last_os_error(format!(
            "attaching {name} to {}",
            path.display()
        )));
    }
    Err(last_error.unwrap_or_else(|| Error::last_os_error("attaching a loop device")))
}
