//! tshark as an independent decoder of our output, for the tests that write pcap files: every
//! field read is parsed strictly (a value that does not parse fails the test), and checksum
//! statuses are required for every IPv4, TCP and UDP layer tshark found, not only where present.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// One frame: every occurrence of each asked field, in the order asked.
pub type Row = Vec<Vec<String>>;

/// `tshark -r PCAP` with IPv4, UDP and TCP checksum validation on, one [`Row`] per frame for
/// `fields`.
pub fn fields(pcap: &Path, fields: &[&str]) -> Vec<Row> {
    let mut c = Command::new("tshark");
    c.arg("-r").arg(pcap);
    for o in ["ip.check_checksum:TRUE", "udp.check_checksum:TRUE", "tcp.check_checksum:TRUE"] {
        c.args(["-o", o]);
    }
    c.args(["-T", "fields", "-E", "occurrence=a", "-E", "separator=\t", "-E", "aggregator=,"]);
    for f in fields {
        c.args(["-e", f]);
    }
    let o = c.output().expect("run tshark");
    assert!(o.status.success(), "tshark: {}", String::from_utf8_lossy(&o.stderr));
    let rows: Vec<Row> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| l.split('\t').map(|f| f.split(',').filter(|x| !x.is_empty()).map(str::to_string).collect()).collect())
        .collect();
    for r in &rows {
        assert_eq!(r.len(), fields.len(), "tshark printed {} fields for {fields:?}: {r:?}", r.len());
    }
    rows
}

/// The fields [`check_clean`] reads, in its order; ask for them (first) with [`fields`].
pub const CLEAN: [&str; 6] = [
    "frame.protocols",
    "ip.checksum.status",
    "tcp.checksum.status",
    "udp.checksum.status",
    "_ws.malformed",
    "_ws.expert.severity",
];

/// How many times layer `name` appears in `frame.protocols` (`eth:ethertype:ip:udp:vxlan:eth:...`).
pub fn layers(protocols: &str, name: &str) -> usize {
    protocols.split(':').filter(|p| *p == name).count()
}

/// A checksum status: 0 bad, 1 good, 2 not verified, 3 not present (UDP 0 over IPv4).
pub fn status(v: &str, ctx: &str) -> u8 {
    match v.parse::<u8>() {
        Ok(s) if s <= 3 => s,
        _ => panic!("{ctx}: checksum status '{v}' is not 0..=3"),
    }
}

/// An expert severity (decimal, or hexadecimal with 0x).
pub fn severity(v: &str, ctx: &str) -> u32 {
    let p = match v.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16),
        None => v.parse::<u32>(),
    };
    p.unwrap_or_else(|_| panic!("{ctx}: expert severity '{v}' is not a number"))
}

/// Checks the [`CLEAN`] fields of one frame: a good checksum status for every IPv4 and TCP layer
/// tshark found, good or absent (3) for every UDP one, nothing malformed, no expert error
/// (severity 0x800000: a bad checksum, a malformed packet; warnings are fine). Returns the
/// number of TCP checksums verified.
pub fn check_clean(r: &Row, ctx: &str) -> usize {
    let protos = r[0].join(",");
    let (ip, tcp, udp) = (layers(&protos, "ip"), layers(&protos, "tcp"), layers(&protos, "udp"));
    assert_eq!(r[1].len(), ip, "{ctx}: one IPv4 checksum status per IPv4 layer ({protos})");
    assert!(r[1].iter().all(|s| status(s, ctx) == 1), "{ctx}: IPv4 header checksums");
    assert_eq!(r[2].len(), tcp, "{ctx}: one TCP checksum status per TCP layer ({protos})");
    assert!(r[2].iter().all(|s| status(s, ctx) == 1), "{ctx}: TCP checksums");
    assert_eq!(r[3].len(), udp, "{ctx}: one UDP checksum status per UDP layer ({protos})");
    assert!(r[3].iter().all(|s| matches!(status(s, ctx), 1 | 3)), "{ctx}: UDP checksums");
    assert!(r[4].is_empty(), "{ctx}: malformed");
    assert!(r[5].iter().all(|s| severity(s, ctx) < 0x0080_0000), "{ctx}: expert error");
    tcp
}
