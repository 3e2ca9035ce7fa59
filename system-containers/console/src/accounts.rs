//! The console's accounts, rendered from the config PID 1 hands over: the
//! contents of /etc/passwd, /etc/shadow, /etc/group, /etc/gshadow, sudoers
//! rules, authorized keys and sshd's login settings. Pure: the files are
//! written by the caller. The accounts are made anew each boot from config,
//! as the rest of the root filesystem is; homes persist on a volume.

use brig_spec::console::{Account, ConsoleConfig};
use brig_spec::docker_config;

/// System accounts every console has (Debian's base-passwd, trimmed), and
/// sshd's privilege separation user.
const BASE_USERS: &[(&str, u32, u32, &str, &str)] = &[
    ("root", 0, 0, "/root", "/bin/bash"),
    ("daemon", 1, 1, "/usr/sbin", "/usr/sbin/nologin"),
    ("bin", 2, 2, "/bin", "/usr/sbin/nologin"),
    ("sys", 3, 3, "/dev", "/usr/sbin/nologin"),
    ("sshd", 100, 65534, "/run/sshd", "/usr/sbin/nologin"),
    ("nobody", 65534, 65534, "/nonexistent", "/usr/sbin/nologin"),
];

const BASE_GROUPS: &[(&str, u32)] = &[
    ("root", 0),
    ("daemon", 1),
    ("bin", 2),
    ("sys", 3),
    ("adm", 4),
    ("tty", 5),
    ("disk", 6),
    ("sudo", 27),
    ("shadow", 42),
    ("utmp", 43),
    ("staff", 50),
    ("users", 100),
    // The Docker socket's group, the same gid in the docker container.
    ("docker", docker_config::DOCKER_GID),
    ("nogroup", 65534),
];

/// Where IDs for accounts without one start, and the end of that range.
const FIRST_ID: u32 = 1000;
const LAST_ID: u32 = 59999;

/// One user's home, to create when missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Home {
    pub user: String,
    pub path: String,
    pub uid: u32,
    pub gid: u32,
}

/// Everything rendered.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rendered {
    pub passwd: String,
    pub shadow: String,
    pub group: String,
    pub gshadow: String,
    /// One sudoers file per user with rules: (user, text).
    pub sudoers: Vec<(String, String)>,
    /// Keys from config per user: (user, authorized_keys text).
    pub authorized_keys: Vec<(String, String)>,
    pub homes: Vec<Home>,
    /// sshd settings from config (a drop-in under sshd_config.d).
    pub sshd_config: String,
    /// What was wrong: each names the user.
    pub problems: Vec<String>,
}

struct Group {
    name: String,
    gid: u32,
    members: Vec<String>,
}

/// The lowest free ID in the range, or None when it is exhausted.
fn next_free(used: &[u32]) -> Option<u32> {
    (FIRST_ID..=LAST_ID).find(|id| !used.contains(id))
}

/// The shadow password field: a hash, locked with `!` when asked; `*` (no
/// password) otherwise. A locked account still logs in with keys.
fn shadow_field(account: &Account) -> String {
    match (&account.password_hash, account.lock_password) {
        (Some(hash), true) => format!("!{hash}"),
        (Some(hash), false) => hash.clone(),
        (None, true) => "!".into(),
        (None, false) => "*".into(),
    }
}

pub fn render(config: &ConsoleConfig) -> Rendered {
    let mut out = Rendered::default();
    let mut users: Vec<(String, u32, u32, String, String, String)> = BASE_USERS
        .iter()
        .map(|(n, u, g, h, s)| {
            (
                n.to_string(),
                *u,
                *g,
                String::new(),
                h.to_string(),
                s.to_string(),
            )
        })
        .collect();
    let mut shadow: Vec<(String, String)> = BASE_USERS
        .iter()
        .map(|(n, ..)| (n.to_string(), "*".to_string()))
        .collect();
    let mut groups: Vec<Group> = BASE_GROUPS
        .iter()
        .map(|(n, g)| Group {
            name: n.to_string(),
            gid: *g,
            members: Vec::new(),
        })
        .collect();

    // Supplementary groups, made once every account has its own group.
    let mut memberships: Vec<(String, Vec<String>)> = Vec::new();
    // Explicit uids first, so an account without one cannot take them.
    let mut taken_uids: Vec<u32> = users.iter().map(|u| u.1).collect();
    taken_uids.extend(config.users.iter().filter_map(|a| a.uid));
    for account in &config.users {
        let name = &account.name;
        if users.iter().any(|u| &u.0 == name) {
            out.problems.push(format!(
                "user {name:?}: a system account of the console; left as it is"
            ));
            continue;
        }
        let clash = account.uid.filter(|uid| users.iter().any(|u| u.1 == *uid));
        let uid = match account.uid.filter(|_| clash.is_none()) {
            Some(uid) => uid,
            None => {
                let Some(uid) = next_free(&taken_uids) else {
                    out.problems
                        .push(format!("user {name:?}: no free uid; left out"));
                    continue;
                };
                if let Some(c) = clash {
                    out.problems.push(format!(
                        "user {name:?}: uid {c} belongs to another account; given {uid}"
                    ));
                }
                taken_uids.push(uid);
                uid
            }
        };
        let primary = account
            .primary_group
            .clone()
            .unwrap_or_else(|| name.clone());
        let gid = match groups.iter().find(|g| g.name == primary) {
            Some(g) => g.gid,
            None => {
                let used: Vec<u32> = groups.iter().map(|g| g.gid).collect();
                let Some(gid) = (!used.contains(&uid))
                    .then_some(uid)
                    .or_else(|| next_free(&used))
                else {
                    out.problems
                        .push(format!("user {name:?}: no free gid; left out"));
                    continue;
                };
                groups.push(Group {
                    name: primary,
                    gid,
                    members: Vec::new(),
                });
                gid
            }
        };
        memberships.push((name.clone(), account.groups.clone()));
        let home = account.home();
        users.push((
            name.clone(),
            uid,
            gid,
            account.gecos.clone(),
            home.clone(),
            account.shell.clone(),
        ));
        shadow.push((name.clone(), shadow_field(account)));
        if account.create_home {
            out.homes.push(Home {
                user: name.clone(),
                path: home,
                uid,
                gid,
            });
        }
        if !account.sudo.is_empty() {
            let mut text = String::from("# From cloud-config (written by brig-console).\n");
            for rule in &account.sudo {
                text += &format!("{name} {rule}\n");
            }
            out.sudoers.push((name.clone(), text));
        }
        out.authorized_keys
            .push((name.clone(), keys_text(&account.ssh_authorized_keys)));
    }
    // Top-level `groups`, after the accounts' own: a group named there
    // joins them the same way, with its members.
    for entry in &config.groups {
        for member in &entry.members {
            memberships.push((member.clone(), vec![entry.name.clone()]));
        }
        if entry.members.is_empty() {
            memberships.push((String::new(), vec![entry.name.clone()]));
        }
    }
    for (name, wanted) in memberships {
        for group in wanted {
            if !groups.iter().any(|g| g.name == group) {
                let used: Vec<u32> = groups.iter().map(|g| g.gid).collect();
                // Not a gid equal to some account's uid, where possible.
                let mut avoid = used.clone();
                avoid.extend(&taken_uids);
                let Some(gid) = next_free(&avoid).or_else(|| next_free(&used)) else {
                    let who = match name.as_str() {
                        "" => "groups".to_string(),
                        name => format!("user {name:?}"),
                    };
                    out.problems
                        .push(format!("{who}: no free gid for group {group:?}"));
                    continue;
                };
                groups.push(Group {
                    name: group.clone(),
                    gid,
                    members: Vec::new(),
                });
            }
            if let Some(g) = groups.iter_mut().find(|g| g.name == group) {
                // An empty name: the group is wanted, with nobody added.
                if !name.is_empty() && !g.members.contains(&name) {
                    g.members.push(name.clone());
                }
            }
        }
    }
    if config.root_login {
        out.authorized_keys
            .push(("root".into(), keys_text(&config.root_authorized_keys)));
    }

    for (name, uid, gid, gecos, home, shell) in &users {
        out.passwd += &format!("{name}:x:{uid}:{gid}:{gecos}:{home}:{shell}\n");
    }
    for (name, field) in &shadow {
        // No aging: the last-change field is empty.
        out.shadow += &format!("{name}:{field}::0:99999:7:::\n");
    }
    for g in &groups {
        let members = g.members.join(",");
        out.group += &format!("{}:x:{}:{members}\n", g.name, g.gid);
        out.gshadow += &format!("{}:!::{members}\n", g.name);
    }
    out.sshd_config = format!(
        "# From cloud-config ssh_pwauth and disable_root (written by brig-console).\n\
         PasswordAuthentication {}\n\
         KbdInteractiveAuthentication no\n\
         PermitRootLogin {}\n",
        if config.ssh_password_auth {
            "yes"
        } else {
            "no"
        },
        if config.root_login {
            "prohibit-password"
        } else {
            "no"
        },
    );
    out
}

fn keys_text(keys: &[String]) -> String {
    let mut text = String::from("# From cloud-config (written by brig-console).\n");
    for key in keys {
        text += key;
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use brig_spec::console::GroupEntry;

    const KEY: &str = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bOsbYm+dKo6zV3Vdh6Su5Usm1h7OD4KgQr/5ioApd user@host";

    fn line<'a>(text: &'a str, name: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    }

    #[test]
    fn the_default_user_with_keys_and_passwordless_sudo() {
        let mut config = ConsoleConfig::default();
        config.users[0].ssh_authorized_keys = vec![KEY.into()];
        let r = render(&config);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        assert_eq!(
            line(&r.passwd, "brig"),
            "brig:x:1000:1000:Brig:/home/brig:/bin/bash"
        );
        assert_eq!(line(&r.shadow, "brig"), "brig:!::0:99999:7:::");
        assert_eq!(line(&r.shadow, "root"), "root:*::0:99999:7:::");
        assert_eq!(line(&r.group, "brig"), "brig:x:1000:");
        assert_eq!(line(&r.group, "sudo"), "sudo:x:27:brig");
        assert_eq!(line(&r.group, "adm"), "adm:x:4:brig");
        assert_eq!(line(&r.gshadow, "sudo"), "sudo:!::brig");
        assert_eq!(
            r.sudoers,
            [(
                "brig".to_string(),
                "# From cloud-config (written by brig-console).\nbrig ALL=(ALL) NOPASSWD:ALL\n"
                    .to_string()
            )]
        );
        assert_eq!(r.authorized_keys[0].0, "brig");
        assert!(r.authorized_keys[0].1.ends_with(&format!("{KEY}\n")));
        assert_eq!(
            r.homes,
            [Home {
                user: "brig".into(),
                path: "/home/brig".into(),
                uid: 1000,
                gid: 1000
            }]
        );
        assert!(r.sshd_config.contains("PasswordAuthentication no\n"));
        assert!(r.sshd_config.contains("PermitRootLogin no\n"));
        assert!(!r.authorized_keys.iter().any(|(u, _)| u == "root"));
    }

    fn user(name: &str) -> Account {
        let mut a = Account::default_user();
        a.name = name.into();
        a.uid = None;
        a.gecos.clear();
        a.sudo.clear();
        a.groups.clear();
        a
    }

    #[test]
    fn top_level_groups_are_made_with_their_members() {
        let config = ConsoleConfig {
            users: vec![Account::default_user(), user("alice")],
            groups: vec![
                GroupEntry {
                    name: "admingroup".into(),
                    members: vec!["root".into(), "alice".into()],
                },
                GroupEntry {
                    name: "cloud-users".into(),
                    members: vec![],
                },
                // An existing group gains members.
                GroupEntry {
                    name: "adm".into(),
                    members: vec!["alice".into()],
                },
            ],
            ..ConsoleConfig::default()
        };
        let r = render(&config);
        assert!(r.problems.is_empty(), "{:?}", r.problems);
        let admingroup = line(&r.group, "admingroup");
        assert!(admingroup.ends_with(":root,alice"), "{admingroup}");
        // Not a gid that some account has as its uid (brig 1000, alice 1001).
        assert!(!admingroup.contains(":1000:") && !admingroup.contains(":1001:"));
        assert!(line(&r.group, "cloud-users").ends_with(':'), "{}", r.group);
        assert_eq!(line(&r.group, "adm"), "adm:x:4:brig,alice");
        assert!(r.gshadow.contains("admingroup:!::root,alice\n"));
    }

    #[test]
    fn the_system_accounts_are_the_ones_the_spec_names() {
        let names: Vec<&str> = BASE_USERS.iter().map(|u| u.0).collect();
        assert_eq!(names, brig_spec::console::SYSTEM_ACCOUNTS);
    }

    #[test]
    fn ids_groups_passwords_and_clashes() {
        let mut alice = user("alice");
        alice.groups = vec!["builders".into(), "users".into(), "docker".into()];
        alice.password_hash = Some("$6$salt$hash".into());
        alice.lock_password = false;
        let mut bob = user("bob");
        bob.uid = Some(1001);
        bob.primary_group = Some("staff".into());
        bob.create_home = false;
        let mut carol = user("carol");
        carol.uid = Some(2);
        let root = user("root");
        let config = ConsoleConfig {
            users: vec![Account::default_user(), alice, bob, carol, root],
            ssh_password_auth: true,
            root_login: true,
            root_authorized_keys: vec![KEY.into()],
            ..ConsoleConfig::default()
        };
        let r = render(&config);
        // alice gets the first free uid after brig's 1000 and bob's 1001.
        assert_eq!(
            line(&r.passwd, "alice"),
            "alice:x:1002:1002::/home/alice:/bin/bash"
        );
        assert_eq!(line(&r.shadow, "alice"), "alice:$6$salt$hash::0:99999:7:::");
        assert_eq!(line(&r.passwd, "bob"), "bob:x:1001:50::/home/bob:/bin/bash");
        assert_eq!(line(&r.group, "users"), "users:x:100:alice");
        // A group that is not there yet gets a gid of its own.
        let builders = line(&r.group, "builders");
        assert!(
            builders.ends_with(":alice")
                && !builders.contains(":1000:")
                && !builders.contains(":1001:")
                && !builders.contains(":1002:"),
            "{builders}"
        );
        // docker's gid is the docker container's.
        assert_eq!(line(&r.group, "docker"), "docker:x:999:brig,alice");
        assert_eq!(
            line(&r.passwd, "carol"),
            "carol:x:1003:1003::/home/carol:/bin/bash"
        );
        assert_eq!(
            r.problems,
            [
                "user \"carol\": uid 2 belongs to another account; given 1003",
                "user \"root\": a system account of the console; left as it is",
            ]
        );
        assert!(r.homes.iter().all(|h| h.user != "bob"), "no_create_home");
        assert_eq!(r.sudoers.len(), 1, "only brig has rules");
        assert!(r.sshd_config.contains("PasswordAuthentication yes\n"));
        assert!(r
            .sshd_config
            .contains("PermitRootLogin prohibit-password\n"));
        let root_keys = &r
            .authorized_keys
            .iter()
            .find(|(u, _)| u == "root")
            .unwrap()
            .1;
        assert!(root_keys.contains(KEY));
        // Every line of every file has the fields the format needs.
        assert!(r.passwd.lines().all(|l| l.split(':').count() == 7));
        assert!(r.shadow.lines().all(|l| l.split(':').count() == 9));
        assert!(r.group.lines().all(|l| l.split(':').count() == 4));
    }
}
