#!/usr/bin/env bash
# Framework overhead side by side: io forwarding between two null ports on ONE forwarding core,
# fastpath against testpmd of DPDK 22.11 (Debian's, what users have) and of DPDK 26.07 (the
# current one, built by ../shared/peers/dpdk-new.sh: 22.11's net_null frees mbufs one at a time,
# 25.07 and later free in bulk).
#
#   scripts/bench-null-io.sh [ROUNDS] [SECS]     (defaults: 5 rounds of 10 s)
#
#   fastpath:   fastpath l2fwd --port null --port null --cores 1 --stats 1        (lcore on CPU 1)
#   dpdk-22.11: dpdk-testpmd with dpdk.sh null-io's arguments plus --record-core-cycles
#               (-l 0-1: main lcore on CPU 0, forwarding lcore on CPU 1)
#   dpdk-26.07: the same command with the 26.07 testpmd
# Rate: per second, received packets summed over both ports (= forwarded), first two seconds
# dropped, median (scripts/lib.sh). Cycles per packet: testpmd's --record-core-cycles figure
# against fastpath's busy TSC cycles per received packet. Then fastpath's 2-core scaling.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-5}; SECS=${2:-10}
PEERS=../shared/peers
bash "$PEERS/dpdk.sh" install
TP_NEW=$(bash "$PEERS/dpdk-new.sh" path | tail -n 1)
cargo build --release -q -p fastpath-apps
FP=target/release/fastpath
EAL="--no-huge -m 1024 --no-pci --log-level=*:error"
TPMD="--forward-mode=io --nb-cores=1 --total-num-mbufs=16384 --stats-period 1 --auto-start --record-core-cycles"

testpmd_null() { # $1 testpmd binary
  local log; log=$(mktemp)
  timeout -s INT "$SECS" "$1" -l 0-1 $EAL --file-prefix fpbn$$ --vdev=net_null0 --vdev=net_null1 -- $TPMD \
    </dev/null >"$log" 2>&1 || true
  rm -rf /var/run/dpdk/fpbn$$
  echo "$(tp_period_median "$log" Rx-pps) $(tp_cycles_per_packet "$log")"
  rm -f "$log"
}
side_dpdk-22.11() { testpmd_null dpdk-testpmd; }
side_dpdk-26.07() { testpmd_null "$TP_NEW"; }
side_fastpath() {
  local log; log=$(mktemp)
  "$FP" l2fwd --port null --port null --cores 1 --stats 1 --duration "$SECS" --json >"$log" 2>/dev/null
  echo "$(fp_period_median rx <"$log") $(fp_cycles_per_packet "$log")"
  rm -f "$log"
}

machine
echo "null io, 1 forwarding core (CPU 1), $ROUNDS rounds of $SECS s"
compare "$ROUNDS" Mpps fastpath dpdk-22.11 dpdk-26.07
echo "fastpath 2-core scaling (fastpath bench --pipeline io --cores 1,2 --seconds $SECS):"
"$FP" bench --pipeline io --cores 1,2 --seconds "$SECS" 2>/dev/null
