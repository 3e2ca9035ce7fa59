# Driven by tests/e2e/services.rs, which reads this output on the console.
B=/usr/bin/busybox
wait_for() { # wait_for SECONDS COMMAND...: until COMMAND succeeds
  t=$1; shift
  while ! "$@" >/dev/null 2>&1; do t=$((t-1)); [ $t -gt 0 ] || { echo "TIMEOUT: $*"; return 1; }; $B sleep 1; done
}
state_is() { brigctl ps | $B grep -q "^$1 *$2 "; }

wait_for 120 state_is memhog crash-loop
wait_for 60 state_is web running
echo "PS-BEGIN"; brigctl ps; echo "PS-END"
echo "JSON $(brigctl --json ps)"
echo "OOM-KILLS $($B grep oom_kill /host-cgroup/brig/memhog/memory.events)"
echo "TICKER-MEMORY-MAX $($B cat /host-cgroup/brig/ticker/memory.max)"

brigctl restart ticker
wait_for 30 state_is ticker running
echo "TICKER-RESTARTS $(brigctl --json ps | $B tr '{' '\n' | $B grep '"name":"ticker"' | $B sed 's/.*"restarts":\([0-9]*\).*/\1/')"
echo "LOGS-BEGIN"; brigctl logs --tail 4 ticker; echo "LOGS-END"

brigctl stop web
wait_for 30 state_is web stopped
echo "WEB-PROCS [$($B cat /host-cgroup/brig/web/cgroup.procs)]"
echo "WEB-SLEEPERS $($B ps | $B grep -c 'sleep 10000[1]')"
brigctl logs nosuch; echo "BAD-SERVICE-EXIT $?"
echo "OPERATOR-DONE"
