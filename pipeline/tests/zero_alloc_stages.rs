//! The tunnel, checksum and ptype stages allocate nothing per packet: checked with a counting
//! global allocator that counts per thread (the test harness's own threads may allocate while
//! the test runs; only the test thread's allocations are the stages').

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{make_stage, BuildEnv};
use fastpath_pmd::testutil::CountingAlloc;
use fastpath_pmd::Ctx;

#[global_allocator]
static ALLOCS: CountingAlloc = CountingAlloc::new();

fn allocs() -> u64 {
    ALLOCS.thread_count()
}

#[test]
fn stages_allocate_nothing_per_packet() {
    let pool = Mempool::new("za", &PoolConfig { mbufs: 1024, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let env = BuildEnv { pool: pool.clone(), ports: vec![] };
    let pipelines: &[&[&str]] = &[
        &["vxlan-encap,vni=1,local=10.0.0.1,remote=10.0.0.2,udp-csum=on", "checksum", "vxlan-decap,vni=1", "ptype"],
        &[
            "geneve-encap,vni=2,local=2001:db8::1,remote=2001:db8::2,option=0x0102:0x80:00000001",
            "geneve-decap,option=0x0102:0x80",
        ],
        &["nvgre-encap,vni=3,local=10.0.0.1,remote=10.0.0.2", "checksum,mode=fill", "nvgre-decap,vni=3"],
        // Drops too: decap of plain frames.
        &["vxlan-decap", "checksum,mode=offload"],
    ];
    let frame = {
        let mut f = vec![0u8; 100];
        f[12] = 0x08;
        f[14] = 0x45;
        f[17] = 86;
        f[22] = 64;
        f[23] = 17;
        f[39] = 66;
        f
    };
    for specs in pipelines {
        let mut stages: Vec<_> = specs.iter().map(|s| make_stage(s, &env).unwrap()).collect();
        let mut ctx = Ctx::new(0, &pool);
        let mut batch = Batch::new();
        let mut run = |ctx: &mut Ctx, batch: &mut Batch| {
            for _ in 0..32 {
                let mut m = ctx.cache(&pool).alloc().unwrap();
                assert!(m.set_len(frame.len()));
                m.data_mut().copy_from_slice(&frame);
                batch.push(m).unwrap();
            }
            for s in stages.iter_mut() {
                s.process(batch, ctx);
            }
            ctx.free_batch(batch);
        };
        for _ in 0..100 {
            run(&mut ctx, &mut batch);
        }
        let before = allocs();
        for _ in 0..10_000 {
            run(&mut ctx, &mut batch);
        }
        assert_eq!(allocs() - before, 0, "{specs:?} allocated");
        drop(ctx);
    }
    assert_eq!(pool.available(), pool.capacity());
}
