#!/usr/bin/env bash
# fastpath vswitch side by side with Open vSwitch 3.1 on the DPDK datapath (../shared/peers/ovs.sh)
# and with Linux's own VXLAN datapath, in one run (as root; it installs OVS with `ovs.sh install`).
#
#   scripts/bench-vswitch.sh [ROUNDS] [SECS] [pvp,vxlan,fdb,tcp,sg]  (defaults: 3 rounds of 12 s, all)
#
# The rules of scripts/lib.sh: one switching core (CPU 1: fastpath --cores 1, OVS's PMD core 1),
# the "VM" (DPDK 22.11 testpmd, net_virtio_user) forwarding on CPU 0 with its main lcore on CPU 1
# (asleep on its prompt), exactly ovs.sh's testpmd command lines on both sides; ABBA rounds; the
# same window and median rule on both sides: the VM's per-second rate (testpmd's Rx-pps for PVP
# and decap, Tx-pps for encap), first two seconds dropped, median of the rest (the figure ovs.sh
# prints as "testpmd ..." beside OVS's own PMD counters). Each switch's own view goes to stderr
# beside it: OVS's PMD rx (its median of 1-s windows) and cycles per packet; fastpath's rx rate
# (--stats 1, the same rule) and busy cycles per received packet. OVS's PMD spins on CPU 1 while
# it runs: nothing else may run then.
#
# - pvp: two vhost-user ports, the testpmd VM forwarding between them (8 bursts of 32 64 B frames
#   per port in flight, ovs.sh's PVP_BURSTS):
#     port to port: `ovs.sh pvp` (flows in_port=1->2, 2->1; testpmd io) against fastpath
#       `l2fwd` between the two vhost-user ports (its port-to-port forwarding; the vswitch has no
#       flow table, and a bridge with static MACs cannot stand for it here: in io mode the same
#       frames cross both ways, so one destination MAC would need both ports);
#     MAC learning: `ovs.sh pvp-normal` (NORMAL; testpmd mac forwarding, --eth-peer crosswise)
#       against `fastpath vswitch` with one bridge of the two vhost-user ports (learning).
# - vxlan: 64 B frames, VNI 100, remote VTEP 10.61.0.2 at 02:00:0a:3d:00:02 (ovs.sh's topology):
#     encap: testpmd txonly into the VM port; OVS: br-int flow to its vxlan port, underlay
#       net_null (no-rx); fastpath: the uplink `null,no-rx=on` with OVS's br-phy MAC (mac = ... in
#       its [[port]]: a null port has none), the remote VTEP's MAC as a
#       [[neighbour]], the VM's destination (testpmd's default peer 02:00:00:00:00:00) a static
#       [[fdb]] entry behind the VTEP (OVS's flow; known unicast, no flood); in the same rounds,
#       the VM's ceiling: the same VM into fastpath `l2fwd` from its port to a null sink (a switch
#       that only takes the frames), and its ratio to OVS, the best any switch can show here;
#     decap: the underlay replays 32 VXLAN frames of 114 B for our VTEP over and over (OVS:
#       net_pcap infinite_rx; fastpath: `pcap:rx=...,infinite_rx=on`, the same frames), each
#       copied into a fresh mbuf on the switching core; the inner 64 B frames go to the VM
#       (testpmd rxonly; fastpath: a static [[fdb]] entry for the VM's MAC, OVS: its flow).
# - fdb: `fastpath bench` pipelines switch, switch-1k, switch-100k, switch-1m (Mpps on one core
#   and cycles per packet as the table grows), when this tree has them.
# - tcp: one iperf3 TCP stream for SECS s from a namespace behind fastpath to one behind a kernel
#   VXLAN VTEP, against the same pair through two kernel VXLAN devices and a Linux bridge
#   (`ovs.sh kernel-vxlan`, its TCP figure; GSO end to end over veth). fastpath (CPU 1) in two
#   set-ups:
#   tap: the uplink and the host port are TAP devices with the virtio-net header (`tap:NAME,
#     vnet-hdr=on`), moved into the two namespaces after fastpath made them: the host's 64 KiB
#     TSO packets cross the switch whole, are encapsulated, and go to the kernel VTEP as GSO over
#     UDP tunnel (Linux 6.17+), which decapsulates them whole. Busy, then idling adaptively.
#   xdp: the issue's rig: veths on af_xdp ports (an XDP program on a veth turns its peer's GSO off;
#     see apps/tests/vswitch_rig), so fastpath's side moves MTU-sized frames. AF_XDP transmit on
#     a veth runs the receiving namespace's softirq work in fastpath's own sendto(); RPS on the
#     kernel side's veths sends it to CPU 0, as the remote host's own CPUs would do it. Busy.
# - sg: PVP with MAC learning as above (64 B, testpmd mac forwarding, --eth-peer crosswise), with a
#   security group and connection tracking on both VM ports (docs/security.md): egress allow udp,
#   ingress allow udp from 198.18.0.0/16. The frames testpmd loops are its tx_first burst, txonly's
#   template: UDP/IPv4 198.18.0.1:9 -> 198.18.0.2:9, the same 5-tuple from both ports (mac forwarding
#   rewrites only the MACs), so every frame is checked at two points (egress of the sending port,
#   ingress of the receiving one) and finds its tracked connection there. Three comparisons:
#     fastpath vswitch with the group against itself without (issue 13's bar: >= 0.7x);
#     fastpath with the group against OVS-DPDK with the equivalent ct() flows, the Neutron OVS
#       firewall pattern, set up here over ovs.sh start / stop (ovs.sh has no mode for it): table 0
#       sends IP to ct(table=1,zone=1), ARP to NORMAL, drops the rest; table 1: +trk+new udp from
#       198.18.0.0/16 -> ct(commit,zone=1) and output to the other port, +trk+est -> output to the
#       other port, the rest dropped. One ct() pass per frame (Neutron makes two for VM to VM on one
#       host, an egress and an ingress one): OVS's side is the cheaper one. Measured as ovs.sh's pvp
#       modes: testpmd's Rx-pps by the rule above (the compared figure), OVS's PMD counters
#       (dpif-netdev/pmd-perf-show, 1-s windows after 3 s) beside it (issue 13's bar: >= 3x);
#     the same both ways: testpmd 5tswap with --port-topology=loop, each frame back out of the
#       port it came in by, MACs, addresses and ports swapped: request / reply, so that OVS sees
#       +trk+est (one way, OVS's est never comes: it needs both directions, so every frame takes
#       the +new flow and ct(commit) again).
#   The VM waits 2 s before tx_first here (VM_SETTLE).
#   fastpath's conntrack zone (entries, new) and the ports' sg-* drops (should be 0) from its --json
#   report, and OVS's conntrack entries and the new / est flows' packet counts, go to stderr per run.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
ROUNDS=${1:-3}; SECS=${2:-12}; WHAT=${3:-pvp,vxlan,fdb,tcp,sg}
PEERS=../shared/peers
[ "$(id -u)" = 0 ] || { echo "bench-vswitch: run as root (OVS, AF_XDP, namespaces)" >&2; exit 2; }
bash "$PEERS/ovs.sh" install
bash "$PEERS/ovs.sh" stop
cargo build --release -q -p fastpath-apps
FP=$PWD/target/release/fastpath
EAL="--no-huge -m 1024 --no-pci --log-level=*:error"
TPC="--nb-cores=1 --txd=1024 --rxd=1024 --total-num-mbufs=16384 --stats-period 1 --auto-start"
PVP_BURSTS=${PVP_BURSTS:-8}
OVS_VM_START=${OVS_VM_START:-10}  # more seconds for the single-port VMs to start: see ovs() below
OVS_TRIES=${OVS_TRIES:-3}         # OVS runs that read no traffic are tried again: see ovs() below
DIR=$(mktemp -d /tmp/fp-bench-vs.XXXXXX)
FPPID=
cleanup() {
  [ -n "$FPPID" ] && kill -INT "$FPPID" 2>/dev/null && wait "$FPPID" 2>/dev/null
  ip netns del fpbvk 2>/dev/null || true; ip netns del fpbvh 2>/dev/null || true
  ip netns del fpbtk 2>/dev/null || true; ip netns del fpbth 2>/dev/null || true
  ip link del fpbvu0 2>/dev/null || true; ip link del fpbvh0 2>/dev/null || true
  rm -rf "$DIR" /var/run/dpdk/fpbvs$$
  bash "$PEERS/ovs.sh" stop 2>/dev/null || true
}
trap cleanup EXIT
want() { [[ ",$WHAT," == *",$1,"* ]]; }
# Other processes busy on the CPUs of the comparison (another tenant's poller halves a side):
# said before each comparison, so that a figure taken beside one can be told apart.
noise() {
  local l; l=$(ps -eo pid,psr,pcpu,comm --no-headers | awk -v me=$$ '$3 > 30 && $1 != me { printf " %s (pid %s, CPU %s, %s%%)", $4, $1, $2, $3 }')
  echo "  busy processes now:${l:- none}; load $(cut -d' ' -f1-3 /proc/loadavg)"
}

# ---------------------------------------------------------------- fastpath's side
# fastpath (vswitch --config FILE, or l2fwd ARGS) on CPU 1 until fp_stop; --stats 1 into $DIR/fp.log.
# In a session of its own (setsid), as OVS's daemons are (--detach): with autogroup scheduling
# (kernel.sched_autogroup_enabled=1) each session gets an equal share of a CPU against other work.
fp_start() {
  setsid "$FP" "$@" --cores 1 --stats 1 --json >"$DIR/fp.log" 2>"$DIR/fp.err" &
  FPPID=$!
  sleep 0.5
  kill -0 "$FPPID" 2>/dev/null || { echo "fastpath did not start: $(cat "$DIR/fp.err")" >&2; FPPID=; return 1; }
}
fp_stop() { kill -INT "$FPPID"; wait "$FPPID" || true; FPPID=; }
# $1 rx|tx: fastpath's own rate (lib.sh's rule over the seconds with traffic: idle port lines
# dropped) and cycles per packet, for stderr
fp_view() {
  echo "fastpath's own: $(grep -Ev 'rx +0\.000 Mpps.*tx +0\.000 Mpps' "$DIR/fp.log" | fp_period_median "$1") Mpps $1," \
    "$(fp_cycles_per_packet "$DIR/fp.log") cycles/packet"
}

# ovs.sh's PVP VM: interactive testpmd, "start tx_first", a stats line per second (VM_SETTLE s
# after testpmd starts: the sg mode waits 2 s, so that no tx_first burst meets a vhost queue the
# switch has not enabled yet and one of the two loops dies at birth)
VM_SETTLE=0
pvp_vm() { # $1 forward-mode arguments, [$2 socket path prefix: $DIR/vh]; log in $DIR/tp.log
  local s=${2:-$DIR/vh}
  { sleep "$VM_SETTLE"; echo "start tx_first $PVP_BURSTS"; for _ in $(seq "$SECS"); do sleep 1; echo "show port stats all"; done
    echo stop; echo quit; } | timeout -s INT $((SECS + 5 + VM_SETTLE)) dpdk-testpmd -l 0-1 --main-lcore 1 $EAL \
    --file-prefix fpbvs$$ --vdev=net_virtio_user0,mac=00:00:00:00:00:01,path=${s}0,queues=1 \
    --vdev=net_virtio_user1,mac=00:00:00:00:00:02,path=${s}1,queues=1 \
    -- -i $1 --nb-cores=1 --txd=1024 --rxd=1024 --total-num-mbufs=16384 >"$DIR/tp.log" 2>&1 || true
}
# ovs.sh's single-port VM: testpmd txonly / rxonly for SECS+1 s (+ OVS_VM_START: the same run
# length as OVS's side, see ovs() below)
one_vm() { # $1 forward mode
  timeout -s INT $((SECS + 1 + OVS_VM_START)) dpdk-testpmd -l 0-1 --main-lcore 1 $EAL --file-prefix fpbvs$$ \
    --vdev=net_virtio_user0,mac=00:00:00:00:00:01,path=$DIR/vm0,queues=1 -- --forward-mode="$1" $TPC \
    </dev/null >"$DIR/tp.log" 2>&1 || true
}
cfg_pvp() { # [$1 a line for both [[port]]s, $2 more tables]: $DIR/pvp.toml
  cat >"$DIR/pvp.toml" <<EOF
[[bridge]]
name = "pvp"

[[port]]
name = "vm0"
spec = "vhost-user:$DIR/vh0"
bridge = "pvp"
${1:-}

[[port]]
name = "vm1"
spec = "vhost-user:$DIR/vh1"
bridge = "pvp"
${1:-}
${2:-}
EOF
}
# testpmd's received totals per port at the end (both loops alive: about equal)
tp_ports() {
  echo "VM rx per port $(awk '/NIC statistics for port/ { p = $6; next } /statistics/ { p = "" }
    /RX-packets:/ && p != "" { v[p] = $2 } END { print v[0] "/" v[1] }' "$DIR/tp.log")"
}
# The sg VM: mac forwarding crosswise (each frame leaves by the other port, the MACs rewritten,
# the IPs not: one way, 198.18.0.1 -> .2); or both ways (SG_VM2): 5tswap, each frame back out of
# the port it came in by with MACs, addresses and ports swapped, a request / reply ping-pong.
SG_VM="--forward-mode=mac --eth-peer=0,00:00:00:00:00:02 --eth-peer=1,00:00:00:00:00:01"
SG_VM2="--forward-mode=5tswap --port-topology=loop --eth-peer=0,00:00:00:00:00:02 --eth-peer=1,00:00:00:00:00:01"
SG_TAG=
# pvp.toml with a security group on both VM ports: what the testpmd VM sends passes, tracked
cfg_pvp_sg() {
  cfg_pvp 'security_groups = ["vm"]' '
[[security_group]]
name = "vm"
[[security_group.rule]]
direction = "egress"
protocol = "udp"
[[security_group.rule]]
direction = "ingress"
protocol = "udp"
remote = "198.18.0.0/16"'
}
cfg_vxlan() { # $1 uplink spec, $2 the [[fdb]] entry's place
  cat >"$DIR/vx.toml" <<EOF
[[bridge]]
name = "t"
vni = 100
local = "10.61.0.1"
remotes = ["10.61.0.2"]

[[port]]
name = "uplink"
spec = "$1"
role = "uplink"
mac = "02:00:0a:3d:00:01"

[[port]]
name = "vm"
spec = "vhost-user:$DIR/vm0"
bridge = "t"

[[fdb]]
bridge = "t"
$2

[[neighbour]]
ip = "10.61.0.2"
mac = "02:00:0a:3d:00:02"
EOF
}
# 32 VXLAN frames of 114 B for VTEP 10.61.0.1 (VNI 100), each with a 64 B UDP frame for the VM's
# MAC 00:00:00:00:00:01 from 02:00:00:00:00:02: the frames ovs.sh vxlan-decap replays.
mkpcap() { python3 - "$1" <<'EOF'
import struct, sys
def csum(b):
    s = sum(struct.unpack('!%dH' % (len(b) // 2), b)); s = (s >> 16) + (s & 0xffff); s += s >> 16
    return ~s & 0xffff
def ipv4(src, dst, payload):
    h = struct.pack('!BBHHHBBH4s4s', 0x45, 0, 20 + len(payload), 0, 0x4000, 64, 17, 0, bytes(src), bytes(dst))
    return h[:10] + struct.pack('!H', csum(h)) + h[12:] + payload
def udp(sp, dp, payload): return struct.pack('!HHHH', sp, dp, 8 + len(payload), 0) + payload
mac = lambda s: bytes(int(x, 16) for x in s.split(':'))
inner = mac('00:00:00:00:00:01') + mac('02:00:00:00:00:02') + b'\x08\x00' + ipv4([198, 18, 0, 2], [198, 18, 0, 1], udp(9, 9, bytes(22)))
vx = struct.pack('!II', 0x08000000, 100 << 8) + inner
with open(sys.argv[1], 'wb') as f:
    f.write(struct.pack('<IHHiIII', 0xa1b2c3d4, 2, 4, 0, 0, 65535, 1))
    for i in range(32):
        fr = mac('02:00:0a:3d:00:01') + mac('02:00:0a:3d:00:02') + b'\x08\x00' + ipv4([10, 61, 0, 2], [10, 61, 0, 1], udp(49152 + i, 4789, vx))
        f.write(struct.pack('<IIII', 0, 0, len(fr), len(fr)) + fr)
EOF
}
wait_socks() { for s in "$@"; do for _ in $(seq 200); do [ -S "$s" ] && break; sleep 0.05; done; done; }

side_fastpath-l2fwd() {
  rm -f "$DIR"/vh?; fp_start l2fwd --port "vhost-user:$DIR/vh0" --port "vhost-user:$DIR/vh1"
  wait_socks "$DIR/vh0" "$DIR/vh1"; pvp_vm --forward-mode=io; fp_stop
  echo "  fastpath-l2fwd: testpmd Rx $(tp_period_median "$DIR/tp.log" Rx-pps) Mpps; $(fp_view rx)" >&2
  echo "$(tp_period_median "$DIR/tp.log" Rx-pps) $(fp_cycles_per_packet "$DIR/fp.log")"
}
side_fastpath-vswitch() {
  rm -f "$DIR"/vh?; cfg_pvp; fp_start vswitch --config "$DIR/pvp.toml"
  wait_socks "$DIR/vh0" "$DIR/vh1"
  pvp_vm "--forward-mode=mac --eth-peer=0,00:00:00:00:00:02 --eth-peer=1,00:00:00:00:00:01"; fp_stop
  echo "  fastpath-vswitch: testpmd Rx $(tp_period_median "$DIR/tp.log" Rx-pps) Mpps; $(fp_view rx);" \
    "$(grep -o '{"aged".*"bridge":"pvp"[^}]*}' "$DIR/fp.log")" >&2
  echo "$(tp_period_median "$DIR/tp.log" Rx-pps) $(fp_cycles_per_packet "$DIR/fp.log")"
}
side_fastpath-vswitch-sg() {
  rm -f "$DIR"/vh?; cfg_pvp_sg; fp_start vswitch --config "$DIR/pvp.toml"
  wait_socks "$DIR/vh0" "$DIR/vh1"
  pvp_vm "$SG_VM"; fp_stop
  echo "  fastpath-vswitch-sg$SG_TAG: testpmd Rx $(tp_period_median "$DIR/tp.log" Rx-pps) Mpps; $(fp_view rx);" \
    "$(grep -o '{"conntrack_zone":"pvp"[^}]*}' "$DIR/fp.log");" \
    "$(tp_ports); sg drops $(grep -o '"sg-[a-z-]*":[0-9]*' "$DIR/fp.log" | awk -F: '{ s += $2 } END { print s + 0 }');" \
    "$(grep -o '{"drops":{[^}]*}[^}]*"switch_port":"vm[01]"}' "$DIR/fp.log" | paste -sd' ')" >&2
  echo "$(tp_period_median "$DIR/tp.log" Rx-pps) $(fp_cycles_per_packet "$DIR/fp.log")"
}
side_fastpath-vswitch-sg-2way() { SG_VM=$SG_VM2 SG_TAG=-2way side_fastpath-vswitch-sg; }
side_fastpath-encap() {
  rm -f "$DIR/vm0"; cfg_vxlan "null,no-rx=on" 'mac = "02:00:00:00:00:00"
vtep = "10.61.0.2"'
  fp_start vswitch --config "$DIR/vx.toml"; wait_socks "$DIR/vm0"; one_vm txonly; fp_stop
  local m; m=$(tp_period_median "$DIR/tp.log" Tx-pps)
  echo "  fastpath-encap: testpmd Tx $m Mpps ($(tp_periods "$DIR/tp.log") periods); $(fp_view tx);" \
    "$(grep -o '"encapsulated":[0-9]*' "$DIR/fp.log")" >&2
  echo "$m $(fp_cycles_per_packet "$DIR/fp.log")"
}
# The encap comparison's ceiling: the same VM (testpmd txonly) into a switch that does nothing but
# take its frames, fastpath `l2fwd` from the VM port to a null sink. The VM's rate then is the
# most any switch can show in this set-up on this host, so its ratio to OVS's figure is the best
# ratio the comparison allows; fastpath-encap / this near 1.00 says the VM, not the switch,
# bounds the encap figure.
side_fastpath-vm-ceiling() {
  rm -f "$DIR/vm0"; fp_start l2fwd --port "vhost-user:$DIR/vm0" --port null,no-rx=on
  wait_socks "$DIR/vm0"; one_vm txonly; fp_stop
  local m; m=$(tp_period_median "$DIR/tp.log" Tx-pps)
  echo "  fastpath-vm-ceiling: testpmd Tx $m Mpps ($(tp_periods "$DIR/tp.log") periods); $(fp_view tx)" >&2
  echo "$m $(fp_cycles_per_packet "$DIR/fp.log")"
}
side_fastpath-decap() {
  rm -f "$DIR/vm0"; cfg_vxlan "pcap:rx=$DIR/vxlan.pcap,infinite_rx=on" 'mac = "00:00:00:00:00:01"
port = "vm"'
  fp_start vswitch --config "$DIR/vx.toml"; wait_socks "$DIR/vm0"; one_vm rxonly; fp_stop
  local m; m=$(tp_period_median "$DIR/tp.log" Rx-pps)
  echo "  fastpath-decap: testpmd Rx $m Mpps ($(tp_periods "$DIR/tp.log") periods); $(fp_view rx);" \
    "$(grep -o '"decapsulated":[0-9]*' "$DIR/fp.log")" >&2
  echo "$m $(fp_cycles_per_packet "$DIR/fp.log")"
}

# ---------------------------------------------------------------- OVS's side (ovs.sh)
# ovs.sh MODE: its line to stderr; stdout: its testpmd figure and OVS's cycles per packet
# The single-port VM of ovs.sh's vxlan-encap / vxlan-decap starts slowly beside OVS: its main
# lcore (CPU 1) locks its 1 GiB of memory (mlockall: the kernel clears every page) while OVS's PMD
# spins on the same CPU, and only then prints its per-second stats; measured on a 2-vCPU host
# (kernel 6.18): its first stats line came 9-10 s after start, so a 10-s run left it fewer than
# the three windows its median needs and ovs.sh printed "testpmd Tx 0.00 Mpps" (4 runs of 4).
# These modes therefore get OVS_VM_START more seconds (default 10); the rule is unchanged (the
# VM's windows, first two dropped, median of the rest), only more of them exist. A run that still
# reads no traffic measured nothing: it is run again, up to OVS_TRIES times in all, each try's
# line printed.
ovs() { # $1 mode, $2 Rx|Tx, [$3 extra seconds]
  local l f try
  for try in $(seq "$OVS_TRIES"); do
    l=$(bash "$PEERS/ovs.sh" "$1" $((SECS + ${3:-0})) | grep "^ovs $1:" || true)
    echo "  $l" >&2
    f=$(sed -n "s/.*testpmd $2 \([0-9.]*\) Mpps.*/\1/p" <<<"$l")
    if awk -v f="${f:-0}" 'BEGIN { exit !(f > 0) }' || [ "$try" -ge "$OVS_TRIES" ]; then break; fi
    echo "  (ovs.sh $1: testpmd $2 read ${f:-nothing}: no traffic reached the VM; run again, try $((try + 1)) of $OVS_TRIES)" >&2
  done
  echo "$f $(sed -n 's/.*; \([0-9.]*\) cycles\/pkt.*/\1/p' <<<"$l")"
}
side_ovs-pvp() { ovs pvp Rx; }
side_ovs-pvp-normal() { ovs pvp-normal Rx; }
side_ovs-encap() { ovs vxlan-encap Tx "$OVS_VM_START"; }
side_ovs-decap() { ovs vxlan-decap Rx "$OVS_VM_START"; }

# OVS-DPDK with the Neutron OVS firewall's ct() pattern (sg above): ovs.sh start / stop, its run
# dir and its pvp bridge (netdev, two dpdkvhostuser ports), these flows, its measurement.
OVSRUN=${OVS_FP_RUN:-/tmp/fp-ovs}
ovs_vsctl() { ovs-vsctl --db=unix:"$OVSRUN/db.sock" --timeout=30 "$@"; }
ovs_appctl() { ovs-appctl -t "$OVSRUN/ovs-vswitchd.ctl" "$@"; }
ovs_ofctl() { OVS_RUNDIR=$OVSRUN ovs-ofctl "$@"; }
ct_flows() {
  cat <<'EOF'
table=0,priority=100,ip,actions=ct(table=1,zone=1)
table=0,priority=50,arp,actions=NORMAL
table=0,priority=0,actions=drop
table=1,priority=100,ct_state=+trk+new,udp,in_port=1,nw_src=198.18.0.0/16,actions=ct(commit,zone=1),output:2
table=1,priority=100,ct_state=+trk+new,udp,in_port=2,nw_src=198.18.0.0/16,actions=ct(commit,zone=1),output:1
table=1,priority=90,ct_state=+trk+est-inv,in_port=1,actions=output:2
table=1,priority=90,ct_state=+trk+est-inv,in_port=2,actions=output:1
table=1,priority=0,actions=drop
EOF
}
side_ovs-pvp-ct-2way() { SG_VM=$SG_VM2 SG_TAG=-2way side_ovs-pvp-ct; }
side_ovs-pvp-ct() {
  bash "$PEERS/ovs.sh" start >/dev/null
  ovs_vsctl --if-exists del-br fppvp
  ovs_vsctl add-br fppvp -- set bridge fppvp datapath_type=netdev \
    -- add-port fppvp fpvh0 -- set Interface fpvh0 type=dpdkvhostuser ofport_request=1 \
    -- add-port fppvp fpvh1 -- set Interface fpvh1 type=dpdkvhostuser ofport_request=2
  ovs_ofctl del-flows fppvp; ct_flows | ovs_ofctl add-flows fppvp -
  pvp_vm "$SG_VM" "$OVSRUN/fpvh" &
  local tp=$! i
  sleep 3
  for i in $(seq $((SECS > 6 ? SECS - 5 : 1))); do
    ovs_appctl dpif-netdev/pmd-stats-clear >/dev/null; sleep 1
    ovs_appctl dpif-netdev/pmd-perf-show | awk '
      /Rx packets:/ { gsub(/[(,]/, " "); kpps = $4; cyc = $6 }
      END { printf "%.3f %s\n", kpps / 1000, cyc }'
  done >"$DIR/ovs-ct.w"
  local ct flows; ct=$(ovs_appctl dpctl/dump-conntrack 2>/dev/null | grep -c 'zone=1' || true)
  flows=$(ovs_ofctl --no-names dump-flows fppvp table=1 |
    sed -n 's/.*n_packets=\([0-9]*\),.*ct_state=\([-+a-z]*\).*in_port=\([0-9]*\).*/\2 in_port \3: \1/p' | paste -sd';' -)
  wait "$tp" || true
  ovs_vsctl --if-exists del-br fppvp; bash "$PEERS/ovs.sh" stop
  local c; c=$(awk '{ print $2 }' "$DIR/ovs-ct.w" | median)
  echo "  ovs-pvp-ct$SG_TAG: testpmd Rx $(tp_period_median "$DIR/tp.log" Rx-pps) Mpps; OVS PMD rx" \
    "$(awk '{ print $1 }' "$DIR/ovs-ct.w" | median) Mpps (median of $(wc -l <"$DIR/ovs-ct.w") 1-s windows)," \
    "$c cycles/pkt; $(tp_ports); conntrack entries in zone 1: $ct; table 1 packets: $flows" >&2
  echo "$(tp_period_median "$DIR/tp.log" Rx-pps) $c"
}

# ---------------------------------------------------------------- TCP through the overlay
tcp_setup() {
  ip netns add fpbvk; ip netns add fpbvh
  for n in fpbvk fpbvh; do
    ip -n $n link set lo up
    ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  ip link add fpbvu0 type veth peer name fpbvu1 netns fpbvk
  ip link add fpbvh0 type veth peer name fpbvh1 netns fpbvh
  for d in fpbvu0 fpbvh0; do sysctl -qw net.ipv6.conf.$d.disable_ipv6=1; ip link set $d up; done
  ip netns exec fpbvk ethtool -K fpbvu1 tx off >/dev/null
  ip -n fpbvk addr add 10.64.0.2/24 dev fpbvu1; ip -n fpbvk link set fpbvu1 up
  ip -n fpbvk link add vx100 type vxlan id 100 local 10.64.0.2 remote 10.64.0.1 dstport 4789 dev fpbvu1
  ip -n fpbvk addr add 172.20.0.2/24 dev vx100; ip -n fpbvk link set vx100 up
  ip netns exec fpbvh ethtool -K fpbvh1 tx off >/dev/null
  ip -n fpbvh link set fpbvh1 mtu 1450 up; ip -n fpbvh addr add 172.20.0.1/24 dev fpbvh1
  ip netns exec fpbvk sh -c 'echo 1 >/sys/class/net/fpbvu1/queues/rx-0/rps_cpus'
  ip netns exec fpbvh sh -c 'echo 1 >/sys/class/net/fpbvh1/queues/rx-0/rps_cpus'
  cat >"$DIR/tcp.toml" <<EOF
[vswitch]
idle = "IDLE"

[[bridge]]
name = "t"
vni = 100
local = "10.64.0.1"
remotes = ["10.64.0.2"]

[[port]]
name = "uplink"
spec = "af_xdp:fpbvu0"
role = "uplink"

[[port]]
name = "host"
spec = "af_xdp:fpbvh0"
bridge = "t"
EOF
}
# One iperf3 stream from namespace $2 (172.20.0.1) to $3 (the kernel VTEP's, 172.20.0.2) through
# fastpath, then fastpath stopped; $1 tag
iperf_through() {
  local tag=$1 h=$2 k=$3 srv g
  ip netns exec "$h" ping -c 2 -i 0.2 -w 10 172.20.0.2 >/dev/null || echo "  fastpath-tcp-$tag: overlay ping failed" >&2
  ip netns exec "$k" timeout $((SECS + 10)) iperf3 -s -1 -B 172.20.0.2 >/dev/null 2>&1 &
  srv=$!; sleep 1
  g=$(ip netns exec "$h" timeout $((SECS + 8)) iperf3 -c 172.20.0.2 -t "$SECS" -f g 2>/dev/null |
    awk '/receiver/ { for (i = 1; i <= NF; i++) if ($i == "Gbits/sec") print $(i - 1) }')
  wait $srv 2>/dev/null || true; fp_stop
  echo "  fastpath-tcp-$tag: $g Gbit/s (iperf3, 1 stream, ${SECS} s); $(grep -o '"encapsulated":[0-9]*' "$DIR/fp.log" | tail -1)," \
    "$(grep -o '"segmented":[0-9]*' "$DIR/fp.log" | tail -1) (cut in software)" >&2
  echo "${g:-nan}"
}
fp_tcp_xdp() { # $1 busy|adaptive: the veth / af_xdp rig of tcp_setup
  sed "s/IDLE/$1/" "$DIR/tcp.toml" >"$DIR/tcp-$1.toml"
  fp_start vswitch --config "$DIR/tcp-$1.toml"
  iperf_through "xdp-$1" fpbvh fpbvk
}
fp_tcp_tap() { # $1 busy|adaptive: TAP uplink and host port, moved into fpbtk / fpbth (gone with them)
  sed -e "s/IDLE/$1/" -e 's/"af_xdp:fpbvu0"/"tap:fpbtu0,vnet-hdr=on"/' -e 's/"af_xdp:fpbvh0"/"tap:fpbth0,vnet-hdr=on"/' \
    "$DIR/tcp.toml" >"$DIR/tcp-tap-$1.toml"
  local n
  for n in fpbtk fpbth; do
    ip netns add $n; ip -n $n link set lo up
    ip netns exec $n sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1
  done
  fp_start vswitch --config "$DIR/tcp-tap-$1.toml"
  for _ in $(seq 50); do ip link show fpbth0 >/dev/null 2>&1 && ip link show fpbtu0 >/dev/null 2>&1 && break; sleep 0.1; done
  ip link set fpbth0 netns fpbth; ip -n fpbth link set fpbth0 mtu 1450 up
  ip -n fpbth addr add 172.20.0.1/24 dev fpbth0
  ip link set fpbtu0 netns fpbtk; ip -n fpbtk addr add 10.64.0.2/24 dev fpbtu0; ip -n fpbtk link set fpbtu0 up
  ip -n fpbtk link add vx100 type vxlan id 100 local 10.64.0.2 remote 10.64.0.1 dstport 4789 dev fpbtu0
  ip -n fpbtk addr add 172.20.0.2/24 dev vx100; ip -n fpbtk link set vx100 up
  iperf_through "tap-$1" fpbth fpbtk
  ip netns del fpbtk; ip netns del fpbth
}
side_fastpath-tcp-xdp-busy() { fp_tcp_xdp busy; }
side_fastpath-tcp-tap-busy() { fp_tcp_tap busy; }
side_fastpath-tcp-tap-adaptive() { fp_tcp_tap adaptive; }
side_kernel-tcp() {
  local l; l=$(bash "$PEERS/ovs.sh" kernel-vxlan "$SECS" | grep "^kernel vxlan:" || true)
  echo "  $l" >&2
  sed -n 's/.* \([0-9.]*\) Gbps TCP.*/\1/p' <<<"$l"
}

# ---------------------------------------------------------------- run
machine
echo "fastpath $(git rev-parse --short HEAD), OVS $(ovs-vswitchd --version 2>/dev/null | head -1 | awk '{print $NF}'), $ROUNDS rounds of $SECS s"
if want pvp; then
  echo "== PVP port to port, 64 B, 1 switching core (CPU 1); VM testpmd io on CPU 0; Mpps the VM received"
  noise
  compare "$ROUNDS" Mpps fastpath-l2fwd ovs-pvp
  echo "== PVP with MAC learning, 64 B; VM testpmd mac forwarding, --eth-peer crosswise"
  noise
  compare "$ROUNDS" Mpps fastpath-vswitch ovs-pvp-normal
fi
if want sg; then
  VM_SETTLE=2
  echo "== PVP with MAC learning and security groups + conntrack on both VM ports, 64 B; VM testpmd mac forwarding"
  echo "   (UDP 198.18.0.1:9 -> 198.18.0.2:9 from both ports; groups: egress udp, ingress udp from 198.18.0.0/16)"
  echo "-- with groups / without (bar: >= 0.7x)"
  noise
  compare "$ROUNDS" Mpps fastpath-vswitch-sg fastpath-vswitch
  echo "-- fastpath with groups / OVS-DPDK with the Neutron firewall's ct() flows (bar: >= 3x)"
  noise
  compare "$ROUNDS" Mpps fastpath-vswitch-sg ovs-pvp-ct
  echo "-- the same both ways: testpmd 5tswap, each port's frames back to it with addresses and ports swapped,"
  echo "   so that each connection has replies (OVS: +trk+est after the first; one way it stays +trk+new)"
  noise
  compare "$ROUNDS" Mpps fastpath-vswitch-sg-2way ovs-pvp-ct-2way
  VM_SETTLE=0
fi
if want vxlan; then
  mkpcap "$DIR/vxlan.pcap"
  echo "== VXLAN encap VM -> uplink, 64 B inner; Mpps the VM sent (testpmd txonly)"
  noise
  echo "   (and fastpath-vm-ceiling: the same VM into a switch that only takes its frames; its ratio to"
  echo "   ovs-encap is the best any switch can show against OVS here)"
  EXTRA_RATIO="fastpath-vm-ceiling ovs-encap" compare "$ROUNDS" Mpps fastpath-encap ovs-encap fastpath-vm-ceiling
  echo "== VXLAN decap uplink -> VM, 114 B outer / 64 B inner; Mpps the VM received (testpmd rxonly)"
  noise
  compare "$ROUNDS" Mpps fastpath-decap ovs-decap
fi
if want fdb; then
  echo "== FDB scaling: fastpath bench, switching stage, 1 core (CPU 1)"
  have=$("$FP" bench --list 2>/dev/null | grep -oE '^ *switch(-[0-9a-z]+)?' | xargs || true)
  if [ -z "$have" ]; then
    echo "  no switch pipelines in 'fastpath bench --list' of this tree (switch, switch-1k, switch-100k, switch-1m are to come): skipped"
  else
    for p in $have; do
      for r in $(seq "$ROUNDS"); do
        taskset -c 1 "$FP" bench --pipeline "$p" --cores 1 --seconds "$SECS" --json 2>/dev/null |
          sed -E 's/.*"mpps":([0-9.e+-]+).*/\1/'
      done >"$DIR/fdb-$p"
      printf '  %-14s %s Mpps (median of %s; runs %s)\n' "$p" "$(median <"$DIR/fdb-$p")" "$ROUNDS" "$(paste -sd' ' "$DIR/fdb-$p")"
    done
  fi
fi
if want tcp; then
  tcp_setup
  echo "== TCP through the VXLAN overlay, 1 iperf3 stream, vs two kernel VTEPs; fastpath (CPU 1) with TAP ports"
  echo "   (GSO end to end), busy then adaptive, and with the veth + af_xdp rig (MTU-sized frames), busy"
  noise
  compare "$ROUNDS" Gbit/s fastpath-tcp-tap-busy kernel-tcp
  compare "$ROUNDS" Gbit/s fastpath-tcp-tap-adaptive kernel-tcp
  compare "$ROUNDS" Gbit/s fastpath-tcp-xdp-busy kernel-tcp
fi
