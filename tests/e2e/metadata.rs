//! Config from the network: an EC2-style metadata service (IMDSv2 only,
//! tests/e2e/metadata-server.py) at 169.254.169.254, reached through QEMU's
//! user network (guestfwd), on a machine whose DMI says "Amazon EC2". PID 1
//! starts the network container alone, fetches, then the rest. And a
//! NoCloud seed URL (`ds=nocloud;s=`) served by the same test server.

use std::time::Duration;

use crate::guest::{built, key_pair, source_dir, Guest};

const BOOT: Duration = Duration::from_secs(240);

/// The boot time PID 1 stamped on the first console line containing `needle`.
fn stamp(serial: &str, needle: &str) -> f64 {
    let line = serial
        .lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("{needle:?} not on the console:\n{serial}"));
    line.rsplit_once("[t=")
        .and_then(|(_, t)| t.trim_end_matches("s]").parse().ok())
        .unwrap_or_else(|| panic!("no time stamp in {line:?}"))
}

pub fn qemu_x86_64_gets_its_config_from_an_ec2_metadata_service() {
    let board = "qemu-x86_64";
    let dir = tempfile::tempdir().unwrap();
    let (user_key, user_public) = key_pair(dir.path(), "user-data-key");
    let (pair_key, pair_public) = key_pair(dir.path(), "key-pair");
    let root = dir.path().join("imds");
    let meta = root.join("meta-data");
    std::fs::create_dir_all(meta.join("public-keys/0")).unwrap();
    std::fs::write(meta.join("instance-id"), "i-0e2e0000000000001").unwrap();
    std::fs::write(
        meta.join("local-hostname"),
        "ip-169-254-169-15.ec2.internal",
    )
    .unwrap();
    std::fs::write(
        meta.join("public-keys/0/openssh-key"),
        format!("{pair_public}\n"),
    )
    .unwrap();
    std::fs::write(
        root.join("user-data"),
        format!("#cloud-config\nhostname: imds-node\nssh_authorized_keys: ['{user_public}']\n"),
    )
    .unwrap();
    let log = dir.path().join("requests.log");
    let server = source_dir().join("tests/e2e/metadata-server.py");
    let forward = format!(
        "guestfwd=tcp:169.254.169.254:80-cmd:python3 {} {} {}",
        server.display(),
        root.display(),
        log.display()
    );
    let known_hosts = dir.path().join("known_hosts");
    let mut guest = Guest::boot_with(
        board,
        &built(board),
        &["brig.service_output=console"],
        &[
            "--user-net",
            "net=169.254.169.0/24",
            "--user-net",
            &forward,
            "--qemu-arg=-smbios",
            "--qemu-arg=type=1,manufacturer=Amazon EC2",
        ],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(
        serial.contains("config: no local datasource; fetching from the EC2 metadata service at http://169.254.169.254"),
        "{serial}"
    );
    let fetched = stamp(&serial, "config: from the EC2 metadata service (IMDSv2)");
    // Only the network came up before the config; the console after it.
    assert!(stamp(&serial, "[network] started") < fetched, "{serial}");
    assert!(fetched < stamp(&serial, "[console] started"), "{serial}");
    eprintln!(
        "{board}: network container started -> config from the metadata service {:.0} ms",
        (fetched - stamp(&serial, "[network] started")) * 1000.0
    );

    // The key from user data and the instance's key pair both log in; the
    // host name is user data's (it comes before meta data's).
    let out = guest.ssh_ok(
        "brig",
        &user_key,
        &known_hosts,
        "hostname; sudo brigctl config get hostname",
    );
    assert_eq!(out, "imds-node\nimds-node\n", "{out}");
    let out = guest.ssh_ok("brig", &pair_key, &known_hosts, "id -un");
    assert_eq!(out, "brig\n", "{out}");

    // The token came first and every later request carried it.
    let requests = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<&str> = requests.lines().collect();
    assert_eq!(lines[0], "PUT /latest/api/token - 200", "{requests}");
    assert!(lines.len() >= 6, "{requests}");
    for line in &lines[1..] {
        assert!(
            line.starts_with("GET ")
                && line.contains(" AQAEAbrig-e2e-token== ")
                && !line.ends_with(" 401"),
            "{requests}"
        );
    }
    assert!(
        requests.contains("GET /latest/user-data AQAEAbrig-e2e-token== 200"),
        "{requests}"
    );
}

/// `ds=nocloud;s=http://…/` on the kernel command line: the seed's files
/// from a web server (the same test server, its /nocloud/ directory).
pub fn qemu_x86_64_gets_its_config_from_a_nocloud_seed_url() {
    let board = "qemu-x86_64";
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = key_pair(dir.path(), "seed-key");
    let root = dir.path().join("www");
    let seed = root.join("nocloud");
    std::fs::create_dir_all(&seed).unwrap();
    std::fs::write(
        seed.join("user-data"),
        format!("#cloud-config\nhostname: seeded-over-http\nssh_authorized_keys: ['{public}']\n"),
    )
    .unwrap();
    std::fs::write(seed.join("meta-data"), "instance-id: iid-http-seed\n").unwrap();
    let log = dir.path().join("requests.log");
    let server = source_dir().join("tests/e2e/metadata-server.py");
    let forward = format!(
        "guestfwd=tcp:169.254.169.254:80-cmd:python3 {} {} {}",
        server.display(),
        root.display(),
        log.display()
    );
    let known_hosts = dir.path().join("known_hosts");
    let mut guest = Guest::boot_with(
        board,
        &built(board),
        &["ds=nocloud;s=http://169.254.169.254/nocloud/"],
        &["--user-net", "net=169.254.169.0/24", "--user-net", &forward],
    );
    let serial = guest.wait_for("brig: ready", BOOT);
    assert!(
        serial.contains("config: from http://169.254.169.254:80/nocloud/ (NoCloud seed URL)"),
        "{serial}"
    );
    let out = guest.ssh_ok("brig", &key, &known_hosts, "hostname");
    assert_eq!(out, "seeded-over-http\n", "{out}");
    let requests = std::fs::read_to_string(&log).unwrap();
    for line in [
        "GET /nocloud/user-data - 200",
        "GET /nocloud/meta-data - 200",
        "GET /nocloud/network-config - 404",
    ] {
        assert!(requests.contains(line), "{line:?} not in:\n{requests}");
    }
    assert!(
        !requests.contains("/latest/"),
        "no metadata service asked: {requests}"
    );
}
