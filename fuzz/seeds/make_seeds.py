#!/usr/bin/env python3
"""Writes the seed corpus of every fuzz target (run from fuzz/: python3 seeds/make_seeds.py).

Needs scapy (Debian's python3-scapy). The seeds are committed; rerun only to change them."""
import os
from scapy.all import *
from scapy.contrib.geneve import GENEVE

here = os.path.dirname(os.path.abspath(__file__))
m1, m2 = "02:00:00:00:00:01", "02:00:00:00:00:02"
inner = [
    Ether(src=m1, dst=m2)/IP(src="10.0.0.1", dst="10.0.0.2")/UDP(sport=1, dport=2)/Raw(b"abcd"),
    Ether(src=m1, dst=m2)/Dot1Q(vlan=5)/IPv6(src="::1", dst="::2")/IPv6ExtHdrHopByHop()/TCP(sport=3, dport=4),
    Ether(src=m1, dst=m2)/IP(src="10.0.0.1", dst="10.0.0.2", options=[IPOption_RR()])/TCP(options=[("MSS", 1460)]),
    Ether(src=m1, dst=m2)/IPv6(src="::1", dst="::2")/IPv6ExtHdrFragment(offset=0, m=1)/UDP(),
]
outer4 = Ether(src=m1, dst=m2)/IP(src="192.0.2.1", dst="192.0.2.2")
outer6 = Ether(src=m1, dst=m2)/IPv6(src="2001:db8::1", dst="2001:db8::2")
tunnels = []
for o in (outer4, outer6):
    tunnels.append(o/UDP(sport=50000, dport=4789)/VXLAN(vni=42)/inner[0])
    tunnels.append(o/UDP(sport=50000, dport=6081)/Raw(raw(GENEVE(vni=7, proto=0x6558, optionlen=2)/Raw(b"\x01\x02\x80\x01\xde\xad\xbe\xef")))/inner[1])
    tunnels.append(o/GRE(key_present=1, key=(9 << 8) | 1, proto=0x6558)/inner[2])
frames = [raw(p) for p in inner + tunnels]

def write(target, blobs):
    d = os.path.join(here, target)
    os.makedirs(d, exist_ok=True)
    for i, b in enumerate(blobs):
        with open(os.path.join(d, "seed%02d" % i), "wb") as f:
            f.write(b)

write("wire_views", frames + [raw(IP(src="1.2.3.4", dst="5.6.7.8")/UDP()), raw(GRE(chksum_present=1, key_present=1, seqnum_present=1))])
write("ipv6_ext", [bytes([0]) + raw(IPv6ExtHdrHopByHop()/IPv6ExtHdrRouting()/IPv6ExtHdrDestOpt()/TCP()),
                   bytes([44]) + raw(IPv6ExtHdrFragment(offset=185)/UDP())])
write("geneve_options", [raw(GENEVE(vni=7, proto=0x6558, optionlen=3)/Raw(b"\x01\x02\x80\x01\xde\xad\xbe\xef\x00\x05\x01\x00")),
                         raw(GENEVE(vni=1, proto=0x0800))])
write("ptype", frames)
write("decap", [bytes([30]) + f for f in frames])
write("checksum", [bytes([7]) + f for f in frames])
