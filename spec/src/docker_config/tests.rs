use super::*;
use serde_json::json;

#[test]
fn settings_become_daemon_json() {
    let (config, problems) = parse(&json!({
        "registry_mirrors": ["https://mirror.example.com"],
        "insecure_registries": ["registry.local:5000", "10.0.0.0/8"],
        "log_driver": "json-file",
        "log_opts": {"max-size": "10m", "max-file": 3},
        "default_address_pools": [{"base": "10.123.0.0/16", "size": 24}],
        "storage_driver": "overlay2",
        "live_restore": true,
        "data_root": "/var/lib/docker",
        "extra_args": ["--experimental"],
    }));
    assert_eq!(problems, []);
    assert_eq!(
        Value::Object(config.daemon.clone()),
        json!({
            "registry-mirrors": ["https://mirror.example.com"],
            "insecure-registries": ["registry.local:5000", "10.0.0.0/8"],
            "log-driver": "json-file",
            "log-opts": {"max-size": "10m", "max-file": "3"},
            "default-address-pools": [{"base": "10.123.0.0/16", "size": 24}],
            "storage-driver": "overlay2",
            "live-restore": true,
            "data-root": "/var/lib/docker",
        })
    );
    assert_eq!(config.extra_args, ["--experimental"]);
    let json = serde_json::to_string(&config).unwrap();
    assert_eq!(serde_json::from_str::<DockerConfig>(&json).unwrap(), config);
}

#[test]
fn bad_settings_are_named_and_left_out() {
    let (config, problems) = parse(&json!({
        "registry_mirrors": ["mirror.example.com"],
        "default_address_pools": [{"base": "10.123.0.0/16", "size": 8}],
        "live_restore": "yes",
        "data_root": "docker",
        "extra_args": ["-H", "tcp://0.0.0.0:2375"],
        "log_driver": "json-file",
        "colour": "blue",
    }));
    assert_eq!(
        Value::Object(config.daemon),
        json!({"log-driver": "json-file"})
    );
    assert!(config.extra_args.is_empty());
    let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "colour",
            "data_root",
            "default_address_pools",
            "extra_args",
            "live_restore",
            "registry_mirrors"
        ]
    );
    assert!(
        problems[2].problem.contains("size /8 does not fit in /16"),
        "{problems:?}"
    );
    assert!(problems[3].problem.contains("set by Brig"), "{problems:?}");
    assert!(problems[5]
        .problem
        .contains("is not an http:// or https:// URL"));
}

const PEM: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n";

#[test]
fn a_swarm_from_config() {
    let tls = json!({"ca": PEM, "cert": PEM, "key": KEY});
    let (config, problems) = parse(&json!({
        "listen": ["tcp://0.0.0.0:2376"],
        "tls": tls,
        "swarm": {"join": "10.77.0.11", "role": "manager", "advertise_addr": "eth1"},
    }));
    assert_eq!(problems, []);
    let swarm = config.swarm.unwrap();
    assert_eq!(swarm.join, ["10.77.0.11"]);
    assert_eq!(swarm.role, SwarmRole::Manager);
    assert_eq!(swarm.advertise_addr.as_deref(), Some("eth1"));
    assert_eq!(config.listen, ["tcp://0.0.0.0:2376"]);
    assert_eq!(config.tls.unwrap().key, KEY);
    let (config, problems) = parse(&json!({"swarm": {"init": true}}));
    assert_eq!(problems, []);
    assert!(config.swarm.unwrap().init);
}

#[test]
fn an_open_api_or_a_swarm_without_a_way_in_is_refused() {
    let (config, problems) = parse(&json!({
        "listen": ["tcp://0.0.0.0:2375"],
        "swarm": {"join": ["10.77.0.11:2377"]},
    }));
    assert!(config.listen.is_empty() && config.swarm.is_none());
    let said: Vec<String> = problems
        .iter()
        .map(|p| format!("{}: {}", p.key, p.problem))
        .collect();
    assert!(
        said[0].starts_with("listen: the Docker API on TCP is root"),
        "{said:?}"
    );
    assert!(
        said[1].starts_with("swarm: joining without a `token`"),
        "{said:?}"
    );
    let (_, problems) = parse(&json!({"swarm": {"init": true, "join": ["a"]}}));
    assert!(problems[0].problem.contains("exclude each other"));
    let (_, problems) = parse(&json!({"swarm": {"role": "boss", "init": true}}));
    assert_eq!(problems[0].key, "swarm.role");
    let (_, problems) = parse(&json!({"tls": {"ca": PEM, "cert": "x", "key": KEY}}));
    assert_eq!(problems[0].key, "tls.cert");
}
