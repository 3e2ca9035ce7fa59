# Driven by tests/e2e/services.rs, which reads these lines on the console.
B=/usr/bin/busybox
say() { echo "$*" > /dev/console; }
centiseconds() { $B cut -d' ' -f1 /proc/uptime | $B tr -d .; }
kib() { $B grep "^$1:" /proc/1/status | $B tr -s ' \t' ' ' | $B cut -d' ' -f2; }
rss() { kib VmRSS; }
state_is() { brigctl ps | $B grep -q "^$1  *$2 "; }
# A FIFO planted at /etc/passwd in the flood's writable layer (what a
# container could leave for its next start): that start fails with the
# reason and PID 1 goes on answering; without the FIFO it starts again.
upper=/host-containers/flood/upper
$B mkdir -p $upper/etc
$B mkfifo $upper/etc/passwd
brigctl restart flood >/dev/null 2>&1
n=0; until brigctl ps | $B grep '^flood ' | $B grep -q 'not a regular file' || [ $n -ge 60 ]; do n=$((n + 1)); $B sleep 1; done
say "FIFO-RESULT $(brigctl ps | $B grep '^flood ')"
$B rm $upper/etc/passwd
brigctl start flood >/dev/null
n=0; until state_is flood running || [ $n -ge 60 ]; do n=$((n + 1)); $B sleep 1; done
# The flood is under way.
$B sleep 5
start=$(rss) rss_max=0 calls=0 failed=0 slowest=0 total=0 slowest_true=0
until=$(( $(centiseconds) + 6000 ))
while [ "$(centiseconds)" -lt "$until" ]; do
  t0=$(centiseconds)
  # A hung PID 1 never answers: give up on a call after 20 s.
  $B timeout 20 brigctl ps >/dev/null 2>&1 || failed=$((failed + 1))
  took=$(( ($(centiseconds) - t0) * 10 ))
  [ "$took" -gt "$slowest" ] && slowest=$took
  total=$((total + took))
  calls=$((calls + 1))
  # The baseline beside it: the same start of a program, asking nothing
  # of PID 1, under the same flood.
  t0=$(centiseconds)
  $B timeout 20 $B true
  took=$(( ($(centiseconds) - t0) * 10 ))
  [ "$took" -gt "$slowest_true" ] && slowest_true=$took
  now=$(rss)
  [ "$now" -gt "$rss_max" ] && rss_max=$now
  $B sleep 1
done
flooding=$(brigctl ps | $B grep -c '^flood  *running ')
# The log service was offered the flood's rate limit, and told the rest
# was held back (a window ends every 30 s).
held_back=$(brigctl logs brig-init | $B grep -c 'flood: [0-9]* lines of output not logged (more than 10000 in 30 s, or 64 KiB waiting for the log service)')
say "HELD-BACK $(brigctl logs brig-init | $B grep -m1 'lines of output not logged')"
say "FLOOD-RESULT calls=$calls failed=$failed slowest_ms=$slowest mean_ms=$((total / calls)) slowest_true_ms=$slowest_true rss_kib_start=$start rss_kib_max=$rss_max rss_kib_end=$(rss) anon_kib_end=$(kib RssAnon) program_kib_end=$(kib RssShmem) flood_running=$flooding held_back=$held_back"
say "WEDGING"
strace -qq -o /dev/null -p 1 &
$B sleep 2
$B kill -STOP $!
say "WEDGED"
exec $B sleep 100000
