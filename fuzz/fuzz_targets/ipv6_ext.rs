//! The IPv6 extension-header walk: never panics, and what it returns lies inside the input.
#![no_main]

use fastpath_pipeline::wire::ipv6::walk_ext;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|b: &[u8]| {
    let Some((&nh, rest)) = b.split_first() else { return };
    if let Ok(u) = walk_ext(rest, nh) {
        assert!(u.offset <= rest.len());
    }
});
