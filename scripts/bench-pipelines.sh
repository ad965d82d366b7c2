#!/usr/bin/env bash
# Side by side, alternated ROUNDS times in one run:
#  - the one's-complement sum at 1500 bytes: DPDK 22.11 rte_raw_cksum (../shared/peers/dpdk.sh cksum,
#    i.e. dpdk-test cksum_perf_autotest) against ours measured the same way (the TSC table of
#    `cargo bench -p fastpath-benches --bench checksum`, dispatched `sum` rows);
#  - the fastpath bench pipelines on one core: tunnel round trips (bar: 14.88 Mpps), encap, decap,
#    checksum, lso, lso-chain, gro (Gbit/s of payload; bar: 40).
# Prints every run, then medians (and the checksum ratio).
#   scripts/bench-pipelines.sh [ROUNDS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}; secs=${2:-5}
peer=../shared/peers/dpdk.sh
bash "$peer" install
cargo build --release -q -p fastpath-apps
cargo bench -q -p fastpath-benches --bench checksum --no-run 2>/dev/null
fp=target/release/fastpath
pipes=(vxlan-roundtrip geneve-roundtrip nvgre-roundtrip vxlan-encap vxlan-decap checksum lso lso-chain gro)
med() { sort -g | awk '{v[NR]=$1} END {if (NR%2) printf "%.3f\n", v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2}'; }
out=$(mktemp); trap 'rm -f "$out"' EXIT
for i in $(seq "$rounds"); do
  d=$(bash "$peer" cksum)
  da=$(awk '$1=="Aligned" && $2==1500 {print $4}' <<<"$d"); du=$(awk '$1=="Unaligned" && $2==1500 {print $4}' <<<"$d")
  # A criterion filter that matches nothing: only the TSC table runs.
  o=$(cargo bench -q -p fastpath-benches --bench checksum -- tsc-table-only 2>/dev/null)
  oa=$(awk '$1=="sum" && $2=="Aligned" && $3==1500 {print $5}' <<<"$o"); ou=$(awk '$1=="sum" && $2=="Unaligned" && $3==1500 {print $5}' <<<"$o")
  printf 'round %d: cksum 1500 B cycles/byte: dpdk %s / %s (aligned / unaligned), fastpath %s / %s\n' "$i" "$da" "$du" "$oa" "$ou"
  echo "cksum dpdk-a $da" >>"$out"; echo "cksum dpdk-u $du" >>"$out"; echo "cksum fp-a $oa" >>"$out"; echo "cksum fp-u $ou" >>"$out"
  for p in "${pipes[@]}"; do
    j=$($fp bench --pipeline "$p" --cores 1 --seconds "$secs" --json 2>/dev/null)
    m=$(sed -E 's/.*"mpps":([0-9.e+-]+).*/\1/' <<<"$j")
    g=$(grep -oE '"gbps":[0-9.e+-]+' <<<"$j" | cut -d: -f2 || true)
    printf 'round %d: %-17s %8.2f Mpps %s\n' "$i" "$p" "$m" "${g:+$(printf '%7.1f Gbit/s' "$g")}"
    echo "pipe $p-mpps $m" >>"$out"; [ -n "$g" ] && echo "pipe $p-gbps $g" >>"$out"
  done
done
echo "== medians over $rounds rounds"
for k in dpdk-a dpdk-u fp-a fp-u; do printf '%s %s\n' "$k" "$(awk -v k=$k '$2==k {print $3}' "$out" | med)"; done | {
  declare -A v; while read -r k x; do v[$k]=$x; echo "cksum 1500 B cycles/byte $k: $x"; done
  echo "cksum ratio (dpdk / fastpath): aligned $(awk -v a="${v[dpdk-a]}" -v b="${v[fp-a]}" 'BEGIN{printf "%.1f", a/b}')x, unaligned $(awk -v a="${v[dpdk-u]}" -v b="${v[fp-u]}" 'BEGIN{printf "%.1f", a/b}')x"
}
for p in "${pipes[@]}"; do
  m=$(awk -v k="$p-mpps" '$2==k {print $3}' "$out" | med)
  gl=$(awk -v k="$p-gbps" '$2==k {print $3}' "$out"); g=""
  [ -n "$gl" ] && g=$(med <<<"$gl")
  printf '%-17s %8s Mpps %s\n' "$p" "$m" "${g:+$g Gbit/s}"
done
