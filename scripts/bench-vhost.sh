#!/bin/bash
# Side-by-side benchmark of fastpath's vhost-user backend against DPDK's own (net_vhost), with the
# same frontend (DPDK testpmd net_virtio_user, io forwarding, --tx-first) measured the same way:
# the frontend's median Rx-pps (dpdk.sh's figure).
#
#   scripts/bench-vhost.sh [RUNS] [SECS] [packed]   (defaults: 5 runs of 12 s each, alternating)
#
# fastpath: `fastpath l2fwd --port vhost-user:SOCK --cores 1` + `dpdk.sh virtio-user SOCK SECS`
# DPDK:     `dpdk.sh vhost-loopback SECS` (testpmd net_vhost backend, io forwarding)
# packed:   both sides with packed virtqueues: the frontend's vdev gets `,packed_vq=1`. dpdk.sh has
#           no such option, so this script runs the same testpmd commands as dpdk.sh's
#           virtio-user and vhost-loopback modes itself (same EAL and testpmd arguments, same
#           cores, the same median over the stats periods after the first two).
# Cores: the frontend forwards on CPU 0 (testpmd -l 0-1 --main-lcore 1); both backends forward on
# CPU 1 (DPDK's backend testpmd -l 0-1 has its forwarding lcore on 1; fastpath --cores 1).
# Build first: cargo build --release -p fastpath-apps. Run on a quiet machine (no compiles).
set -u
cd "$(dirname "$0")/.."
RUNS=${1:-5}
SECS=${2:-12}
MODE=${3:-split}
case "$MODE" in split|packed) ;; *) echo "bench-vhost: mode is 'split' or 'packed', not '$MODE'" >&2; exit 2 ;; esac
DPDK=${DPDK_SH:-../shared/peers/dpdk.sh}
FP=${FASTPATH:-target/release/fastpath}
[ -x "$FP" ] || { echo "bench-vhost: $FP missing: cargo build --release -p fastpath-apps" >&2; exit 2; }
[ -f "$DPDK" ] || { echo "bench-vhost: $DPDK missing" >&2; exit 2; }

median() { sort -n | awk '{ v[NR]=$1 } END { if (NR==0) print "0"; else if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2 }'; }

# packed mode: dpdk.sh's testpmd invocations with ,packed_vq=1 on the frontend's vdev.
EAL="--no-huge -m 1024 --no-pci --log-level=*:error"
TPMD="--forward-mode=io --nb-cores=1 --txd=1024 --rxd=1024 --total-num-mbufs=16384 --stats-period 1 --auto-start"
# median over the stats periods after the first two of the frontend's Rx-pps, in Mpps (dpdk.sh's)
median_pps() {
  awk '/NIC statistics for port 0/ { if (have) print sum; sum=0; have=1 } $1=="Rx-pps:" { sum+=$2 }
       END { if (have) print sum }' "$1" | tail -n +3 | sort -n |
    awk '{ v[NR]=$1 } END { if (NR==0) print "0.00"; else printf "%.2f\n", v[int((NR+1)/2)]/1e6 }'
}
frontend_packed() { # $1 socket, $2 seconds, $3 log
  timeout -s INT "$2" dpdk-testpmd -l 0-1 --main-lcore 1 $EAL --file-prefix fpbvu$$ \
    --vdev="net_virtio_user0,mac=00:01:02:03:04:05,path=$1,queues=1,packed_vq=1" \
    -- $TPMD --tx-first >"$3" 2>&1 </dev/null
  rm -rf /var/run/dpdk/fpbvu$$
}

fp_run() {
  local sock=/tmp/fp-bench-vhost.$$.sock log; log=$(mktemp)
  rm -f "$sock"
  "$FP" l2fwd --port "vhost-user:$sock" --cores 1 --duration $((SECS + 3)) >"$log" 2>&1 &
  local pid=$!
  for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.05; done
  if [ "$MODE" = packed ]; then
    local fl; fl=$(mktemp)
    frontend_packed "$sock" "$SECS" "$fl"
    wait "$pid"
    median_pps "$fl"; rm -f "$fl" "$sock" "$log"
    return
  fi
  local line; line=$(bash "$DPDK" virtio-user "$sock" "$SECS" | grep '^dpdk virtio-user:')
  wait "$pid"
  rm -f "$sock" "$log"
  echo "$line" | awk '{print $4}'
}

dpdk_run() {
  if [ "$MODE" = packed ]; then
    local sock=/tmp/fp-bench-dpdkvh.$$.sock lb lf; lb=$(mktemp); lf=$(mktemp)
    timeout -s INT $((SECS + 4)) dpdk-testpmd -l 0-1 $EAL --file-prefix fpbvh$$ \
      --vdev "net_vhost0,iface=$sock,queues=1" -- $TPMD >"$lb" 2>&1 </dev/null &
    local pid=$!
    for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
    frontend_packed "$sock" "$SECS" "$lf"
    wait "$pid"
    median_pps "$lf"; rm -rf "$lb" "$lf" "$sock" /var/run/dpdk/fpbvh$$
    return
  fi
  bash "$DPDK" vhost-loopback "$SECS" | awk '/^dpdk vhost-loopback:/ {print $3}'
}

fps=(); dps=(); rs=()
for i in $(seq "$RUNS"); do
  f=$(fp_run); d=$(dpdk_run)
  fps+=("$f"); dps+=("$d")
  r=$(awk -v a="$f" -v b="$d" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "0" }')
  rs+=("$r")
  printf 'run %d: fastpath vhost-user %s Mpps | dpdk net_vhost %s Mpps | ratio %sx\n' "$i" "$f" "$d" "$r"
done
fm=$(printf '%s\n' "${fps[@]}" | median)
dm=$(printf '%s\n' "${dps[@]}" | median)
ratio=$(awk -v a="$fm" -v b="$dm" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }')
rm_=$(printf '%s\n' "${rs[@]}" | median)
echo "$MODE rings: median over $RUNS runs of ${SECS}s: fastpath vhost-user $fm Mpps, dpdk net_vhost $dm Mpps, ratio ${ratio}x (median of the paired per-run ratios ${rm_}x)"
