# Driven by tests/e2e/network.rs (only with brig.netlab on the command line).
B=/usr/bin/busybox
# Full path: busybox's shell prefers its own `ip` applet to PATH.
IP=/usr/bin/ip
$B grep -q brig.netlab /proc/cmdline || exit 0
set -e
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
  t=$1; shift
  while ! "$@" >/dev/null 2>&1; do t=$((t-1)); [ $t -gt 0 ] || { echo "TIMEOUT: $*"; return 1; }; $B sleep 1; done
}
$B mkdir -p /tmp/lab /run/netns
$IP netns add srv
$IP netns add cli
$IP link add veth-s netns srv type veth peer name veth-c netns cli
$IP link add veth-s2 netns srv type veth peer name veth-c2 netns cli
$IP link add veth-s3 netns srv type veth peer name veth-c3 netns cli
# The LACP partner: a kernel 802.3ad bond on the server side.
$IP -n srv link add bond-s type bond mode 802.3ad lacp_rate fast miimon 100
for p in veth-s veth-s2; do $IP -n srv link set $p master bond-s; done
$IP -n srv addr add 192.168.77.1/24 dev bond-s
$IP -n srv link set bond-s up
# VLAN 42 on the third cable.
$IP -n srv link set veth-s3 up
$IP -n srv link add link veth-s3 name veth-s3.42 type vlan id 42
$IP -n srv addr add 192.168.42.1/24 dev veth-s3.42
$IP -n srv link set veth-s3.42 up
$IP netns exec srv dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root \
  --interface=bond-s --interface=veth-s3.42 --bind-interfaces --no-ping \
  --dhcp-range=192.168.77.50,192.168.77.60,255.255.255.0,2m \
  --dhcp-range=192.168.42.50,192.168.42.60,255.255.255.0,2m \
  --dhcp-leasefile=/tmp/lab/leases --pid-file=/tmp/lab/dnsmasq.pid \
  --log-dhcp --log-facility=/tmp/lab/dnsmasq.log &
$B cat > /tmp/lab/network.yaml <<'YAML'
network:
  version: 2
  ethernets:
    port1: {match: {name: veth-c}}
    port2: {match: {name: veth-c2}}
    port3: {match: {name: veth-c3}}
  bonds:
    bond0:
      interfaces: [port1, port2]
      parameters: {mode: 802.3ad, lacp-rate: fast, mii-monitor-interval: 100}
      dhcp4: true
  vlans:
    vlan42: {id: 42, link: port3, dhcp4: true}
YAML
for p in veth-c veth-c2 veth-c3; do $IP -n cli link set $p up; done
$IP netns exec cli brig-netd run --config /tmp/lab/network.yaml --state /tmp/lab/state \
  --dns /tmp/lab/dns --ntp /tmp/lab/ntp --socket /tmp/lab/netd.sock > /tmp/lab/netd.log 2>&1 &
has() { $IP -n cli -4 addr show dev "$1" | $B grep -q "inet $2"; }
# From here on, report everything and let the test judge.
set +e
wait_for 60 has bond0 192.168.77.
wait_for 60 has vlan42 192.168.42.
echo "NETD $($B tr '\n' '|' < /tmp/lab/netd.log)"
echo "BOND $($IP netns exec cli $B cat /proc/net/bonding/bond0 | $B tr '\n' '|')"
echo "VLAN $($IP -n cli -d link show vlan42 | $B tr -s ' \n' ' ')"
echo "ADDRESSES $($IP -n cli -4 -o addr show | $B tr -s ' \n' ' ')"
echo "DNSMASQ $($B tail -n 20 /tmp/lab/dnsmasq.log | $B tr '\n' '|')"
# A few tries: under a loaded host the first echo can be lost while the
# bond's ports settle.
ping_ok() {
  for _ in 1 2 3 4 5; do
    $IP netns exec cli $B ping -c 1 -W 2 "$1" >/dev/null && return 0
  done
  return 1
}
ping_ok 192.168.77.1 && echo "PING-BOND ok"
ping_ok 192.168.42.1 && echo "PING-VLAN ok"
echo "NETLAB-DONE"
