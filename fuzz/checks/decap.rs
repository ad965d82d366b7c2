//! The decap stages (and encap, on what decap let through) on arbitrary packets, split into a
//! chain at the first byte's position: never a panic, every mbuf back in the pool.
//!
//! Shared by the cargo-fuzz target `fuzz/fuzz_targets/decap.rs` and the stable test
//! `pipeline/tests/fuzz_corpus.rs` (the seed corpus plus generated inputs, in CI).

use std::sync::OnceLock;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pipeline::{make_stage, BuildEnv};
use fastpath_pmd::Ctx;

fn pool() -> &'static Mempool {
    static P: OnceLock<Mempool> = OnceLock::new();
    P.get_or_init(|| {
        Mempool::new("fuzz", &PoolConfig { mbufs: 256, chunk_size: 2048, pages: PagePolicy::Auto }).unwrap()
    })
}

const STAGES: &[&str] = &[
    "vxlan-decap",
    "geneve-decap,option=0x0102:0x80",
    "nvgre-decap",
    "vxlan-encap,vni=1,local=10.0.0.1,remote=10.0.0.2,udp-csum=on",
    "nvgre-encap,vni=1,local=2001:db8::1,remote=2001:db8::2",
];

/// Checks one input; panics on a violation.
pub fn run(b: &[u8]) {
    if b.len() > 3000 {
        return;
    }
    let p = pool();
    let env = BuildEnv { pool: p.clone(), ports: vec![] };
    let mut ctx = Ctx::new(0, p);
    let cut = b.first().map_or(0, |&c| c as usize * 4).min(b.len());
    for spec in STAGES {
        let mut s = make_stage(spec, &env).unwrap();
        let mut m = p.alloc().unwrap();
        let first = cut.min(m.tailroom());
        m.append(first).unwrap().copy_from_slice(&b[..first]);
        let mut rest = &b[first..];
        while !rest.is_empty() {
            let mut seg = p.alloc().unwrap();
            let n = rest.len().min(seg.tailroom());
            seg.append(n).unwrap().copy_from_slice(&rest[..n]);
            m.chain(seg).unwrap();
            rest = &rest[n..];
        }
        let mut batch = Batch::new();
        batch.push(m).unwrap();
        s.process(&mut batch, &mut ctx);
        ctx.free_batch(&mut batch);
    }
    drop(ctx);
    assert_eq!(p.available(), p.capacity());
}
