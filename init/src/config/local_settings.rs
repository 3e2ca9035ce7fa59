//! Settings made with `brigctl config set`: kept in a JSON mapping
//! (`LOCAL_FILE`) that is merged over the datasource's cloud-config at each
//! boot. A value is checked before it is saved — at its key, and in the
//! whole config it would make — and saved atomically.

use std::path::Path;

use brig_spec::cloud_config::{interpret, UserDocument};
use brig_spec::key_path;
use serde_json::{Map, Value};

use crate::config::plan::Plan;
use crate::host::system::System;

/// `local` with `key` set to `value` (or removed, for None), unchecked:
/// what PID 1 saves once `brig-config` has found it valid.
pub fn with_key(
    local: &Map<String, Value>,
    key: &str,
    value: Option<Value>,
) -> Result<Map<String, Value>, String> {
    let mut next = local.clone();
    match value {
        Some(value) => key_path::set(&mut next, key, value).map_err(|p| p.to_string())?,
        None => {
            if !key_path::unset(&mut next, key).map_err(|p| p.to_string())? {
                return Err(format!("{key} is not set"));
            }
        }
    }
    Ok(next)
}

/// `local` with `key` set to `value` (or removed, for None), if the result
/// is valid cloud-config at that key.
pub fn updated(
    local: &Map<String, Value>,
    key: &str,
    value: Option<Value>,
) -> Result<Map<String, Value>, String> {
    let next = with_key(local, key, value)?;
    let mut problems = Vec::new();
    interpret(
        &UserDocument {
            document: next.clone(),
            scripts: Vec::new(),
        },
        &mut problems,
    );
    let concerns = |k: &str| {
        k == key
            || k.starts_with(&format!("{key}."))
            || k.starts_with(&format!("{key}["))
            || key.starts_with(&format!("{k}."))
            || key.starts_with(&format!("{k}["))
    };
    match problems.iter().find(|p| concerns(&p.key)) {
        Some(problem) => Err(format!("not saved: cloud-config: {problem}")),
        None => Ok(next),
    }
}

/// Sections a service reads from its config file each time it starts:
/// after a change PID 1 writes that file anew, so restarting the service
/// applies the change without a reboot. (section, files, service)
pub const APPLIED_BY_RESTART: [(&str, &[&str], &str); 2] = [
    (
        "brig.docker",
        &[
            brig_spec::paths::DOCKER_CONFIG,
            brig_spec::paths::SWARM_CONFIG,
        ],
        "docker",
    ),
    (
        "brig.logging",
        &[brig_spec::paths::LOGGING_CONFIG],
        "syslog",
    ),
];

/// The section of `APPLIED_BY_RESTART` that `key` is in (or is).
pub fn applied_by_restart(
    key: &str,
) -> Option<(&'static str, &'static [&'static str], &'static str)> {
    APPLIED_BY_RESTART.into_iter().find(|(section, _, _)| {
        key == *section
            || key.starts_with(&format!("{section}."))
            || key.starts_with(&format!("{section}["))
    })
}

/// `key` set to `value` (None: removed) in `local`, if the result is
/// valid at that key and adds no problem anywhere in the whole config
/// (`whole` plans it: the saved datasource and the image's default under
/// the settings): the message for the user. `brig-config` runs this
/// (`ask::change`); PID 1 makes the settings to save itself (`with_key`).
pub fn checked(
    local: &Map<String, Value>,
    key: &str,
    value: Option<Value>,
    whole: impl Fn(&Map<String, Value>) -> Plan,
) -> Result<String, String> {
    let shown = value.as_ref().map(Value::to_string);
    let before = whole(local);
    if value.is_some() {
        if let Some((lost, what)) = key_path::replaces(&before.effective, key) {
            return Err(format!(
                "not saved: `{lost}` is {what} in the config; setting {key} would replace all of it"
            ));
        }
    }
    let next = updated(local, key, value)?;
    let after = whole(&next);
    if let Some(new) = after.problems.iter().find(|p| !before.problems.contains(p)) {
        return Err(format!(
            "not saved: the config would have a new problem: {new}"
        ));
    }
    let applies = match applied_by_restart(key) {
        Some((_, _, service)) => {
            format!("`sudo brigctl restart {service}` applies it now, a reboot too")
        }
        None => "it applies from the next boot".to_string(),
    };
    Ok(match shown {
        Some(v) => format!("{key} = {v} saved; {applies}"),
        None => format!("{key} removed, the datasource's value is back; {applies}"),
    })
}

/// Replaced atomically (`System::write_file`): a power cut leaves the old
/// settings or the new, never a part.
pub fn save(sys: &dyn System, path: &Path, settings: &Map<String, Value>) -> Result<(), String> {
    let text = serde_json::to_string_pretty(settings).unwrap_or_default() + "\n";
    sys.write_file(path, text.as_bytes(), 0o644)
        .map_err(|e| format!("saving {}: {e}", path.display()))
}

/// The settings made with `brigctl config set`: a JSON mapping at `path`,
/// none when the file does not exist.
pub fn read(sys: &dyn System, path: &Path) -> Result<Map<String, Value>, String> {
    match sys.read_file(path) {
        Ok(text) => match serde_json::from_slice(&text) {
            Ok(Value::Object(map)) => Ok(map),
            Ok(_) => Err(format!("{}: not a mapping", path.display())),
            Err(e) => Err(format!("{}: {e}", path.display())),
        },
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Map::new()),
        Err(e) => Err(format!("reading {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ask::change;
    use crate::host::system::fake::Recorder;
    use crate::host::system::Linux;
    use brig_spec::paths;
    use serde_json::json;
    use std::fs;

    #[test]
    fn values_are_checked_before_they_are_saved() {
        let local = Map::new();
        let next = updated(&local, "hostname", Some(json!("node-9"))).unwrap();
        assert_eq!(next["hostname"], "node-9");
        let e = updated(&local, "hostname", Some(json!("not a name"))).unwrap_err();
        assert!(e.starts_with("not saved: cloud-config: `hostname`:"), "{e}");
        let e = updated(&local, "brig.sysctl", Some(json!([1]))).unwrap_err();
        assert!(e.contains("`brig.sysctl`"), "{e}");
        let next = updated(&local, "brig.console.autologin", Some(json!(true))).unwrap();
        assert_eq!(next["brig"]["console"]["autologin"], true);
        let e = updated(&next, "ntp", None).unwrap_err();
        assert_eq!(e, "ntp is not set");
        assert!(updated(&next, "brig.console", None).unwrap()["brig"]
            .as_object()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn settings_are_saved_whole() {
        let sys = Recorder::default();
        let path = Path::new(paths::LOCAL_FILE);
        let said = change(&sys, path, "hostname", Some(json!("node-9"))).unwrap();
        assert_eq!(
            said,
            "hostname = \"node-9\" saved; it applies from the next boot"
        );
        change(&sys, path, "timezone", Some(json!("Europe/Berlin"))).unwrap();
        let saved = read(&sys, path).unwrap();
        assert_eq!(saved["hostname"], "node-9");
        assert_eq!(saved["timezone"], "Europe/Berlin");
        change(&sys, path, "hostname", None).unwrap();
        assert!(!read(&sys, path).unwrap().contains_key("hostname"));
        // On a real filesystem the file is replaced whole, no leftovers.
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("config/local.json");
        save(&Linux, &real, &saved).unwrap();
        save(&Linux, &real, &Map::new()).unwrap();
        assert!(read(&Linux, &real).unwrap().is_empty());
        assert_eq!(fs::read_dir(dir.path().join("config")).unwrap().count(), 1);
        let said = change(&sys, path, "brig.docker.debug", Some(json!(true))).unwrap();
        assert_eq!(
            said,
            "brig.docker.debug = true saved; `sudo brigctl restart docker` applies it now, a reboot too"
        );
    }

    #[test]
    fn docker_and_logging_settings_apply_on_a_restart() {
        let service = |key| applied_by_restart(key).map(|(_, _, s)| s);
        assert_eq!(service("brig.docker"), Some("docker"));
        assert_eq!(service("brig.docker.registry_mirrors[0]"), Some("docker"));
        assert_eq!(service("brig.logging.remote"), Some("syslog"));
        assert_eq!(service("brig.dockerd"), None);
        assert_eq!(service("brig"), None);
        assert_eq!(service("hostname"), None);
    }

    #[test]
    fn a_setting_that_would_break_the_config_elsewhere_or_replace_a_list_is_refused() {
        let sys = Recorder::default();
        let saved = Path::new(paths::SAVED_DIR).join("user-data");
        let user_data = "#cloud-config\nusers: [default, {name: alice}]\n\
                         ssh_authorized_keys: [ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB7 me@host]\n";
        sys.write_file(&saved, user_data.as_bytes(), 0o644).unwrap();
        let local = Path::new(paths::LOCAL_FILE);
        // users.shell would turn the list of users into a mapping.
        let e = change(&sys, local, "users.shell", Some(json!("/bin/sh"))).unwrap_err();
        assert_eq!(
            e,
            "not saved: `users` is a list in the config; setting users.shell would replace all of it"
        );
        // Valid at its key, but the default user's keys would go nowhere.
        let e = change(&sys, local, "users", Some(json!([{"name": "bob"}]))).unwrap_err();
        assert!(
            e.starts_with("not saved: the config would have a new problem: cloud-config:")
                && e.contains("ssh_authorized_keys"),
            "{e}"
        );
        assert_eq!(sys.file(paths::LOCAL_FILE), None, "nothing saved");
        // What breaks nothing is saved.
        change(
            &sys,
            local,
            "users",
            Some(json!(["default", {"name": "bob"}])),
        )
        .unwrap();
        let saved: Value = serde_json::from_str(&sys.file(paths::LOCAL_FILE).unwrap()).unwrap();
        assert_eq!(saved["users"][1]["name"], "bob");
    }
}
