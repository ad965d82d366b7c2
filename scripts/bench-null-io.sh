#!/usr/bin/env bash
# Side by side: fastpath io forwarding over two null ports on one core against DPDK 22.11
# testpmd io-fwd over two net_null ports on one forwarding core (../shared/peers/dpdk.sh null-io),
# alternated ROUNDS times; prints each run, the medians and the ratio. Then 2-core scaling.
#   scripts/bench-null-io.sh [ROUNDS] [SECS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}; secs=${2:-8}
peer=../shared/peers/dpdk.sh
bash "$peer" install
cargo build --release -q -p fastpath-apps
fp=target/release/fastpath
med() { sort -n | awk '{v[NR]=$1} END {if (NR%2) printf "%.2f\n", v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2}'; }
dp=(); fq=()
for i in $(seq "$rounds"); do
  d=$(bash "$peer" null-io "$secs" | awk '{print $3}')
  f=$($fp bench --pipeline io --cores 1 --seconds "$secs" --json 2>/dev/null | sed -E 's/.*"mpps":([0-9.]+).*/\1/')
  printf 'round %d: dpdk %6.2f Mpps   fastpath %6.2f Mpps\n' "$i" "$d" "$f"
  dp+=("$d"); fq+=("$f")
done
dm=$(printf '%s\n' "${dp[@]}" | med); fm=$(printf '%s\n' "${fq[@]}" | med)
echo "median: dpdk null-io ${dm} Mpps, fastpath bench io 1 core ${fm} Mpps, ratio $(awk -v a="$fm" -v b="$dm" 'BEGIN{printf "%.2f", a/b}')x"
echo "scaling (fastpath bench --pipeline io --cores 1,2 --seconds $secs):"
$fp bench --pipeline io --cores 1,2 --seconds "$secs" 2>/dev/null
