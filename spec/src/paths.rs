//! Every path under /run/brig and /var/lib/brig, in one place: PID 1, the
//! system containers (which see these paths at the same place, through
//! bind mounts their specs name) and `brigctl` all use these.

// ---- /run/brig: this boot's, in memory ----

/// PID 1's runtime state: `images/<name>` (mounted container images) and
/// `containers/<name>` (each container's writable layer and root).
pub const RUN: &str = "/run/brig";
/// The control socket `brigctl` talks to PID 1 over (root, and the
/// read-only group for reading).
pub const CONTROL_SOCKET: &str = "/run/brig/control.sock";
/// Where a seed volume (NoCloud, ConfigDrive) is mounted while it is read.
pub const SEED_MOUNT: &str = "/run/brig/seed";

/// The config PID 1 hands to the system containers (root's only). Each
/// consumer has a directory of its own, and its container binds only that
/// one: ntp sees its servers, not password hashes, Wi-Fi keys, the swarm
/// token or TLS keys. The whole directory is the console's (the admin's
/// `brigctl config`).
pub const CONFIG_DIR: &str = "/run/brig/config";
/// The consumers' directories under `CONFIG_DIR`, made at boot so that
/// their containers can bind them before any file is written.
pub const CONFIG_CONSUMERS: &[&str] = &[
    "console", "docker", "swarm", "syslog", "network", "wifi", "ntp",
];
/// The effective cloud-config (datasource and local settings merged), for
/// `brigctl config get` and `export`.
pub const EFFECTIVE_FILE: &str = "/run/brig/config/cloud-config.json";
/// The user data as the datasource gave it, for `brigctl config validate`.
pub const USER_DATA_FILE: &str = "/run/brig/config/user-data";
/// Accounts, keys, scripts and login settings for the console container.
pub const CONSOLE_CONFIG: &str = "/run/brig/config/console/console.json";
/// `brig.docker`, for the docker container.
pub const DOCKER_CONFIG: &str = "/run/brig/config/docker/docker.json";
/// `brig.docker` again, for the swarm container (its token, its client
/// certificate).
pub const SWARM_CONFIG: &str = "/run/brig/config/swarm/docker.json";
/// `brig.logging`, for the log service.
pub const LOGGING_CONFIG: &str = "/run/brig/config/syslog/logging.json";
/// The network config (v2) for the network container, without the Wi-Fi
/// passwords, which it does not need.
pub const NETWORK_CONFIG: &str = "/run/brig/config/network/network.yaml";
/// The network config (v2) whole, for the wifi container.
pub const WIFI_CONFIG: &str = "/run/brig/config/wifi/network.yaml";
/// Replaces the ntp container's default servers (chrony's confdir).
pub const NTP_SERVERS_FILE: &str = "/run/brig/config/ntp/servers.conf";

/// brig-netd writes `resolv.conf` here; PID 1 shows this directory (read
/// only) to every container in the host network namespace, with
/// `/etc/resolv.conf` a symlink into it, so updates reach them at once.
pub const DNS_DIR: &str = "/run/brig/dns";
/// The resolver config brig-netd keeps in `DNS_DIR`.
pub const RESOLV_CONF: &str = "/run/brig/dns/resolv.conf";
/// NTP servers learned from DHCP (a chrony `sourcedir`).
pub const NTP_DIR: &str = "/run/brig/ntp";
/// Where brig-netd's status socket lives (`brigctl network`).
pub const NETWORK_STATUS_DIR: &str = "/run/brig/network";
/// brig-netd answers status requests here (one JSON line each way).
pub const NETWORK_STATUS_SOCKET: &str = "/run/brig/network/netd.sock";

/// The log service's syslog socket directory, shown to containers that log.
pub const SYSLOG_DIR: &str = "/run/brig/log";
/// The syslog socket (`/dev/log` links here).
pub const SYSLOG_SOCKET: &str = "/run/brig/log/dev-log";
/// Where PID 1 hands the log service its own lines and the services'
/// output: shown to the log container only, so no other container can
/// write lines that pass for PID 1's.
pub const INIT_LOG_DIR: &str = "/run/brig/logd-init";
/// The log service's socket for PID 1's lines (root's only).
pub const INIT_LOG_SOCKET: &str = "/run/brig/logd-init/init.sock";
/// Where the log service answers queries (`brigctl logs`).
pub const LOG_QUERY_DIR: &str = "/run/brig/logd";
/// The log service's query socket (root and the read-only group).
pub const LOG_QUERY_SOCKET: &str = "/run/brig/logd/query.sock";

/// Where the Docker socket lives (its own mode and group say who may use
/// it).
pub const DOCKER_SOCKET_DIR: &str = "/run/brig/docker";
/// The Docker Engine API socket.
pub const DOCKER_SOCKET: &str = "/run/brig/docker/docker.sock";

// ---- /var/lib/brig: kept across boots (the state partition) ----

/// Where the state partition is mounted: the parent of every path Brig
/// keeps.
pub const STATE: &str = "/var/lib/brig";
/// The last datasource seen: a machine that boots once without its
/// datasource (a seed disk detached) keeps its users and keys.
pub const SAVED_DIR: &str = "/var/lib/brig/config/datasource";
/// Settings made with `brigctl config set`, merged over the datasource's
/// cloud-config at each boot.
pub const LOCAL_FILE: &str = "/var/lib/brig/config/local.json";
/// Named volumes of services.
pub const VOLUMES: &str = "/var/lib/brig/volumes";

/// The program that reads cloud-config for PID 1, in the initramfs'
/// uncompressed part: run at every boot before the network starts, it is
/// in memory already (from the system image it took ~100 ms more under
/// TCG to read and decompress first).
pub const CONFIG_PROGRAM: &str = "/bin/brig-config";

/// What the image says about itself, written by `brig build`: its board,
/// its version (which updates compare) and the public key update bundles
/// must be signed with (docs/updates.md).
pub const BOARD_FILE: &str = "/etc/brig/board";
pub const VERSION_FILE: &str = "/etc/brig/version";
pub const UPDATE_KEY_FILE: &str = "/etc/brig/update.pub";
