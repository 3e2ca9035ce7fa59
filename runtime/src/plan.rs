//! The pure part of creating a container: what to mount (`plan_mounts`),
//! which capabilities to keep (`capability_mask`), which user to become
//! (`resolve_user`) and which namespaces to make (`clone_flags`), as plain
//! data computed before the clone, so the decisions are unit-tested; the
//! child (child.rs) only carries them out.

use std::path::PathBuf;

use brig_spec::paths::DNS_DIR;
use brig_spec::paths::{SYSLOG_DIR, SYSLOG_SOCKET};
use brig_spec::service::{capability_number, Mount, Namespace, ServiceSpec, DEFAULT_CAPABILITIES};
use nix::mount::MsFlags;

use crate::Error;

/// Where a container's pieces live on the host.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The read-only root: a mounted squashfs image or a directory.
    pub lower: PathBuf,
    /// Holds `upper/`, `work/` (the overlay's writable part) and `root/`.
    pub dir: PathBuf,
    /// Named volumes live in `<volumes>/<name>`.
    pub volumes: PathBuf,
    /// The service's cgroup, if cgroups are in use.
    pub cgroup: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    Mount {
        source: String,
        target: PathBuf,
        fstype: String,
        flags: MsFlags,
        data: String,
    },
    /// Bind `source` (a host path) onto `target`, creating the target as a
    /// file or directory like the source; optionally read-only.
    Bind {
        source: PathBuf,
        target: PathBuf,
        recursive: bool,
        read_only: bool,
    },
    Symlink {
        link: PathBuf,
        points_to: String,
    },
    /// A device node like the host's `source` (same type and numbers), made
    /// with mknod: cheaper than a bind mount to set up and to tear down.
    Device {
        source: PathBuf,
        target: PathBuf,
    },
}

const NOSUID_NODEV_NOEXEC: MsFlags = MsFlags::MS_NOSUID
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOEXEC);
/// Device nodes every container gets (privileged ones see all of /dev).
const BASE_DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// The mounts that build the container's root at `paths.dir/root`, in order.
pub fn plan_mounts(spec: &ServiceSpec, paths: &Paths) -> Vec<MountOp> {
    let root = paths.dir.join("root");
    let at = |p: &str| root.join(p.trim_start_matches('/'));
    let mut ops = vec![MountOp::Mount {
        source: "overlay".into(),
        target: root.clone(),
        fstype: "overlay".into(),
        flags: MsFlags::empty(),
        data: format!(
            "lowerdir={},upperdir={},workdir={}",
            paths.lower.display(),
            paths.dir.join("upper").display(),
            paths.dir.join("work").display()
        ),
    }];
    let mount =
        |source: &str, target: &str, fstype: &str, flags: MsFlags, data: &str| MountOp::Mount {
            source: source.into(),
            target: at(target),
            fstype: fstype.into(),
            flags,
            data: data.into(),
        };
    ops.push(mount("proc", "/proc", "proc", NOSUID_NODEV_NOEXEC, ""));
    if spec.privileged {
        ops.push(MountOp::Bind {
            source: "/dev".into(),
            target: at("/dev"),
            recursive: true,
            read_only: false,
        });
    } else {
        ops.push(mount(
            "tmpfs",
            "/dev",
            "tmpfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "mode=755,size=64k",
        ));
        let devices = BASE_DEVICES
            .iter()
            .map(|d| format!("/dev/{d}"))
            .chain(spec.devices.iter().cloned());
        for device in devices {
            ops.push(MountOp::Device {
                source: device.clone().into(),
                target: at(&device),
            });
        }
        ops.push(mount(
            "devpts",
            "/dev/pts",
            "devpts",
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620,gid=5",
        ));
        ops.push(MountOp::Symlink {
            link: at("/dev/ptmx"),
            points_to: "pts/ptmx".into(),
        });
        ops.push(mount(
            "shm",
            "/dev/shm",
            "tmpfs",
            NOSUID_NODEV_NOEXEC,
            "mode=1777,size=64m",
        ));
        for (name, target) in [
            ("fd", "/proc/self/fd"),
            ("stdin", "/proc/self/fd/0"),
            ("stdout", "/proc/self/fd/1"),
            ("stderr", "/proc/self/fd/2"),
        ] {
            ops.push(MountOp::Symlink {
                link: at(&format!("/dev/{name}")),
                points_to: target.into(),
            });
        }
    }
    let ro = if spec.privileged {
        MsFlags::empty()
    } else {
        MsFlags::MS_RDONLY
    };
    ops.push(mount(
        "sysfs",
        "/sys",
        "sysfs",
        NOSUID_NODEV_NOEXEC | ro,
        "",
    ));
    ops.push(mount(
        "cgroup2",
        "/sys/fs/cgroup",
        "cgroup2",
        NOSUID_NODEV_NOEXEC | ro,
        "",
    ));
    // syslog(3) writes to /dev/log: the log service's socket, in a
    // directory shared read-only (a socket is still writable through it),
    // so the link keeps working when the log service restarts.
    ops.push(MountOp::Bind {
        source: SYSLOG_DIR.into(),
        target: at(SYSLOG_DIR),
        recursive: false,
        read_only: true,
    });
    if !spec.privileged {
        // Privileged containers see the host's /dev, where PID 1 made it.
        ops.push(MountOp::Symlink {
            link: at("/dev/log"),
            points_to: SYSLOG_SOCKET.into(),
        });
    }
    if spec.shares(Namespace::Net) {
        // DNS as the network container keeps it, updated in place.
        ops.push(MountOp::Bind {
            source: DNS_DIR.into(),
            target: at(DNS_DIR),
            recursive: false,
            read_only: true,
        });
        ops.push(MountOp::Symlink {
            link: at("/etc/resolv.conf"),
            points_to: format!("{DNS_DIR}/resolv.conf"),
        });
    }
    for m in &spec.mounts {
        ops.push(match m {
            Mount::Bind {
                source,
                target,
                read_only,
            } => MountOp::Bind {
                source: source.into(),
                target: at(target),
                recursive: true,
                read_only: *read_only,
            },
            Mount::Tmpfs { target, size } => {
                let data = size.map(|s| format!("size={s}")).unwrap_or_default();
                mount(
                    "tmpfs",
                    target,
                    "tmpfs",
                    MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
                    &data,
                )
            }
            Mount::Volume {
                name,
                target,
                read_only,
            } => MountOp::Bind {
                source: paths.volumes.join(name),
                target: at(target),
                recursive: false,
                read_only: *read_only,
            },
        });
    }
    ops
}

/// The capabilities kept: the default set plus the spec's grants, or all.
pub fn capability_mask(spec: &ServiceSpec) -> u64 {
    if spec.privileged {
        return u64::MAX;
    }
    DEFAULT_CAPABILITIES
        .iter()
        .copied()
        .chain(spec.capabilities.iter().map(String::as_str))
        .filter_map(capability_number)
        .fold(0, |mask, n| mask | 1 << n)
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ids {
    pub uid: u32,
    pub gid: u32,
    pub groups: Vec<u32>,
    pub home: String,
}

/// Resolves `root`, `uid[:gid]` or a user name against the container's
/// /etc/passwd and /etc/group text.
pub fn resolve_user(user: &str, passwd: &str, group: &str) -> Result<Ids, Error> {
    let entry = |uid_match: &dyn Fn(&[&str]) -> bool| {
        passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() >= 7 && uid_match(f))
    };
    let (name, uid, gid, home) = if let Some((u, g)) = numeric_ids(user) {
        let found = entry(&|f| f[2] == u.to_string());
        let gid = g
            .or_else(|| found.as_ref().and_then(|f| f[3].parse().ok()))
            .unwrap_or(u);
        let home = found.as_ref().map_or("/".to_string(), |f| f[5].to_string());
        (found.map(|f| f[0].to_string()), u, gid, home)
    } else {
        let f = entry(&|f| f[0] == user).ok_or_else(|| {
            Error::Spec(format!(
                "user {user:?} is not in the container's /etc/passwd"
            ))
        })?;
        let uid = f[2]
            .parse()
            .map_err(|_| Error::Spec(format!("bad uid for {user:?} in /etc/passwd")))?;
        let gid = f[3]
            .parse()
            .map_err(|_| Error::Spec(format!("bad gid for {user:?} in /etc/passwd")))?;
        (Some(user.to_string()), uid, gid, f[5].to_string())
    };
    let mut groups = vec![gid];
    if let Some(name) = name {
        for line in group.lines() {
            let f: Vec<&str> = line.split(':').collect();
            if f.len() >= 4 && f[3].split(',').any(|m| m == name) {
                if let Ok(g) = f[2].parse() {
                    if !groups.contains(&g) {
                        groups.push(g);
                    }
                }
            }
        }
    }
    Ok(Ids {
        uid,
        gid,
        groups,
        home,
    })
}

fn numeric_ids(user: &str) -> Option<(u32, Option<u32>)> {
    if user == "root" {
        return Some((0, Some(0)));
    }
    match user.split_once(':') {
        Some((u, g)) => Some((u.parse().ok()?, Some(g.parse().ok()?))),
        None => Some((user.parse().ok()?, None)),
    }
}

/// The clone flags for the spec's namespaces.
pub fn clone_flags(spec: &ServiceSpec) -> u64 {
    let mut flags = (libc::CLONE_NEWNS | libc::CLONE_NEWCGROUP) as u64;
    for (ns, flag) in [
        (Namespace::Pid, libc::CLONE_NEWPID),
        (Namespace::Uts, libc::CLONE_NEWUTS),
        (Namespace::Ipc, libc::CLONE_NEWIPC),
        (Namespace::Net, libc::CLONE_NEWNET),
    ] {
        if !spec.shares(ns) {
            flags |= flag as u64;
        }
    }
    flags
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(extra: &str) -> ServiceSpec {
        ServiceSpec::parse(
            "web",
            &format!("command = [\"/bin/sh\"]\n{extra}\n[rootfs]\npackages = [\"x\"]\n"),
        )
        .unwrap()
    }

    fn paths() -> Paths {
        Paths {
            lower: "/run/brig/images/web".into(),
            dir: "/run/brig/containers/web".into(),
            volumes: "/var/lib/brig/volumes".into(),
            cgroup: None,
        }
    }

    fn targets(ops: &[MountOp]) -> Vec<String> {
        ops.iter()
            .map(|op| match op {
                MountOp::Mount { target, fstype, .. } => format!("{fstype} {}", target.display()),
                MountOp::Bind {
                    source,
                    target,
                    read_only,
                    ..
                } => {
                    format!(
                        "bind {} {}{}",
                        source.display(),
                        target.display(),
                        if *read_only { " ro" } else { "" }
                    )
                }
                MountOp::Symlink { link, points_to } => {
                    format!("link {} {points_to}", link.display())
                }
                MountOp::Device { source, target } => {
                    format!("device {} {}", source.display(), target.display())
                }
            })
            .collect()
    }

    #[test]
    fn default_container_gets_overlay_root_private_dev_and_read_only_sys() {
        let ops = plan_mounts(&spec(""), &paths());
        let t = targets(&ops);
        assert_eq!(t[0], "overlay /run/brig/containers/web/root");
        match &ops[0] {
            MountOp::Mount { data, .. } => assert_eq!(
                data,
                "lowerdir=/run/brig/images/web,upperdir=/run/brig/containers/web/upper,workdir=/run/brig/containers/web/work"
            ),
            other => panic!("{other:?}"),
        }
        assert!(t.contains(&"proc /run/brig/containers/web/root/proc".to_string()));
        assert!(t.contains(&"tmpfs /run/brig/containers/web/root/dev".to_string()));
        assert!(t.contains(&"device /dev/null /run/brig/containers/web/root/dev/null".to_string()));
        assert!(!t.iter().any(|x| x.contains("/dev/kvm")));
        assert!(t.contains(
            &"bind /run/brig/log /run/brig/containers/web/root/run/brig/log ro".to_string()
        ));
        assert!(t.contains(
            &"link /run/brig/containers/web/root/dev/log /run/brig/log/dev-log".to_string()
        ));
        let sys = ops
            .iter()
            .find(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "sysfs"))
            .unwrap();
        assert!(matches!(sys, MountOp::Mount { flags, .. } if flags.contains(MsFlags::MS_RDONLY)));
    }

    #[test]
    fn privileged_gets_host_dev_and_writable_sys() {
        let ops = plan_mounts(&spec("privileged = true"), &paths());
        assert!(targets(&ops).contains(&"bind /dev /run/brig/containers/web/root/dev".to_string()));
        let sys = ops
            .iter()
            .find(|o| matches!(o, MountOp::Mount { fstype, .. } if fstype == "sysfs"))
            .unwrap();
        assert!(matches!(sys, MountOp::Mount { flags, .. } if !flags.contains(MsFlags::MS_RDONLY)));
        assert_eq!(capability_mask(&spec("privileged = true")), u64::MAX);
    }

    #[test]
    fn host_network_services_see_the_dns_the_network_container_writes() {
        let t = targets(&plan_mounts(&spec("host_namespaces = [\"net\"]"), &paths()));
        assert!(t.contains(
            &"bind /run/brig/dns /run/brig/containers/web/root/run/brig/dns ro".to_string()
        ));
        assert!(t.contains(
            &"link /run/brig/containers/web/root/etc/resolv.conf /run/brig/dns/resolv.conf"
                .to_string()
        ));
        let private = targets(&plan_mounts(&spec(""), &paths()));
        assert!(!private.iter().any(|m| m.contains("resolv.conf")));
    }

    #[test]
    fn spec_mounts_and_devices_come_after_the_base() {
        let s = spec(
            "devices = [\"/dev/net/tun\"]\n[[mounts]]\ntype = \"bind\"\nsource = \"/run/brig/dns\"\ntarget = \"/etc/dns\"\nread_only = true\n\
             [[mounts]]\ntype = \"volume\"\nname = \"data\"\ntarget = \"/data\"\n[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/scratch\"\nsize = \"1M\"",
        );
        let t = targets(&plan_mounts(&s, &paths()));
        let n = t.len();
        assert_eq!(
            t[n - 3],
            "bind /run/brig/dns /run/brig/containers/web/root/etc/dns ro"
        );
        assert_eq!(
            t[n - 2],
            "bind /var/lib/brig/volumes/data /run/brig/containers/web/root/data"
        );
        assert_eq!(t[n - 1], "tmpfs /run/brig/containers/web/root/scratch");
        assert!(t.contains(
            &"device /dev/net/tun /run/brig/containers/web/root/dev/net/tun".to_string()
        ));
    }

    #[test]
    fn capabilities_are_the_default_set_plus_grants() {
        let base = capability_mask(&spec(""));
        assert_eq!(base.count_ones() as usize, DEFAULT_CAPABILITIES.len());
        assert_ne!(base & (1 << capability_number("CHOWN").unwrap()), 0);
        assert_eq!(base & (1 << capability_number("SYS_ADMIN").unwrap()), 0);
        assert_eq!(base & (1 << capability_number("NET_ADMIN").unwrap()), 0);
        let granted = capability_mask(&spec("capabilities = [\"NET_ADMIN\"]"));
        assert_eq!(granted, base | 1 << 12);
    }

    #[test]
    fn namespaces_are_private_unless_shared() {
        let all = clone_flags(&spec(""));
        for f in [
            libc::CLONE_NEWNS,
            libc::CLONE_NEWPID,
            libc::CLONE_NEWUTS,
            libc::CLONE_NEWIPC,
            libc::CLONE_NEWNET,
            libc::CLONE_NEWCGROUP,
        ] {
            assert_ne!(all & f as u64, 0);
        }
        let host_net = clone_flags(&spec("host_namespaces = [\"net\", \"pid\"]"));
        assert_eq!(host_net & libc::CLONE_NEWNET as u64, 0);
        assert_eq!(host_net & libc::CLONE_NEWPID as u64, 0);
        assert_ne!(host_net & libc::CLONE_NEWNS as u64, 0);
    }

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nbrig:x:1000:1000::/home/brig:/bin/bash\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\n";
    const GROUP: &str = "root:x:0:\nsudo:x:27:brig\ndocker:x:990:brig,other\nbrig:x:1000:\n";

    #[test]
    fn users_by_name_number_and_root() {
        assert_eq!(
            resolve_user("root", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 0,
                gid: 0,
                groups: vec![0],
                home: "/root".into()
            }
        );
        assert_eq!(
            resolve_user("brig", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 27, 990],
                home: "/home/brig".into()
            }
        );
        assert_eq!(resolve_user("65534", PASSWD, GROUP).unwrap().gid, 65534);
        assert_eq!(
            resolve_user("4000:5000", PASSWD, GROUP).unwrap(),
            Ids {
                uid: 4000,
                gid: 5000,
                groups: vec![5000],
                home: "/".into()
            }
        );
        let e = resolve_user("ghost", PASSWD, GROUP).unwrap_err();
        assert!(
            matches!(&e, Error::Spec(why) if why.contains("\"ghost\" is not in the container's /etc/passwd")),
            "a spec problem: {e:?}"
        );
        // A root-only rootfs without /etc/passwd still runs root services.
        assert_eq!(resolve_user("root", "", "").unwrap().uid, 0);
    }
}
