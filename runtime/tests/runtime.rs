//! The container runtime on the host, as root: real containers from a real
//! Debian rootfs (busybox-static, fetched once with mmdebstrap), run by
//! `brig-container` with PID 1's own code. cgroup limits are tested in QEMU
//! (tests/e2e/services.rs): this host's cgroup v2 tree has no controllers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

const RUNNER: &str = env!("CARGO_BIN_EXE_brig-container");

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the runtime tests create namespaces and mounts: run them as root (CI does)"
    );
}

/// A busybox-static rootfs for the host's architecture, fetched once.
fn rootfs() -> &'static Path {
    static ROOTFS: OnceLock<PathBuf> = OnceLock::new();
    ROOTFS.get_or_init(|| {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("busybox-rootfs");
        if !dir.join("usr/bin/busybox").exists() {
            let _ = std::fs::remove_dir_all(&dir);
            let status = Command::new("mmdebstrap")
                .args([
                    "--quiet",
                    "--variant=extract",
                    "--include=busybox-static",
                    "trixie",
                ])
                .arg(&dir)
                .status()
                .expect("mmdebstrap (Debian package mmdebstrap)");
            assert!(
                status.success(),
                "fetching busybox-static with mmdebstrap failed"
            );
        }
        dir
    })
}

/// Runs a container whose spec is `spec` (TOML, without [rootfs]).
fn run(name: &str, spec: &str) -> Output {
    run_on(name, spec, rootfs())
}

fn run_on(name: &str, spec: &str, image: &Path) -> Output {
    run_with(name, spec, image, &[])
}

/// As `run_on`, with further brig-container arguments.
fn run_with(name: &str, spec: &str, image: &Path, extra: &[&str]) -> Output {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (file, state) = service_in(dir.path(), name, spec);
    runner(&file, image, &state).args(extra).output().unwrap()
}

fn stdout(out: &Output) -> String {
    assert!(
        out.status.success(),
        "container failed ({}):\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn sh(script: &str) -> String {
    format!("command = [\"/usr/bin/busybox\", \"sh\", \"-c\", {script:?}]")
}

fn field<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .unwrap_or_else(|| panic!("no {key} in:\n{text}"))
        .trim()
}

/// A service `name` with `spec` (TOML, without [rootfs]) in `dir`: its
/// spec file, and the state directory to run it with (where its writable
/// layer will be, for a test to plant things in first).
fn service_in(dir: &Path, name: &str, spec: &str) -> (PathBuf, PathBuf) {
    let spec_dir = dir.join(name);
    std::fs::create_dir(&spec_dir).unwrap();
    let file = spec_dir.join("service.toml");
    let text = format!("{spec}\n[rootfs]\npackages = [\"busybox-static\"]\n");
    std::fs::write(&file, text).unwrap();
    (file, dir.join("state"))
}

/// brig-container for the spec `file` on `image`, with the state
/// directory `state`.
fn runner(file: &Path, image: &Path, state: &Path) -> Command {
    let mut command = Command::new(RUNNER);
    command
        .arg("--spec")
        .arg(file)
        .arg("--rootfs")
        .arg(image)
        .arg("--state")
        .arg(state);
    command
}

fn host_ns(kind: &str) -> String {
    std::fs::read_link(format!("/proc/self/ns/{kind}"))
        .unwrap()
        .display()
        .to_string()
}

#[test]
fn private_namespaces_hostname_pid1_and_dropped_capabilities() {
    let script = "echo pid=$$; echo host=$(busybox hostname); \
                  for n in mnt uts pid ipc net cgroup; do echo ns_$n=$(busybox readlink /proc/self/ns/$n); done; \
                  busybox grep -E '^(CapEff|CapBnd|CapPrm|NoNewPrivs|Uid)' /proc/self/status";
    let out = stdout(&run("box", &sh(script)));
    assert_eq!(field(&out, "pid="), "1");
    assert_eq!(field(&out, "host="), "box");
    for ns in ["mnt", "uts", "pid", "ipc", "net", "cgroup"] {
        assert_ne!(
            field(&out, &format!("ns_{ns}=")),
            host_ns(ns),
            "{ns} namespace is the host's"
        );
    }
    assert_eq!(field(&out, "CapEff:"), "00000000200405fb");
    assert_eq!(field(&out, "CapPrm:"), "00000000200405fb");
    assert_eq!(field(&out, "CapBnd:"), "00000000200405fb");
    assert_eq!(field(&out, "NoNewPrivs:"), "1");
}

#[test]
fn a_private_network_has_its_loopback_up_fresh_or_prepared_ahead() {
    let script = "echo net=$(busybox readlink /proc/self/ns/net); busybox ip -o link show lo; busybox ip -o addr show lo";
    for extra in [&[][..], &["--netns-ahead"][..]] {
        let out = stdout(&run_with("lo", &sh(script), rootfs(), extra));
        assert_ne!(field(&out, "net="), host_ns("net"), "{extra:?}");
        assert!(out.contains("<LOOPBACK,UP,LOWER_UP>"), "{extra:?}: {out}");
        assert!(out.contains("inet 127.0.0.1/8"), "{extra:?}: {out}");
    }
}

#[test]
fn dropped_capabilities_are_really_gone() {
    // CAP_SYS_ADMIN is not in the default set: mounting must fail inside.
    let out = stdout(&run(
        "nocap",
        &sh("busybox mount -t tmpfs none /tmp 2>&1; echo status=$?"),
    ));
    assert_ne!(field(&out, "status="), "0", "{out}");
    // busybox reports EPERM from mount(2) as "permission denied".
    assert!(out.contains("permission denied"), "{out}");
}

#[test]
fn the_default_seccomp_filter_holds_in_the_container_and_a_spec_can_allow_more() {
    // A new user namespace needs no capability, only the filter stops it;
    // the shell's own forks (plain clone) still work.
    let script = "busybox grep -E '^Seccomp' /proc/self/status; \
                  busybox unshare -U true 2>&1; echo unshare=$?; \
                  echo fork=$(echo forked)";
    let out = stdout(&run("filtered", &sh(script)));
    assert_eq!(field(&out, "Seccomp:"), "2", "{out}");
    assert_eq!(field(&out, "Seccomp_filters:"), "1", "{out}");
    assert_ne!(field(&out, "unshare="), "0", "{out}");
    assert!(out.contains("Operation not permitted"), "{out}");
    assert_eq!(field(&out, "fork="), "forked");
    let allowed = stdout(&run(
        "allowed",
        &format!("{}\nseccomp_allow = [\"unshare\"]", sh(script)),
    ));
    assert_eq!(field(&allowed, "unshare="), "0", "{allowed}");
    // Privileged: no filter.
    let privileged = stdout(&run(
        "unfiltered",
        &format!("{}\nprivileged = true", sh(script)),
    ));
    assert_eq!(field(&privileged, "Seccomp:"), "0", "{privileged}");
}

#[test]
fn host_namespaces_are_shared_only_when_asked() {
    let script = "echo net=$(busybox readlink /proc/self/ns/net); echo pid=$(busybox readlink /proc/self/ns/pid); echo uts=$(busybox readlink /proc/self/ns/uts)";
    let out = stdout(&run(
        "hostnet",
        &format!("{}\nhost_namespaces = [\"net\", \"pid\"]", sh(script)),
    ));
    assert_eq!(field(&out, "net="), host_ns("net"));
    assert_eq!(field(&out, "pid="), host_ns("pid"));
    assert_ne!(field(&out, "uts="), host_ns("uts"));
}

#[test]
fn a_non_root_user_keeps_exactly_the_granted_capabilities() {
    let script =
        "busybox id -u; busybox id -g; busybox grep -E '^(CapEff|CapAmb)' /proc/self/status";
    let spec = format!(
        "{}\nuser = \"65534:65534\"\ncapabilities = [\"NET_ADMIN\"]",
        sh(script)
    );
    let out = stdout(&run("nobody", &spec));
    let mut lines = out.lines();
    assert_eq!(lines.next(), Some("65534"));
    assert_eq!(lines.next(), Some("65534"));
    assert_eq!(field(&out, "CapEff:"), "00000000200415fb");
    assert_eq!(field(&out, "CapAmb:"), "00000000200415fb");
}

#[test]
fn read_only_root_mounts_env_and_working_dir() {
    let script = "busybox touch /x 2>&1 | busybox grep -c 'Read-only'; echo tmp=$(busybox touch /scratch/f && echo ok); \
                  echo cwd=$(busybox pwd); echo env=$GREETING; echo vol=$(busybox cat /data/v 2>/dev/null || echo new); \
                  echo kept > /data/v";
    let spec = format!(
        "{}\nread_only_root = true\nworking_dir = \"/scratch\"\nenv = {{ GREETING = \"hi there\" }}\n\
         [[mounts]]\ntype = \"tmpfs\"\ntarget = \"/scratch\"\nsize = \"1M\"\n\
         [[mounts]]\ntype = \"volume\"\nname = \"data\"\ntarget = \"/data\"",
        sh(script)
    );
    let out = stdout(&run("ro", &spec));
    assert_eq!(out.lines().next(), Some("1"), "{out}");
    assert_eq!(field(&out, "tmp="), "ok");
    assert_eq!(field(&out, "cwd="), "/scratch");
    assert_eq!(field(&out, "env="), "hi there");
    assert_eq!(field(&out, "vol="), "new");
}

#[test]
fn the_exit_status_of_the_service_is_returned() {
    let out = run("exits", &sh("exit 7"));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn a_missing_binary_is_a_precise_error() {
    let out = run("missing", "command = [\"/usr/sbin/nosuchd\"]");
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("exec /usr/sbin/nosuchd: ENOENT"),
        "{stderr}"
    );
}

#[test]
fn a_corrupt_squashfs_is_a_precise_error() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("broken.squashfs");
    std::fs::write(&image, vec![0xa5u8; 16384]).unwrap();
    let out = run_on(
        "corrupt",
        "command = [\"/usr/bin/busybox\", \"true\"]",
        &image,
    );
    assert_eq!(out.status.code(), Some(125));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("mounting {} (/dev/loop", image.display())),
        "{stderr}"
    );
    assert!(stderr.contains("not a valid squashfs image?"), "{stderr}");
}

#[test]
fn a_real_squashfs_image_works() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("busybox.squashfs");
    let status = Command::new("mksquashfs")
        .arg(rootfs())
        .arg(&image)
        .args(["-quiet", "-comp", "zstd", "-noappend"])
        .status()
        .expect("mksquashfs (Debian package squashfs-tools)");
    assert!(status.success());
    let out = stdout(&run_on(
        "squash",
        &sh("echo from-squashfs; busybox grep ' / ' /proc/self/mounts"),
        &image,
    ));
    assert!(out.starts_with("from-squashfs\noverlay / overlay"), "{out}");
}

#[test]
fn privileged_keeps_every_capability_its_creator_holds() {
    let out = stdout(&run("priv", &format!("{}\nprivileged = true", sh("busybox grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; busybox ls /dev/loop-control"))));
    let held = std::fs::read_to_string("/proc/self/status").unwrap();
    assert_eq!(field(&out, "CapEff:"), field(&held, "CapPrm:"));
    assert_eq!(field(&out, "NoNewPrivs:"), "0");
    // The host's /dev, not a private one.
    assert!(out.contains("/dev/loop-control"), "{out}");
}

#[test]
fn sysctls_apply_inside_and_proc_is_hardened() {
    let script = "echo fwd=$(busybox cat /proc/sys/net/ipv4/ip_forward); \
                  echo 1 > /proc/sys/vm/overcommit_memory 2>/dev/null; echo write=$?; \
                  echo timer_list=$(busybox wc -c < /proc/timer_list)";
    let spec = format!(
        "{}\nsysctls = {{ \"net.ipv4.ip_forward\" = \"1\" }}",
        sh(script)
    );
    let host_forward = std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap();
    let out = stdout(&run("sysctl", &spec));
    // Set in the container's own network namespace, not the host's.
    assert_eq!(field(&out, "fwd="), "1");
    assert_eq!(
        std::fs::read_to_string("/proc/sys/net/ipv4/ip_forward").unwrap(),
        host_forward
    );
    // Host-wide sysctls cannot be written from inside, even as root.
    assert_ne!(field(&out, "write="), "0", "{out}");
    // Masked: on the host it has hundreds of lines.
    assert_eq!(field(&out, "timer_list="), "0");
}

#[test]
fn a_readiness_path_the_last_run_left_is_gone_when_the_next_starts() {
    // Two runs on one state directory: the writable layer is kept, as
    // across a restart by PID 1.
    let state = tempfile::tempdir().unwrap();
    let state = state.path().to_str().unwrap();
    let spec = format!(
        "{}\nreadiness = {{ type = \"path\", path = \"/run/ready\" }}",
        sh("busybox test -e /run/ready && echo stale || echo fresh; \
            busybox test -e /run/other && echo kept; \
            busybox mkdir -p /run && busybox touch /run/ready /run/other")
    );
    let first = stdout(&run_with("ready", &spec, rootfs(), &["--state", state]));
    assert_eq!(first, "fresh\n");
    let second = stdout(&run_with("ready", &spec, rootfs(), &["--state", state]));
    assert_eq!(second, "fresh\nkept\n", "the rest of the layer is kept");
}

/// The output of a start that would never end if it hung: given far more
/// than it needs (a minute), then killed and reported as hung on `what`.
fn unless_hung(mut child: std::process::Child, what: &str) -> Output {
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > give_up {
            let _ = child.kill();
            panic!("the start hung on {what}");
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

/// A FUSE filesystem whose server never answers (it never even reads its
/// /dev/fuse descriptor): every access under it waits, killably, until the
/// descriptor is closed. What a user's bind mount of a stalled sshfs is.
struct SilentFuse {
    point: PathBuf,
    _server: std::fs::File,
}

impl SilentFuse {
    fn mount(point: &Path) -> SilentFuse {
        use std::os::fd::AsRawFd;
        std::fs::create_dir_all(point).unwrap();
        let server = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/fuse")
            .expect("opening /dev/fuse (the fuse module)");
        let options = format!(
            "fd={},rootmode=40000,user_id=0,group_id=0",
            server.as_raw_fd()
        );
        nix::mount::mount(
            Some("silent"),
            point,
            Some("fuse"),
            nix::mount::MsFlags::empty(),
            Some(options.as_str()),
        )
        .expect("mounting a FUSE filesystem");
        SilentFuse {
            point: point.to_path_buf(),
            _server: server,
        }
    }
}

impl Drop for SilentFuse {
    fn drop(&mut self) {
        // Detached first, then the server's descriptor closes (the field):
        // what still waits on it gets ENOTCONN.
        let _ = nix::mount::umount2(&self.point, nix::mount::MntFlags::MNT_DETACH);
    }
}

/// A service in `dir` that prints "started" and binds a `SilentFuse`
/// mount: its spec file and state directory.
fn service_binding_silent_fuse(dir: &Path) -> (SilentFuse, PathBuf, PathBuf) {
    let fuse = SilentFuse::mount(&dir.join("silent-fuse"));
    let (file, state) = service_in(
        dir,
        "stalled",
        &format!(
            "{}\n[[mounts]]\ntype = \"bind\"\nsource = \"{}\"\ntarget = \"/data\"",
            sh("echo started"),
            fuse.point.display()
        ),
    );
    (fuse, file, state)
}

#[test]
fn a_bind_source_on_a_fuse_mount_is_refused_instead_of_hanging_the_start() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (fuse, file, state) = service_binding_silent_fuse(dir.path());
    let child = runner(&file, rootfs(), &state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = unless_hung(child, "the FUSE mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "{} is on a FUSE filesystem (fuse at {})",
            fuse.point.display(),
            fuse.point.display()
        )),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("started"));
    drop(fuse);
}

/// PID 1 opens a service's `rootfs.image` itself, outside the setup's
/// deadline: a link to an image in a FUSE mount whose server never answers
/// is refused from where the link leads, before anything there is touched.
#[test]
fn an_image_linked_into_a_fuse_mount_is_refused_instead_of_hanging_pid_1() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let fuse = SilentFuse::mount(&dir.path().join("silent-fuse"));
    let link = dir.path().join("web.squashfs");
    std::os::unix::fs::symlink(fuse.point.join("web.squashfs"), &link).unwrap();
    let spec_dir = dir.path().join("web");
    std::fs::create_dir(&spec_dir).unwrap();
    let file = spec_dir.join("service.toml");
    std::fs::write(
        &file,
        format!(
            "{}\n[rootfs]\nimage = {:?}\n",
            sh("echo started"),
            link.display().to_string()
        ),
    )
    .unwrap();
    let child = runner(&file, rootfs(), &dir.path().join("state"))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = unless_hung(child, "an image linked into the FUSE mount");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "rootfs.image {}: {} is on a FUSE filesystem (fuse at {})",
            link.display(),
            fuse.point.display(),
            fuse.point.display()
        )),
        "{stderr}"
    );
    assert!(
        stuck_on_fuse(dir.path()).is_none(),
        "a process waits on the FUSE mount"
    );
    drop(fuse);
}

/// The deadline, for what the checks before the start do not know: the
/// same stalled FUSE mount, past the FUSE check (`--unchecked-setup-deadline`),
/// hangs the setup child in the kernel; the start fails after the deadline
/// with where the child was stuck, and the child is killed.
#[test]
fn a_setup_that_hangs_fails_the_start_at_its_deadline() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (fuse, file, state) = service_binding_silent_fuse(dir.path());
    let rootfs = rootfs();
    let started = std::time::Instant::now();
    let child = runner(&file, rootfs, &state)
        .args(["--unchecked-setup-deadline", "1500"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = unless_hung(child, "the FUSE mount, past its deadline");
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("after {took:?}: {stderr}");
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the container's setup did not reach its exec within 1.5 s (blocked in "),
        "{stderr}"
    );
    // At the deadline, not at the hang guard's minute.
    assert!(
        took >= std::time::Duration::from_millis(1500) && took < std::time::Duration::from_secs(4),
        "{took:?}"
    );
    // And the stuck child is gone while the FUSE server still says nothing:
    // left alive, it would wait in the FUSE request until the mount went.
    let give_up = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while let Some(pid) = stuck_on_fuse(dir.path()) {
        assert!(
            std::time::Instant::now() < give_up,
            "setup child {pid} still waits on the FUSE mount"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    drop(fuse);
}

/// A brig-container process (a setup child is a copy of it) of a test
/// whose files are in `dir` (its command line names them: tests run side
/// by side) that waits in FUSE, and is not a zombie.
fn stuck_on_fuse(dir: &Path) -> Option<u32> {
    let ours = dir.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid: u32 = entry.file_name().to_str()?.parse().ok()?;
            let read = |file: &str| std::fs::read_to_string(entry.path().join(file)).ok();
            let stat = read("stat")?;
            let state = stat.rsplit_once(") ")?.1.chars().next()?;
            let command_line = std::fs::read(entry.path().join("cmdline")).ok()?;
            (read("comm")?.trim() == "brig-container"
                && command_line.windows(ours.len()).any(|w| w == ours)
                && read("wchan")?.contains("fuse")
                && state != 'Z')
                .then_some(pid)
        })
}

#[test]
fn a_fifo_at_etc_passwd_in_the_writable_layer_fails_the_start_instead_of_hanging_it() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let (file, state) = service_in(
        dir.path(),
        "fifo",
        &format!("{}\nuser = \"nobody\"", sh("echo started")),
    );
    // What a service could leave in its writable layer for its next start.
    let etc = state.join("containers/fifo/upper/etc");
    std::fs::create_dir_all(&etc).unwrap();
    nix::unistd::mkfifo(
        &etc.join("passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let child = runner(&file, rootfs(), &state)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out = unless_hung(child, "the FIFO");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("/etc/passwd is not a regular file"),
        "{stderr}"
    );
    assert!(!String::from_utf8_lossy(&out.stdout).contains("started"));
}

#[test]
fn links_in_the_writable_layer_never_lead_the_mounts_onto_the_host() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let host = dir.path().join("host-etc");
    std::fs::create_dir(&host).unwrap();
    let spec = format!(
        "{}\n[[mounts]]\ntype = \"tmpfs\"\ntarget = \"/data/cache\"\n\
         [[mounts]]\ntype = \"volume\"\nname = \"kept\"\ntarget = \"/data/kept\"",
        sh("busybox ls -d /data/cache /data/kept && busybox readlink /data")
    );
    let (file, state) = service_in(dir.path(), "linked", &spec);
    // What a service could leave in its writable layer for its next start:
    // /data, a link to a directory of the host.
    let upper = state.join("containers/linked/upper");
    std::fs::create_dir_all(&upper).unwrap();
    std::os::unix::fs::symlink(&host, upper.join("data")).unwrap();
    let out = runner(&file, rootfs(), &state).output().unwrap();
    let entries: Vec<_> = std::fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(
        entries.is_empty(),
        "the mounts reached the host: {entries:?}"
    );
    // Inside, the link is followed within the root: the service runs.
    let said = stdout(&out);
    assert!(
        said.contains("/data/cache") && said.contains("/data/kept"),
        "{said}"
    );
    assert_eq!(said.lines().last(), Some(host.to_str().unwrap()), "{said}");
}

#[test]
fn a_readiness_command_has_the_services_user_and_capabilities_not_pid_1s() {
    // The check is the image's program: here it tries what a root check
    // could (remount /proc, read /etc/shadow through /proc/1/root), and
    // exits 0 only if all of that failed, it runs as the service's user
    // with the service's capabilities, and it sees the service's PID
    // namespace (the service as PID 1).
    let check = "busybox mount -t proc proc /proc 2>/dev/null && exit 10; \
                 busybox cat /proc/1/root/etc/shadow >/dev/null 2>&1 && exit 11; \
                 [ \"$(busybox id -u)\" = 65534 ] || exit 12; \
                 busybox grep -q sleep /proc/1/cmdline || exit 13; \
                 [ \"$(busybox grep CapEff /proc/self/status)\" = \"$(busybox grep CapEff /proc/1/status)\" ] || exit 14; \
                 exit 0";
    let spec = format!(
        "command = [\"/usr/bin/busybox\", \"sleep\", \"2\"]\nuser = \"65534\"\n\
         readiness = {{ type = \"command\", command = [\"/usr/bin/busybox\", \"sh\", \"-c\", {check:?}] }}"
    );
    let out = run("checked", &spec);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains("the readiness command exited with status 0"),
        "{said}"
    );
}

#[test]
fn a_writable_layer_is_its_own_tmpfs_and_filling_it_fills_only_it() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let layer = dir.path().join("containers/filler");
    brig_runtime::spawn::prepare_layer(&layer, 2 << 20).unwrap();
    // A second start finds it mounted and mounts nothing more.
    brig_runtime::spawn::prepare_layer(&layer, 2 << 20).unwrap();
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let on_it = mounts
        .lines()
        .filter(|l| l.split(' ').nth(4) == Some(layer.to_str().unwrap()))
        .count();
    let full = std::fs::write(layer.join("big"), vec![1u8; 3 << 20]);
    let parent_still_writable = std::fs::write(dir.path().join("beside"), vec![1u8; 3 << 20]);
    nix::mount::umount2(&layer, nix::mount::MntFlags::MNT_DETACH).unwrap();
    assert_eq!(on_it, 1, "{mounts}");
    assert_eq!(
        full.unwrap_err().raw_os_error(),
        Some(libc::ENOSPC),
        "3 MiB into a 2 MiB layer"
    );
    parent_still_writable.unwrap();
}
