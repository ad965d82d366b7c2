#!/usr/bin/env bash
# AF_XDP side by side with DPDK 22.11's net_af_xdp, on one veth pair (run as root).
#
#   scripts/bench-af-xdp.sh [RUNS] [SECS]        (defaults: 5 runs of 10 s each)
#
# Topology: veth g0 (in netns fpbench) <-> p0 (this namespace). Same generator for both
# receivers, alternating runs, medians over the runs:
#   rx: `dpdk.sh af-xdp-txonly g0` feeds p0 (forwarding core 0); on p0 the receiver is either
#       `fastpath l2fwd --port af_xdp:p0 --stage drop --cores 1` or `dpdk.sh af-xdp-rxonly p0`
#       (its forwarding core is 1 too). Each figure is the median of the per-second rates after
#       the first two seconds (as dpdk.sh computes testpmd's).
#   tx: `fastpath pktgen --port af_xdp:g0 --cores 0` versus `dpdk.sh af-xdp-txonly g0` (core 0),
#       64-byte UDP frames, nothing listening on p0 (the kernel drops them).
# Prints every run, then the medians and the ratio fastpath / DPDK. Cleans up on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-5}
SECS=${2:-10}
NS=fpbench
DPDK=../shared/peers/dpdk.sh
FP=./target/release/fastpath

[ "$(id -u)" = 0 ] || { echo "bench-af-xdp: run as root (AF_XDP)" >&2; exit 2; }
command -v dpdk-testpmd >/dev/null || bash "$DPDK" install
[ -x "$FP" ] || nice -n 15 cargo build --release -p fastpath-apps

cleanup() {
  ip link del p0 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
cleanup
ip netns add "$NS"
ip link add p0 type veth peer name g0 netns "$NS"
sysctl -qw net.ipv6.conf.p0.disable_ipv6=1
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
ip link set p0 up
ip netns exec "$NS" ip link set g0 up
ip netns exec "$NS" ip link set lo up

median() { sort -g | awk '{ v[NR]=$1 } END { if (NR==0) print "0"; else printf "%.3f\n", v[int((NR+1)/2)] }'; }

# median of fastpath l2fwd's per-second rx rates (after the first two), from `--stats 1` lines
fp_rx_median() {
  awk '/^port 0 /{ for (i=1;i<=NF;i++) if ($i=="rx") { print $(i+1); break } }' | tail -n +3 | median
}

gen_start() { # the DPDK generator on g0, for SECS+4 s
  bash "$DPDK" af-xdp-txonly g0 $((SECS + 4)) "$NS" >/dev/null 2>&1 &
  GEN=$!
  sleep 2
}

echo "bench-af-xdp: $RUNS runs x $SECS s, $(nproc) CPUs, load: $(cut -d' ' -f1-3 /proc/loadavg)"
fp_rx=(); dp_rx=(); fp_tx=(); dp_tx=()
for r in $(seq "$RUNS"); do
  gen_start
  v=$("$FP" l2fwd --port af_xdp:p0 --stage drop --cores 1 --duration "$SECS" --stats 1 2>/dev/null | fp_rx_median)
  wait "$GEN" || true
  fp_rx+=("$v"); echo "run $r rx  fastpath l2fwd af_xdp:p0 --stage drop: $v Mpps"

  gen_start
  v=$(bash "$DPDK" af-xdp-rxonly p0 "$SECS" | awk '{ print $(NF-1) }')
  wait "$GEN" || true
  dp_rx+=("$v"); echo "run $r rx  dpdk af-xdp-rxonly p0:                  $v Mpps"

  v=$(ip netns exec "$NS" "$FP" pktgen --port af_xdp:g0 --cores 0 --duration "$SECS" --json 2>/dev/null |
      sed -n 's/.*"tx_mpps_median":\([0-9.e+-]*\).*/\1/p')
  fp_tx+=("$(printf '%.3f' "$v")"); echo "run $r tx  fastpath pktgen af_xdp:g0:              ${fp_tx[-1]} Mpps"

  v=$(bash "$DPDK" af-xdp-txonly g0 "$SECS" "$NS" | awk '{ print $(NF-1) }')
  dp_tx+=("$v"); echo "run $r tx  dpdk af-xdp-txonly g0:                   $v Mpps"
done

m_fp_rx=$(printf '%s\n' "${fp_rx[@]}" | median); m_dp_rx=$(printf '%s\n' "${dp_rx[@]}" | median)
m_fp_tx=$(printf '%s\n' "${fp_tx[@]}" | median); m_dp_tx=$(printf '%s\n' "${dp_tx[@]}" | median)
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
echo
echo "median rx: fastpath $m_fp_rx Mpps, dpdk $m_dp_rx Mpps, ratio $(ratio "$m_fp_rx" "$m_dp_rx")"
echo "median tx: fastpath $m_fp_tx Mpps, dpdk $m_dp_tx Mpps, ratio $(ratio "$m_fp_tx" "$m_dp_tx")"
