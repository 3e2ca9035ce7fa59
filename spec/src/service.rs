//! The system container spec: `system-containers/<name>/service.toml`, also
//! the format of user-added services. See docs/service-spec.md.

use crate::problem::Problem;
use std::collections::BTreeMap;

use serde::{Deserialize, Deserializer, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceSpec {
    /// Set from the directory or config key, not from the file.
    #[serde(default, skip_deserializing)]
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// Whether the image has it at all.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Whether PID 1 starts it at boot. False: in the image and in `brigctl
    /// ps` all the same, stopped until started by hand; for an image whose
    /// programs PID 1 runs itself (storage's filesystem tools).
    #[serde(default = "yes")]
    pub start_at_boot: bool,
    /// The boards whose images it goes into (`rpi4`); empty: every board.
    #[serde(default)]
    pub boards: Vec<String>,
    pub rootfs: Rootfs,
    /// Program and arguments; the program is an absolute path in the rootfs.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// `root`, a name from the rootfs' /etc/passwd, or `uid[:gid]`.
    #[serde(default = "root")]
    pub user: String,
    #[serde(default = "slash")]
    pub working_dir: String,
    /// Namespaces shared with the host instead of private ones.
    #[serde(default)]
    pub host_namespaces: Vec<Namespace>,
    /// Capabilities granted beyond the default set (names without CAP_).
    #[serde(default)]
    pub capabilities: Vec<String>,
    /// All capabilities, host devices, no `no_new_privs`; for services that
    /// manage the machine (docker).
    #[serde(default)]
    pub privileged: bool,
    /// System calls allowed beyond the default seccomp filter (names, as
    /// in `man 2 syscalls`: `keyctl`, `unshare`); see `seccomp.rs`. A
    /// privileged service has no filter.
    #[serde(default)]
    pub seccomp_allow: Vec<String>,
    #[serde(default)]
    pub read_only_root: bool,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub limits: Limits,
    /// Host device nodes made available inside (`/dev/net/tun`).
    #[serde(default)]
    pub devices: Vec<String>,
    /// Namespaced sysctls set inside (`net.ipv4.ip_forward = "1"`).
    #[serde(default)]
    pub sysctls: BTreeMap<String, String>,
    /// Kernel modules PID 1 loads before the service starts: those the
    /// kernel never asks for itself (docker's br_netfilter). kernel-config/
    /// must put them in the image.
    #[serde(default)]
    pub kernel_modules: Vec<String>,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Services this one starts after, once each has settled (ready, or
    /// failed, stopped or backing off), without needing them: an order,
    /// not a dependency (systemd's `After=` without `Requires=`).
    #[serde(default)]
    pub start_after: Vec<String>,
    #[serde(default)]
    pub readiness: Readiness,
    #[serde(default)]
    pub restart: RestartPolicy,
    /// Seconds between SIGTERM and killing the whole cgroup.
    #[serde(default = "ten")]
    pub stop_grace_seconds: u32,
}

fn yes() -> bool {
    true
}
fn root() -> String {
    "root".into()
}
fn slash() -> String {
    "/".into()
}
fn ten() -> u32 {
    10
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rootfs {
    /// Debian packages (trixie, the board's arch), with their dependencies.
    #[serde(default)]
    pub packages: Vec<String>,
    /// More packages, each list only when the image has the system
    /// container it is keyed by (the Docker CLI with the docker container):
    /// service name -> packages. The build adds them to `packages`.
    #[serde(default)]
    pub packages_with: BTreeMap<String, Vec<String>>,
    /// When set, only these paths of the packages (files or directories, and
    /// the shared libraries their programs need) go into the image: a
    /// program without the dependencies of its package's maintainer scripts.
    #[serde(default)]
    pub keep: Vec<String>,
    /// What of the packages is left out: package names (their files that no
    /// other package ships) and absolute paths (with what is under them, `*`
    /// within a component). For a broad rootfs (a shell) without what only
    /// maintainer scripts or other init systems use. The build fails if a
    /// program left in needs something dropped.
    #[serde(default)]
    pub drop: Vec<String>,
    /// Our own binaries (workspace crates), cross-built and put in /usr/bin.
    #[serde(default)]
    pub binaries: Vec<String>,
    /// Files from the service directory: target path in the rootfs -> source.
    #[serde(default)]
    pub files: BTreeMap<String, String>,
    /// For user services: a squashfs file or a directory on the device.
    #[serde(default)]
    pub image: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Namespace {
    Net,
    Pid,
    Ipc,
    Uts,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum Mount {
    /// A host path.
    Bind {
        source: String,
        target: String,
        #[serde(default)]
        read_only: bool,
    },
    Tmpfs {
        target: String,
        #[serde(default, deserialize_with = "size_opt")]
        size: Option<u64>,
    },
    /// A named persistent volume, kept on the state partition.
    Volume {
        name: String,
        target: String,
        #[serde(default)]
        read_only: bool,
    },
}

impl Mount {
    pub fn target(&self) -> &str {
        match self {
            Mount::Bind { target, .. }
            | Mount::Tmpfs { target, .. }
            | Mount::Volume { target, .. } => target,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// memory.max in bytes (`64M`, `1G` in the file).
    #[serde(default, deserialize_with = "size_opt")]
    pub memory_max: Option<u64>,
    /// memory.max as a share of the machine's memory (1-100), for services
    /// whose need grows with the machine (the console, docker); not with
    /// `memory_max`.
    pub memory_max_percent: Option<u64>,
    pub pids_max: Option<u64>,
    /// cpu.weight, 1-10000 (default 100).
    pub cpu_weight: Option<u64>,
    /// The writable layer's size (its own tmpfs; default
    /// `DEFAULT_WRITABLE_MAX`): a container filling it gets ENOSPC, not the
    /// machine's /run.
    #[serde(default, deserialize_with = "size_opt")]
    pub writable_max: Option<u64>,
    /// The kernel's OOM score adjustment for the service's processes
    /// (-1000-1000): below 0 for what must outlive a user filling memory
    /// (the network, the log).
    pub oom_score_adj: Option<i32>,
}

/// A writable layer's size when the spec gives none.
pub const DEFAULT_WRITABLE_MAX: u64 = 256 << 20;

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "lowercase")]
pub enum Readiness {
    /// Ready once the process runs.
    #[default]
    Started,
    /// Ready when this path (inside the container) exists: a socket, a pid file.
    Path {
        path: String,
        #[serde(default = "sixty")]
        timeout_seconds: u32,
    },
    /// A oneshot: ready when it exits 0.
    Exit {
        #[serde(default = "sixty")]
        timeout_seconds: u32,
    },
    /// Ready when this command, run inside the container, exits 0.
    Command {
        command: Vec<String>,
        #[serde(default = "sixty")]
        timeout_seconds: u32,
    },
}

fn sixty() -> u32 {
    60
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RestartPolicy {
    #[default]
    Always,
    OnFailure,
    Never,
}

/// `64M`, `512K`, `1G`, `1024` (bytes); binary units.
pub fn parse_size(text: &str) -> Result<u64, Problem> {
    let text = text.trim();
    let invalid = || {
        Problem::new(
            String::new(),
            format!("invalid size {text:?} (expected e.g. 64M, 1G)"),
        )
    };
    let (digits, unit) = text.split_at(
        text.find(|c: char| !c.is_ascii_digit())
            .unwrap_or(text.len()),
    );
    let number: u64 = digits.parse().map_err(|_| invalid())?;
    let shift = match unit.trim_end_matches(['i', 'B']) {
        "" => 0,
        "K" | "k" => 10,
        "M" | "m" => 20,
        "G" | "g" => 30,
        _ => return Err(invalid()),
    };
    number
        .checked_mul(1 << shift)
        .ok_or_else(|| Problem::new(String::new(), format!("size {text:?} is too large")))
}

fn size_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Size {
        Bytes(u64),
        Text(String),
    }
    // null is unset, as a missing key: the image's JSON spec writes it so.
    match Option::<Size>::deserialize(d)? {
        None => Ok(None),
        Some(Size::Bytes(n)) => Ok(Some(n)),
        Some(Size::Text(t)) => parse_size(&t).map(Some).map_err(serde::de::Error::custom),
    }
}

/// Capabilities every service keeps unless privileged: enough to start as
/// root, bind low ports and drop to a user. Docker's default set minus
/// MKNOD, NET_RAW and SETFCAP.
pub const DEFAULT_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "NET_BIND_SERVICE",
    "SYS_CHROOT",
    "AUDIT_WRITE",
];

/// Capability names in number order (CAP_CHOWN = 0 …), Linux 6.12.
pub const CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capability number of `name` (with or without `CAP_`, any case).
pub fn capability_number(name: &str) -> Option<u32> {
    let upper = name.to_ascii_uppercase();
    let bare = upper.strip_prefix("CAP_").unwrap_or(&upper);
    CAPABILITIES
        .iter()
        .position(|c| *c == bare)
        .map(|n| n as u32)
}

impl ServiceSpec {
    /// Shares the host's network namespace with NET_ADMIN: the network
    /// container. It may already reconfigure every link, so /proc/sys/net
    /// stays writable for it (accept_ra and the like).
    pub fn owns_host_network(&self) -> bool {
        self.shares(Namespace::Net)
            && self
                .capabilities
                .iter()
                .any(|c| capability_number(c) == capability_number("NET_ADMIN"))
    }

    /// Parses and validates the spec of service `name`; whoever reports
    /// the problem names the file.
    pub fn parse(name: &str, text: &str) -> Result<ServiceSpec, Problem> {
        let mut spec: ServiceSpec = toml::from_str(text).map_err(|e| {
            Problem::new(String::new(), e.to_string().trim_end().replace('\n', " "))
        })?;
        spec.name = name.to_string();
        spec.validate()?;
        Ok(spec)
    }

    /// The spec of service `name` as `brig build` puts it in the image:
    /// JSON, so PID 1 reads it without a TOML parser (the build has checked
    /// the service.toml); checked again all the same.
    pub fn from_json(name: &str, text: &str) -> Result<ServiceSpec, Problem> {
        let mut json = serde_json::Deserializer::from_str(text);
        let mut spec: ServiceSpec = serde_path_to_error::deserialize(&mut json).map_err(|e| {
            let key = e.path().to_string();
            Problem::new(
                if key == "." { String::new() } else { key },
                e.into_inner().to_string(),
            )
        })?;
        spec.name = name.to_string();
        spec.validate()?;
        Ok(spec)
    }

    /// The spec as `from_json` reads it: without its name, which is the
    /// file's.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(fields) = value.as_object_mut() {
            fields.remove("name");
        }
        serde_json::to_string_pretty(&value).unwrap_or_default() + "\n"
    }

    /// A user service from cloud-config (`brig.services.<name>`): the same
    /// fields as a service.toml, with its root from `rootfs.image` (a
    /// squashfs file or a directory on the machine), as nothing is built
    /// for it. Errors are (key below the service, problem).
    pub fn from_config(name: &str, value: &serde_json::Value) -> Result<ServiceSpec, Problem> {
        let mut spec: ServiceSpec = serde_json::from_value(value.clone())
            .map_err(|e| Problem::new(String::new(), e.to_string()))?;
        spec.name = name.to_string();
        spec.validate_user_service()?;
        Ok(spec)
    }

    /// What a user service must be beyond `validate`: nothing built, its
    /// root a `rootfs.image` at an absolute path.
    pub fn validate_user_service(&self) -> Result<(), Problem> {
        let spec = self;
        let built = &spec.rootfs;
        if !(built.packages.is_empty()
            && built.packages_with.is_empty()
            && built.keep.is_empty()
            && built.drop.is_empty()
            && built.binaries.is_empty()
            && built.files.is_empty())
        {
            return Err(Problem::new(
                "rootfs".into(),
                "packages, packages_with, keep, drop, binaries and files are built into images (system-containers/); a service from config names its rootfs.image".into(),
            ));
        }
        match &spec.rootfs.image {
            Some(image) if image.starts_with('/') && !image.split('/').any(|p| p == "..") => {}
            Some(image) => {
                return Err(Problem::new(
                    "rootfs.image".into(),
                    format!("{image:?} must be an absolute path without .."),
                ))
            }
            None => {
                return Err(Problem::new(
                    "rootfs.image".into(),
                    "missing: a squashfs file or a directory on the machine".into(),
                ))
            }
        }
        spec.validate()
    }

    /// Checks what serde cannot; returns (key, problem).
    pub fn validate(&self) -> Result<(), Problem> {
        let err = |key: &str, problem: String| Err(Problem::new(key.to_string(), problem));
        if !valid_name(&self.name) {
            return err(
                "name",
                format!(
                    "{:?} is not a valid service name (a-z, 0-9, -, _; at most 64)",
                    self.name
                ),
            );
        }
        match self.command.first() {
            None => return err("command", "must name a program".into()),
            Some(p) if !p.starts_with('/') => {
                return err(
                    "command",
                    format!("the program {p:?} must be an absolute path in the rootfs"),
                )
            }
            _ => {}
        }
        if !self.working_dir.starts_with('/') {
            return err(
                "working_dir",
                format!("{:?} must be an absolute path", self.working_dir),
            );
        }
        let has_source = !self.rootfs.packages.is_empty()
            || !self.rootfs.binaries.is_empty()
            || !self.rootfs.files.is_empty();
        if has_source && self.rootfs.image.is_some() {
            return err(
                "rootfs.image",
                "an image excludes packages, binaries and files".into(),
            );
        }
        if !has_source && self.rootfs.image.is_none() {
            return err(
                "rootfs",
                "needs packages, binaries, files or an image".into(),
            );
        }
        if !self.rootfs.keep.is_empty() && self.rootfs.packages.is_empty() {
            return err("rootfs.keep", "keeps paths of `packages`: list some".into());
        }
        if !self.rootfs.drop.is_empty() && self.rootfs.packages.is_empty() {
            return err("rootfs.drop", "drops paths of `packages`: list some".into());
        }
        if !self.rootfs.packages_with.is_empty() && self.rootfs.packages.is_empty() {
            return err(
                "rootfs.packages_with",
                "adds to `packages`: list some there".into(),
            );
        }
        let absolute = |path: &str| path.starts_with('/') && !path.split('/').any(|p| p == "..");
        for path in &self.rootfs.keep {
            if !absolute(path) {
                return err(
                    "rootfs.keep",
                    format!("{path:?} must be an absolute path without .."),
                );
            }
        }
        let package_name = |name: &str| {
            name.len() >= 2
                && name.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"+-.".contains(&b))
        };
        for item in &self.rootfs.drop {
            if !absolute(item) && !package_name(item) {
                return err(
                    "rootfs.drop",
                    format!(
                        "{item:?} is neither an absolute path without .. nor a Debian package name"
                    ),
                );
            }
        }
        for target in self.rootfs.files.keys() {
            if !target.starts_with('/') {
                return err(
                    &format!("rootfs.files.{target:?}"),
                    "the target must be an absolute path".into(),
                );
            }
        }
        for cap in &self.capabilities {
            if capability_number(cap).is_none() {
                return err("capabilities", format!("unknown capability {cap:?}"));
            }
        }
        for name in &self.seccomp_allow {
            if !crate::seccomp::known(name) {
                return err(
                    "seccomp_allow",
                    format!("unknown system call {name:?} (names as in `man 2 syscalls`)"),
                );
            }
        }
        for (i, mount) in self.mounts.iter().enumerate() {
            let target = mount.target();
            if !target.starts_with('/') || target.split('/').any(|p| p == "..") {
                return err(
                    &format!("mounts[{i}].target"),
                    format!("{target:?} must be an absolute path without .."),
                );
            }
            match mount {
                Mount::Bind { source, .. } if !source.starts_with('/') => {
                    return err(
                        &format!("mounts[{i}].source"),
                        format!("{source:?} must be an absolute host path"),
                    )
                }
                Mount::Volume { name, .. } if !valid_name(name) => {
                    return err(
                        &format!("mounts[{i}].name"),
                        format!("{name:?} is not a valid volume name"),
                    )
                }
                _ => {}
            }
        }
        for device in &self.devices {
            if !device.starts_with("/dev/") {
                return err("devices", format!("{device:?} is not a path under /dev"));
            }
        }
        for key in self.sysctls.keys() {
            if key.is_empty() || key.contains("..") || key.contains('/') {
                return err("sysctls", format!("{key:?} is not a sysctl name"));
            }
        }
        for module in &self.kernel_modules {
            let valid = !module.is_empty()
                && module
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-".contains(&b));
            if !valid {
                return err("kernel_modules", format!("{module:?} is not a module name"));
            }
        }
        if let Some(weight) = self.limits.cpu_weight {
            if !(1..=10000).contains(&weight) {
                return err("limits.cpu_weight", format!("{weight} is outside 1-10000"));
            }
        }
        if let Some(percent) = self.limits.memory_max_percent {
            if !(1..=100).contains(&percent) {
                return err(
                    "limits.memory_max_percent",
                    format!("{percent} is outside 1-100"),
                );
            }
            if self.limits.memory_max.is_some() {
                return err(
                    "limits.memory_max_percent",
                    "give memory_max or memory_max_percent, not both".into(),
                );
            }
        }
        if let Some(adj) = self.limits.oom_score_adj {
            if !(-1000..=1000).contains(&adj) {
                return err(
                    "limits.oom_score_adj",
                    format!("{adj} is outside -1000-1000"),
                );
            }
        }
        if self.limits.writable_max.is_some_and(|b| b < 1 << 20) {
            return err(
                "limits.writable_max",
                "less than 1M leaves the writable layer no room".into(),
            );
        }
        if self.limits.memory_max == Some(0) || self.limits.pids_max == Some(0) {
            return err(
                "limits",
                "a limit of 0 would stop the service from running at all".into(),
            );
        }
        if self.depends_on.iter().any(|d| d == &self.name) {
            return err("depends_on", "a service cannot depend on itself".into());
        }
        if self.start_after.iter().any(|d| d == &self.name) {
            return err("start_after", "a service cannot start after itself".into());
        }
        if let Readiness::Path { path, .. } = &self.readiness {
            if !path.starts_with('/') {
                return err(
                    "readiness.path",
                    format!("{path:?} must be an absolute path"),
                );
            }
        }
        if let Readiness::Command { command, .. } = &self.readiness {
            if command.first().is_none_or(|p| !p.starts_with('/')) {
                return err(
                    "readiness.command",
                    "must start with an absolute program path".into(),
                );
            }
        }
        Ok(())
    }

    pub fn shares(&self, ns: Namespace) -> bool {
        self.host_namespaces.contains(&ns)
    }
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests;
