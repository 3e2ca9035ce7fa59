# Driven by tests/e2e/services.rs, which reads these lines on the console.
B=/usr/bin/busybox
say() { echo "$*" > /dev/console; }
centiseconds() { $B cut -d' ' -f1 /proc/uptime | $B tr -d .; }
rss() { $B grep VmRSS /proc/1/status | $B tr -s ' \t' ' ' | $B cut -d' ' -f2; }
# The flood is under way.
$B sleep 5
start=$(rss) calls=0 failed=0 slowest=0
until=$(( $(centiseconds) + 6000 ))
while [ "$(centiseconds)" -lt "$until" ]; do
  t0=$(centiseconds)
  # A hung PID 1 never answers: give up on a call after 20 s.
  $B timeout 20 brigctl ps >/dev/null 2>&1 || failed=$((failed + 1))
  took=$(( ($(centiseconds) - t0) * 10 ))
  [ "$took" -gt "$slowest" ] && slowest=$took
  calls=$((calls + 1))
  $B sleep 1
done
flooding=$(brigctl ps | $B grep -c '^flood  *running ')
say "FLOOD-RESULT calls=$calls failed=$failed slowest_ms=$slowest rss_kib_start=$start rss_kib_end=$(rss) flood_running=$flooding"
say "WEDGING"
strace -qq -o /dev/null -p 1 &
$B sleep 2
$B kill -STOP $!
say "WEDGED"
exec $B sleep 100000
