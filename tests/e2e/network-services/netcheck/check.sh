# Driven by tests/e2e/network.rs, which reads this output on the console.
B=/usr/bin/busybox
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
  t=$1; shift
  while ! "$@" >/dev/null 2>&1; do t=$((t-1)); [ $t -gt 0 ] || { echo "TIMEOUT: $*"; return 1; }; $B sleep 1; done
}
bound() { brigctl network --json | $B grep -q '"state":"bound"'; }
synced() { chronyc -n -h /run/brig/ntp/chronyd.sock tracking | $B grep -q '^Leap status *: Normal'; }

wait_for 60 bound
echo "NETWORK-BEGIN"; brigctl network; echo "NETWORK-END"
echo "JSON $(brigctl network --json)"
echo "LOOKUP $($B nslookup brig-e2e.test 2>&1 | $B tr '\n' ' ')"
echo "NETD-RSS $($B grep VmRSS /proc/$($B pidof brig-netd)/status)"
wait_for 120 synced
echo "TRACKING $(chronyc -n -h /run/brig/ntp/chronyd.sock tracking | $B tr -s ' \n' ' ')"
echo "CLOCK $($B date -u +%s)"
echo "NETCHECK-DONE"
