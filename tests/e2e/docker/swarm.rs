//! A Swarm from cloud-config alone: three guests on a private network that
//! only they are on (a `vde_switch` over unix sockets, a second network card
//! each, static addresses from the network config). node1's config says
//! `init`; node2's and node3's say `join: [10.77.0.11]` and carry a
//! certificate from the test's CA, with which their swarm containers ask
//! node1's Docker API (TLS, client certificates required) for the join
//! token. A service with 3 replicas runs one on each node; node3 powered
//! off hard, its replica is started again on the other two.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::json;

use super::image::{built_with_docker, image_tar};
use crate::guest::{key_pair, run, Guest};

const BOOT: Duration = Duration::from_secs(300);
const NODES: usize = 3;

fn address(node: usize) -> String {
    format!("10.77.0.1{node}")
}

/// A CA, and for each node a certificate for its address that serves as
/// both its API's server certificate and its client certificate.
fn certificates(dir: &Path) {
    let openssl = |args: &[&str]| {
        run(Command::new("openssl").args(args).current_dir(dir));
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    openssl(
        &[
            &["req", "-x509", "-days", "2", "-subj", "/CN=swarm test CA"][..],
            &ec,
            &["-keyout", "ca.key", "-out", "ca.pem"],
            &["-addext", "basicConstraints=critical,CA:TRUE"],
            &["-addext", "keyUsage=critical,keyCertSign,cRLSign"],
        ]
        .concat(),
    );
    for node in 1..=NODES {
        let name = format!("node{node}");
        std::fs::write(
            dir.join(format!("{name}.ext")),
            format!(
                "basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n\
                 extendedKeyUsage=serverAuth,clientAuth\n\
                 subjectAltName=IP:{},DNS:{name}\n",
                address(node)
            ),
        )
        .unwrap();
        let (key, csr, pem, ext) = (
            format!("{name}.key"),
            format!("{name}.csr"),
            format!("{name}.pem"),
            format!("{name}.ext"),
        );
        openssl(
            &[
                &["req", "-subj", &format!("/CN={name}")][..],
                &ec,
                &["-keyout", &key, "-out", &csr],
            ]
            .concat(),
        );
        openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            "2",
            "-extfile",
            &ext,
            "-out",
            &pem,
        ]);
    }
}

/// node N's user data: its address on the private network, the API on TLS,
/// and its part in the swarm. JSON, which YAML reads as it is.
fn user_data(dir: &Path, node: usize, public_key: &str) -> PathBuf {
    let read = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    let swarm = if node == 1 {
        json!({"init": true, "advertise_addr": address(node)})
    } else {
        json!({"join": [address(1)], "advertise_addr": address(node)})
    };
    let config = json!({
        "hostname": format!("node{node}"),
        "ssh_authorized_keys": [public_key.trim()],
        "network": {
            "version": 2,
            "ethernets": {
                "eth0": {"dhcp4": true},
                "eth1": {"addresses": [format!("{}/24", address(node))]},
            },
        },
        "brig": {
            "docker": {
                "listen": ["tcp://0.0.0.0:2376"],
                "tls": {
                    "ca": read("ca.pem"),
                    "cert": read(&format!("node{node}.pem")),
                    "key": read(&format!("node{node}.key")),
                },
                "swarm": swarm,
            },
        },
    });
    let path = dir.join(format!("node{node}.user-data"));
    std::fs::write(&path, format!("#cloud-config\n{config:#}\n")).unwrap();
    path
}

/// The private network: a vde_switch in the foreground (its stdin held
/// open: it reads commands from there), killed when dropped.
struct Switch {
    child: Child,
    dir: PathBuf,
}

impl Switch {
    fn start(dir: &Path) -> Switch {
        let dir = dir.join("switch");
        let child = Command::new("vde_switch")
            .arg("--sock")
            .arg(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("vde_switch (Debian package vde2; scripts/setup-host installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !dir.join("ctl").exists() {
            assert!(Instant::now() < deadline, "vde_switch did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        Switch { child, dir }
    }
}

impl Drop for Switch {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Node {
    guest: Guest,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Node {
    fn ssh(&self, command: &str) -> std::process::Output {
        self.guest
            .ssh("brig", &self.key, &self.known_hosts, command)
    }

    fn ssh_ok(&self, command: &str) -> String {
        self.guest
            .ssh_ok("brig", &self.key, &self.known_hosts, command)
    }

    /// What the swarm container and dockerd said on this node.
    fn story(&self) -> String {
        let out = self.ssh(
            "hostname; sudo brigctl ps; sudo brigctl logs swarm --tail 20; \
             sudo brigctl logs docker --tail 15",
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs `command` until its output satisfies `done`; returns it.
    fn wait(&self, what: &str, command: &str, done: &dyn Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(300);
        loop {
            let out = self.ssh(command);
            let text = String::from_utf8_lossy(&out.stdout).into_owned();
            if out.status.success() && done(&text) {
                return text;
            }
            assert!(
                Instant::now() < deadline,
                "{what}: not within 300 s; last: {text}{}\n{}",
                String::from_utf8_lossy(&out.stderr),
                self.story()
            );
            std::thread::sleep(Duration::from_secs(3));
        }
    }
}

pub fn qemu_x86_64_nodes_form_a_swarm_from_config_and_reschedule_a_lost_replica() {
    let board = "qemu-x86_64";
    let built = built_with_docker(board);
    let dir = tempfile::tempdir().unwrap();
    certificates(dir.path());
    let (key, public) = key_pair(dir.path(), "key");
    let tar = image_tar(dir.path());
    let switch = Switch::start(dir.path());
    // Three guests at once: the whole machine, once the image is built.
    let _machine = crate::guest::whole_machine();

    let started = Instant::now();
    let mut nodes: Vec<Node> = (1..=NODES)
        .map(|n| {
            let user_data = user_data(dir.path(), n, &public);
            let netdev = format!("vde,id=private,sock={}", switch.dir.display());
            let nic = format!("virtio-net-pci,netdev=private,mac=52:54:00:77:00:{n:02x}");
            let guest = Guest::boot_with(
                board,
                &built,
                &[],
                &[
                    "--user-data",
                    user_data.to_str().unwrap(),
                    "--qemu-arg=-netdev",
                    &format!("--qemu-arg={netdev}"),
                    "--qemu-arg=-device",
                    &format!("--qemu-arg={nic}"),
                ],
            );
            Node {
                guest,
                key: key.clone(),
                known_hosts: dir.path().join(format!("known_hosts{n}")),
            }
        })
        .collect();
    for node in &mut nodes {
        node.guest.wait_for("brig: ready", BOOT);
    }
    println!("3 nodes up in {:.0} s", started.elapsed().as_secs_f64());
    // The image on every node (no registry): imported once dockerd answers.
    for node in &nodes {
        node.wait("dockerd", "docker version --format ok", &|o| {
            o.trim() == "ok"
        });
        node.guest
            .scp_to("brig", &node.key, &node.known_hosts, &tar);
        node.ssh_ok(
            "docker import --change 'CMD [\"/hello\"]' hello.tar brig-e2e/hello:1 >/dev/null",
        );
    }
    let manager = &nodes[0];
    let deadline = Instant::now() + Duration::from_secs(300);
    let listing = loop {
        let out =
            manager.ssh("docker node ls --format '{{.Hostname}} {{.Status}} {{.ManagerStatus}}'");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        if text.lines().filter(|l| l.contains(" Ready")).count() == NODES {
            break text;
        }
        if Instant::now() > deadline {
            let stories: Vec<String> = nodes.iter().map(Node::story).collect();
            panic!(
                "no swarm of {NODES} within 300 s: {text}\n{}",
                stories.join("\n")
            );
        }
        std::thread::sleep(Duration::from_secs(3));
    };
    println!(
        "swarm formed from config {:.0} s after power-on:\n{listing}",
        started.elapsed().as_secs_f64()
    );
    assert!(listing.contains("node1 Ready Leader"), "{listing}");
    manager.ssh_ok(
        "docker service create --detach --name web --replicas 3 --no-resolve-image \
         brig-e2e/hello:1 /hello serve >/dev/null",
    );
    let running = "docker service ps web --filter desired-state=running \
                   --format '{{.Node}} {{.CurrentState}}'";
    let placed = manager.wait("3 replicas running", running, &|o| {
        o.lines().filter(|l| l.contains(" Running")).count() == 3
    });
    let mut hosts: Vec<&str> = placed.lines().filter_map(|l| l.split(' ').next()).collect();
    hosts.sort();
    assert_eq!(
        hosts,
        ["node1", "node2", "node3"],
        "one replica a node: {placed}"
    );

    // node3 loses power: killed where it stands. (A QMP `quit` here once
    // met a QEMU that had closed its socket, and said no more; this says
    // what node3's console showed if its QEMU is already gone.)
    let lost = Instant::now();
    nodes[2].guest.pull_the_plug();
    let manager = &nodes[0];
    let moved = manager.wait("the lost replica running elsewhere", running, &|o| {
        let lines: Vec<&str> = o.lines().filter(|l| l.contains(" Running")).collect();
        lines.len() == 3 && lines.iter().all(|l| !l.starts_with("node3 "))
    });
    let nodes_now = manager.ssh_ok("docker node ls --format '{{.Hostname}} {{.Status}}'");
    assert!(nodes_now.contains("node3 Down"), "{nodes_now}");
    println!(
        "node3 powered off; its replica rescheduled in {:.0} s:\n{moved}",
        lost.elapsed().as_secs_f64()
    );
}
