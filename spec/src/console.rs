//! Who may log in to the console container and how: what PID 1 makes of
//! cloud-config `users`, `user`, `ssh_authorized_keys`, `ssh_pwauth`,
//! `disable_root` and `brig.console`, handed to the console container as
//! JSON (`/run/brig/config/console/console.json`). Validated here, so the console
//! only renders it into /etc/passwd, /etc/shadow, sudoers and sshd config.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::problem::Problem;
use crate::steps::WriteFile;

/// The default user's name (cloud-init's `default` entry in `users`).
pub const DEFAULT_USER: &str = "brig";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConsoleConfig {
    pub users: Vec<Account>,
    /// sshd `PasswordAuthentication` (cloud-config `ssh_pwauth`).
    #[serde(default)]
    pub ssh_password_auth: bool,
    /// Root may log in over ssh with a key (cloud-config `disable_root:
    /// false`); it then gets the default user's keys, as with cloud-init.
    #[serde(default)]
    pub root_login: bool,
    /// Root's keys when `root_login`: the default user's from config.
    #[serde(default)]
    pub root_authorized_keys: Vec<String>,
    /// Log this user in on the serial console without a password
    /// (`brig.console.autologin`).
    #[serde(default)]
    pub autologin: Option<String>,
    /// The datasource's instance id: per-instance steps run once for it.
    #[serde(default)]
    pub instance_id: String,
    /// `write_files`, in the console, at each boot.
    #[serde(default)]
    pub write_files: Vec<WriteFile>,
    /// `bootcmd` as a shell script: each boot, before sshd starts.
    #[serde(default)]
    pub bootcmd: Option<String>,
    /// `runcmd` as a shell script: once per instance, after sshd starts.
    #[serde(default)]
    pub runcmd: Option<String>,
    /// User-data scripts (`#!`): once per instance, after `runcmd`.
    #[serde(default)]
    pub scripts: Vec<String>,
    /// `timezone`: a tz database name such as `Europe/Berlin`.
    #[serde(default)]
    pub timezone: Option<String>,
    /// `groups`: groups to create, with the users to add to them.
    #[serde(default)]
    pub groups: Vec<GroupEntry>,
}

/// A group from cloud-config `groups`, and the users to add to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupEntry {
    pub name: String,
    #[serde(default)]
    pub members: Vec<String>,
}

/// The console's own accounts (Debian's base-passwd, trimmed, and sshd's
/// privilege separation user): users from config may join groups, and so
/// may these.
pub const SYSTEM_ACCOUNTS: &[&str] = &["root", "daemon", "bin", "sys", "sshd", "nobody"];

/// One login account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub name: String,
    #[serde(default)]
    pub gecos: String,
    /// Chosen by the console (from 1000 up) when not given.
    #[serde(default)]
    pub uid: Option<u32>,
    /// The primary group's name; a group named after the user when absent.
    #[serde(default)]
    pub primary_group: Option<String>,
    /// Supplementary groups, created when missing.
    #[serde(default)]
    pub groups: Vec<String>,
    /// sudoers rules for this user, e.g. `ALL=(ALL) NOPASSWD:ALL`.
    #[serde(default)]
    pub sudo: Vec<String>,
    pub shell: String,
    /// `/home/<name>` when not given.
    #[serde(default)]
    pub home: Option<String>,
    pub create_home: bool,
    #[serde(default)]
    pub ssh_authorized_keys: Vec<String>,
    /// A crypt(3) hash (`$6$…`, `$y$…`).
    #[serde(default)]
    pub password_hash: Option<String>,
    /// The password cannot be used (keys still can): cloud-init's default.
    pub lock_password: bool,
}

impl Default for ConsoleConfig {
    /// No config at all: the default user, without keys (so nobody can log
    /// in over ssh until keys are given), password login off.
    fn default() -> Self {
        ConsoleConfig {
            users: vec![Account::default_user()],
            ssh_password_auth: false,
            root_login: false,
            root_authorized_keys: Vec::new(),
            autologin: None,
            instance_id: String::new(),
            write_files: Vec::new(),
            bootcmd: None,
            runcmd: None,
            scripts: Vec::new(),
            timezone: None,
            groups: Vec::new(),
        }
    }
}

impl Account {
    /// `brig`: uid 1000, passwordless sudo, may use Docker, bash.
    pub fn default_user() -> Self {
        Account {
            name: DEFAULT_USER.into(),
            gecos: "Brig".into(),
            uid: Some(1000),
            primary_group: None,
            groups: vec!["adm".into(), "sudo".into(), "docker".into()],
            sudo: vec!["ALL=(ALL) NOPASSWD:ALL".into()],
            shell: "/bin/bash".into(),
            home: None,
            create_home: true,
            ssh_authorized_keys: Vec::new(),
            password_hash: None,
            lock_password: true,
        }
    }

    /// A user named in `users` with cloud-init's defaults.
    fn named(name: String) -> Self {
        Account {
            name,
            gecos: String::new(),
            uid: None,
            groups: Vec::new(),
            sudo: Vec::new(),
            ..Account::default_user()
        }
    }

    pub fn home(&self) -> String {
        self.home
            .clone()
            .unwrap_or_else(|| format!("/home/{}", self.name))
    }
}

/// A user or group name as useradd accepts it by default.
pub fn valid_name(name: &str) -> bool {
    let body = name.strip_suffix('$').unwrap_or(name);
    (1..=32).contains(&name.len())
        && body
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
        && body
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// `users:` — a list of `default`, names and mappings. Returns the
/// accounts in order (`default` as the default user) and the problems; a
/// bad entry is left out, a bad key of an entry loses only that key.
pub fn parse_users(value: &Value) -> (Vec<UserEntry>, Vec<Problem>) {
    let mut problems = Vec::new();
    let items: Vec<Value> = match value {
        // cloud-init also takes "default, alice" and a single mapping.
        Value::String(s) => s
            .split(',')
            .map(|n| Value::String(n.trim().into()))
            .collect(),
        Value::Array(items) => items.clone(),
        Value::Object(_) => vec![value.clone()],
        other => {
            problems.push(Problem::new(
                String::new(),
                format!("expected a list, not {other}"),
            ));
            return (Vec::new(), problems);
        }
    };
    let mut entries = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let at = format!("[{i}]");
        match item {
            Value::String(s) if s == "default" => entries.push(UserEntry::Default),
            Value::String(name) if valid_name(name) => {
                entries.push(UserEntry::Account(Box::new(Account::named(name.clone()))))
            }
            Value::Object(_) => {
                let name = item.get("name").and_then(Value::as_str).unwrap_or_default();
                if name == "default" {
                    entries.push(UserEntry::Default);
                    continue;
                }
                if !valid_name(name) {
                    problems.push(Problem::new(
                        format!("{at}.name"),
                        format!("{name:?} is not a valid user name (lower case letters, digits, _ and -; at most 32); entry left out"),
                    ));
                    continue;
                }
                let mut account = Account::named(name.into());
                apply_user_keys(&mut account, item, &at, &mut problems);
                entries.push(UserEntry::Account(Box::new(account)));
            }
            other => problems.push(Problem::new(
                at,
                format!("{other} is not a user name or a mapping; entry left out"),
            )),
        }
    }
    (entries, problems)
}

/// An entry of `users:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UserEntry {
    /// `default`: the default user, as `user:` and `ssh_authorized_keys` make it.
    Default,
    Account(Box<Account>),
}

/// `user:` — settings for the default user (a name renames it).
pub fn parse_default_user(value: &Value) -> (Account, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut account = Account::default_user();
    match value {
        Value::String(name) if valid_name(name) => account.name = name.clone(),
        Value::Object(map) => {
            if let Some(name) = map.get("name") {
                match name.as_str() {
                    Some(n) if valid_name(n) => account.name = n.into(),
                    _ => problems.push(Problem::new(
                        "name".into(),
                        format!("{name} is not a valid user name; the default user keeps its name"),
                    )),
                }
            }
            apply_user_keys(&mut account, value, "", &mut problems);
        }
        other => problems.push(Problem::new(
            String::new(),
            format!("{other} is not a user name or a mapping"),
        )),
    }
    (account, problems)
}

/// Keys of a cloud-init user mapping, applied to `account`.
fn apply_user_keys(account: &mut Account, item: &Value, at: &str, problems: &mut Vec<Problem>) {
    let Some(map) = item.as_object() else { return };
    for (key, value) in map {
        let sub = if at.is_empty() {
            key.clone()
        } else {
            format!("{at}.{key}")
        };
        let result: Result<(), String> = match key.as_str() {
            "name" => Ok(()),
            "gecos" => text_line(value).map(|g| account.gecos = g),
            "uid" => match value {
                Value::Number(n) => n
                    .as_u64()
                    .and_then(|n| u32::try_from(n).ok())
                    .filter(|n| *n > 0 && *n < 65534)
                    .map(|n| account.uid = Some(n))
                    .ok_or_else(|| format!("{n} is not a uid (1-65533)")),
                Value::String(s) => s
                    .parse::<u32>()
                    .ok()
                    .filter(|n| *n > 0 && *n < 65534)
                    .map(|n| account.uid = Some(n))
                    .ok_or_else(|| format!("{s:?} is not a uid (1-65533)")),
                other => Err(format!("expected a number, not {other}")),
            },
            "primary_group" => match value.as_str() {
                Some(g) if valid_name(g) => {
                    account.primary_group = Some(g.into());
                    Ok(())
                }
                _ => Err(format!("{value} is not a valid group name")),
            },
            "groups" => group_list(value).map(|g| account.groups = g),
            "sudo" => sudo_rules(value).map(|r| account.sudo = r),
            "shell" => match value.as_str() {
                Some(s) if s.starts_with('/') && !s.contains(['\n', ':']) => {
                    account.shell = s.into();
                    Ok(())
                }
                _ => Err(format!("{value} is not an absolute path")),
            },
            "homedir" => match value.as_str() {
                Some(h)
                    if h.starts_with('/')
                        && !h.contains(['\n', ':'])
                        && !h.split('/').any(|c| c == "..") =>
                {
                    account.home = Some(h.into());
                    Ok(())
                }
                _ => Err(format!("{value} is not an absolute path")),
            },
            "no_create_home" => boolean(value).map(|b| account.create_home = !b),
            "ssh_authorized_keys" => {
                crate::cloud_config::ssh_keys(value).map(|k| account.ssh_authorized_keys = k)
            }
            "lock_passwd" => boolean(value).map(|b| account.lock_password = b),
            "passwd" | "hashed_passwd" => match value.as_str() {
                Some(h) if crypt_hash(h) => {
                    account.password_hash = Some(h.into());
                    Ok(())
                }
                _ => Err(
                    "expected a crypt(3) hash such as `mkpasswd --method=SHA-512` prints ($6$...); plain text passwords are not accepted"
                        .into(),
                ),
            },
            "plain_text_passwd" => Err(
                "plain text passwords are not accepted: give `hashed_passwd` (mkpasswd --method=SHA-512)".into(),
            ),
            // Accepted for compatibility; they change nothing here.
            "system" | "no_user_group" | "no_log_init" | "create_groups" => Ok(()),
            "ssh_import_id" => Err("not supported (it fetches keys from the internet): list the keys in `ssh_authorized_keys`".into()),
            _ => Err("unknown or unsupported user key, ignored".into()),
        };
        if let Err(e) = result {
            problems.push(Problem::new(sub, e));
        }
    }
}

fn boolean(value: &Value) -> Result<bool, String> {
    value
        .as_bool()
        .ok_or_else(|| format!("expected true or false, not {value}"))
}

/// A one-line text without `:` (it goes into /etc/passwd).
fn text_line(value: &Value) -> Result<String, String> {
    match value.as_str() {
        Some(s) if !s.contains(['\n', ':']) => Ok(s.into()),
        _ => Err(format!("{value} is not one line of text without ':'")),
    }
}

/// `groups`: "a, b" or a list.
fn group_list(value: &Value) -> Result<Vec<String>, String> {
    let names: Vec<String> = match value {
        Value::String(s) => s.split(',').map(|g| g.trim().to_string()).collect(),
        Value::Array(items) => items
            .iter()
            .map(|i| {
                i.as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| i.to_string())
            })
            .collect(),
        other => return Err(format!("expected a list of group names, not {other}")),
    };
    match names.iter().find(|g| !valid_name(g)) {
        Some(bad) => Err(format!("{bad:?} is not a valid group name")),
        None => Ok(names),
    }
}

/// `sudo`: a rule, a list of rules, or false/null for none.
fn sudo_rules(value: &Value) -> Result<Vec<String>, String> {
    let rules: Vec<&Value> = match value {
        Value::Null | Value::Bool(false) => return Ok(Vec::new()),
        Value::Array(items) => items.iter().collect(),
        single => vec![single],
    };
    rules
        .into_iter()
        .map(|r| match r.as_str() {
            // One line: each rule is written as "<user> <rule>" in sudoers.
            Some(s) if !s.trim().is_empty() && !s.contains('\n') => Ok(s.trim().to_string()),
            _ => Err(format!(
                "{r} is not a sudoers rule (e.g. \"ALL=(ALL) NOPASSWD:ALL\")"
            )),
        })
        .collect()
}

/// A crypt(3) hash: `$id$...` in crypt's alphabet, or `*`/`!` for none.
fn crypt_hash(h: &str) -> bool {
    let alphabet = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"./$=,-".contains(&b))
    };
    (h.starts_with('$') && h.len() > 10 && alphabet(h)) || h == "*" || h == "!"
}

/// `groups:` as cloud-init takes it: a list of group names and `{name:
/// [members]}` mappings, or one mapping of names to members (a list, "a,
/// b", or nothing). A bad entry is left out with a problem; a bad member
/// name loses only that member.
pub fn parse_groups(value: &Value) -> (Vec<GroupEntry>, Vec<Problem>) {
    let mut problems = Vec::new();
    // (where in the config, name, members) for each entry.
    let mut items: Vec<(String, String, Value)> = Vec::new();
    match value {
        Value::String(s) => {
            for (i, name) in s.split(',').enumerate() {
                items.push((format!("[{i}]"), name.trim().into(), Value::Null));
            }
        }
        Value::Object(map) => {
            for (name, members) in map {
                items.push((name.clone(), name.clone(), members.clone()));
            }
        }
        Value::Array(list) => {
            for (i, item) in list.iter().enumerate() {
                match item {
                    Value::String(name) => items.push((format!("[{i}]"), name.clone(), Value::Null)),
                    Value::Object(map) if map.len() == 1 => {
                        let (name, members) = map.iter().next().expect("one entry");
                        items.push((format!("[{i}].{name}"), name.clone(), members.clone()));
                    }
                    other => problems.push(Problem::new(
                        format!("[{i}]"),
                        format!("{other} is not a group name or a mapping of one group to its members; entry left out"),
                    )),
                }
            }
        }
        other => {
            problems.push(Problem::new(
                String::new(),
                format!("expected a list of groups, not {other}"),
            ));
            return (Vec::new(), problems);
        }
    }
    let mut groups: Vec<GroupEntry> = Vec::new();
    for (at, name, members) in items {
        if !valid_name(&name) {
            problems.push(Problem::new(
                at,
                format!("{name:?} is not a valid group name (lower case letters, digits, _ and -; at most 32); entry left out"),
            ));
            continue;
        }
        let members: Vec<String> = match &members {
            Value::Null => Vec::new(),
            Value::String(s) => s.split(',').map(|m| m.trim().to_string()).collect(),
            Value::Array(list) => list
                .iter()
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                .collect(),
            other => {
                problems.push(Problem::new(
                    at,
                    format!("expected a list of user names, not {other}; entry left out"),
                ));
                continue;
            }
        };
        let mut kept = Vec::new();
        for member in members {
            if !valid_name(&member) {
                problems.push(Problem::new(
                    at.clone(),
                    format!("{member:?} is not a valid user name; left out of {name:?}"),
                ));
            } else if !kept.contains(&member) {
                kept.push(member);
            }
        }
        match groups.iter_mut().find(|g| g.name == name) {
            // Listed twice: one group with the members of both.
            Some(group) => {
                for member in kept {
                    if !group.members.contains(&member) {
                        group.members.push(member);
                    }
                }
            }
            None => groups.push(GroupEntry {
                name,
                members: kept,
            }),
        }
    }
    (groups, problems)
}

/// Members of `groups` that are neither an account of `accounts` nor one
/// of the console's own: each a problem, and left out of its group.
pub fn resolve_groups(groups: &mut [GroupEntry], accounts: &[Account]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for group in groups {
        group.members.retain(|member| {
            let known = SYSTEM_ACCOUNTS.contains(&member.as_str())
                || accounts.iter().any(|a| &a.name == member);
            if !known {
                problems.push(Problem::new(
                    String::new(),
                    format!(
                        "{member:?} is not a user of this machine (`users`); left out of group {:?}",
                        group.name
                    ),
                ));
            }
            known
        });
    }
    problems
}

/// The accounts: `users` when given (with `default` standing for the
/// default user), else the default user alone. Top-level
/// `ssh_authorized_keys` go to the default user; problems when there is
/// none or names repeat.
pub fn resolve_users(
    users: Option<Vec<UserEntry>>,
    default_user: Account,
    default_keys: &[String],
) -> (Vec<Account>, Vec<Problem>) {
    let mut problems = Vec::new();
    let mut default_user = default_user;
    default_user
        .ssh_authorized_keys
        .extend(default_keys.iter().cloned());
    let entries = users.unwrap_or_else(|| vec![UserEntry::Default]);
    let has_default = entries.contains(&UserEntry::Default);
    if !has_default && !default_keys.is_empty() {
        problems.push(Problem::new(
            String::new(),
            "`ssh_authorized_keys` are for the default user, and `users` does not list `default`: the keys are not used".into(),
        ));
    }
    let mut accounts: Vec<Account> = Vec::new();
    for entry in entries {
        let account = match entry {
            UserEntry::Default => default_user.clone(),
            UserEntry::Account(a) => *a,
        };
        if accounts.iter().any(|a| a.name == account.name) {
            problems.push(Problem::new(
                String::new(),
                format!(
                    "user {:?} is listed twice; the first entry counts",
                    account.name
                ),
            ));
            continue;
        }
        accounts.push(account);
    }
    (accounts, problems)
}

#[cfg(test)]
mod tests;
