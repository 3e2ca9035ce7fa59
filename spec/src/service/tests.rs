use super::*;

const FULL: &str = r#"
description = "test service"
command = ["/bin/busybox", "sh", "-c", "echo hi"]
env = { GREETING = "hello" }
user = "1000:1000"
working_dir = "/tmp"
host_namespaces = ["net"]
capabilities = ["NET_ADMIN", "cap_net_raw"]
read_only_root = true
depends_on = ["network"]
devices = ["/dev/net/tun"]
sysctls = { "net.ipv4.ip_forward" = "1" }
restart = "on-failure"
stop_grace_seconds = 3

[rootfs]
packages = ["busybox-static"]
files = { "/etc/motd" = "motd" }

[[mounts]]
type = "bind"
source = "/run/brig/dns/resolv.conf"
target = "/etc/resolv.conf"
read_only = true

[[mounts]]
type = "tmpfs"
target = "/run"
size = "16M"

[[mounts]]
type = "volume"
name = "data"
target = "/var/lib/data"

[limits]
memory_max = "64M"
pids_max = 50
cpu_weight = 200

[readiness]
type = "path"
path = "/run/ready"
"#;

fn parse(text: &str) -> Result<ServiceSpec, Problem> {
    ServiceSpec::parse("test", text)
}

#[test]
fn full_spec_parses() {
    let s = parse(FULL).unwrap();
    assert_eq!(s.name, "test");
    assert!(s.enabled);
    assert_eq!(s.limits.memory_max, Some(64 << 20));
    assert_eq!(
        s.mounts[1],
        Mount::Tmpfs {
            target: "/run".into(),
            size: Some(16 << 20)
        }
    );
    assert_eq!(
        s.readiness,
        Readiness::Path {
            path: "/run/ready".into(),
            timeout_seconds: 60
        }
    );
    assert_eq!(s.restart, RestartPolicy::OnFailure);
    assert!(s.shares(Namespace::Net) && !s.shares(Namespace::Pid));
}

#[test]
fn only_host_network_with_net_admin_owns_the_network() {
    let spec = |extra: &str| {
        parse(&format!(
            "{extra}command = [\"/x\"]\n[rootfs]\nbinaries = [\"x\"]\n"
        ))
        .unwrap()
    };
    let both = "host_namespaces = [\"net\"]\ncapabilities = [\"cap_net_admin\"]\n";
    assert!(spec(both).owns_host_network());
    assert!(!spec("host_namespaces = [\"net\"]\n").owns_host_network());
    assert!(!spec("capabilities = [\"NET_ADMIN\"]\n").owns_host_network());
}

#[test]
fn defaults_are_private_root_always() {
    let s = parse("command = [\"/bin/true\"]\n[rootfs]\npackages = [\"x\"]\n").unwrap();
    assert_eq!(s.user, "root");
    assert_eq!(s.working_dir, "/");
    assert!(s.host_namespaces.is_empty() && !s.privileged);
    assert_eq!(s.restart, RestartPolicy::Always);
    assert_eq!(s.readiness, Readiness::Started);
    assert_eq!(s.stop_grace_seconds, 10);
}

/// As the image builder and PID 1 report it.
fn error(text: &str) -> String {
    let problem = parse(text).unwrap_err();
    format!("system-containers/test/service.toml: {problem}")
}

#[test]
fn errors_name_file_key_and_problem() {
    let base = "command = [\"/bin/true\"]\n[rootfs]\npackages = [\"x\"]\n";
    let e = error(&format!("{base}[limits]\nmemory_max = \"64Q\"\n"));
    assert!(
        e.starts_with("system-containers/test/service.toml:")
            && e.contains("memory_max")
            && e.contains("64Q"),
        "{e}"
    );
    let e = error(&format!("comand = [\"/x\"]\n{base}"));
    assert!(e.contains("comand"), "{e}");
    let e = error(&format!("restart = \"sometimes\"\n{base}"));
    assert!(e.contains("sometimes"), "{e}");
    let e = error("command = [\"bin/true\"]\n[rootfs]\npackages = [\"x\"]\n");
    assert_eq!(e, "system-containers/test/service.toml: `command`: the program \"bin/true\" must be an absolute path in the rootfs");
    let e = error(&format!("capabilities = [\"FLY\"]\n{base}"));
    assert!(
        e.contains("`capabilities`: unknown capability \"FLY\""),
        "{e}"
    );
    let e = error(&format!(
        "{base}[[mounts]]\ntype = \"bind\"\nsource = \"rel\"\ntarget = \"/x\"\n"
    ));
    assert!(e.contains("`mounts[0].source`"), "{e}");
    let e = error(&format!(
        "{base}[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/a/../b\"\n"
    ));
    assert!(e.contains("`mounts[0].target`"), "{e}");
    let e = error(&format!("depends_on = [\"test\"]\n{base}"));
    assert!(
        e.contains("`depends_on`: a service cannot depend on itself"),
        "{e}"
    );
    let e = error(&format!("start_after = [\"test\"]\n{base}"));
    assert!(
        e.contains("`start_after`: a service cannot start after itself"),
        "{e}"
    );
    let e = error("command = [\"/bin/true\"]\n");
    assert!(e.contains("rootfs"), "{e}");
    let e = error(&format!("{base}[limits]\ncpu_weight = 0\n"));
    assert!(e.contains("`limits.cpu_weight`"), "{e}");
    let e = error(&format!("{base}[readiness]\ntype = \"path\"\n"));
    assert!(e.contains("path"), "{e}");
    let e = error(&format!("{base}keep = [\"usr/sbin/x\"]\n"));
    assert!(
        e.contains("`rootfs.keep`: \"usr/sbin/x\" must be an absolute path"),
        "{e}"
    );
    let e = error(&format!("{base}drop = [\"/usr/../etc\"]\n"));
    assert!(
        e.contains("`rootfs.drop`: \"/usr/../etc\" is neither an absolute path"),
        "{e}"
    );
    let e = error("command = [\"/bin/true\"]\n[rootfs]\nbinaries = [\"x\"]\nkeep = [\"/x\"]\n");
    assert!(
        e.contains("`rootfs.keep`: keeps paths of `packages`"),
        "{e}"
    );
    let e = error(
            "command = [\"/bin/true\"]\n[rootfs]\nbinaries = [\"x\"]\npackages_with = { docker = [\"docker-cli\"] }\n",
        );
    assert!(
        e.contains("`rootfs.packages_with`: adds to `packages`"),
        "{e}"
    );
}

#[test]
fn sizes() {
    assert_eq!(parse_size("1024"), Ok(1024));
    assert_eq!(parse_size("64M"), Ok(64 << 20));
    assert_eq!(parse_size("2GiB"), Ok(2 << 30));
    assert_eq!(parse_size("512k"), Ok(512 << 10));
    assert!(parse_size("M").is_err());
    assert!(parse_size("1T").is_err());
    assert!(parse_size("99999999999999G").is_err());
}

#[test]
fn capability_numbers() {
    assert_eq!(capability_number("CHOWN"), Some(0));
    assert_eq!(capability_number("cap_net_admin"), Some(12));
    assert_eq!(capability_number("SYS_ADMIN"), Some(21));
    assert_eq!(capability_number("CHECKPOINT_RESTORE"), Some(40));
    assert_eq!(capability_number("NOPE"), None);
    for cap in DEFAULT_CAPABILITIES {
        assert!(capability_number(cap).is_some(), "{cap}");
    }
}

#[test]
fn every_system_container_spec_reads_back_the_same_from_the_images_json() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../system-containers");
    let mut seen = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path().join("service.toml");
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let name = path
            .parent()
            .unwrap()
            .file_name()
            .unwrap()
            .to_str()
            .unwrap();
        let spec = ServiceSpec::parse(name, &text).unwrap();
        let json = spec.to_json();
        let fields: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert!(fields.get("name").is_none(), "{json}");
        assert_eq!(ServiceSpec::from_json(name, &json).unwrap(), spec, "{name}");
        seen += 1;
    }
    assert!(seen >= 5, "only {seen} specs under {}", dir.display());
    let full = ServiceSpec::parse("full", FULL).unwrap();
    assert_eq!(
        ServiceSpec::from_json("full", &full.to_json()).unwrap(),
        full
    );
    let e = ServiceSpec::from_json("x", "{\"command\": \"not a list\"}").unwrap_err();
    assert!(
        e.to_string().contains("command") && e.to_string().contains("invalid type"),
        "{e}"
    );
    let e = ServiceSpec::from_json(
        "x",
        r#"{"command": [], "rootfs": {}, "limits": {"memory_max": "plenty"}}"#,
    )
    .unwrap_err();
    assert_eq!(e.key, "limits.memory_max", "{e}");
}
