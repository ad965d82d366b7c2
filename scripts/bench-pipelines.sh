#!/usr/bin/env bash
# Side by side, ROUNDS rounds in ABBA order:
#  - the one's-complement sum of 1500 bytes in TSC cycles per byte, aligned and unaligned: DPDK
#    22.11's rte_raw_cksum (dpdk.sh cksum: dpdk-test cksum_perf_autotest, on CPU 0) against ours
#    measured the same way (`cargo bench -p fastpath-benches --bench checksum`'s TSC table, on
#    CPU 0): the dispatched kernel (AVX-512 / AVX2 where the CPU has them) and the scalar one;
#  - the fastpath bench pipelines on one core (CPU 1): tunnel round trips (bar 14.88 Mpps),
#    encap, decap, checksum, lso, lso-chain, gro (Gbit/s of payload; bar 40). No peer runs
#    these; their figures are medians over the rounds.
#   scripts/bench-pipelines.sh [ROUNDS] [SECS]        (defaults: 5 rounds of 5 s)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-5}; SECS=${2:-5}
bash ../shared/peers/dpdk.sh install
cargo build --release -q -p fastpath-apps
cargo bench -q -p fastpath-benches --bench checksum --no-run 2>/dev/null
FP=target/release/fastpath
pipes=(vxlan-roundtrip geneve-roundtrip nvgre-roundtrip vxlan-encap vxlan-decap checksum lso lso-chain gro)
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT

cksum_dpdk() {
  local d; d=$(taskset -c 0 bash ../shared/peers/dpdk.sh cksum)
  awk '$1=="Aligned" && $2==1500 {print $4}' <<<"$d" >>"$out/dpdk-a"
  awk '$1=="Unaligned" && $2==1500 {print $4}' <<<"$d" >>"$out/dpdk-u"
}
cksum_ours() {
  # A criterion filter that matches nothing: only the TSC table runs.
  local o; o=$(taskset -c 0 cargo bench -q -p fastpath-benches --bench checksum -- tsc-table-only 2>/dev/null)
  for k in sum scalar; do
    awk -v k=$k '$1==k && $2=="Aligned" && $3==1500 {print $5}' <<<"$o" >>"$out/$k-a"
    awk -v k=$k '$1==k && $2=="Unaligned" && $3==1500 {print $5}' <<<"$o" >>"$out/$k-u"
  done
}

machine
for r in $(seq "$ROUNDS"); do
  if ((r % 2)); then cksum_dpdk; cksum_ours; else cksum_ours; cksum_dpdk; fi
  printf 'round %d: cksum 1500 B, TSC cycles/byte aligned / unaligned: dpdk %s / %s, fastpath %s / %s (scalar %s / %s)\n' \
    "$r" "$(tail -1 "$out/dpdk-a")" "$(tail -1 "$out/dpdk-u")" "$(tail -1 "$out/sum-a")" "$(tail -1 "$out/sum-u")" \
    "$(tail -1 "$out/scalar-a")" "$(tail -1 "$out/scalar-u")"
  for p in "${pipes[@]}"; do
    j=$(taskset -c 1 "$FP" bench --pipeline "$p" --cores 1 --seconds "$SECS" --json 2>/dev/null)
    m=$(sed -E 's/.*"mpps":([0-9.e+-]+).*/\1/' <<<"$j")
    g=$(grep -oE '"gbps":[0-9.e+-]+' <<<"$j" | cut -d: -f2 || true)
    printf 'round %d: %-17s %8.2f Mpps %s\n' "$r" "$p" "$m" "${g:+$(printf '%7.1f Gbit/s' "$g")}"
    echo "$m" >>"$out/$p-mpps"; [ -n "$g" ] && echo "$g" >>"$out/$p-gbps"
  done
done
echo "== medians over $ROUNDS rounds"
for a in a u; do
  name=$([ $a = a ] && echo aligned || echo unaligned)
  for k in sum scalar; do
    paste "$out/dpdk-$a" "$out/$k-$a" | awk '{ if ($2 > 0) printf "%.2f\n", $1 / $2 }' >"$out/r"
    printf 'cksum %s, %s kernel: dpdk %s, fastpath %s cycles/byte; dpdk / fastpath: ratio of medians %sx, per-round %s, median %sx, spread %s\n' \
      "$name" "$([ $k = sum ] && echo dispatched || echo scalar)" "$(median <"$out/dpdk-$a")" "$(median <"$out/$k-$a")" \
      "$(ratio "$(median <"$out/dpdk-$a")" "$(median <"$out/$k-$a")")" "$(paste -sd' ' "$out/r")" "$(median <"$out/r")" "$(spread <"$out/r")"
  done
done
for p in "${pipes[@]}"; do
  g=""; [ -s "$out/$p-gbps" ] && g="$(median <"$out/$p-gbps") Gbit/s"
  printf '%-17s %8s Mpps %s\n' "$p" "$(median <"$out/$p-mpps")" "$g"
done
