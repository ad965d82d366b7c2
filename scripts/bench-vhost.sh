#!/usr/bin/env bash
# vhost-user backends side by side with one frontend: fastpath's vhost-user port against DPDK's
# net_vhost (testpmd io forwarding) of DPDK 22.11 (Debian's) and 26.07 (the current one, built by
# ../shared/peers/dpdk-new.sh). The frontend is the same for every side: DPDK 22.11 testpmd
# net_virtio_user in io forwarding with --tx-first (dpdk.sh virtio-user's arguments).
#
#   scripts/bench-vhost.sh [ROUNDS] [SECS] [split|packed]     (defaults: 5 rounds of 12 s, split)
#
# CPUs: the frontend (both its lcores) on CPU 0; the backend on CPU 1 (fastpath --cores 1; DPDK's
# testpmd with both its lcores on CPU 1). packed: the frontend's vdev gets ,packed_vq=1.
# Rate: the frontend's Rx-pps, per second, first two dropped, median (dpdk.sh's rule). Cycles per
# packet: the backend's (testpmd --record-core-cycles; fastpath's busy cycles per received
# packet). With --tx-first one burst circulates, so the rate measures a round trip through both.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-5}; SECS=${2:-12}; MODE=${3:-split}
case "$MODE" in split) VQ="" ;; packed) VQ=",packed_vq=1" ;; *) echo "bench-vhost: split or packed, not '$MODE'" >&2; exit 2 ;; esac
PEERS=../shared/peers
bash "$PEERS/dpdk.sh" install
TP_NEW=$(bash "$PEERS/dpdk-new.sh" path | tail -n 1)
cargo build --release -q -p fastpath-apps
FP=target/release/fastpath
EAL="--no-huge -m 1024 --no-pci --log-level=*:error"
TPMD="--forward-mode=io --nb-cores=1 --txd=1024 --rxd=1024 --total-num-mbufs=16384 --stats-period 1 --auto-start"
SOCK=/tmp/fp-bench-vhost.$$.sock
trap 'rm -f "$SOCK"; rm -rf /var/run/dpdk/fpbv*$$' EXIT

frontend() { # $1 log: the frontend for SECS seconds against $SOCK, all on CPU 0
  timeout -s INT "$SECS" dpdk-testpmd --lcores '(0,1)@0' --main-lcore 1 $EAL --file-prefix fpbvu$$ \
    --vdev="net_virtio_user0,mac=00:01:02:03:04:05,path=$SOCK,queues=1$VQ" -- $TPMD --tx-first \
    </dev/null >"$1" 2>&1 || true
}
wait_sock() { for _ in $(seq 200); do [ -S "$SOCK" ] && return 0; sleep 0.05; done; echo "no socket $SOCK" >&2; }

dpdk_backend() { # $1 testpmd binary
  local lb lf; lb=$(mktemp); lf=$(mktemp); rm -f "$SOCK"
  timeout -s INT $((SECS + 5)) "$1" --lcores '(0,1)@1' --main-lcore 0 $EAL --file-prefix fpbvh$$ \
    --vdev "net_vhost0,iface=$SOCK,queues=1" -- $TPMD --record-core-cycles </dev/null >"$lb" 2>&1 &
  local pid=$!
  wait_sock; frontend "$lf"
  kill -INT "$pid" 2>/dev/null || true; wait "$pid" || true
  echo "$(tp_period_median "$lf" Rx-pps) $(tp_cycles_per_packet "$lb")"
  rm -f "$lb" "$lf" "$SOCK"
}
side_dpdk-22.11() { dpdk_backend dpdk-testpmd; }
side_dpdk-26.07() { dpdk_backend "$TP_NEW"; }
side_fastpath() {
  local lb lf; lb=$(mktemp); lf=$(mktemp); rm -f "$SOCK"
  "$FP" l2fwd --port "vhost-user:$SOCK" --cores 1 --json >"$lb" 2>/dev/null &
  local pid=$!
  wait_sock; frontend "$lf"
  kill -INT "$pid"; wait "$pid" || true
  echo "$(tp_period_median "$lf" Rx-pps) $(fp_cycles_per_packet "$lb")"
  rm -f "$lb" "$lf" "$SOCK"
}

machine
echo "vhost-user io loopback, $MODE rings, frontend on CPU 0, backend on CPU 1, $ROUNDS rounds of $SECS s"
compare "$ROUNDS" Mpps fastpath dpdk-22.11 dpdk-26.07
