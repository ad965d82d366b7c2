//! Shared by the LSO / GRO tests: frames built byte by byte (independently of the code under
//! test), a plain reference checksum, mbuf helpers, and a segment checker.
#![allow(dead_code)]

use fastpath_mempool::{Batch, Mbuf, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::Pipeline;
use fastpath_pmd::{Ctx, Offloads, PortInfo};

pub use fastpath_pipeline::wire::tcp::flags::*;

pub fn pool(n: u32) -> Mempool {
    Mempool::new("lso-test", &PoolConfig { mbufs: n, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

/// A port description with the given offloads (id 0).
pub fn port(id: u16, offloads: Offloads) -> PortInfo {
    PortInfo {
        id,
        driver: "test",
        name: format!("test{id}"),
        rx_queues: 1,
        tx_queues: 1,
        offloads,
        live: None,
        max_frame: 262_144,
        mac: None,
    }
}

/// Plain one's-complement sum of big-endian 16-bit words (the reference).
pub fn ref_sum(parts: &[&[u8]]) -> u16 {
    let mut all = Vec::new();
    for p in parts {
        all.extend_from_slice(p);
    }
    let mut acc = 0u64;
    for c in all.chunks(2) {
        acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
    }
    while acc > 0xffff {
        acc = (acc & 0xffff) + (acc >> 16);
    }
    acc as u16
}

pub fn be16(d: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([d[at], d[at + 1]])
}

pub fn be32(d: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([d[at], d[at + 1], d[at + 2], d[at + 3]])
}

/// Pseudo-header bytes for the IP header at `l3` and an L4 of `len` bytes.
pub fn pseudo_bytes(f: &[u8], l3: usize, proto: u8, len: usize) -> Vec<u8> {
    let mut p = Vec::new();
    if f[l3] >> 4 == 4 {
        p.extend_from_slice(&f[l3 + 12..l3 + 20]);
        p.extend_from_slice(&[0, proto]);
        p.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        p.extend_from_slice(&f[l3 + 8..l3 + 40]);
        p.extend_from_slice(&(len as u32).to_be_bytes());
        p.extend_from_slice(&[0, 0, 0, proto]);
    }
    p
}

/// True when the L4 checksum of the packet at `l3` / `l4` (to `end`) is right.
pub fn l4_ok(f: &[u8], l3: usize, l4: usize, end: usize, proto: u8) -> bool {
    ref_sum(&[&pseudo_bytes(f, l3, proto, end - l4), &f[l4..end]]) == 0xffff
}

/// A TCP or UDP packet, built byte by byte with right lengths and checksums.
#[derive(Debug, Clone)]
pub struct Pkt {
    pub v6: bool,
    pub vlan: Option<u16>,
    /// IPv6 hop-by-hop header (8 bytes) / IPv4 options (4 bytes: NOP NOP NOP EOL).
    pub ext: bool,
    pub udp: bool,
    pub opts: Vec<u8>,
    pub flags: u8,
    pub seq: u32,
    pub ack: u32,
    pub win: u16,
    pub id: u16,
    pub df: bool,
    pub ttl: u8,
    pub tos: u8,
    pub sport: u16,
    pub dport: u16,
    pub payload: Vec<u8>,
}

impl Default for Pkt {
    fn default() -> Pkt {
        Pkt {
            v6: false,
            vlan: None,
            ext: false,
            udp: false,
            opts: Vec::new(),
            flags: ACK,
            seq: 0x1000_0000,
            ack: 0x2000_0000,
            win: 512,
            id: 0x4242,
            df: true,
            ttl: 64,
            tos: 0,
            sport: 40000,
            dport: 5201,
            payload: Vec::new(),
        }
    }
}

/// TCP options: NOP NOP timestamps(tsval, tsecr).
pub fn ts_opts(tsval: u32, tsecr: u32) -> Vec<u8> {
    let mut o = vec![1, 1, 8, 10];
    o.extend_from_slice(&tsval.to_be_bytes());
    o.extend_from_slice(&tsecr.to_be_bytes());
    o
}

/// Deterministic pseudo-random bytes.
pub fn bytes(seed: u32, n: usize) -> Vec<u8> {
    let mut x = seed | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

impl Pkt {
    pub fn l3(&self) -> usize {
        14 + if self.vlan.is_some() { 4 } else { 0 }
    }

    pub fn l3_len(&self) -> usize {
        match (self.v6, self.ext) {
            (false, false) => 20,
            (false, true) => 24,
            (true, false) => 40,
            (true, true) => 48,
        }
    }

    pub fn l4(&self) -> usize {
        self.l3() + self.l3_len()
    }

    pub fn l4_len(&self) -> usize {
        if self.udp {
            8
        } else {
            20 + self.opts.len()
        }
    }

    pub fn hdr_len(&self) -> usize {
        self.l4() + self.l4_len()
    }

    /// The frame, starting with Ethernet.
    pub fn build(&self) -> Vec<u8> {
        assert!(self.opts.len().is_multiple_of(4));
        let mut f = vec![0x02, 0, 0, 0, 0, 0x02, 0x02, 0, 0, 0, 0, 0x01];
        if let Some(t) = self.vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&t.to_be_bytes());
        }
        f.extend_from_slice(if self.v6 { &[0x86, 0xdd] } else { &[0x08, 0x00] });
        let l3 = f.len();
        let proto = if self.udp { 17u8 } else { 6 };
        let l4_total = self.l4_len() + self.payload.len();
        if self.v6 {
            f.extend_from_slice(&[0x60 | (self.tos >> 4), self.tos << 4, 0x12, 0x34]);
            let plen = l4_total + if self.ext { 8 } else { 0 };
            f.extend_from_slice(&(plen as u16).to_be_bytes());
            f.push(if self.ext { 0 } else { proto });
            f.push(self.ttl);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
            f.extend_from_slice(&[0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
            if self.ext {
                // Hop-by-hop: next header, length 0, PadN of 4.
                f.extend_from_slice(&[proto, 0, 1, 4, 0, 0, 0, 0]);
            }
        } else {
            let ihl = self.l3_len() / 4;
            f.push(0x40 | ihl as u8);
            f.push(self.tos);
            f.extend_from_slice(&((self.l3_len() + l4_total) as u16).to_be_bytes());
            f.extend_from_slice(&self.id.to_be_bytes());
            f.extend_from_slice(&if self.df { [0x40, 0] } else { [0, 0] });
            f.push(self.ttl);
            f.push(proto);
            f.extend_from_slice(&[0, 0]);
            f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
            if self.ext {
                f.extend_from_slice(&[1, 1, 1, 0]);
            }
            let c = !ref_sum(&[&f[l3..]]);
            f[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = f.len();
        f.extend_from_slice(&self.sport.to_be_bytes());
        f.extend_from_slice(&self.dport.to_be_bytes());
        if self.udp {
            f.extend_from_slice(&(l4_total as u16).to_be_bytes());
            f.extend_from_slice(&[0, 0]);
        } else {
            f.extend_from_slice(&self.seq.to_be_bytes());
            f.extend_from_slice(&self.ack.to_be_bytes());
            f.push(((self.l4_len() / 4) << 4) as u8);
            f.push(self.flags);
            f.extend_from_slice(&self.win.to_be_bytes());
            f.extend_from_slice(&[0, 0, 0, 0]);
            f.extend_from_slice(&self.opts);
        }
        f.extend_from_slice(&self.payload);
        let at = l4 + if self.udp { 6 } else { 16 };
        let mut c = !ref_sum(&[&pseudo_bytes(&f, l3, proto, l4_total), &f[l4..]]);
        if self.udp && c == 0 {
            c = 0xffff;
        }
        f[at..at + 2].copy_from_slice(&c.to_be_bytes());
        f
    }
}

/// An mbuf chain holding `bytes`, each segment as full as the pool allows (or cut at `cut`).
pub fn chain_of(pool: &Mempool, bytes: &[u8], cut: Option<usize>) -> Mbuf {
    let mut head: Option<Mbuf> = None;
    let mut rest = bytes;
    loop {
        let mut m = pool.alloc().expect("an mbuf");
        let n = rest.len().min(m.tailroom()).min(cut.unwrap_or(usize::MAX));
        m.append(n).unwrap().copy_from_slice(&rest[..n]);
        rest = &rest[n..];
        match head.as_mut() {
            None => head = Some(m),
            Some(h) => h.chain(m).unwrap(),
        }
        if rest.is_empty() {
            return head.unwrap();
        }
    }
}

/// Runs a pipeline over `input` to the end (run, then resume until it holds nothing); returns
/// every output packet in order.
pub fn run_all(p: &mut Pipeline, ctx: &mut Ctx, input: Vec<Mbuf>) -> Vec<Mbuf> {
    let mut out = Vec::new();
    let mut b = Batch::new();
    for m in input {
        b.push(m).unwrap();
    }
    p.run(&mut b, ctx);
    out.extend(b.drain_all());
    while p.resume(&mut b, ctx) {
        assert!(b.len() <= fastpath_mempool::MAX_BURST);
        out.extend(b.drain_all());
    }
    out
}

/// Frees a list of mbufs through the context.
pub fn free_all(ctx: &mut Ctx, v: Vec<Mbuf>) {
    for m in v {
        ctx.free(m);
    }
}

/// Checks TCP segments `segs` (frames) of the original `orig` cut at `mss`, with `hdr` bytes of
/// headers whose inner IP header is at `l3` and TCP at `l4`; `outer` is the outer IP offset of a
/// tunnel. Returns the reassembled payload.
pub fn check_tcp_segments(
    orig: &[u8],
    segs: &[Vec<u8>],
    l3: usize,
    l4: usize,
    mss: usize,
    outer: Option<usize>,
) -> Vec<u8> {
    let thl = (orig[l4 + 12] >> 4) as usize * 4;
    let hdr = l4 + thl;
    let v6 = orig[l3] >> 4 == 6;
    let end = if v6 { l3 + 40 + be16(orig, l3 + 4) as usize } else { l3 + be16(orig, l3 + 2) as usize };
    let total = end - hdr;
    let n = total.div_ceil(mss).max(1);
    assert_eq!(segs.len(), n, "segment count for {total} bytes at mss {mss}");
    let flags = orig[l4 + 13];
    let mut payload = Vec::new();
    for (i, s) in segs.iter().enumerate() {
        let len = if i + 1 == n { total - mss * (n - 1) } else { mss };
        assert_eq!(s.len(), hdr + len, "segment {i} length");
        // Headers equal the original's except the fields that change.
        let mut want = orig[..hdr].to_vec();
        let mut got = s[..hdr].to_vec();
        let mut mask = |at: usize, n: usize| {
            for k in at..at + n {
                want[k] = 0;
                got[k] = 0;
            }
        };
        mask(l4 + 4, 4); // seq
        mask(l4 + 13, 1); // flags
        mask(l4 + 16, 2); // checksum
        if v6 {
            mask(l3 + 4, 2);
        } else {
            mask(l3 + 2, 4); // length, id
            mask(l3 + 10, 2);
        }
        if let Some(o) = outer {
            if orig[o] >> 4 == 4 {
                mask(o + 2, 4);
                mask(o + 10, 2);
            } else {
                mask(o + 4, 2);
            }
            let ol3_len = if orig[o] >> 4 == 4 { (orig[o] & 15) as usize * 4 } else { 40 };
            let proto = if orig[o] >> 4 == 4 { orig[o + 9] } else { orig[o + 6] };
            if proto == 17 {
                mask(o + ol3_len + 4, 4);
            }
        }
        assert_eq!(got, want, "segment {i}: unchanged header bytes");
        // Sequence, flags.
        assert_eq!(be32(s, l4 + 4), be32(orig, l4 + 4).wrapping_add((i * mss) as u32), "seq of {i}");
        let mut fl = flags;
        if i > 0 {
            fl &= !CWR;
        }
        if i + 1 < n {
            fl &= !(FIN | PSH);
        }
        assert_eq!(s[l4 + 13], fl, "flags of {i}");
        // IP lengths, ID, checksums.
        if v6 {
            assert_eq!(be16(s, l3 + 4) as usize, s.len() - l3 - 40, "ipv6 payload length of {i}");
        } else {
            assert_eq!(be16(s, l3 + 2) as usize, s.len() - l3, "ipv4 total length of {i}");
            assert_eq!(be16(s, l3 + 4), be16(orig, l3 + 4).wrapping_add(i as u16), "ipv4 id of {i}");
            let ihl = (s[l3] & 15) as usize * 4;
            assert_eq!(ref_sum(&[&s[l3..l3 + ihl]]), 0xffff, "ipv4 checksum of {i}");
        }
        assert!(l4_ok(s, l3, l4, s.len(), 6), "tcp checksum of {i}");
        if let Some(o) = outer {
            let v4 = s[o] >> 4 == 4;
            let ol3_len = if v4 { (s[o] & 15) as usize * 4 } else { 40 };
            if v4 {
                assert_eq!(be16(s, o + 2) as usize, s.len() - o, "outer total length of {i}");
                assert_eq!(be16(s, o + 4), be16(orig, o + 4).wrapping_add(i as u16), "outer id of {i}");
                assert_eq!(ref_sum(&[&s[o..o + ol3_len]]), 0xffff, "outer ipv4 checksum of {i}");
            } else {
                assert_eq!(be16(s, o + 4) as usize, s.len() - o - 40, "outer payload length of {i}");
            }
            let proto = if v4 { s[o + 9] } else { s[o + 6] };
            if proto == 17 {
                let ol4 = o + ol3_len;
                assert_eq!(be16(s, ol4 + 4) as usize, s.len() - ol4, "outer udp length of {i}");
                assert_eq!(be16(s, ol4), be16(orig, ol4), "outer source port kept");
                if be16(orig, ol4 + 6) != 0 {
                    assert!(l4_ok(s, o, ol4, s.len(), 17), "outer udp checksum of {i}");
                } else {
                    assert_eq!(be16(s, ol4 + 6), 0, "no outer udp checksum stays none");
                }
            }
        }
        payload.extend_from_slice(&s[hdr..]);
    }
    assert_eq!(payload, orig[hdr..end], "payload reassembles exactly");
    payload
}
