//! `brig-logd run`: the log service (docs/logging.md).

use std::path::PathBuf;
use std::process::ExitCode;

use brig_logd::daemon::{self, Config};
use brig_logd::store::Limits;
use brig_spec::log_config::{LoggingConfig, Storage};

const USAGE: &str = "usage: brig-logd run [--config FILE] [--syslog-socket PATH] [--init-socket PATH] [--query-socket PATH] [--store DIR] [--ram-store DIR] [--max-file BYTES] [--max-total BYTES] [--kmsg PATH|none]";

/// Where logs go with `storage: ram`: a tmpfs of the container's own.
const RAM_STORE: &str = "/var/log/brig-ram";

fn main() -> ExitCode {
    match parse(std::env::args().skip(1).collect())
        .and_then(|c| daemon::run(&c).map_err(|e| e.to_string()))
    {
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
        syslog_socket: brig_spec::paths::SYSLOG_SOCKET.into(),
        init_socket: brig_spec::paths::INIT_LOG_SOCKET.into(),
        query_socket: brig_spec::paths::LOG_QUERY_SOCKET.into(),
        store_dir: "/var/log/brig".into(),
        limits: DISK,
        kmsg: Some("/dev/kmsg".into()),
        remotes: Vec::new(),
    };
    let mut config_file = PathBuf::from(brig_spec::paths::LOGGING_CONFIG);
    let mut ram_store = PathBuf::from(RAM_STORE);
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
            "--init-socket" => config.init_socket = PathBuf::from(value()?),
            "--query-socket" => config.query_socket = PathBuf::from(value()?),
            "--config" => config_file = PathBuf::from(value()?),
            "--store" => config.store_dir = PathBuf::from(value()?),
            "--ram-store" => ram_store = PathBuf::from(value()?),
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
    let logging = read_config(&config_file);
    config.remotes = logging.remote;
    if logging.storage == Storage::Ram {
        config.store_dir = ram_store;
    }
    if !limits_given {
        let in_ram = logging.storage == Storage::Ram || in_ram(&config.store_dir);
        config.limits = match logging.max_size {
            Some(total) => Limits {
                max_total: total,
                max_file: (total / 16).clamp(16 << 10, 1 << 20),
            },
            None if in_ram => RAM,
            None => DISK,
        };
        if in_ram {
            let why = match logging.storage {
                Storage::Ram => "brig.logging.storage: ram",
                Storage::Auto => "no state partition",
            };
            eprintln!(
                "brig-logd: {} is in RAM ({why}): keeping at most {} KiB",
                config.store_dir.display(),
                config.limits.max_total >> 10
            );
        }
    }
    Ok(config)
}

/// `brig.logging` as PID 1 wrote it; the defaults when there is none, or
/// when it cannot be read (said): logging goes on either way.
fn read_config(path: &std::path::Path) -> LoggingConfig {
    let read = std::fs::read(path)
        .map_err(|e| e.to_string())
        .and_then(|data| serde_json::from_slice(&data).map_err(|e| e.to_string()));
    match read {
        Ok(config) => config,
        Err(_) if !path.exists() => LoggingConfig::default(),
        Err(e) => {
            eprintln!(
                "brig-logd: error: reading the logging config {}: {e}; logging with the defaults, not forwarding",
                path.display()
            );
            LoggingConfig::default()
        }
    }
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
