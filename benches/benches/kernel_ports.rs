//! The pure parts of the kernel-facing drivers' fast paths: the TAP port's virtio-net header
//! mapping (transmit plan and patches for a TSO frame, plain and behind VXLAN, receive mapping of a GSO frame), and the
//! AF_XDP queues' record of chunks held by the kernel (insert on post, remove on return).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fastpath_mempool::offload::*;
use fastpath_mempool::{Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::af_xdp::xsk::ChunkSet;
use fastpath_pmd::drivers::tap::vnet::{self, VirtioNetHdr};

fn vnet_hdr(c: &mut Criterion) {
    let pool = Mempool::new("bench", &PoolConfig { mbufs: 64, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap();
    let mut m = pool.alloc().unwrap();
    let f = m.append(1514).unwrap();
    f[12] = 0x08;
    f[14] = 0x45;
    f[23] = 6;
    f[46] = 0x50;
    m.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG);
    m.set_l2_len(14);
    m.set_l3_len(20);
    m.set_l4_len(20);
    m.set_tso_segsz(1448);
    let mut g = c.benchmark_group("tap_vnet");
    g.throughput(Throughput::Elements(1));
    g.bench_function("tx_plan_and_patch_tso", |b| {
        let mut head = [0u8; vnet::PATCH_MAX];
        b.iter(|| {
            let p = vnet::tx_plan(&m, true).unwrap();
            head[..p.patch_len].copy_from_slice(&m.data()[..p.patch_len]);
            vnet::apply_patches(&p, &mut head[..p.patch_len]);
            p.emit(vnet::TNL_HDR_LEN)
        })
    });
    // The same inner frame behind VXLAN over IPv4 (50 bytes of outer headers), as a vswitch's
    // encap leaves it for a TAP uplink that takes tunnel GSO.
    let mut t = pool.alloc().unwrap();
    let f = t.append(1564).unwrap();
    f[12] = 0x08;
    f[14] = 0x45;
    f[23] = 17;
    f[36..38].copy_from_slice(&4789u16.to_be_bytes());
    f[50 + 12] = 0x08;
    f[50 + 14] = 0x45;
    f[50 + 23] = 6;
    f[50 + 46] = 0x50;
    t.set_ol_flags(TX_IPV4 | TX_IP_CKSUM | TX_TCP_SEG | TX_TUNNEL_VXLAN | TX_OUTER_IPV4 | TX_OUTER_IP_CKSUM);
    t.set_outer_l2_len(14);
    t.set_outer_l3_len(20);
    t.set_l2_len(30);
    t.set_l3_len(20);
    t.set_l4_len(20);
    t.set_tso_segsz(1398);
    g.bench_function("tx_plan_and_patch_vxlan_tso", |b| {
        let mut head = [0u8; vnet::PATCH_MAX];
        b.iter(|| {
            let p = vnet::tx_plan(&t, true).unwrap();
            head[..p.patch_len].copy_from_slice(&t.data()[..p.patch_len]);
            vnet::apply_patches(&p, &mut head[..p.patch_len]);
            p.emit(vnet::TNL_HDR_LEN)
        })
    });
    let h = VirtioNetHdr {
        flags: vnet::F_NEEDS_CSUM,
        gso_type: vnet::GSO_TCPV4,
        hdr_len: 54,
        gso_size: 1448,
        csum_start: 34,
        csum_offset: 16,
        num_buffers: 0,
    };
    g.bench_function("rx_apply_gso", |b| {
        b.iter(|| {
            m.set_ol_flags(0);
            vnet::apply_rx(&h, &mut m).unwrap();
            m.ol_flags()
        })
    });
    g.finish();
}

fn chunk_set(c: &mut Criterion) {
    let mut s = ChunkSet::new(16384);
    let mut g = c.benchmark_group("af_xdp_chunks");
    g.throughput(Throughput::Elements(32));
    let mut base = 0usize;
    g.bench_function("insert_remove_32", |b| {
        b.iter(|| {
            for i in 0..32 {
                s.insert((base + i * 97) % 16384);
            }
            for i in 0..32 {
                s.remove((base + i * 97) % 16384);
            }
            base = (base + 31) % 16384;
            s.len()
        })
    });
    g.finish();
}

criterion_group!(benches, vnet_hdr, chunk_set);
criterion_main!(benches);
