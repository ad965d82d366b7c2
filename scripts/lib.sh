# The rules every side-by-side script here follows (sourced, not run):
#
# - both sides on the same CPUs (the scripts say which), one at a time, never beside a build;
# - runs alternated ABBA: odd rounds run the sides in the order given, even rounds in reverse, so
#   that drift on a shared machine (another tenant, thermal state) falls on both sides alike;
# - the same window and median rule on both sides: per-second rates, the first two seconds
#   dropped, the median of the rest (dpdk.sh's rule for testpmd; `fastpath ... --stats 1` lines
#   are reduced the same way);
# - printed: every run, each side's median, the ratio of the medians, and the paired per-round
#   ratios (fastpath / peer of the same round) with their median and spread (min-max).
#
# A side is a shell function `side_NAME` that prints one line: "VALUE [CYCLES_PER_PACKET]".
# `compare ROUNDS UNIT NAME...` runs them; the first NAME is fastpath, the others its peers. With
# EXTRA_RATIO="A B" (two of the names) it also prints A / B the same way.

# Benchmarks and busy-polling tests never overlap: both hold the suite's poller lock (the flock
# of fastpath_pmd::testutil::pollers) for the whole script.
exec 9>>"${TMPDIR:-/tmp}/fastpath-test-pollers.lock"
if ! flock -n 9; then
  echo "waiting for the busy-poller lock (a test or another benchmark is running)..." >&2
  flock 9
fi

# Median of the numbers on stdin (the mean of the two middle ones for an even count).
median() {
  sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) print "nan"; else if (NR % 2) printf "%.3f\n", v[(NR + 1) / 2];
    else printf "%.3f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

# "min-max" of the numbers on stdin.
spread() { sort -g | awk '{ v[NR] = $1 } END { if (NR) printf "%.2f-%.2f\n", v[1], v[NR]; else print "-" }'; }

# a / b with two decimals ("n/a" when b is 0 or not a number).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 > 0) printf "%.2f", a / b; else print "n/a" }'; }

# testpmd output (file $1): per stats period the sum over ports of stat $2 (Rx-pps / Tx-pps),
# first two periods dropped, median of the rest, in Mpps.
tp_period_median() {
  awk -v key="$2:" '/NIC statistics for port 0/ { if (have) print sum; sum = 0; have = 1 }
    $1 == key { sum += $2 } END { if (have) print sum }' "$1" | tail -n +3 | awk '{ print $1 / 1e6 }' | median
}

# testpmd output (file $1): how many stats periods it printed (tp_period_median needs three).
tp_periods() { grep -c "NIC statistics for port 0" "$1" || true; }

# testpmd's --record-core-cycles figure (file $1): "CPU cycles/packet=54.76 (...)".
tp_cycles_per_packet() {
  sed -n 's/.*CPU cycles\/packet=\([0-9.]*\).*/\1/p' "$1" | tail -n 1
}

# fastpath `--stats 1` lines on stdin ("port P DRIVER rx X Mpps ..."): per period the sum over
# ports of the rx rate (or tx with $1 = tx), first two periods dropped, median of the rest.
fp_period_median() {
  local dir=${1:-rx}
  awk -v dir="$dir" '/^port / {
      if ($2 == "0" && have) { print sum; sum = 0 }
      for (i = 1; i <= NF; i++) if ($i == dir) { sum += $(i + 1); have = 1; break } }
    END { if (have) print sum }' | tail -n +3 | median
}

# fastpath's cycles per packet from `l2fwd --json` (file $1): busy cycles over received packets,
# summed over lcores.
fp_cycles_per_packet() {
  awk -F'[,:}]' '/"lcore":/ { for (i = 1; i < NF; i++) { if ($i ~ /"busy_cycles"/) c += $(i + 1); if ($i ~ /"rx_packets"/) p += $(i + 1) } }
    END { if (p > 0) printf "%.2f\n", c / p; else print "-" }' "$1"
}

# The cross-CPU cache-line round trip between CPUs 0 and 1 in ns (scripts/cpu-pingpong.c, built
# once with gcc; "?" without it). On a VM the host places the two vCPUs: two threads of one core
# or one L3 (tens of ns) or two L3 domains (hundreds), and a run that passes packets between the
# CPUs (PVP) follows it: printed beside every run, so that rounds taken in different placements
# can be told apart.
XCPU=${TMPDIR:-/tmp}/fastpath-cpu-pingpong
xcpu() {
  [ "$(nproc)" -ge 2 ] || { echo "?"; return; }
  [ -x "$XCPU" ] || gcc -O2 -pthread -o "$XCPU" "$(dirname "${BASH_SOURCE[0]}")/cpu-pingpong.c" 2>/dev/null || { echo "?"; return; }
  "$XCPU" 0 1
}

# [EXTRA_RATIO="A B"] compare ROUNDS UNIT FASTPATH_SIDE PEER_SIDE...
compare() {
  local rounds=$1 unit=$2; shift 2
  local sides=("$@") n=$#
  local tmp; tmp=$(mktemp -d)
  local r i order name line
  for r in $(seq "$rounds"); do
    if ((r % 2)); then order=$(seq 0 $((n - 1))); else order=$(seq $((n - 1)) -1 0); fi
    for i in $order; do
      name=${sides[$i]}
      local x0 x1; x0=$(xcpu)
      line=$("side_$name")
      x1=$(xcpu)
      set -- $line
      echo "${1:-nan}" >>"$tmp/$name.v"
      echo "${2:--}" >>"$tmp/$name.c"
      echo "$x0 $x1" >>"$tmp/xcpu"
      printf 'round %d: %-24s %10s %s%s [CPU 0<->1 round trip %s / %s ns before / after]\n' "$r" "$name" "${1:-nan}" "$unit" \
        "${2:+ (${2} cycles/packet)}" "$x0" "$x1"
    done
  done
  echo "== $rounds rounds, ABBA order (CPU 0<->1 round trip over the runs: $(tr ' ' '\n' <"$tmp/xcpu" | grep -v '?' | spread) ns); medians:"
  local fp=${sides[0]}
  for name in "${sides[@]}"; do
    local m c; m=$(median <"$tmp/$name.v"); c=$({ grep -v '^-$' "$tmp/$name.c" || true; } | median)
    printf '  %-24s %10s %s%s\n' "$name" "$m" "$unit" "$( [ "$c" != nan ] && echo " ($c cycles/packet)")"
  done
  # A / B: the ratio of their medians and the paired per-round ratios
  pair() {
    paste "$tmp/$1.v" "$tmp/$2.v" | awk '{ if ($2 > 0) printf "%.2f\n", $1 / $2 }' >"$tmp/r"
    printf '  %s / %s: ratio of medians %sx; per-round ratios %s; their median %sx, spread %s\n' \
      "$1" "$2" "$(ratio "$(median <"$tmp/$1.v")" "$(median <"$tmp/$2.v")")" "$(paste -sd' ' "$tmp/r")" \
      "$(median <"$tmp/r")" "$(spread <"$tmp/r")"
  }
  for name in "${sides[@]:1}"; do pair "$fp" "$name"; done
  if [ -n "${EXTRA_RATIO:-}" ]; then pair $EXTRA_RATIO; fi
  rm -rf "$tmp"
}

# The machine, for the record.
machine() {
  echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), kernel $(uname -r), load $(cut -d' ' -f1-3 /proc/loadavg), $(date -u +%FT%TZ)"
}
