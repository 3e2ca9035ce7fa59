//! cloud-config's steps, in the console: `write_files` and `bootcmd` once
//! per boot (before sshd), `runcmd` and user-data scripts once per instance
//! (after sshd, so a slow script never keeps users out). A step that fails
//! is reported; the others still run.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use brig_spec::console::ConsoleConfig;
use brig_spec::problem::Problem;
use brig_spec::steps::{Encoding, WriteFile};

use crate::setup::write_file;

/// Per-boot marks: on the console's own root filesystem, which is kept
/// across restarts of the console within a boot and fresh each boot.
pub const BOOT_STATE: &str = "/var/lib/brig-console";
/// Per-instance marks and scripts: on a volume, as cloud-init's
/// /var/lib/cloud (kept across reboots when there is a state partition).
pub const INSTANCE_STATE: &str = "/var/lib/cloud";
/// How long bootcmd may hold up sshd.
const BOOTCMD_LIMIT: Duration = Duration::from_secs(120);

/// The id of `name` in a passwd or group file's text.
pub fn id_in(table: &str, name: &str) -> Option<u32> {
    table.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1)?.parse().ok())
            .flatten()
    })
}

/// `user:group` (or `user`, with the user's primary group) as ids.
pub fn owner_ids(owner: &str, passwd: &str, group: &str) -> Result<(u32, u32), Problem> {
    let missing = |what: String| Problem::new("owner".into(), what);
    let (user, group_name) = match owner.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (owner, None),
    };
    let uid = id_in(passwd, user).ok_or_else(|| missing(format!("no user {user:?}")))?;
    let gid = match group_name {
        Some(g) => id_in(group, g).ok_or_else(|| missing(format!("no group {g:?}")))?,
        None => passwd
            .lines()
            .find(|l| l.starts_with(&format!("{user}:")))
            .and_then(|l| l.split(':').nth(3)?.parse().ok())
            .unwrap_or(0),
    };
    Ok((uid, gid))
}

/// A `write_files` entry's bytes.
pub fn decode(file: &WriteFile) -> Result<Vec<u8>, String> {
    let base64 =
        |text: &str| brig_spec::cloud_config::decode_base64(text).map_err(|p| p.to_string());
    match file.encoding {
        Encoding::Text => Ok(file.content.clone().into_bytes()),
        Encoding::Base64 => base64(&file.content),
        Encoding::Gzip => gunzip(file.content.as_bytes()),
        Encoding::GzipBase64 => gunzip(&base64(&file.content)?),
    }
}

/// gzip's own decompressor (the console has it).
fn gunzip(data: &[u8]) -> Result<Vec<u8>, String> {
    let mut child = Command::new("gzip")
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("running gzip: {e}"))?;
    let mut stdin = child.stdin.take().ok_or("gzip's stdin")?;
    let data = data.to_vec();
    // Fed from a thread: gzip's output could fill the pipe first.
    let feeder = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| format!("running gzip: {e}"))?;
    let _ = feeder.join();
    if !out.status.success() {
        return Err(format!(
            "not gzip data: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(out.stdout)
}

/// Writes every `write_files` entry; returns a line per file for the log.
pub fn write_files(files: &[WriteFile], passwd: &str, group: &str) -> Vec<String> {
    let mut lines = Vec::new();
    for file in files {
        let written = decode(file).and_then(|data| {
            let (uid, gid) = owner_ids(&file.owner, passwd, group).map_err(|p| p.to_string())?;
            let path = Path::new(&file.path);
            if file.append {
                append(path, &data, file.mode, uid, gid)
            } else {
                write_file(path, &data, file.mode, uid, gid).map_err(|e| e.to_string())
            }
        });
        lines.push(match written {
            Ok(()) => format!("write_files: {} written", file.path),
            Err(e) => format!("error: write_files: {}: {e}", file.path),
        });
    }
    lines
}

fn append(path: &Path, data: &[u8], mode: u32, uid: u32, gid: u32) -> Result<(), String> {
    let what = |e: std::io::Error| format!("appending to {}: {e}", path.display());
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).map_err(what)?;
    }
    // Never through a link a user planted at `path` (O_NOFOLLOW), and a
    // new file's owner and mode are set through its descriptor.
    let (mut file, made) = match fs::OpenOptions::new()
        .append(true)
        .create_new(true)
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => (file, true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let file = fs::OpenOptions::new()
                .append(true)
                .custom_flags(libc::O_NOFOLLOW)
                .open(path)
                .map_err(what)?;
            (file, false)
        }
        Err(e) => return Err(what(e)),
    };
    if made {
        std::os::unix::fs::fchown(&file, Some(uid), Some(gid)).map_err(what)?;
        file.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(what)?;
    }
    file.write_all(data).map_err(what)?;
    file.sync_all().map_err(what)
}

/// An instance id as a directory name.
pub fn instance_dir(instance_id: &str) -> PathBuf {
    let safe: String = instance_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let safe = if safe.is_empty() || safe.starts_with('.') {
        format!("_{safe}")
    } else {
        safe
    };
    Path::new(INSTANCE_STATE).join("instances").join(safe)
}

/// Runs `script` (its text) from `path`; waits up to `limit`. Output goes
/// to the console's log. The outcome as a line for the log.
fn run_script(
    name: &str,
    path: &Path,
    script: &str,
    instance_id: &str,
    limit: Option<Duration>,
) -> String {
    let prepared = (|| -> std::io::Result<()> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(path, script)?;
        fs::set_permissions(path, fs::Permissions::from_mode(0o700))
    })();
    if let Err(e) = prepared {
        return format!("error: {name}: writing {}: {e}", path.display());
    }
    let mut child = match spawn_script(path, instance_id) {
        Ok(child) => child,
        Err(e) => return format!("error: {name}: running {}: {e}", path.display()),
    };
    let started = Instant::now();
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return format!("{name}: done"),
            Ok(Some(status)) => return format!("error: {name}: {status}"),
            Ok(None) => {}
            Err(e) => return format!("error: {name}: {e}"),
        }
        if limit.is_some_and(|l| started.elapsed() > l) {
            let _ = child.kill();
            let _ = child.wait();
            return format!(
                "error: {name}: still running after {} s; stopped so sshd can start",
                started.elapsed().as_secs()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Starts the script just written. Another thread's fork (sshd, a getty)
/// can briefly hold a copy of the write descriptor until its exec closes
/// it, and exec fails with "Text file busy" meanwhile: wait that out.
fn spawn_script(path: &Path, instance_id: &str) -> std::io::Result<std::process::Child> {
    let mut tries = 0;
    loop {
        let spawned = Command::new(path)
            .env("INSTANCE_ID", instance_id)
            .stdin(Stdio::null())
            .spawn();
        match spawned {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

/// `write_files` and `bootcmd`, once per boot.
pub fn per_boot(config: &ConsoleConfig, passwd: &str, group: &str) -> Vec<String> {
    let mark = Path::new(BOOT_STATE).join("boot-steps-done");
    if mark.exists() {
        return Vec::new();
    }
    let mut lines = write_files(&config.write_files, passwd, group);
    if let Some(script) = &config.bootcmd {
        let path = Path::new(BOOT_STATE).join("bootcmd");
        lines.push(run_script(
            "bootcmd",
            &path,
            script,
            &config.instance_id,
            Some(BOOTCMD_LIMIT),
        ));
    }
    if let Err(e) = fs::create_dir_all(BOOT_STATE).and_then(|()| fs::write(&mark, "")) {
        lines.push(format!("error: marking the boot steps done: {e}"));
    }
    lines
}

/// Makes the empty file `mark`, kept across a power cut from the moment
/// this returns (the file and its directory synced): steps that ran must
/// not run again.
fn mark_durably(mark: &Path) -> std::io::Result<()> {
    let dir = mark.parent().unwrap_or(Path::new("/"));
    fs::create_dir_all(dir)?;
    fs::File::create(mark)?.sync_all()?;
    fs::File::open(dir)?.sync_all()
}

/// `runcmd`, then user-data scripts, once per instance. Runs until they
/// end (in a thread of its own: sshd is already up).
pub fn per_instance(config: &ConsoleConfig) -> Vec<String> {
    if config.runcmd.is_none() && config.scripts.is_empty() {
        return Vec::new();
    }
    let dir = instance_dir(&config.instance_id);
    let mark = dir.join("sem/user-steps-done");
    if mark.exists() {
        return vec![format!(
            "runcmd and scripts already ran for instance {:?}",
            config.instance_id
        )];
    }
    let mut lines = Vec::new();
    if let Some(script) = &config.runcmd {
        let path = dir.join("scripts/runcmd");
        lines.push(run_script(
            "runcmd",
            &path,
            script,
            &config.instance_id,
            None,
        ));
    }
    for (i, script) in config.scripts.iter().enumerate() {
        let path = dir.join(format!("scripts/part-{:03}", i + 1));
        let name = format!("user-data script {}", i + 1);
        lines.push(run_script(&name, &path, script, &config.instance_id, None));
    }
    if let Err(e) = mark_durably(&mark) {
        lines.push(format!("error: marking instance steps done: {e}"));
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/bash\nbrig:x:1000:1000:Brig:/home/brig:/bin/bash\n";
    const GROUP: &str = "root:x:0:\nadm:x:4:brig\nbrig:x:1000:\n";

    #[test]
    fn owners_resolve_through_the_rendered_accounts() {
        assert_eq!(owner_ids("root:root", PASSWD, GROUP), Ok((0, 0)));
        assert_eq!(owner_ids("brig:adm", PASSWD, GROUP), Ok((1000, 4)));
        assert_eq!(owner_ids("brig", PASSWD, GROUP), Ok((1000, 1000)));
        assert_eq!(
            owner_ids("nginx:nginx", PASSWD, GROUP),
            Err(Problem::new("owner".into(), "no user \"nginx\"".into()))
        );
        assert_eq!(
            owner_ids("brig:docker", PASSWD, GROUP),
            Err(Problem::new("owner".into(), "no group \"docker\"".into()))
        );
    }

    fn entry(content: &str, encoding: Encoding) -> WriteFile {
        WriteFile {
            path: "/x".into(),
            content: content.into(),
            encoding,
            mode: 0o644,
            owner: "root:root".into(),
            append: false,
        }
    }

    #[test]
    fn contents_are_decoded() {
        assert_eq!(
            decode(&entry("plain\n", Encoding::Text)).unwrap(),
            b"plain\n"
        );
        assert_eq!(
            decode(&entry("aGVsbG8K", Encoding::Base64)).unwrap(),
            b"hello\n"
        );
        // printf 'hello\n' | gzip -n | base64
        let gz = "H4sIAAAAAAAAA8tIzcnJ5wIAIDA6NgYAAAA=";
        assert_eq!(
            decode(&entry(gz, Encoding::GzipBase64)).unwrap(),
            b"hello\n"
        );
        let e = decode(&entry("aGVsbG8K", Encoding::GzipBase64)).unwrap_err();
        assert!(e.starts_with("not gzip data"), "{e}");
    }

    #[test]
    fn files_are_written_and_appended_with_mode_and_owner() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/motd.d/hello");
        let path_text = path.display().to_string();
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let passwd = format!("me:x:{uid}:{gid}::/:/bin/sh\n");
        let group = format!("mine:x:{gid}:\n");
        let mut file = entry("first\n", Encoding::Text);
        file.path = path_text.clone();
        file.mode = 0o600;
        file.owner = "me:mine".into();
        let mut more = file.clone();
        more.content = "second\n".into();
        more.append = true;
        let mut broken = file.clone();
        broken.path = dir.path().join("b64").display().to_string();
        broken.encoding = Encoding::GzipBase64;
        broken.content = "aGVsbG8K".into();
        let lines = write_files(&[file, more, broken], &passwd, &group);
        assert_eq!(lines[0], format!("write_files: {path_text} written"));
        assert!(lines[2].starts_with("error: write_files:"), "{lines:?}");
        assert_eq!(fs::read_to_string(&path).unwrap(), "first\nsecond\n");
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }

    #[test]
    fn links_a_user_planted_are_never_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("shadow");
        fs::write(&victim, "root:secret\n").unwrap();
        // SAFETY: getuid and getgid cannot fail and touch no memory.
        let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
        let passwd = format!("me:x:{uid}:{gid}::/:/bin/sh\n");
        let group = format!("mine:x:{gid}:\n");
        let home = dir.path().join("home");
        fs::create_dir(&home).unwrap();
        // At the temporary name write_files uses, and at a file it appends to.
        std::os::unix::fs::symlink(&victim, home.join(".profile.new")).unwrap();
        std::os::unix::fs::symlink(&victim, home.join("log")).unwrap();
        let mut profile = entry("export EDITOR=vi\n", Encoding::Text);
        profile.path = home.join("profile").display().to_string();
        profile.owner = "me:mine".into();
        let mut log = profile.clone();
        log.path = home.join("log").display().to_string();
        log.append = true;
        let lines = write_files(&[profile, log], &passwd, &group);
        assert_eq!(
            fs::read_to_string(&victim).unwrap(),
            "root:secret\n",
            "{lines:?}"
        );
        assert_eq!(
            fs::read_to_string(home.join("profile")).unwrap(),
            "export EDITOR=vi\n"
        );
        assert!(
            fs::symlink_metadata(home.join(".profile.new")).is_err(),
            "the planted link is gone"
        );
        assert!(lines[1].starts_with("error: write_files:"), "{lines:?}");
    }

    #[test]
    fn instance_ids_are_safe_directory_names() {
        assert_eq!(
            instance_dir("i-0abc"),
            Path::new("/var/lib/cloud/instances/i-0abc")
        );
        assert_eq!(
            instance_dir("../../etc"),
            Path::new("/var/lib/cloud/instances/_.._.._etc")
        );
        assert_eq!(instance_dir(""), Path::new("/var/lib/cloud/instances/_"));
    }

    #[test]
    fn scripts_run_and_report() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let script = format!("#!/bin/sh\necho \"$INSTANCE_ID\" > {}\n", out.display());
        let line = run_script(
            "runcmd",
            &dir.path().join("s/runcmd"),
            &script,
            "iid-7",
            None,
        );
        assert_eq!(line, "runcmd: done");
        assert_eq!(fs::read_to_string(&out).unwrap(), "iid-7\n");
        let line = run_script(
            "bootcmd",
            &dir.path().join("fail"),
            "#!/bin/sh\nexit 3\n",
            "",
            None,
        );
        assert_eq!(line, "error: bootcmd: exit status: 3");
        let line = run_script(
            "bootcmd",
            &dir.path().join("slow"),
            "#!/bin/sh\nsleep 30\n",
            "",
            Some(Duration::from_millis(200)),
        );
        assert!(line.contains("stopped so sshd can start"), "{line}");
    }

    #[test]
    fn a_script_still_open_for_writing_elsewhere_runs_once_closed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("runcmd");
        fs::write(&path, "#!/bin/sh\nexit 0\n").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700)).unwrap();
        // As a forked child that has not yet exec'd would hold it.
        let writer = fs::OpenOptions::new().write(true).open(&path).unwrap();
        let busy = Command::new(&path).spawn().unwrap_err();
        assert_eq!(busy.kind(), std::io::ErrorKind::ExecutableFileBusy);
        let closer = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            drop(writer);
        });
        let status = spawn_script(&path, "iid").unwrap().wait().unwrap();
        assert!(status.success());
        closer.join().unwrap();
    }
}
