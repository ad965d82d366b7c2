//! The `router` bench pipeline: the router VNF of `examples/router` forwarding on null ports.
//!
//! Each lcore gets its own router (tables, neighbours) over its two null ports, both claiming
//! the router's MAC. The ports receive 64-byte UDP/IPv4 frames to 1024 destinations spread over
//! 1000 /24 routes through four gateways on port b (static neighbours), so each packet takes
//! the whole fast path: checks, a batched LPM lookup, next hop and neighbour, TTL and
//! checksum, MACs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use fastpath_pipeline::{BuildEnv, Stage};
use fastpath_pmd::Error;
use router::{Config, Router};

use crate::{example_frame, BenchPipeline, StageBuilder};

/// Routes in the table (besides the two connected subnets).
pub const ROUTES: u32 = 1000;
/// Destinations the frames cycle through.
pub const DESTINATIONS: u32 = 1024;
const MAC: [u8; 6] = [0x02, 0, 0, 0, 0, 0x10];

/// The `i`-th route's /24 (distinct, spread over 100.64.0.0/10).
fn route(i: u32) -> u32 {
    0x6440_0000 | ((i.wrapping_mul(2_654_435_761) >> 10) & 0x3fff) << 8
}

fn config() -> String {
    let mut s = String::from(
        "[[port]]\nname = \"a\"\nspec = \"null\"\naddresses = [\"10.0.1.1/24\"]\nmac = \"02:00:00:00:00:10\"\n\
         [[port]]\nname = \"b\"\nspec = \"null\"\naddresses = [\"10.0.2.1/24\"]\nmac = \"02:00:00:00:00:10\"\n",
    );
    for g in 2..6 {
        s += &format!("[[neighbour]]\nip = \"10.0.2.{g}\"\nmac = \"02:00:00:00:02:{g:02x}\"\n");
    }
    let mut seen = std::collections::HashSet::new();
    let mut i = 0;
    while seen.len() < ROUTES as usize {
        let p = route(i);
        i += 1;
        if seen.insert(p) {
            let a = std::net::Ipv4Addr::from(p);
            s += &format!("[[route]]\nprefix = \"{a}/24\"\nvia = \"10.0.2.{}\"\n", 2 + seen.len() % 4);
        }
    }
    s
}

/// 64-byte UDP/IPv4 frames to the router's MAC, each to a host inside one of the routes.
fn frames() -> Arc<[Arc<[u8]>]> {
    (0..DESTINATIONS)
        .map(|k| {
            let mut f = example_frame(64);
            f[0..6].copy_from_slice(&MAC);
            let dst = route(k % ROUTES) | (1 + k % 250);
            f[30..34].copy_from_slice(&dst.to_be_bytes());
            f[24..26].copy_from_slice(&[0, 0]);
            let c = fastpath_pipeline::checksum::checksum(&f[14..34]);
            f[24..26].copy_from_slice(&c.to_be_bytes());
            Arc::from(&f[..])
        })
        .collect()
}

/// The pipeline.
pub fn pipeline() -> BenchPipeline {
    // One router per lcore (by its pool), shared by the lcore's two tasks.
    let routers: Arc<Mutex<HashMap<u32, Router>>> = Arc::default();
    let text = config();
    let build = move |env: &BuildEnv| -> Result<Vec<Box<dyn Stage>>, Error> {
        let mut map = routers.lock().unwrap_or_else(|e| e.into_inner());
        let r = match map.entry(env.pool.id()) {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                let cfg = Config::parse("router bench", &text).map_err(|e| Error::Config(e.to_string()))?;
                v.insert(Router::new(cfg, &env.ports, &env.pool).map_err(|e| Error::Config(e.to_string()))?)
            }
        };
        Ok(vec![Box::new(r.stage())])
    };
    BenchPipeline {
        name: "router",
        about: "the router VNF (examples/router): 64-byte UDP/IPv4 to 1024 hosts over 1000 routes",
        frames: Some(frames()),
        build: Some(StageBuilder(Arc::new(build))),
        ..BenchPipeline::default()
    }
}
