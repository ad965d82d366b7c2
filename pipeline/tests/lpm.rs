//! The LPM tables against a naive linear reference (random route sets with overlaps, /0, /32,
//! /128, adds, replaces and deletes), and lookups racing updates.

use std::cell::RefCell;
use std::net::{Ipv4Addr, Ipv6Addr};

use fastpath_pipeline::lpm::{Error, Lpm4, Lpm6, LpmConfig, MISS};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

/// The reference: every route in a list; the longest that matches wins.
#[derive(Default)]
struct Naive {
    routes: Vec<(u128, u8, u16)>,
    width: u32,
}

fn mask(p: u128, len: u8, width: u32) -> u128 {
    if len == 0 {
        0
    } else {
        let m = (!0u128 << (width - len as u32)) & (!0u128 >> (128 - width));
        p & m
    }
}

impl Naive {
    fn new(width: u32) -> Naive {
        Naive { routes: Vec::new(), width }
    }
    fn add(&mut self, p: u128, len: u8, nh: u16) {
        let p = mask(p, len, self.width);
        self.routes.retain(|r| (r.0, r.1) != (p, len));
        self.routes.push((p, len, nh));
    }
    fn delete(&mut self, p: u128, len: u8) -> bool {
        let p = mask(p, len, self.width);
        let n = self.routes.len();
        self.routes.retain(|r| (r.0, r.1) != (p, len));
        n != self.routes.len()
    }
    fn lookup(&self, a: u128) -> u16 {
        self.routes.iter().filter(|r| mask(a, r.1, self.width) == r.0).max_by_key(|r| r.1).map_or(MISS, |r| r.2)
    }
}

#[derive(Debug, Clone)]
enum Op {
    Add {
        base: usize,
        flip: u128,
        len: u8,
        nh: u16,
    },
    /// A prefix and its sibling with the same next hop (a group whose entries are all alike).
    Pair {
        base: usize,
        flip: u128,
        len: u8,
        nh: u16,
    },
    Delete {
        base: usize,
        flip: u128,
        len: u8,
    },
}

/// Prefixes near a few base addresses (so they overlap and nest), with lengths that stress the
/// level boundaries, /0 and the full width.
fn ops(width: u32, special: &'static [u8]) -> impl Strategy<Value = (Vec<u128>, Vec<Op>, Vec<u128>)> {
    let any_addr = move || any::<u128>().prop_map(move |a| a >> (128 - width));
    let len = move || prop_oneof![3 => proptest::sample::select(special), 2 => 0..=width as u8];
    let flip = move || (0..width).prop_flat_map(move |k| any::<u128>().prop_map(move |x| (x >> (128 - width)) >> k));
    let op = prop_oneof![
        3 => (0..4usize, flip(), len(), 0..12u16).prop_map(|(base, flip, len, nh)| Op::Add { base, flip, len, nh }),
        1 => (0..4usize, flip(), len(), 0..12u16).prop_map(|(base, flip, len, nh)| Op::Pair { base, flip, len, nh }),
        1 => (0..4usize, flip(), len()).prop_map(|(base, flip, len)| Op::Delete { base, flip, len }),
    ];
    (
        proptest::collection::vec(any_addr(), 4),
        proptest::collection::vec(op, 1..120),
        proptest::collection::vec((0..5usize, flip()), 64),
    )
        .prop_map(|(bases, ops, probes)| {
            let addrs = probes.iter().map(|&(b, f)| if b < 4 { bases[b] ^ f } else { f }).collect();
            (bases, ops, addrs)
        })
}

/// What both families share: apply ops to table and reference, compare, then delete all and
/// check the table is back to empty with every group returned.
trait Table {
    fn add(&mut self, p: u128, len: u8, nh: u16) -> Result<(), Error>;
    fn delete(&mut self, p: u128, len: u8) -> bool;
    fn lookup_ctl(&self, a: u128) -> u16;
    fn lookup_bulk(&mut self, a: &[u128]) -> Vec<u16>;
    fn len(&self) -> usize;
    fn groups_used(&self) -> u32;
    fn routes(&self) -> Vec<(u128, u8, u16)>;
}

struct T4(Lpm4, fastpath_pipeline::lpm::Lpm4Reader);
struct T6(Lpm6, fastpath_pipeline::lpm::Lpm6Reader);

impl Table for T4 {
    fn add(&mut self, p: u128, len: u8, nh: u16) -> Result<(), Error> {
        self.0.add(Ipv4Addr::from(p as u32), len, nh)
    }
    fn delete(&mut self, p: u128, len: u8) -> bool {
        self.0.delete(Ipv4Addr::from(p as u32), len)
    }
    fn lookup_ctl(&self, a: u128) -> u16 {
        self.0.lookup(Ipv4Addr::from(a as u32)).unwrap_or(MISS)
    }
    fn lookup_bulk(&mut self, a: &[u128]) -> Vec<u16> {
        let v: Vec<u32> = a.iter().map(|&x| x as u32).collect();
        let mut h = vec![0xdead; v.len()];
        self.1.lookup_bulk(&v, &mut h);
        h
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn groups_used(&self) -> u32 {
        self.0.stats().groups_used
    }
    fn routes(&self) -> Vec<(u128, u8, u16)> {
        self.0.routes().into_iter().map(|(p, l, nh)| (u32::from(p) as u128, l, nh)).collect()
    }
}

impl Table for T6 {
    fn add(&mut self, p: u128, len: u8, nh: u16) -> Result<(), Error> {
        self.0.add(Ipv6Addr::from(p), len, nh)
    }
    fn delete(&mut self, p: u128, len: u8) -> bool {
        self.0.delete(Ipv6Addr::from(p), len)
    }
    fn lookup_ctl(&self, a: u128) -> u16 {
        self.0.lookup(Ipv6Addr::from(a)).unwrap_or(MISS)
    }
    fn lookup_bulk(&mut self, a: &[u128]) -> Vec<u16> {
        let mut h = vec![0xdead; a.len()];
        self.1.lookup_bulk(a, &mut h);
        h
    }
    fn len(&self) -> usize {
        self.0.len()
    }
    fn groups_used(&self) -> u32 {
        self.0.stats().groups_used
    }
    fn routes(&self) -> Vec<(u128, u8, u16)> {
        self.0.routes().into_iter().map(|(p, l, nh)| (u128::from(p), l, nh)).collect()
    }
}

fn run_case(t: &mut dyn Table, width: u32, bases: &[u128], ops: &[Op], addrs: &[u128]) -> Result<(), TestCaseError> {
    let mut naive = Naive::new(width);
    for op in ops {
        match *op {
            Op::Add { base, flip, len, nh } => {
                let p = bases[base] ^ flip;
                match t.add(p, len, nh) {
                    Ok(()) => naive.add(p, len, nh),
                    Err(Error::Full { .. }) => {}
                    Err(e) => return Err(TestCaseError::fail(format!("add: {e}"))),
                }
            }
            Op::Pair { base, flip, len, nh } if len > 0 => {
                let p = bases[base] ^ flip;
                let sibling = p ^ (1u128 << (width - len as u32));
                for q in [p, sibling] {
                    match t.add(q, len, nh) {
                        Ok(()) => naive.add(q, len, nh),
                        Err(Error::Full { .. }) => {}
                        Err(e) => return Err(TestCaseError::fail(format!("add: {e}"))),
                    }
                }
            }
            Op::Pair { .. } => {}
            Op::Delete { base, flip, len } => {
                let p = bases[base] ^ flip;
                prop_assert_eq!(t.delete(p, len), naive.delete(p, len));
            }
        }
    }
    prop_assert_eq!(t.len(), naive.routes.len());
    // Probe the given addresses and both ends of every route.
    let mut probe: Vec<u128> = addrs.to_vec();
    let top = if width == 128 { u128::MAX } else { (1u128 << width) - 1 };
    for r in &naive.routes {
        probe.push(r.0);
        let host = if r.1 as u32 == width { 0 } else { top >> r.1 };
        probe.push(r.0 | host);
    }
    let bulk = t.lookup_bulk(&probe);
    for (a, b) in probe.iter().zip(&bulk) {
        let want = naive.lookup(*a);
        prop_assert_eq!(t.lookup_ctl(*a), want, "control lookup of {:#x}", a);
        prop_assert_eq!(*b, want, "bulk lookup of {:#x}", a);
    }
    // Delete everything: the table must be empty again, every group folded and returned.
    for (p, l, _) in t.routes() {
        prop_assert!(t.delete(p, l));
    }
    prop_assert_eq!(t.len(), 0);
    prop_assert_eq!(t.groups_used(), 0, "groups left after deleting every route");
    prop_assert_eq!(t.lookup_bulk(&probe).iter().filter(|&&h| h != MISS).count(), 0);
    Ok(())
}

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config { cases, failure_persistence: None, ..Config::default() })
}

#[test]
fn ipv4_matches_the_linear_reference() {
    // One table for every case (a first level is 32 MiB): each case ends by deleting all.
    for max_groups in [4096, 6] {
        let lpm = Lpm4::new(&LpmConfig { max_groups }).unwrap();
        let r = lpm.reader();
        let t = RefCell::new(T4(lpm, r));
        runner(48)
            .run(&ops(32, &[0, 1, 8, 16, 23, 24, 25, 31, 32]), |(bases, ops, addrs)| {
                run_case(&mut *t.borrow_mut(), 32, &bases, &ops, &addrs)
            })
            .unwrap();
    }
}

#[test]
fn ipv6_matches_the_linear_reference() {
    for max_groups in [4096, 12] {
        let lpm = Lpm6::new(&LpmConfig { max_groups }).unwrap();
        let r = lpm.reader();
        let t = RefCell::new(T6(lpm, r));
        runner(64)
            .run(&ops(128, &[0, 1, 15, 16, 17, 24, 48, 64, 65, 120, 127, 128]), |(bases, ops, addrs)| {
                run_case(&mut *t.borrow_mut(), 128, &bases, &ops, &addrs)
            })
            .unwrap();
    }
}

#[test]
fn bad_input_is_refused() {
    let mut l4 = Lpm4::new(&LpmConfig { max_groups: 1 }).unwrap();
    assert!(matches!(l4.add(Ipv4Addr::UNSPECIFIED, 33, 1), Err(Error::Length { len: 33, max: 32 })));
    assert!(matches!(l4.add(Ipv4Addr::UNSPECIFIED, 8, MISS), Err(Error::NextHop(MISS))));
    l4.add(Ipv4Addr::new(10, 0, 0, 0), 25, 1).unwrap();
    l4.add(Ipv4Addr::new(10, 0, 0, 128), 26, 2).unwrap(); // same /24: same group
    let e = l4.add(Ipv4Addr::new(10, 0, 1, 0), 25, 3).unwrap_err();
    assert!(matches!(e, Error::Full { max_groups: 1 }), "{e}");
    assert!(e.to_string().contains("max_groups"), "{e}");
    assert_eq!(l4.lookup(Ipv4Addr::new(10, 0, 1, 1)), None, "a refused route left nothing behind");
    assert!(!l4.delete(Ipv4Addr::new(10, 0, 1, 0), 25));
    assert!(l4.delete(Ipv4Addr::new(10, 0, 0, 0), 25));
    assert!(l4.delete(Ipv4Addr::new(10, 0, 0, 128), 26));
    l4.add(Ipv4Addr::new(10, 0, 1, 0), 25, 3).unwrap();
    let s = l4.stats();
    assert_eq!((s.routes, s.groups_used, s.groups_max), (1, 1, 1));
    assert!(s.table_bytes >= (1 << 24) * 2, "{s:?}");
    let mut l6 = Lpm6::new(&LpmConfig::default()).unwrap();
    assert!(matches!(l6.add(Ipv6Addr::UNSPECIFIED, 129, 1), Err(Error::Length { len: 129, max: 128 })));
    l6.add("2001:db8::".parse().unwrap(), 32, 7).unwrap();
    assert_eq!(l6.get("2001:db8:ffff::".parse().unwrap(), 32), Some(7), "host bits are ignored");
    assert_eq!(l6.routes(), vec![("2001:db8::".parse().unwrap(), 32, 7)]);
}

/// Readers look up without pause while the writer adds, changes and deletes routes that make
/// and fold groups (few groups, so folded ones are reused elsewhere at once): every answer must
/// be one that the route set had at some point for that address.
#[test]
fn lookups_racing_updates_see_old_or_new_routes_only() {
    let _cpus = fastpath_pmd::testutil::pollers();
    let mut lpm = Lpm4::new(&LpmConfig { max_groups: 4 }).unwrap();
    lpm.add(Ipv4Addr::new(10, 0, 0, 0), 8, 1).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let started = std::sync::Barrier::new(3);
    let addr = |x: u32, host: u32| u32::from(Ipv4Addr::new(10, 1, x as u8, host as u8));
    std::thread::scope(|s| {
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let mut r = lpm.reader();
                let (stop, started) = (&stop, &started);
                s.spawn(move || {
                    let probes: Vec<u32> = (0..32).flat_map(|x| [addr(x, 1), addr(x, 200)]).collect();
                    let mut hops = vec![0u16; probes.len()];
                    let mut rounds = 0u64;
                    loop {
                        r.lookup_bulk(&probes, &mut hops);
                        for (i, &h) in hops.iter().enumerate() {
                            let x = (i / 2) as u16;
                            let ok = match i % 2 {
                                0 => [1, 2, 3, 100 + x].contains(&h),
                                _ => [1, 2, 3].contains(&h),
                            };
                            assert!(ok, "10.1.{x}.{}: next hop {h}", if i % 2 == 0 { 1 } else { 200 });
                        }
                        rounds += 1;
                        if rounds == 1 {
                            started.wait();
                        }
                        // Relaxed: a stop request only.
                        if stop.load(std::sync::atomic::Ordering::Relaxed) {
                            return rounds;
                        }
                    }
                })
            })
            .collect();
        started.wait();
        for round in 0..2000u32 {
            let x = round % 32;
            lpm.add(Ipv4Addr::new(10, 1, 0, 0), 16, 2 + (round % 2) as u16).unwrap();
            // A /25 opens a group; when all 4 are in use, the oldest is deleted (folded).
            if round >= 4 {
                assert!(lpm.delete(Ipv4Addr::new(10, 1, ((round - 4) % 32) as u8, 0), 25));
            }
            lpm.add(Ipv4Addr::new(10, 1, x as u8, 0), 25, 100 + x as u16).unwrap();
            if round % 3 == 0 {
                assert!(lpm.delete(Ipv4Addr::new(10, 1, 0, 0), 16));
            }
        }
        // Relaxed: see above.
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            assert!(r.join().expect("a reader saw a wrong next hop") > 0);
        }
    });
    assert!(lpm.stats().groups_used <= 4);
}
