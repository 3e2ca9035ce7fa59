//! `brig-logd run`: the log service (docs/logging.md).

use std::path::PathBuf;
use std::process::ExitCode;

use brig_logd::daemon::{self, Config};
use brig_logd::store::Limits;

const USAGE: &str = "usage: brig-logd run [--syslog-socket PATH] [--query-socket PATH] [--store DIR] [--max-file BYTES] [--max-total BYTES] [--kmsg PATH|none]";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect()).and_then(|c| daemon::run(&c)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("brig-logd: {e}");
            ExitCode::FAILURE
        }
    }
}

fn parse(args: Vec<String>) -> Result<Config, String> {
    let mut it = args.into_iter();
    if it.next().as_deref() != Some("run") {
        return Err(USAGE.into());
    }
    let mut config = Config {
        syslog_socket: brig_spec::logs::SYSLOG_SOCKET.into(),
        query_socket: brig_spec::logs::QUERY_SOCKET.into(),
        store_dir: "/var/log/brig".into(),
        limits: DISK,
        kmsg: Some("/dev/kmsg".into()),
    };
    let mut limits_given = false;
    while let Some(flag) = it.next() {
        let mut value = || {
            it.next()
                .ok_or_else(|| format!("{flag} needs a value\n{USAGE}"))
        };
        let bytes = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{flag} takes a number of bytes, not {v:?}"))
        };
        match flag.as_str() {
            "--syslog-socket" => config.syslog_socket = PathBuf::from(value()?),
            "--query-socket" => config.query_socket = PathBuf::from(value()?),
            "--store" => config.store_dir = PathBuf::from(value()?),
            "--max-file" => {
                config.limits.max_file = bytes(value()?)?;
                limits_given = true;
            }
            "--max-total" => {
                config.limits.max_total = bytes(value()?)?;
                limits_given = true;
            }
            "--kmsg" => {
                config.kmsg = match value()? {
                    v if v == "none" => None,
                    v => Some(PathBuf::from(v)),
                }
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    if !limits_given && in_ram(&config.store_dir) {
        config.limits = RAM;
        eprintln!(
            "brig-logd: {} is in RAM (no state partition): keeping at most {} KiB",
            config.store_dir.display(),
            RAM.max_total >> 10
        );
    }
    Ok(config)
}

/// On a disk: 64 MiB in 1 MiB files. In RAM: 4 MiB in 256 KiB files.
const DISK: Limits = Limits {
    max_file: 1 << 20,
    max_total: 64 << 20,
};
const RAM: Limits = Limits {
    max_file: 256 << 10,
    max_total: 4 << 20,
};

/// Whether `dir` is on tmpfs or ramfs.
fn in_ram(dir: &std::path::Path) -> bool {
    const TMPFS_MAGIC: u32 = 0x0102_1994;
    const RAMFS_MAGIC: u32 = 0x8584_58f6;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs writes one struct statfs to a zeroed local.
    let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a pointer to that local.
    if unsafe { libc::statfs(path.as_ptr(), &mut fs) } != 0 {
        return false;
    }
    // f_type's type differs between C libraries; the magic numbers are 32-bit.
    let kind = fs.f_type as u32;
    kind == TMPFS_MAGIC || kind == RAMFS_MAGIC
}
