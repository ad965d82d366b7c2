//! `lso`, `gro` and `tx-offload` allocate nothing per packet, including when they hand out more
//! output than they were given (`resume`): checked with a counting global allocator (one test in
//! this binary, so that nothing else allocates while it counts).

use fastpath_benches::{gro_flow, tcp4_frame};
use fastpath_mempool::{Batch, Mbuf, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{make_stage, BuildEnv, Pipeline};
use fastpath_pmd::testutil::CountingAlloc;
use fastpath_pmd::{Ctx, Offloads, PortInfo};

#[global_allocator]
static ALLOCS: CountingAlloc = CountingAlloc::new();

fn port(offloads: Offloads) -> PortInfo {
    PortInfo {
        id: 0,
        driver: "t",
        name: String::new(),
        rx_queues: 1,
        tx_queues: 1,
        offloads,
        live: None,
        max_frame: 0,
        mac: None,
    }
}

/// `f` as a chain from the cache (no heap: built from the back, segment by segment).
fn chain(ctx: &mut Ctx, pool: &Mempool, f: &[u8]) -> Mbuf {
    let cache = ctx.cache(pool);
    let room = pool.data_room();
    let mut tail: Option<Mbuf> = None;
    let segs = f.len().div_ceil(room);
    for j in (0..segs).rev() {
        let mut m = cache.alloc().expect("an mbuf");
        let part = &f[j * room..f.len().min((j + 1) * room)];
        m.append(part.len()).unwrap().copy_from_slice(part);
        if let Some(t) = tail.take() {
            m.chain(t).unwrap();
        }
        tail = Some(m);
    }
    let mut m = tail.unwrap();
    m.set_out_port(0);
    m
}

#[test]
fn segmentation_and_merging_allocate_nothing() {
    let pool = Mempool::new("za", &PoolConfig { mbufs: 8192, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let big = tcp4_frame(60_000, 1, 1, true);
    let flow = gro_flow(32);
    let tso = Offloads::TX_MULTI_SEGS | Offloads::TX_TCP_TSO | Offloads::TX_TCP_CKSUM | Offloads::TX_IPV4_CKSUM;
    let cases: &[(&str, Offloads, &[&str], bool)] = &[
        ("lso copy", Offloads::NONE, &["lso,mss=1448"], true),
        ("lso chain", Offloads::TX_MULTI_SEGS, &["lso,mss=1448"], true),
        (
            "vxlan + lso",
            Offloads::TX_MULTI_SEGS,
            &["vxlan-encap,vni=1,local=10.0.0.1,remote=10.0.0.2", "lso,mss=1400"],
            true,
        ),
        ("gro to a TSO port", tso, &["gro"], false),
        // GRO's TSO packet cut again by the fallback for a port without TSO.
        ("gro + tx-offload", Offloads::NONE, &["gro", "tx-offload"], false),
    ];
    for &(what, caps, specs, lso) in cases {
        let env = BuildEnv { pool: pool.clone(), ports: vec![port(caps)] };
        let mut p = Pipeline::new(specs.iter().map(|s| make_stage(s, &env).unwrap()).collect());
        let mut ctx = Ctx::new(0, &pool);
        let mut b = Batch::new();
        let mut run = |ctx: &mut Ctx, b: &mut Batch| {
            if lso {
                for _ in 0..8 {
                    b.push(chain(ctx, &pool, &big)).unwrap();
                }
            } else {
                for f in flow.iter() {
                    b.push(chain(ctx, &pool, f)).unwrap();
                }
            }
            p.run(b, ctx);
            let mut out = b.len();
            ctx.free_batch(b);
            while p.resume(b, ctx) {
                out += b.len();
                ctx.free_batch(b);
            }
            out
        };
        for _ in 0..20 {
            run(&mut ctx, &mut b);
        }
        let before = ALLOCS.count();
        let mut out = 0;
        for _ in 0..500 {
            out += run(&mut ctx, &mut b);
        }
        assert_eq!(ALLOCS.count() - before, 0, "{what} allocated");
        assert!(out >= 500, "{what}: output");
        drop(ctx);
    }
    assert_eq!(pool.available(), pool.capacity());
}
