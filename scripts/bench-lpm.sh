#!/bin/bash
# fastpath's LPM against DPDK's rte_lpm / rte_lpm6 (Debian's DPDK 22.11), side by side on one pinned CPU.
#
#   scripts/bench-lpm.sh [ROUNDS] [ITERATIONS]        (default 5 rounds of 1024 iterations)
#
# Each round runs both, alternated ABBA (even rounds DPDK first, odd rounds fastpath first), taskset
# to the same CPU ($CPU, default 1), for:
#   - IPv4 with DPDK's own ~1.08M-route table: dpdk-test lpm_perf_autotest, against
#     `lpm-perf --distribution` with the per-length counts that dpdk-test printed in round 1 (same
#     number of routes per prefix length, same 7/8 of the address space, the same 2048 groups for
#     prefixes longer than /24, 4096 random addresses x ITERATIONS, single lookups and bulks of 32);
#   - IPv4 with 1k and 100k routes (DPDK's distribution scaled down): dpdk-test cannot change its
#     table, so scripts/lpm-peer.c (rte_lpm_create/add/lookup/lookup_bulk, the loops of
#     lpm_perf_autotest) reads the very routes lpm-perf generated (--dump-routes);
#   - IPv6: dpdk-test lpm6_perf_autotest (1000 routes, 100000 addresses that all hit, one bulk
#     call per pass) against `lpm-perf --family 6` with its distribution.
# Prints each figure per round (TSC cycles per lookup: lower is better), the per-round ratio
# DPDK cycles / fastpath cycles (above 1: fastpath faster) and the ratio of the medians.
set -u
cd "$(dirname "$0")/.."
ROUNDS=${1:-5}
ITER=${2:-1024}
CPU=${CPU:-1}
EAL="-l $CPU --no-huge -m 1024 --no-pci --log-level=*:error"
command -v dpdk-test >/dev/null || { echo "bench-lpm: dpdk-test missing: bash ../shared/peers/dpdk.sh install" >&2; exit 2; }
cargo build --release -q -p fastpath-benches --bin lpm-perf || exit 1
OURS=target/release/lpm-perf
WORK=$(mktemp -d)
trap 'rm -rf "$WORK" /var/run/dpdk/fplpm*$$ 2>/dev/null' EXIT
PEER=$WORK/lpm-peer
gcc -O3 -o "$PEER" scripts/lpm-peer.c $(pkg-config --cflags --libs libdpdk) || { echo "bench-lpm: cannot build lpm-peer (dpdk-dev)" >&2; exit 2; }

pick() { # $1 file, $2 label ("Average LPM Lookup" | "BULK LPM Lookup"): cycles
  awk -v k="$2:" 'index($0, k) == 1 { print $(NF-4) }' "$1" | head -1
}
dist() { # dpdk-test's "DEPTH QUANTITY (PERCENT)" table -> DEPTH:COUNT,...
  awk '/^DEPTH/ {t=1; next} t && /^[0-9]+ +[0-9]+ \(/ { if ($2 > 0) printf "%d:%d,", $1, $2 } /^$/ && t {t=0}' "$1"
}
median() { sort -g | awk '{ v[NR]=$1 } END { if (NR==0) print "nan"; else if (NR%2) print v[(NR+1)/2]; else print (v[NR/2]+v[NR/2+1])/2 }'; }

declare -A D F   # D[case,kind] / F[case,kind]: newline-separated per-round cycles
run_dpdk() { echo "$2" | taskset -c "$CPU" dpdk-test $EAL --file-prefix "fplpm$1$$" >"$3" 2>&1; }

for r in $(seq 1 "$ROUNDS"); do
  for case in v4-1M v4-1k v4-100k v6; do
    a=$WORK/a.txt; b=$WORK/b.txt
    case $case in
      v4-1M)
        dpdk() { run_dpdk 4 lpm_perf_autotest "$a"; [ -f "$WORK/dist4" ] || dist "$a" >"$WORK/dist4"; }
        ours() { taskset -c "$CPU" $OURS --family 4 --iterations "$ITER" --distribution "$(cat "$WORK/dist4")" >"$b"; } ;;
      v4-1k|v4-100k)
        n=1000; [ $case = v4-100k ] && n=100000
        [ -f "$WORK/routes$n" ] || $OURS --routes $n --iterations 1 --dump-routes "$WORK/routes$n" >/dev/null
        dpdk() { taskset -c "$CPU" "$PEER" $EAL --file-prefix "fplpmp$$" -- "$WORK/routes$n" "$ITER" >"$a" 2>&1; }
        ours() { taskset -c "$CPU" $OURS --family 4 --iterations "$ITER" --routes $n >"$b"; } ;;
      v6)
        dpdk() { run_dpdk 6 lpm6_perf_autotest "$a"; [ -f "$WORK/dist6" ] || dist "$a" >"$WORK/dist6"; }
        ours() { taskset -c "$CPU" $OURS --family 6 --iterations "$ITER" --distribution "$(cat "$WORK/dist6")" >"$b"; } ;;
    esac
    # the 1M table needs DPDK's distribution first
    if [ $case = v4-1M ] && [ ! -f "$WORK/dist4" ]; then dpdk; ours
    elif [ $case = v6 ] && [ ! -f "$WORK/dist6" ]; then dpdk; ours
    elif [ $((r % 2)) = 0 ]; then dpdk; ours
    else ours; dpdk; fi
    for kind in "Average LPM Lookup" "BULK LPM Lookup"; do
      x=$(pick "$a" "$kind"); y=$(pick "$b" "$kind")
      if [ -z "$x" ] || [ -z "$y" ]; then
        echo "bench-lpm: round $r $case: no '$kind' figure" >&2; cat "$a" "$b" >&2; exit 1
      fi
      D[$case,$kind]+="$x"$'\n'; F[$case,$kind]+="$y"$'\n'
      printf 'round %d %-8s %-19s dpdk %7.1f  fastpath %7.1f cycles  ratio %.2fx\n' "$r" "$case" "$kind" "$x" "$y" \
        "$(echo "$x / $y" | bc -l)"
    done
  done
done
mhz=$(awk '/^TSC =/ { print $3 }' "$WORK/b.txt")
echo
echo "medians over $ROUNDS rounds (TSC cycles per lookup; M lookups/s at the TSC rate; ratio = dpdk / fastpath):"
for case in v4-1M v4-1k v4-100k v6; do
  for kind in "Average LPM Lookup" "BULK LPM Lookup"; do
    x=$(printf '%s' "${D[$case,$kind]}" | median); y=$(printf '%s' "${F[$case,$kind]}" | median)
    printf '%-8s %-19s dpdk %7.1f (%6.1f M/s)  fastpath %7.1f (%6.1f M/s)  ratio of medians %.2fx\n' "$case" "$kind" \
      "$x" "$(echo "$mhz / $x" | bc -l)" "$y" "$(echo "$mhz / $y" | bc -l)" "$(echo "$x / $y" | bc -l)"
  done
done
