use super::*;

fn config(text: &str) -> (CloudConfig, Vec<String>) {
    let (data, problems) = parse_user_data(text.as_bytes());
    let UserData::CloudConfig(c) = data else {
        panic!("not cloud-config: {data:?} {problems:?}")
    };
    (
        *c,
        problems
            .iter()
            .map(|p| format!("cloud-config: {p}"))
            .collect(),
    )
}

#[test]
fn the_keys_brig_applies() {
    let (c, problems) = config(
        "#cloud-config
hostname: node1
fqdn: node1.example.com
ssh_authorized_keys:
  - ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB0bOsbYm+dKo6zV3Vdh6Su5Usm1h7OD4KgQr/5ioApd user@host
ntp:
  enabled: true
  servers: [ntp1.example.com, 192.0.2.123]
  pools: [0.pool.example.org]
network:
  version: 2
  ethernets: {eth0: {dhcp4: true}}
packages: [htop]
",
    );
    assert_eq!(problems, Vec::<String>::new());
    assert_eq!(c.effective_hostname(), Some("node1"));
    assert_eq!(c.ssh_authorized_keys.len(), 1);
    let ntp = c.ntp.unwrap();
    assert_eq!(
        ntp.chrony_sources().lines().skip(1).collect::<Vec<_>>(),
        [
            "server ntp1.example.com iburst",
            "server 192.0.2.123 iburst",
            "pool 0.pool.example.org iburst"
        ]
    );
    assert_eq!(c.network.unwrap()["ethernets"]["eth0"]["dhcp4"], true);
}

#[test]
fn user_services_in_the_brig_section() {
    let (c, problems) = config(
        "#cloud-config
brig:
  services:
    web:
      rootfs: {image: /mnt/apps/web.squashfs}
      command: [/bin/busybox, httpd, -f, -p, '8080']
      host_namespaces: [net]
      depends_on: [network]
      limits: {memory_max: 32M, pids_max: 16}
      mounts: [{type: bind, source: /mnt/apps/www, target: /www, read_only: true}]
    no-image:
      rootfs: {}
      command: [/bin/true]
    built:
      rootfs: {packages: [nginx], image: /mnt/x}
      command: [/usr/sbin/nginx]
    typo:
      rootfs: {image: /mnt/x}
      comand: [/bin/true]
    Bad:
      rootfs: {image: /mnt/x}
      command: [/bin/true]
",
    );
    assert_eq!(c.services.len(), 1);
    let web = &c.services[0];
    assert_eq!(web.name, "web");
    assert_eq!(web.limits.memory_max, Some(32 << 20));
    assert_eq!(web.rootfs.image.as_deref(), Some("/mnt/apps/web.squashfs"));
    assert_eq!(problems.len(), 4, "{problems:#?}");
    let about = |name: &str| {
        problems
            .iter()
            .find(|p| p.contains(name))
            .cloned()
            .unwrap_or_default()
    };
    assert!(
        about("brig.services.no-image.rootfs.image").contains("missing"),
        "{problems:#?}"
    );
    assert!(
        about("brig.services.built.rootfs`").contains("built into images"),
        "{problems:#?}"
    );
    assert!(
        about("brig.services.typo").contains("unknown field `comand`"),
        "{problems:#?}"
    );
    assert!(
        about("brig.services.Bad.name").contains("not a valid service name"),
        "{problems:#?}"
    );
    assert!(problems.iter().all(|p| p.ends_with("service not added")));
}

#[test]
fn a_bad_value_loses_only_its_key_and_nothing_is_silently_dropped() {
    let (c, problems) = config(
        "#cloud-config
hostname: 'bad name'
fqdn: box.example.com
ssh_authorized_keys: [not-a-key]
ntp: {servers: [\"ntp.example.com\\ninclude /etc/shadow\"]}
mounts: [[vdb, /etc]]
chpasswd: {expire: false}
colour: blue
",
    );
    assert_eq!(c.effective_hostname(), Some("box"), "from fqdn");
    assert!(c.ssh_authorized_keys.is_empty() && c.ntp.is_none());
    assert_eq!(
            problems,
            [
                "cloud-config: `chpasswd`: not applied by this Brig version yet",
                "cloud-config: `colour`: unknown key, ignored",
                "cloud-config: `hostname`: \"bad name\" is not a valid host name (letters, digits, inner hyphens, dot-separated, at most 64 characters)",
                "cloud-config: `mounts[0]`: mount point \"/etc\" must be a path under /mnt or /media (what containers see of the host); entry left out",
                "cloud-config: `ntp.servers[0]`: \"ntp.example.com\\ninclude /etc/shadow\" is not a host name or address",
                "cloud-config: `ssh_authorized_keys`: \"not-a-key\" is not an OpenSSH public key (type, then base64)",
            ]
        );
}

#[test]
fn login_settings_and_the_brig_section() {
    let (c, problems) = config(
        "#cloud-config
ssh_pwauth: true
disable_root: false
users: [default, {name: alice}]
brig:
  console: {autologin: alice, colour: red}
  docker: {colour: blue}
  flying: yes
",
    );
    assert_eq!(
        problems,
        [
            "cloud-config: `brig.console.colour`: unknown key, ignored",
            "cloud-config: `brig.docker.colour`: unknown key, ignored",
            "cloud-config: `brig.flying`: unknown key, ignored",
        ]
    );
    assert!(c.console.ssh_password_auth && c.console.root_login);
    assert_eq!(c.console.autologin.as_deref(), Some("alice"));
    assert_eq!(c.console.users.len(), 2);
    let (c, problems) = config("#cloud-config\nbrig: {console: {autologin: zed}}\n");
    assert_eq!(c.console.autologin, None);
    assert_eq!(
        problems,
        ["cloud-config: `brig.console.autologin`: there is no user \"zed\"; no autologin"]
    );
    let (c, problems) = config(
            "#cloud-config\nbrig:\n  sysctl: {vm.swappiness: 10, net/ipv4/ip_forward: true, '../x': 1, kernel.a: [1]}\n  modules: [wireguard, 'evil/../x']\n",
        );
    assert_eq!(
        c.sysctl,
        [
            ("net/ipv4/ip_forward".to_string(), "1".to_string()),
            ("vm.swappiness".into(), "10".into())
        ]
    );
    assert_eq!(c.modules, ["wireguard"]);
    assert_eq!(
        problems,
        [
            "cloud-config: `brig.modules[1]`: \"evil/../x\" is not a module name",
            "cloud-config: `brig.sysctl.../x`: not a sysctl name such as vm.swappiness",
            "cloud-config: `brig.sysctl.kernel.a`: expected a value, not [1]",
        ]
    );
    let (c, problems) = config("#cloud-config\ntimezone: America/Argentina/Buenos_Aires\n");
    assert!(problems.is_empty());
    assert_eq!(
        c.console.timezone.as_deref(),
        Some("America/Argentina/Buenos_Aires")
    );
    let (c, problems) = config("#cloud-config\ntimezone: ../../etc/shadow\n");
    assert_eq!(c.console.timezone, None);
    assert!(
        problems[0].contains("is not a time zone name"),
        "{problems:?}"
    );
    let (c, _) = config("#cloud-config\nbrig: {console: {autologin: true}}\n");
    assert_eq!(c.console.autologin.as_deref(), Some("brig"));
    let (_, problems) = config("#cloud-config\nusers: [{name: 'X'}]\n");
    assert!(
        problems[0].starts_with("cloud-config: `users[0].name`: \"X\""),
        "{problems:?}"
    );
}

#[test]
fn multipart_parts_merge_in_order() {
    let message = "Content-Type: multipart/mixed; boundary=\"XX\"
MIME-Version: 1.0

--XX
Content-Type: text/cloud-config

#cloud-config
hostname: first
ntp: {servers: [a.example]}
brig: {sysctl: {vm.swappiness: 1}}
--XX
Content-Type: text/x-shellscript

#!/bin/sh
echo one
--XX
Content-Type: text/cloud-config

#cloud-config
hostname: second
brig: {modules: [dummy]}
--XX
Content-Type: text/cloud-boothook

#!/bin/sh
--XX--
";
    let (data, problems) = parse_user_data(message.as_bytes());
    let UserData::CloudConfig(c) = data else {
        panic!("{data:?}")
    };
    assert_eq!(c.hostname.as_deref(), Some("second"));
    assert_eq!(c.ntp.unwrap().servers, ["a.example"]);
    assert_eq!(c.sysctl.len(), 1, "mappings merge key by key");
    assert_eq!(c.modules, ["dummy"]);
    assert_eq!(c.console.scripts, ["#!/bin/sh\necho one"]);
    let problems: Vec<String> = problems
        .iter()
        .map(|p| format!("cloud-config: {p}"))
        .collect();
    assert_eq!(
            problems,
            ["cloud-config: MIME part 4 (text/cloud-boothook): text/cloud-boothook parts are not supported; ignored"]
        );
    let (data, problems) = parse_user_data(&[0x1f, 0x8b, 8, 0]);
    assert_eq!(data, UserData::Empty);
    assert!(problems[0].problem.starts_with("gzip-compressed"));
}

#[test]
fn base64_user_data() {
    assert_eq!(
        decode_base64("I2Nsb3VkLWNvbmZpZwo=").unwrap(),
        b"#cloud-config\n"
    );
    assert_eq!(
        decode_base64("I2Nsb3VkLWNvbmZpZwo").unwrap(),
        b"#cloud-config\n"
    );
    assert!(decode_base64("not base64!")
        .unwrap_err()
        .problem
        .starts_with("not valid base64"));
}

#[test]
fn meta_data() {
    let (m, problems) = parse_meta_data("instance-id: iid-local01\nlocal-hostname: cloudy\n");
    assert!(problems.is_empty());
    assert_eq!(m.instance_id.as_deref(), Some("iid-local01"));
    assert_eq!(m.local_hostname.as_deref(), Some("cloudy"));
    let (m, problems) = parse_meta_data("instance-id: 7\nlocal-hostname: 'no way'\n");
    assert_eq!(m.instance_id.as_deref(), Some("7"));
    assert_eq!(problems[0].key, "meta-data.local-hostname");
    assert!(parse_meta_data("{").1[0]
        .problem
        .starts_with("not valid YAML"));
}

#[test]
fn scripts_empty_data_and_garbage() {
    let (c, _) = config("#!/bin/sh\necho hi\n");
    assert_eq!(c.console.scripts, ["#!/bin/sh\necho hi\n"]);
    assert_eq!(parse_user_data(b"  \n").0, UserData::Empty);
    let (data, problems) = parse_user_data(b"hostname: x\n");
    assert_eq!(data, UserData::Empty);
    assert!(problems[0].problem.contains("expected `#cloud-config`"));
    let (data, problems) = parse_user_data(b"#cloud-config\nhostname: [unclosed\n");
    assert_eq!(data, UserData::Empty);
    assert!(
        problems[0].problem.starts_with("not valid YAML"),
        "{problems:?}"
    );
    let (data, _) = parse_user_data(b"#cloud-config\n");
    assert_eq!(data, UserData::CloudConfig(Box::default()));
    let (_, problems) = parse_user_data(b"#cloud-config\n- a\n");
    assert_eq!(problems[0].problem, "expected a mapping of keys");
    let (c, _) = config("#cloud-config\nntp: {enabled: false, servers: [a.example]}\n");
    assert_eq!(c.ntp.unwrap().chrony_sources().lines().count(), 1);
}

#[test]
fn every_problem_with_its_line_and_column() {
    let data = b"#cloud-config
hostname: 'bad name'
users:
  - default
  - name: alice
    shell: bash
colour: blue
";
    assert_eq!(
            report("user-data", data),
            [
                "user-data:7:1: cloud-config: `colour`: unknown key, ignored",
                "user-data:2:1: cloud-config: `hostname`: \"bad name\" is not a valid host name (letters, digits, inner hyphens, dot-separated, at most 64 characters)",
                "user-data:6:5: cloud-config: `users[1].shell`: \"bash\" is not an absolute path",
            ]
        );
    let broken = report("u", b"#cloud-config\nhostname: [x\n");
    assert_eq!(broken.len(), 1);
    assert!(
        broken[0].starts_with("u: cloud-config: not valid YAML:"),
        "{broken:?}"
    );
    assert!(
        broken[0].contains("line"),
        "YAML errors carry their place: {broken:?}"
    );
    assert!(report("ok", b"#cloud-config\nhostname: fine\n").is_empty());
}

#[test]
fn the_network_section_is_checked_as_the_network_container_applies_it() {
    let data = b"#cloud-config
network:
  version: 2
  ethernets:
    eth0:
      dhcp4: maybe
    eth1:
      addresses: [300.1.1.1/99]
  tunnels:
    gre0: {mode: gre}
";
    assert_eq!(
        report("user-data", data),
        [
            "user-data:9:3: cloud-config: `network.tunnels`: not supported by Brig (tunnels: GRE, IPIP, SIT, VXLAN, WireGuard); ignored, the rest applies",
            "user-data:6:7: cloud-config: `network.ethernets.eth0.dhcp4`: invalid type: string \"maybe\", expected a boolean",
            "user-data:8:19: cloud-config: `network.ethernets.eth1.addresses[0]`: `300.1.1.1` is not an IP address",
        ]
    );
    let missing = report("u", b"#cloud-config\nnetwork: {ethernets: {}}\n");
    assert_eq!(
        missing,
        ["u:2:1: cloud-config: `network`: `version: 2` is missing"]
    );
}
