#!/usr/bin/env bash
# The price of `idle = "adaptive"`: CPU used by an idle switch, and the latency a packet gets at a
# low rate (the lcore asleep when it comes), against `idle = "busy"` (as root).
#
#   scripts/bench-idle.sh [ROUNDS] [RATE] [SECS]     (defaults: 4 rounds, 1k pps, 10 s)
#
# The rig of docs/operations.md "Idle": `fastpath vswitch` (one lcore on CPU 1) switches between
# two AF_XDP access ports on veth pairs of one bridge; `fastpath pktgen` (CPU 0) sends broadcast
# frames into the first pair, the kernel reflects them at the far end of the second (tc mirred),
# the switch floods them back, and pktgen stamps each frame's round trip (TSC). A static [[fdb]]
# entry keeps pktgen's MAC on the first port. Each round runs every side once (ABBA order); a side
# prints pktgen's p50 and p99 latency and its loss; then, with no traffic, the CPU the switch used
# over 5 s (utime + stime from /proc/PID/stat).
#
# Sides: busy, adaptive (and adaptive-OLD with FASTPATH_OLD=PATH: the same rig with another
# build, for a before / after comparison of a change to the back-off).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-4}
RATE=${2:-1k}
SECS=${3:-10}
FP=${FASTPATH:-target/release/fastpath}
[ "$(id -u)" = 0 ] || { echo "bench-idle.sh: run as root (AF_XDP, veths)" >&2; exit 1; }
[ -x "$FP" ] || cargo build --release -q -p fastpath-apps
tmp=$(mktemp -d)
del_links() { for i in fpiA fpiC; do ip link del "$i" 2>/dev/null || true; done; }
cleanup() {
  pkill -f "vswitch --config $tmp" 2>/dev/null || true
  del_links
  rm -rf "$tmp"
}
trap cleanup EXIT
del_links
ip link add fpiA type veth peer name fpiB
ip link add fpiC type veth peer name fpiD
for i in fpiA fpiB fpiC fpiD; do
  sysctl -qw net.ipv6.conf.$i.disable_ipv6=1
  ip link set "$i" up
done
tc qdisc add dev fpiD ingress
tc filter add dev fpiD parent ffff: protocol all u32 match u32 0 0 action mirred egress redirect dev fpiD

config() {
  cat >"$tmp/$1.toml" <<EOF
[vswitch]
idle = "$2"
[[bridge]]
name = "br0"
[[port]]
name = "vm1"
spec = "af_xdp:fpiB"
bridge = "br0"
[[port]]
name = "vm2"
spec = "af_xdp:fpiC"
bridge = "br0"
[[fdb]]
bridge = "br0"
mac = "02:00:00:00:00:01"
port = "vm1"
EOF
}
config busy busy
config adaptive adaptive

# run BINARY MODE: one measurement, "p50_us p99_us loss idle_cpu_percent".
run() {
  local bin=$1 mode=$2
  "$bin" vswitch --config "$tmp/$mode.toml" --cores 1 --ctl none --duration $((SECS + 12)) >"$tmp/vs.out" 2>&1 &
  local vs=$!
  sleep 2
  local j
  j=$(taskset -c 0 "$FP" pktgen --port af_xdp:fpiA --cores 0 --rate "$RATE" --duration "$SECS" \
    --dst-mac ff:ff:ff:ff:ff:ff --src-mac 02:00:00:00:00:01 --json 2>"$tmp/pg.err")
  sleep 1
  local hz a b
  hz=$(getconf CLK_TCK)
  a=$(awk '{print $14 + $15}' /proc/$vs/stat)
  sleep 5
  b=$(awk '{print $14 + $15}' /proc/$vs/stat)
  kill -INT $vs 2>/dev/null || true
  wait $vs 2>/dev/null || true
  echo "$j" | python3 -c '
import json, sys
j = json.loads(sys.stdin.read())
l = j["latency_ns"]
print("%.1f %.1f %d %.1f" % (l["p50"] / 1e3, l["p99"] / 1e3, j["loss"], 100.0 * ('"$b - $a"') / ('"$hz"' * 5)))'
}
side_busy() { run "$FP" busy; }
side_adaptive() { run "$FP" adaptive; }
side_adaptive_old() { run "$FASTPATH_OLD" adaptive; }

sides=(adaptive busy)
[ -n "${FASTPATH_OLD:-}" ] && sides=(adaptive adaptive_old busy)
machine
echo "vswitch on CPU 1 ($FP), pktgen on CPU 0, $RATE pps for $SECS s per run; p50 us, p99 us, loss, idle CPU % of one"
declare -A all
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then order=("${sides[@]}"); else order=(); for ((i = ${#sides[@]} - 1; i >= 0; i--)); do order+=("${sides[$i]}"); done; fi
  for s in "${order[@]}"; do
    line=$("side_$s")
    printf 'round %d: %-14s p50 %8s us  p99 %8s us  loss %s  idle CPU %s %%\n' "$r" "$s" $line
    all[$s]+="$line"$'\n'
  done
done
echo "== $ROUNDS rounds, ABBA order; medians:"
for s in "${sides[@]}"; do
  v=${all[$s]}
  printf '  %-14s p50 %s us  p99 %s us  loss %s  idle CPU %s %%\n' "$s" \
    "$(echo -n "$v" | awk '{print $1}' | median)" "$(echo -n "$v" | awk '{print $2}' | median)" \
    "$(echo -n "$v" | awk '{s += $3} END {print s + 0}')" "$(echo -n "$v" | awk '{print $4}' | median)"
done
