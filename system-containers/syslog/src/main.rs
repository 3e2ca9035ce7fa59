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
        limits: Limits {
            max_file: 1 << 20,
            max_total: 64 << 20,
        },
        kmsg: Some("/dev/kmsg".into()),
    };
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
            "--max-file" => config.limits.max_file = bytes(value()?)?,
            "--max-total" => config.limits.max_total = bytes(value()?)?,
            "--kmsg" => {
                config.kmsg = match value()? {
                    v if v == "none" => None,
                    v => Some(PathBuf::from(v)),
                }
            }
            other => return Err(format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    Ok(config)
}
