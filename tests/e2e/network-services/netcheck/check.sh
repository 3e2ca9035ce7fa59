# Driven by tests/e2e/network.rs, which reads this output on the console.
B=/usr/bin/busybox
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
  t=$1; shift
  while ! "$@" >/dev/null 2>&1; do t=$((t-1)); [ $t -gt 0 ] || { echo "TIMEOUT: $*"; return 1; }; $B sleep 1; done
}
bound() { brigctl network --json | $B grep -q '"state":"bound"'; }
synced() { chronyc -n -h /run/brig/ntp/chronyd.sock tracking | $B grep -q '^Leap status *: Normal'; }

wait_for 60 bound
if $B grep -q brig.netcheck=virtual /proc/cmdline; then
  # Three NICs: a bond of the first two (active-backup), a VLAN on the bond,
  # a bridge on the third.
  $B cat > /run/brig/config/network/network.yaml <<'YAML'
network:
  version: 2
  ethernets:
    nic0: {match: {macaddress: '52:54:00:12:34:56'}}
    nic1: {match: {macaddress: '52:54:00:12:34:57'}}
    nic2: {match: {macaddress: '52:54:00:12:34:58'}}
  bonds:
    bond0:
      interfaces: [nic0, nic1]
      parameters: {mode: active-backup, primary: nic0, mii-monitor-interval: 100}
      dhcp4: true
  bridges:
    br0: {interfaces: [nic2], addresses: [192.168.60.2/24], accept-ra: false, parameters: {stp: false}}
  vlans:
    vlan42: {id: 42, link: bond0, addresses: [192.168.42.2/24]}
YAML
  brigctl restart network
  bond_bound() { brigctl network --json | $B grep -q '"name":"bond0"[^}]*"state":"bound"'; }
  br_up() { brigctl network --json | $B grep -q '"name":"br0"[^}]*192.168.60.2/24'; }
  vlan_up() { brigctl network --json | $B grep -q '"name":"vlan42"[^}]*192.168.42.2/24'; }
  wait_for 60 bond_bound
  wait_for 60 br_up
  # Before the ping below: without its address the ping sends nothing.
  wait_for 60 vlan_up
  echo "NETWORK-BEGIN"; brigctl network; echo "NETWORK-END"
  echo "BOND $($B tr '\n' '|' < /proc/net/bonding/bond0)"
  echo "VLAN $($B tr -s ' \n' ' ' < /proc/net/vlan/vlan42)"
  echo "BRIDGE-PORTS $($B ls /sys/class/net/br0/brif)"
  echo "BRIDGE-ACCEPT-RA $($B cat /proc/sys/net/ipv6/conf/br0/accept_ra)"
  # Tagged frames on the wire (the test captures the first NIC's traffic).
  $B ping -c 3 -W 1 192.168.42.1 >/dev/null 2>&1
  echo "FAILOVER-READY"
  active_is_nic1() { $B grep -q 'Currently Active Slave: eth1' /proc/net/bonding/bond0; }
  wait_for 60 active_is_nic1
  echo "ACTIVE-AFTER $($B grep 'Currently Active Slave' /proc/net/bonding/bond0)"
  echo "LOOKUP-AFTER $($B nslookup brig-e2e.test 2>&1 | $B tr '\n' ' ')"
  echo "NETCHECK-DONE"
  exec $B sleep 100000
fi
# IPv6: QEMU's router advertises fec0::/64; the kernel takes an address (SLAAC).
slaac() { brigctl network | $B grep -q 'fec0::'; }
wait_for 30 slaac
echo "NETWORK-BEGIN"; brigctl network; echo "NETWORK-END"
echo "JSON $(brigctl network --json)"
echo "LOOKUP $($B nslookup brig-e2e.test 2>&1 | $B tr '\n' ' ')"
echo "NETD-RSS $($B grep VmRSS /proc/$($B pidof brig-netd)/status)"
wait_for 120 synced
echo "TRACKING $(chronyc -n -h /run/brig/ntp/chronyd.sock tracking | $B tr -s ' \n' ' ')"
echo "CLOCK $($B date -u +%s)"
# The last known time: chronyd keeps it in its drift file when it stops and
# restores it at start (-s). Stop ntp, turn the clock back to 2001 (as a Pi
# without RTC boots), start ntp again.
brigctl stop ntp
# `brigctl stop` returns once the stop has begun; chronyd writes the drift
# file as it exits, which must happen before the clock goes back.
ntp_stopped() { brigctl ps | $B grep -q '^ntp .*stopped'; }
wait_for 30 ntp_stopped
$B date -u -s "2001-01-01 00:00:00" >/dev/null
echo "CLOCK-BACK $($B date -u +%s)"
brigctl start ntp
ntp_up() { chronyc -n -h /run/brig/ntp/chronyd.sock tracking; }
wait_for 30 ntp_up
echo "CLOCK-RESTORED $($B date -u +%s)"
# A chronyd killed outright (no chance to clean up) comes back: its restart
# must not trip over what the killed one left behind.
killed=$($B pidof chronyd)
$B kill -KILL $killed
ntp_back() { p=$($B pidof chronyd) && [ "$p" != "$killed" ] && ntp_up && brigctl ps | $B grep -q '^ntp .*running'; }
wait_for 60 ntp_back
echo "NTP-AFTER-KILL $(brigctl ps | $B grep '^ntp ' | $B tr -s ' ')"
echo "NETCHECK-DONE"
