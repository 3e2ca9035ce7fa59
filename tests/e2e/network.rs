//! Networking and time in a booted image: the network container takes its
//! address from QEMU's DHCP server, names resolve through the DNS it hands
//! out, and the ntp container sets a clock that starts in 2001 from an NTP
//! server (the test's, see isolated_net.rs). A `netcheck` service looks at
//! all this from a host-network container with brigctl, busybox and chronyc.
//! Then bonds, VLANs and bridges from a network config, on three NICs.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use brig_image_build::pcap;

use crate::guest::{source_dir, Guest};

pub fn qemu_x86_64_gets_an_address_resolves_names_and_sets_its_clock_from_ntp() {
    network_and_time("qemu-x86_64");
}

pub fn qemu_aarch64_gets_an_address_resolves_names_and_sets_its_clock_from_ntp() {
    network_and_time("qemu-aarch64");
}

pub fn qemu_x86_64_builds_a_bond_a_vlan_and_a_bridge_and_fails_over() {
    virtual_devices("qemu-x86_64");
}

pub fn qemu_x86_64_runs_an_lacp_bond_and_a_vlan_against_dnsmasq_inside_the_guest() {
    let board = "qemu-x86_64";
    let out = image(board);
    let mut guest = Guest::boot(board, &out, &["brig.service_output=console", "brig.netlab"]);
    // Done, or given up (the script stops at the first failing step).
    let serial = guest.wait_for("brig: [netlab] exited", Duration::from_secs(300));
    assert!(serial.contains("brig: [netlab] NETLAB-DONE"), "{serial}");
    let bond = said(&serial, "netlab", "BOND");
    assert!(
        bond.contains("Bonding Mode: IEEE 802.3ad Dynamic link aggregation")
            && bond.contains("LACP rate: fast"),
        "{bond}"
    );
    // Both ports in one aggregator, the partner's system known.
    let aggregators: Vec<&str> = bond
        .split('|')
        .map(str::trim_start)
        .filter(|l| l.starts_with("Aggregator ID:"))
        .collect();
    assert_eq!(aggregators.len(), 3, "the bond's and each port's: {bond}");
    assert!(bond.contains("Number of ports: 2"), "{bond}");
    assert!(aggregators.iter().all(|a| *a == aggregators[0]), "{bond}");
    assert!(
        bond.contains("Partner Mac Address:")
            && !bond.contains("Partner Mac Address: 00:00:00:00:00:00"),
        "{bond}"
    );
    let vlan = said(&serial, "netlab", "VLAN");
    assert!(
        vlan.contains("vlan42@veth-c3") && vlan.contains("vlan protocol 802.1Q id 42"),
        "{vlan}"
    );
    // Leases from dnsmasq's two ranges, on the bond and on the VLAN.
    let addresses = said(&serial, "netlab", "ADDRESSES");
    assert!(
        addresses.contains("bond0 inet 192.168.77.")
            && addresses.contains("vlan42 inet 192.168.42."),
        "{addresses}"
    );
    let netd = said(&serial, "netlab", "NETD");
    assert!(netd.contains("bond0: bound 192.168.77."), "{netd}");
    assert!(serial.contains("brig: [netlab] PING-BOND ok"), "{serial}");
    assert!(serial.contains("brig: [netlab] PING-VLAN ok"), "{serial}");
}

/// The image with the netcheck and netlab services, built once per board
/// and shared by the tests that boot it.
fn image(board: &str) -> std::path::PathBuf {
    let services = source_dir().join("tests/e2e/network-services");
    crate::guest::built_variant(
        board,
        "kernel",
        "network-services",
        &[
            "--services",
            services.to_str().unwrap(),
            "--without",
            "docker",
        ],
    )
}

/// VLAN IDs of the 802.1Q-tagged frames in a pcap capture.
fn vlan_ids(capture: &[u8]) -> Vec<u16> {
    pcap::frames(capture)
        .filter(|frame| frame.bytes.len() >= 16 && frame.bytes[12..14] == [0x81, 0x00])
        .map(|frame| u16::from_be_bytes([frame.bytes[14], frame.bytes[15]]) & 0x0fff)
        .collect()
}

/// Three NICs; netcheck writes a config with an active-backup bond of the
/// first two, a VLAN on it and a bridge on the third, and restarts the
/// network container. PID 1 loads bonding, 8021q and bridge when the kernel
/// asks. The test captures the first NIC's frames, then cuts its link.
fn virtual_devices(board: &str) {
    let out = image(board);
    let dir = tempfile::tempdir().unwrap();
    let capture = dir.path().join("nic0.pcap");
    let dump = format!(
        "filter-dump,id=dump0,netdev=net0,file={}",
        capture.display()
    );
    let mut guest = Guest::boot_with(
        board,
        &out,
        &["brig.service_output=console", "brig.netcheck=virtual"],
        &["--nics", "3", "--qemu-arg", "-object", "--qemu-arg", &dump],
    );
    let serial = guest.wait_for("brig: [netcheck] FAILOVER-READY", Duration::from_secs(300));
    for said in [
        "brig: [network] brig-netd: bond0: created",
        "brig: [network] brig-netd: eth0: port of bond0",
        "brig: [network] brig-netd: eth1: port of bond0",
        "brig: [network] brig-netd: br0: created",
        "brig: [network] brig-netd: eth2: port of br0",
        "brig: [network] brig-netd: vlan42: created",
        "brig: [network] brig-netd: bond0: bound 10.0.2.15/24 from 10.0.2.2",
    ] {
        assert!(
            serial.contains(said),
            "{said:?} not on the console:\n{serial}"
        );
    }
    let bond = said(&serial, "netcheck", "BOND");
    for expected in [
        "Bonding Mode: fault-tolerance (active-backup)",
        "Primary Slave: eth0",
        "Currently Active Slave: eth0|",
        "Slave Interface: eth1",
    ] {
        assert!(bond.contains(expected), "{expected:?} not in {bond}");
    }
    let vlan = said(&serial, "netcheck", "VLAN");
    assert!(
        vlan.contains("VID: 42") && vlan.contains("Device: bond0"),
        "{vlan}"
    );
    assert_eq!(said(&serial, "netcheck", "BRIDGE-PORTS"), "eth2");
    // The network container may write /proc/sys/net (accept-ra: false).
    assert_eq!(said(&serial, "netcheck", "BRIDGE-ACCEPT-RA"), "0");
    // The guest's ARP for 192.168.42.1, tagged 42, as QEMU dumps it.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let ids = loop {
        let ids = vlan_ids(&std::fs::read(&capture).unwrap_or_default());
        if ids.contains(&42) || std::time::Instant::now() > deadline {
            break ids;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        ids.contains(&42),
        "no frame tagged 42 on NIC 0: {ids:?}\n{serial}"
    );

    // The primary's link goes down: the bond moves to eth1 and the box
    // still resolves names through it.
    guest.qmp("set_link", serde_json::json!({"name": "net0", "up": false}));
    let serial = guest.wait_for("brig: [netcheck] NETCHECK-DONE", Duration::from_secs(120));
    assert_eq!(
        said(&serial, "netcheck", "ACTIVE-AFTER"),
        "Currently Active Slave: eth1"
    );
    assert!(said(&serial, "netcheck", "LOOKUP-AFTER").contains("192.0.2.77"));
}

/// What `service` printed after `marker ` on the console.
fn said<'a>(serial: &'a str, service: &str, marker: &str) -> &'a str {
    let prefix = format!("brig: [{service}] {marker} ");
    serial
        .lines()
        // Anywhere in the line: a getty's login prompt on the serial
        // console has no line break after it.
        .find_map(|l| l.find(&prefix).map(|at| &l[at + prefix.len()..]))
        .map(|l| l.rsplit_once(" [t=").map_or(l, |(text, _)| text))
        .unwrap_or_else(|| panic!("no {marker} from {service} on the console:\n{serial}"))
}

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

fn network_and_time(board: &str) {
    let out = image(board);
    let dir = tempfile::tempdir().unwrap();

    // cloud-config on a NoCloud seed: a host name, the network config (DHCP
    // plus a search domain), NTP servers instead of the default pool.
    let user_data = dir.path().join("user-data.yaml");
    std::fs::write(
        &user_data,
        "#cloud-config
hostname: brig-e2e-node
ntp:
  servers: [ntp.brig-e2e.test]
network:
  version: 2
  ethernets:
    lan:
      match: {macaddress: '52:54:00:12:34:56'}
      dhcp4: true
      nameservers: {search: [brig-e2e.test]}
",
    )
    .unwrap();
    // The clock starts in 2001, as a Raspberry Pi's would start in 1970.
    let mut guest = Guest::boot_with(
        board,
        &out,
        &["brig.service_output=console"],
        &[
            "--rtc-base",
            "2001-01-01",
            "--user-data",
            user_data.to_str().unwrap(),
        ],
    );
    guest.wait_for("brig: [netcheck] NETCHECK-DONE", Duration::from_secs(300));
    // The console's first boot (host keys made under TCG) may end later.
    let serial = guest.wait_for("brig: ready", Duration::from_secs(300));

    // The config came from the seed volume.
    for said in [
        "brig: config: from /dev/vda (NoCloud, vfat)",
        "brig: hostname brig-e2e-node (from config)",
        "brig: [network] brig-netd: eth0: configuring from lan",
    ] {
        assert!(
            serial.contains(said),
            "{said:?} not on the console:\n{serial}"
        );
    }

    // The lease from QEMU's DHCP server, applied: address, route, DNS.
    let bound = "brig: [network] brig-netd: eth0: bound 10.0.2.15/24 from 10.0.2.2";
    assert!(serial.contains(bound), "{serial}");
    let table: Vec<&str> = serial
        .lines()
        .skip_while(|l| !l.contains("[netcheck] NETWORK-BEGIN"))
        .take_while(|l| !l.contains("[netcheck] NETWORK-END"))
        .collect();
    let table = table.join("\n");
    for expected in [
        "] eth0 ",
        "10.0.2.15/24",
        "eth0: bound 10.0.2.15/24 from 10.0.2.2, renews in",
        "default via 10.0.2.2 dev eth0 proto dhcp",
        "DNS 10.0.2.3",
        "SEARCH brig-e2e.test",
        // SLAAC from QEMU's router advertisements.
        "fec0::5054:ff:fe12:3456/64",
    ] {
        assert!(table.contains(expected), "{expected:?} not in:\n{table}");
    }
    let status: serde_json::Value = serde_json::from_str(said(&serial, "netcheck", "JSON"))
        .unwrap_or_else(|e| panic!("brigctl network --json: {e}\n{serial}"));
    let eth0 = status["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap_or_else(|| panic!("no eth0 in {status}"));
    assert_eq!(eth0["dhcp4"]["state"], "bound", "{eth0}");
    assert_eq!(eth0["dhcp4"]["address"], "10.0.2.15/24", "{eth0}");
    assert_eq!(status["dns"][0], "10.0.2.3", "{status}");

    // Names resolve through the DNS the lease named (QEMU's proxy, here
    // answered by the test's dnsmasq).
    let lookup = said(&serial, "netcheck", "LOOKUP");
    assert!(lookup.contains("192.0.2.77"), "{lookup}");

    // The ntp container is up before `brig: ready`; it found the server
    // cloud-config names through that DNS, and stepped the clock from 2001
    // to now.
    assert!(
        serial.contains("Selected source 10.0.2.2 (ntp.brig-e2e.test)"),
        "{serial}"
    );
    assert!(stamp(&serial, "brig: [ntp] ready") <= stamp(&serial, "brig: ready"));
    let tracking = said(&serial, "netcheck", "TRACKING");
    assert!(
        tracking.contains("Reference ID : 0A000202") && tracking.contains("Leap status : Normal"),
        "{tracking}"
    );
    assert!(serial.contains("System clock was stepped"), "{serial}");
    let guest_clock: i64 = said(&serial, "netcheck", "CLOCK").parse().unwrap();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    assert!(
        (now - guest_clock).abs() < 600,
        "guest clock {guest_clock}, host {now}"
    );

    // The clock turned back to 2001 with ntp stopped: chronyd restores the
    // last known time from its drift file as it starts, before any server
    // answers.
    let back: i64 = said(&serial, "netcheck", "CLOCK-BACK").parse().unwrap();
    let restored: i64 = said(&serial, "netcheck", "CLOCK-RESTORED").parse().unwrap();
    assert!(back < 1_000_000_000, "clock not turned back: {back}");
    assert!(
        restored >= guest_clock,
        "restored {restored} < {guest_clock}"
    );
    assert!(
        serial.contains("System time restored from driftfile"),
        "{serial}"
    );

    // chronyd killed with SIGKILL (as the OOM killer or a stop past its
    // grace would): the ntp container restarts it, and it answers again.
    let after_kill = said(&serial, "netcheck", "NTP-AFTER-KILL");
    assert!(after_kill.contains(" running "), "{after_kill}\n{serial}");

    // Figures for the record (not assertions): netd start to address, and
    // its resident memory.
    let took = stamp(&serial, bound) - stamp(&serial, "brig: [network] started");
    eprintln!(
        "{board}: network started -> eth0 bound: {:.0} ms; brig-netd {}",
        took * 1000.0,
        said(&serial, "netcheck", "NETD-RSS")
    );
}
