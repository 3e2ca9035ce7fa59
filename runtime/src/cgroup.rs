//! cgroup v2: one leaf per service under /sys/fs/cgroup/brig/, with limits,
//! memory accounting and `cgroup.kill`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use brig_spec::service::Limits;

pub const ROOT: &str = "/sys/fs/cgroup";
/// Parent of every service's cgroup.
pub const SERVICES: &str = "brig";
const CONTROLLERS: [&str; 3] = ["cpu", "memory", "pids"];

/// Whether `root` is a cgroup2 hierarchy (it has cgroup.controllers).
pub fn is_v2(root: &Path) -> bool {
    root.join("cgroup.controllers").exists()
}

/// Enables the controllers services use, at the root and in `brig/`.
/// Controllers the kernel lacks are reported, the others still enabled.
pub fn prepare(root: &Path) -> Vec<String> {
    let mut errors = Vec::new();
    let services = root.join(SERVICES);
    if let Err(e) = fs::create_dir_all(&services) {
        return vec![format!("creating {}: {e}", services.display())];
    }
    for dir in [root, services.as_path()] {
        for controller in CONTROLLERS {
            let file = dir.join("cgroup.subtree_control");
            if let Err(e) = fs::write(&file, format!("+{controller}")) {
                errors.push(format!("enabling {controller} in {}: {e}", file.display()));
            }
        }
    }
    errors
}

/// The files and values that apply `limits` on a machine with
/// `mem_total` bytes of memory (for `memory_max_percent`).
pub fn limit_files(limits: &Limits, mem_total: Option<u64>) -> Vec<(&'static str, String)> {
    let mut files = Vec::new();
    let share = limits
        .memory_max_percent
        .zip(mem_total)
        .map(|(percent, total)| total / 100 * percent);
    if let Some(bytes) = limits.memory_max.or(share) {
        files.push(("memory.max", bytes.to_string()));
        // Without this a memory hog would only be slowed down by swap.
        files.push(("memory.swap.max", "0".to_string()));
    }
    if let Some(pids) = limits.pids_max {
        files.push(("pids.max", pids.to_string()));
    }
    if let Some(weight) = limits.cpu_weight {
        files.push(("cpu.weight", weight.to_string()));
    }
    files
}

/// MemTotal from /proc/meminfo, in bytes.
pub fn mem_total() -> Option<u64> {
    let text = fs::read_to_string("/proc/meminfo").ok()?;
    let kib = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// Creates (or reuses) the service's cgroup and applies its limits.
pub fn create(root: &Path, service: &str, limits: &Limits) -> io::Result<PathBuf> {
    let path = root.join(SERVICES).join(service);
    match fs::create_dir(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => reset(&path)?,
        Err(e) => return Err(context(e, format!("creating cgroup {}", path.display()))),
    }
    for (file, value) in limit_files(limits, mem_total()) {
        match fs::write(path.join(file), &value) {
            Ok(()) => {}
            // No swap configured: memory.swap.max does not exist.
            Err(e) if file == "memory.swap.max" && e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(context(
                    e,
                    format!("setting {file}={value} in {}", path.display()),
                ))
            }
        }
    }
    Ok(path)
}

/// Makes a cgroup a service used before fit to start it again: a service
/// that made child cgroups and handed them controllers (dockerd does) left
/// a cgroup no process may join (cgroup v2's "no internal processes" rule;
/// clone3 into it fails with EBUSY). Its processes are dead by now, so the
/// children go and the controllers are taken back. A child still being
/// emptied fails with EBUSY, and the supervisor tries again later.
fn reset(path: &Path) -> io::Result<()> {
    remove_children(path)?;
    let control = path.join("cgroup.subtree_control");
    let enabled = match fs::read_to_string(&control) {
        Ok(enabled) => enabled,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(context(e, format!("reading {}", control.display()))),
    };
    let disable: Vec<String> = enabled
        .split_whitespace()
        .map(|c| format!("-{c}"))
        .collect();
    if disable.is_empty() {
        return Ok(());
    }
    fs::write(&control, disable.join(" ")).map_err(|e| {
        context(
            e,
            format!("writing {} to {}", disable.join(" "), control.display()),
        )
    })
}

/// Removes every cgroup below `path`, deepest first (a cgroup directory
/// goes with rmdir alone; its files are the kernel's).
fn remove_children(path: &Path) -> io::Result<()> {
    let entries =
        fs::read_dir(path).map_err(|e| context(e, format!("listing {}", path.display())))?;
    for entry in entries {
        let entry = entry.map_err(|e| context(e, format!("listing {}", path.display())))?;
        if entry.file_type().is_ok_and(|t| t.is_dir()) {
            let child = entry.path();
            remove_children(&child)?;
            fs::remove_dir(&child)
                .map_err(|e| context(e, format!("removing cgroup {}", child.display())))?;
        }
    }
    Ok(())
}

fn context(e: io::Error, doing: String) -> io::Error {
    io::Error::new(e.kind(), format!("{doing}: {e}"))
}

/// Kills every process in the cgroup (and its descendants).
pub fn kill(path: &Path) -> io::Result<()> {
    fs::write(path.join("cgroup.kill"), "1")
}

/// Whether any process is left in the cgroup.
pub fn populated(path: &Path) -> bool {
    fs::read_to_string(path.join("cgroup.events"))
        .map(|events| events.lines().any(|l| l == "populated 1"))
        .unwrap_or(false)
}

pub fn memory_current(path: &Path) -> Option<u64> {
    fs::read_to_string(path.join("memory.current"))
        .ok()?
        .trim()
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_map_to_cgroup_files() {
        let limits = Limits {
            memory_max: Some(64 << 20),
            pids_max: Some(20),
            cpu_weight: Some(50),
            ..Limits::default()
        };
        assert_eq!(
            limit_files(&limits, None),
            [
                ("memory.max", "67108864".to_string()),
                ("memory.swap.max", "0".to_string()),
                ("pids.max", "20".to_string()),
                ("cpu.weight", "50".to_string())
            ]
        );
        assert!(limit_files(&Limits::default(), Some(1 << 30)).is_empty());
        // A share of the machine's memory.
        let share = Limits {
            memory_max_percent: Some(60),
            ..Limits::default()
        };
        assert_eq!(
            limit_files(&share, Some(1000 << 20))[0],
            ("memory.max", (600u64 << 20).to_string())
        );
        assert!(limit_files(&share, None).is_empty());
        assert!(mem_total().is_some_and(|b| b > 1 << 20));
    }

    #[test]
    fn create_writes_limits_and_reuses_an_existing_cgroup() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir(root.path().join(SERVICES)).unwrap();
        let limits = Limits {
            memory_max: Some(1 << 20),
            pids_max: Some(5),
            ..Limits::default()
        };
        // A plain directory stands in for cgroupfs (files are created on write).
        let path = create(root.path(), "svc", &limits).unwrap();
        assert_eq!(
            fs::read_to_string(path.join("memory.max")).unwrap(),
            "1048576"
        );
        assert_eq!(fs::read_to_string(path.join("pids.max")).unwrap(), "5");
        assert_eq!(create(root.path(), "svc", &limits).unwrap(), path);
    }

    #[test]
    fn a_reused_cgroup_loses_the_children_its_last_run_made() {
        let root = tempfile::tempdir().unwrap();
        let path = root.path().join(SERVICES).join("docker");
        // What dockerd leaves: its own processes moved to a child, one
        // cgroup per container below another.
        fs::create_dir_all(path.join("init")).unwrap();
        fs::create_dir_all(path.join("docker/0123abcd")).unwrap();
        fs::write(path.join("cgroup.subtree_control"), "cpu memory pids\n").unwrap();
        assert_eq!(
            create(root.path(), "docker", &Limits::default()).unwrap(),
            path
        );
        let left: Vec<_> = fs::read_dir(&path)
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().is_dir())
            .collect();
        assert!(left.is_empty(), "child cgroups left: {left:?}");
    }

    #[test]
    fn populated_reads_cgroup_events() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("cgroup.events"), "populated 1\nfrozen 0\n").unwrap();
        assert!(populated(dir.path()));
        fs::write(dir.path().join("cgroup.events"), "populated 0\nfrozen 0\n").unwrap();
        assert!(!populated(dir.path()));
        assert!(!populated(&dir.path().join("gone")));
    }
}
