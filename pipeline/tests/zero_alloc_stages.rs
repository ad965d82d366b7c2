//! The tunnel, checksum and ptype stages and the switch (also while it traces) allocate nothing
//! per packet: checked with a counting global allocator that counts per thread (the test
//! harness's own threads may allocate while the test runs; only the test thread's allocations are
//! the stages').

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

#[test]
fn switch_allocates_nothing_per_packet() {
    use fastpath_pipeline::switch::{
        build, BridgeConfig, ConntrackSettings, Direction, PortConfig, PortGroups, PortRole, SecurityGroup, SgRule,
        StaticNeighbour, SwitchConfig, TunnelKind,
    };
    use fastpath_pmd::{Offloads, PortInfo, Processor};
    let info = |id: u16, mac: Option<[u8; 6]>| PortInfo {
        id,
        driver: "test",
        name: format!("p{id}"),
        rx_queues: 1,
        tx_queues: 1,
        offloads: Offloads::NONE,
        live: None,
        max_frame: 1514,
        mac,
    };
    let port = |id: u16, role, bridge: Option<&str>, vlan| PortConfig {
        name: format!("p{id}"),
        port: info(id, (role == PortRole::Uplink).then_some([2, 0, 0, 0, 0, 1])),
        role,
        bridge: bridge.map(Into::into),
        vlan,
    };
    let cfg = SwitchConfig {
        bridges: vec![
            BridgeConfig {
                name: "t".into(),
                vni: Some(100),
                tunnel: TunnelKind::Vxlan,
                local: Some("10.0.0.1".parse().unwrap()),
                remotes: vec!["10.0.0.2".parse().unwrap(), "10.0.0.3".parse().unwrap()],
                vlan: Some(30),
                udp_port: None,
            },
            BridgeConfig { name: "v".into(), ..Default::default() },
        ],
        ports: vec![
            port(0, PortRole::Uplink, None, None),
            port(1, PortRole::Access, Some("t"), None),
            port(2, PortRole::Access, Some("t"), None),
            port(3, PortRole::Access, Some("v"), Some(10)),
        ],
        neighbours: vec![StaticNeighbour { addr: "10.0.0.2".parse().unwrap(), mac: [2, 0, 0, 0, 0, 2] }],
        // Security groups on two ports: every packet between them is tracked.
        security_groups: vec![SecurityGroup {
            name: "all".into(),
            rules: vec![
                SgRule { direction: Direction::Egress, ..Default::default() },
                SgRule { direction: Direction::Ingress, ..Default::default() },
            ],
        }],
        port_groups: ["p1", "p2"].map(|p| PortGroups { port: p.into(), groups: vec!["all".into()] }).to_vec(),
        conntrack: ConntrackSettings { capacity: 1024, zone_limit: 0 },
        ..Default::default()
    };
    let pool = Mempool::new("za-sw", &PoolConfig { mbufs: 2048, chunk_size: 2048, pages: PagePolicy::Small }).unwrap();
    let (mut control, mut procs) = build(&cfg, &pool, 1).unwrap();
    let mut p = procs.pop().unwrap();
    let mut ctx = Ctx::new(0, &pool);
    let frame = |dst: [u8; 6], src: [u8; 6]| {
        let mut f = vec![0u8; 64];
        f[..6].copy_from_slice(&dst);
        f[6..12].copy_from_slice(&src);
        f[12] = 0x08;
        f[14] = 0x45;
        f
    };
    // Known unicast, broadcast (clones, encap onto clones, VLAN onto clones), unknown unicast
    // to an unresolved VTEP (a solicitation), a VLAN frame, a runt.
    let inputs: Vec<(u16, Vec<u8>)> = vec![
        (1, frame([2, 0, 0, 0, 1, 2], [2, 0, 0, 0, 1, 1])),
        (2, frame([2, 0, 0, 0, 1, 1], [2, 0, 0, 0, 1, 2])),
        (1, frame([0xff; 6], [2, 0, 0, 0, 1, 1])),
        (3, frame([0xff; 6], [2, 0, 0, 0, 1, 3])),
        (0, {
            let f = frame([0xff; 6], [2, 0, 0, 0, 1, 4]);
            let mut t = f[..12].to_vec();
            t.extend_from_slice(&[0x81, 0, 0, 30]);
            t.extend_from_slice(&f[12..]);
            t
        }),
        (1, vec![0u8; 8]),
    ];
    let mut batch = Batch::new();
    let run = |ctx: &mut Ctx, batch: &mut Batch, p: &mut dyn Processor| {
        for _ in 0..4 {
            for (port, f) in &inputs {
                let mut m = ctx.cache(&pool).alloc().unwrap();
                assert!(m.set_len(f.len()));
                m.data_mut().copy_from_slice(f);
                m.set_port(*port);
                batch.push(m).unwrap();
            }
        }
        p.process(batch, ctx);
        ctx.free_batch(batch);
        while p.resume(batch, ctx) {
            ctx.free_batch(batch);
        }
    };
    for _ in 0..100 {
        run(&mut ctx, &mut batch, &mut p);
        control.poll();
    }
    let before = allocs();
    for _ in 0..10_000 {
        run(&mut ctx, &mut batch, &mut p);
    }
    assert_eq!(allocs() - before, 0, "the switch allocated");
    // Nor while it traces: the records were made when it was built.
    control.trace_add(1, 1000).unwrap();
    let before = allocs();
    for _ in 0..200 {
        run(&mut ctx, &mut batch, &mut p);
    }
    assert_eq!(allocs() - before, 0, "the switch allocated while tracing");
    let t = control.trace_show();
    assert_eq!((t.packets.len(), t.left, t.lost), (1000, 0, 0));
    assert!(t.packets.iter().all(|x| x.port == "p1" && x.passes[0].pass == "ingress"));
    assert!(control.stats().bridges[0].flooded > 0);
    assert!(control.stats().conntrack.is_some_and(|c| c.entries > 0), "the security groups tracked");
    drop(p);
    drop(ctx);
    assert_eq!(pool.available(), pool.capacity());
}
