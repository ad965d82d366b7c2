//! Every cargo-fuzz target (`fuzz/`) as an ordinary test on the stable toolchain, so that CI
//! catches a parser panic: each check runs over its seed corpus (`fuzz/seeds/<target>/`), over
//! mutations of the seeds (bytes overwritten, inserted, cut) and over arbitrary bytes, a bounded
//! number of cases each (`FASTPATH_FUZZ_CASES`, default 20 000). Long runs stay with cargo fuzz:
//! `cargo +nightly fuzz run <target>` in `fuzz/` (see the README).

use std::path::PathBuf;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

#[path = "../../fuzz/checks/checksum.rs"]
mod checksum;
#[path = "../../fuzz/checks/decap.rs"]
mod decap;
#[path = "../../fuzz/checks/geneve_options.rs"]
mod geneve_options;
#[path = "../../fuzz/checks/ipv6_ext.rs"]
mod ipv6_ext;
#[path = "../../fuzz/checks/ptype.rs"]
mod ptype;
#[path = "../../fuzz/checks/wire_views.rs"]
mod wire_views;

/// The seed corpus of `target` (it must exist and not be empty: a lost corpus fails the test).
fn seeds(target: &str) -> Vec<Vec<u8>> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds").join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("corpus entry").path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let v: Vec<Vec<u8>> = files.iter().map(|p| std::fs::read(p).expect("seed")).collect();
    assert!(!v.is_empty(), "{}: no seeds", dir.display());
    v
}

fn cases() -> u32 {
    std::env::var("FASTPATH_FUZZ_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
}

/// An edit of a seed: overwrite, insert or cut at a position (taken modulo the length).
#[derive(Debug, Clone)]
enum Edit {
    Set(usize, u8),
    Insert(usize, u8),
    Cut(usize),
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
        any::<usize>().prop_map(Edit::Cut),
    ]
}

fn apply(seed: &[u8], edits: &[Edit]) -> Vec<u8> {
    let mut v = seed.to_vec();
    for e in edits {
        match *e {
            Edit::Set(i, b) if !v.is_empty() => {
                let n = v.len();
                v[i % n] = b;
            }
            Edit::Insert(i, b) => v.insert(i % (v.len() + 1), b),
            Edit::Cut(i) => v.truncate(i % (v.len() + 1)),
            _ => {}
        }
    }
    v
}

/// Seeds as they are, then mutated seeds, then arbitrary bytes up to `max` long.
fn exercise(target: &str, max: usize, check: fn(&[u8])) {
    let corpus = seeds(target);
    for s in &corpus {
        check(s);
    }
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    let n = corpus.len();
    runner
        .run(&(0..n, prop::collection::vec(edit(), 1..16)), |(i, edits)| {
            check(&apply(&corpus[i], &edits));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: mutated seed: {e}"));
    runner
        .run(&prop::collection::vec(any::<u8>(), 0..max), |b| {
            check(&b);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{target}: arbitrary bytes: {e}"));
}

#[test]
fn fuzz_checksum() {
    exercise("checksum", 3000, checksum::run);
}

#[test]
fn fuzz_decap() {
    exercise("decap", 3000, decap::run);
}

#[test]
fn fuzz_geneve_options() {
    exercise("geneve_options", 300, geneve_options::run);
}

#[test]
fn fuzz_ipv6_ext() {
    exercise("ipv6_ext", 600, ipv6_ext::run);
}

#[test]
fn fuzz_ptype() {
    exercise("ptype", 600, ptype::run);
}

#[test]
fn fuzz_wire_views() {
    exercise("wire_views", 600, wire_views::run);
}
