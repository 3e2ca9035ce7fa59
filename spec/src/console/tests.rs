use super::*;

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).unwrap()
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bOsbYm+dKo6zV3Vdh6Su5Usm1h7OD4KgQr/5ioApd user@host";

#[test]
fn users_as_cloud_init_documents_them() {
    let (entries, problems) = parse_users(&yaml(&format!(
        "
- default
- name: alice
  gecos: Alice Example
  groups: users, docker
  sudo: ALL=(ALL) NOPASSWD:ALL
  shell: /bin/bash
  lock_passwd: false
  hashed_passwd: $6$rounds=4096$salt$abcdefghijklmnop
  ssh_authorized_keys: ['{KEY}']
- name: bob
  uid: 1500
  sudo: false
  homedir: /srv/bob
  primary_group: staff
- carol
"
    )));
    assert!(problems.is_empty(), "{problems:?}");
    let (accounts, problems) = resolve_users(Some(entries), Account::default_user(), &[KEY.into()]);
    assert!(problems.is_empty(), "{problems:?}");
    let names: Vec<&str> = accounts.iter().map(|a| a.name.as_str()).collect();
    assert_eq!(names, ["brig", "alice", "bob", "carol"]);
    assert_eq!(accounts[0].ssh_authorized_keys, [KEY]);
    assert_eq!(accounts[0].sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
    let alice = &accounts[1];
    assert_eq!(alice.groups, ["users", "docker"]);
    assert_eq!(alice.sudo, ["ALL=(ALL) NOPASSWD:ALL"]);
    assert!(!alice.lock_password && alice.password_hash.is_some());
    assert_eq!(alice.ssh_authorized_keys, [KEY]);
    let bob = &accounts[2];
    assert_eq!(
        (bob.uid, bob.home(), bob.sudo.len()),
        (Some(1500), "/srv/bob".into(), 0)
    );
    assert_eq!(bob.primary_group.as_deref(), Some("staff"));
    assert_eq!(accounts[3].home(), "/home/carol");
    assert!(accounts[3].lock_password);
}

#[test]
fn without_users_there_is_the_default_user_and_user_changes_it() {
    let (accounts, _) = resolve_users(None, Account::default_user(), &[KEY.into()]);
    assert_eq!(accounts.len(), 1);
    assert_eq!(accounts[0].name, "brig");
    assert_eq!(accounts[0].ssh_authorized_keys, [KEY]);
    let (user, problems) = parse_default_user(&yaml("name: admin\nshell: /bin/sh\n"));
    assert!(problems.is_empty());
    let (accounts, _) = resolve_users(None, user, &[]);
    assert_eq!(
        (accounts[0].name.as_str(), accounts[0].shell.as_str()),
        ("admin", "/bin/sh")
    );
    assert_eq!(
        accounts[0].sudo,
        ["ALL=(ALL) NOPASSWD:ALL"],
        "still the default user"
    );
}

#[test]
fn bad_entries_and_keys_are_reported_and_left_out() {
    let (entries, problems) = parse_users(&yaml(
        "
- name: Root Beer
- name: dave
  passwd: hunter2
  groups: [wheel, 'bad group']
  shell: bash
  uid: 0
  ssh_import_id: [gh:dave]
  sudo: \"ALL=(ALL) ALL\\nroot ALL=(ALL) ALL\"
- 42
",
    ));
    let problems: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.problem))
        .collect();
    assert_eq!(entries.len(), 1, "only dave");
    let UserEntry::Account(dave) = &entries[0] else {
        panic!()
    };
    assert!(dave.password_hash.is_none() && dave.groups.is_empty() && dave.sudo.is_empty());
    assert_eq!(dave.shell, "/bin/bash");
    assert_eq!(dave.uid, None);
    for expected in [
        "[0].name: \"Root Beer\" is not a valid user name",
        "[1].passwd: expected a crypt(3) hash",
        "[1].groups: \"bad group\" is not a valid group name",
        "[1].shell: \"bash\" is not an absolute path",
        "[1].uid: 0 is not a uid",
        "[1].ssh_import_id: not supported",
        "[1].sudo: ",
        "[2]: 42 is not a user name or a mapping",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected}: {problems:#?}"
        );
    }

    let (entries, _) = parse_users(&yaml("[{name: alice}]"));
    let (accounts, problems) = resolve_users(Some(entries), Account::default_user(), &[KEY.into()]);
    assert_eq!(accounts.len(), 1);
    assert!(
        problems[0].problem.contains("does not list `default`"),
        "{problems:?}"
    );
    let (entries, _) = parse_users(&yaml("[default, brig]"));
    let (accounts, problems) = resolve_users(Some(entries), Account::default_user(), &[]);
    assert_eq!(accounts.len(), 1);
    assert!(problems[0].problem.contains("listed twice"));
}

#[test]
fn groups_as_cloud_init_documents_them() {
    let (mut groups, problems) = parse_groups(&yaml(
        "
- admingroup: [root, sys]
- cloud-users
- ops: alice, brig
- admingroup: [alice]
",
    ));
    assert!(problems.is_empty(), "{problems:?}");
    let as_pairs = |groups: &[GroupEntry]| -> Vec<(String, Vec<String>)> {
        groups
            .iter()
            .map(|g| (g.name.clone(), g.members.clone()))
            .collect()
    };
    assert_eq!(
        as_pairs(&groups),
        [
            (
                "admingroup".into(),
                vec!["root".into(), "sys".into(), "alice".into()]
            ),
            ("cloud-users".into(), vec![]),
            ("ops".into(), vec!["alice".into(), "brig".into()]),
        ]
    );
    // alice is no user here: she is left out, with a problem.
    let problems = resolve_groups(&mut groups, &[Account::default_user()]);
    assert_eq!(groups[0].members, ["root", "sys"]);
    assert_eq!(groups[2].members, ["brig"]);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(problems[0]
        .problem
        .starts_with("\"alice\" is not a user of this machine"));

    // The mapping form, and what is refused.
    let (groups, problems) = parse_groups(&yaml("{web: [brig], empty: null}"));
    assert!(problems.is_empty(), "{problems:?}");
    assert_eq!(
        as_pairs(&groups),
        [
            ("empty".into(), vec![]),
            ("web".into(), vec!["brig".into()])
        ]
    );
    let (groups, problems) = parse_groups(&yaml(
        "['Bad Group', {a: 1}, {x: [ok, 'Not OK']}, 7, {b: [], c: []}]",
    ));
    assert_eq!(
        as_pairs(&groups),
        [("x".to_string(), vec!["ok".to_string()])]
    );
    let problems: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.problem))
        .collect();
    for expected in [
        "[0]: \"Bad Group\" is not a valid group name",
        "[1].a: expected a list of user names, not 1",
        "[2].x: \"Not OK\" is not a valid user name",
        "[3]: 7 is not a group name",
        "[4]: ",
    ] {
        assert!(
            problems.iter().any(|p| p.starts_with(expected)),
            "{expected}: {problems:#?}"
        );
    }
    let (_, problems) = parse_groups(&yaml("true"));
    assert!(problems[0].problem.starts_with("expected a list of groups"));
}

#[test]
fn names() {
    for good in ["brig", "_svc", "a-b_c1", "machine$"] {
        assert!(valid_name(good), "{good}");
    }
    for bad in ["", "Brig", "1abc", "a b", "a:b", &"x".repeat(33)] {
        assert!(!valid_name(bad), "{bad}");
    }
}

#[test]
fn the_config_survives_json() {
    let config = ConsoleConfig::default();
    let text = serde_json::to_string(&config).unwrap();
    assert_eq!(
        serde_json::from_str::<ConsoleConfig>(&text).unwrap(),
        config
    );
}
