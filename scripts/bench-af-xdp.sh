#!/usr/bin/env bash
# AF_XDP side by side with DPDK 22.11's net_af_xdp on one veth pair (run as root), with the same
# busy-poll setting on both sides: DPDK 22.11 busy-polls by default (busy_budget=64:
# SO_PREFER_BUSY_POLL, SO_BUSY_POLL_BUDGET 64), fastpath with `busy-poll=on` does the same; each
# comparison runs twice, both sides busy-polling, then neither (fastpath's default, DPDK's
# busy_budget=0).
#
#   scripts/bench-af-xdp.sh [ROUNDS] [SECS]        (defaults: 5 rounds of 10 s)
#
# Topology: veth g0 (in netns fpbench) <-> p0 (this namespace).
#   rx: one generator for every receiver: testpmd net_af_xdp txonly on g0 (dpdk.sh af-xdp-txonly,
#       forwarding lcore on CPU 0); the receiver on p0 forwards on CPU 1: fastpath
#       `l2fwd --port af_xdp:p0 --stage drop --cores 1`, or testpmd net_af_xdp rxonly (-l 0-1).
#   tx: fastpath `pktgen --port af_xdp:g0 --cores 0` or testpmd net_af_xdp txonly on g0 (CPU 0),
#       64-byte UDP frames, nothing listening on p0 (the kernel drops them).
# Rates: per second, first two seconds dropped, median (scripts/lib.sh); ABBA rounds.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-5}; SECS=${2:-10}
NS=fpbench
PEERS=../shared/peers
FP=./target/release/fastpath
EAL="--no-huge -m 1024 --no-pci --log-level=*:error"
TPMD="--nb-cores=1 --total-num-mbufs=16384 --stats-period 1 --auto-start"

[ "$(id -u)" = 0 ] || { echo "bench-af-xdp: run as root (AF_XDP)" >&2; exit 2; }
bash "$PEERS/dpdk.sh" install
cargo build --release -q -p fastpath-apps

cleanup() { ip link del p0 2>/dev/null || true; ip netns del "$NS" 2>/dev/null || true; rm -rf /var/run/dpdk/fpbx*$$; }
trap cleanup EXIT
cleanup
ip netns add "$NS"
ip link add p0 type veth peer name g0 netns "$NS"
sysctl -qw net.ipv6.conf.p0.disable_ipv6=1
ip netns exec "$NS" sysctl -qw net.ipv6.conf.all.disable_ipv6=1
ip link set p0 up
ip netns exec "$NS" ip link set g0 up
ip netns exec "$NS" ip link set lo up

BUDGET=64 FPBP=",busy-poll=on"
gen_start() { # the DPDK generator on g0 (CPU 0) for SECS+4 s
  # The kernel releases the previous receiver's socket in deferred work: give it a second.
  sleep 1
  bash "$PEERS/dpdk.sh" af-xdp-txonly g0 $((SECS + 4)) "$NS" >/dev/null 2>&1 &
  GEN=$!
  sleep 2
}
side_fastpath-rx() {
  gen_start
  local log; log=$(mktemp)
  "$FP" l2fwd --port "af_xdp:p0$FPBP" --stage drop --cores 1 --duration "$SECS" --stats 1 --json >"$log" 2>/dev/null
  wait "$GEN" || true
  echo "$(fp_period_median rx <"$log") $(fp_cycles_per_packet "$log")"; rm -f "$log"
}
side_dpdk-rx() {
  gen_start
  local log; log=$(mktemp)
  timeout -s INT "$SECS" dpdk-testpmd -l 0-1 $EAL --file-prefix fpbxr$$ --vdev="net_af_xdp0,iface=p0,busy_budget=$BUDGET" \
    -- --forward-mode=rxonly $TPMD --record-core-cycles </dev/null >"$log" 2>&1 || true
  wait "$GEN" || true
  echo "$(tp_period_median "$log" Rx-pps) $(tp_cycles_per_packet "$log")"; rm -f "$log"
}
side_fastpath-tx() {
  sleep 1
  local v
  v=$(ip netns exec "$NS" "$FP" pktgen --port "af_xdp:g0$FPBP" --cores 0 --duration "$SECS" --json 2>/dev/null |
      sed -n 's/.*"tx_mpps_median":\([0-9.e+-]*\).*/\1/p')
  printf '%.3f\n' "$v"
}
side_dpdk-tx() {
  sleep 1
  local log; log=$(mktemp)
  ip netns exec "$NS" timeout -s INT "$SECS" dpdk-testpmd -l 0-1 --main-lcore 1 $EAL --file-prefix fpbxt$$ \
    --vdev="net_af_xdp0,iface=g0,busy_budget=$BUDGET" -- --forward-mode=txonly $TPMD </dev/null >"$log" 2>&1 || true
  tp_period_median "$log" Tx-pps; rm -f "$log"
}

machine
for bp in on off; do
  if [ "$bp" = on ]; then BUDGET=64 FPBP=",busy-poll=on"; else BUDGET=0 FPBP=""; fi
  echo "== busy polling $bp on both sides (DPDK busy_budget=$BUDGET, fastpath${FPBP:- default}): receive on p0"
  compare "$ROUNDS" Mpps fastpath-rx dpdk-rx
  echo "== busy polling $bp on both sides: transmit on g0"
  compare "$ROUNDS" Mpps fastpath-tx dpdk-tx
done
