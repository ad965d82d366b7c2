//! pcap reader and writer: round trips, large frames as chains, and malformed files.

use std::io::Write;

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig};
use fastpath_pmd::drivers::pcap::PcapPort;
use fastpath_pmd::{Ctx, Port};

fn pool(n: u32) -> Mempool {
    Mempool::new("pcap", &PoolConfig { mbufs: n, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

fn pcap_file(frames: &[Vec<u8>], magic: u32, big_endian: bool) -> Vec<u8> {
    let w32 = |v: u32| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let w16 = |v: u16| if big_endian { v.to_be_bytes() } else { v.to_le_bytes() };
    let mut f = Vec::new();
    f.extend_from_slice(&w32(magic));
    f.extend_from_slice(&w16(2));
    f.extend_from_slice(&w16(4));
    f.extend_from_slice(&[0; 8]);
    f.extend_from_slice(&w32(262144));
    f.extend_from_slice(&w32(1));
    for (i, fr) in frames.iter().enumerate() {
        f.extend_from_slice(&w32(1_700_000_000 + i as u32));
        f.extend_from_slice(&w32(i as u32));
        f.extend_from_slice(&w32(fr.len() as u32));
        f.extend_from_slice(&w32(fr.len() as u32));
        f.extend_from_slice(fr);
    }
    f
}

fn frames() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [60usize, 64, 1514, 1664, 1665, 9000, 65535]
        .iter()
        .map(|&n| (0..n).map(|i| (i * 7 + n) as u8).collect())
        .collect();
    v.push((0..100_000).map(|i| (i % 251) as u8).collect());
    v
}

fn read_all(port: &mut PcapPort, ctx: &mut Ctx) -> Vec<Vec<u8>> {
    let mut rx = port.rx_queue(0).unwrap();
    let mut out = Vec::new();
    let mut b = Batch::new();
    while !port.rx_exhausted() {
        rx.rx_burst(ctx, &mut b, 4);
        for m in b.iter() {
            out.push(m.to_vec());
        }
        ctx.free_batch(&mut b);
    }
    out
}

#[test]
fn reads_every_magic_and_byte_order_with_large_frames_as_chains() {
    let p = pool(512);
    let dir = tempfile::tempdir().unwrap();
    for (magic, be) in [(0xa1b2c3d4u32, false), (0xa1b23c4d, false), (0xa1b2c3d4, true), (0xa1b23c4d, true)] {
        let path = dir.path().join("in.pcap");
        std::fs::write(&path, pcap_file(&frames(), magic, be)).unwrap();
        let mut port = PcapPort::open(0, "t", Some(&path), None, &p).unwrap();
        let mut ctx = Ctx::new(0, &p);
        let got = read_all(&mut port, &mut ctx);
        assert_eq!(got, frames(), "magic {magic:#x} big-endian {be}");
        assert_eq!(port.stats().rx_packets, frames().len() as u64);
        assert_eq!(port.stats().rx_errors, 0);
    }
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn write_then_read_back_is_byte_exact() {
    let p = pool(512);
    let dir = tempfile::tempdir().unwrap();
    let (inp, out) = (dir.path().join("in.pcap"), dir.path().join("out.pcap"));
    std::fs::write(&inp, pcap_file(&frames(), 0xa1b2c3d4, false)).unwrap();
    {
        let mut port = PcapPort::open(0, "t", Some(&inp), Some(&out), &p).unwrap();
        let mut ctx = Ctx::new(0, &p);
        let (mut rx, mut tx) = (port.rx_queue(0).unwrap(), port.tx_queue(0).unwrap());
        let mut b = Batch::new();
        while !port.rx_exhausted() {
            rx.rx_burst(&mut ctx, &mut b, 3);
            let n = b.len();
            assert_eq!(tx.tx_burst(&mut ctx, &mut b), n);
            assert!(b.is_empty());
        }
        tx.flush(&mut ctx);
        assert_eq!(port.stats().tx_packets, frames().len() as u64);
    }
    let mut port = PcapPort::open(0, "t", Some(&out), None, &p).unwrap();
    let mut ctx = Ctx::new(0, &p);
    assert_eq!(read_all(&mut port, &mut ctx), frames());
    drop(ctx);
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn truncated_and_bad_files() {
    let p = pool(64);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("t.pcap");
    // Truncated in the middle of the second frame: first frame delivered, error counted, end.
    let full = pcap_file(&[vec![1; 100], vec![2; 100]], 0xa1b2c3d4, false);
    std::fs::write(&path, &full[..full.len() - 50]).unwrap();
    let mut port = PcapPort::open(0, "t", Some(&path), None, &p).unwrap();
    let mut ctx = Ctx::new(0, &p);
    let got = read_all(&mut port, &mut ctx);
    assert_eq!(got, vec![vec![1u8; 100]]);
    assert_eq!(port.stats().rx_errors, 1);
    // A record longer than the snaplen.
    let mut bad = pcap_file(&[vec![3; 10]], 0xa1b2c3d4, false);
    bad[24 + 8..24 + 12].copy_from_slice(&1_000_000u32.to_le_bytes());
    std::fs::write(&path, &bad).unwrap();
    let mut port = PcapPort::open(0, "t", Some(&path), None, &p).unwrap();
    assert!(read_all(&mut port, &mut ctx).is_empty());
    assert_eq!(port.stats().rx_errors, 1);
    // Not a pcap file / not Ethernet / missing.
    std::fs::File::create(&path).unwrap().write_all(b"0123456789012345678901234567890").unwrap();
    let e = PcapPort::open(0, "t", Some(&path), None, &p).unwrap_err().to_string();
    assert!(e.contains("bad pcap magic") && e.contains("pcapng"), "{e}");
    let mut f = pcap_file(&[], 0xa1b2c3d4, false);
    f[20] = 105;
    std::fs::write(&path, &f).unwrap();
    let e = PcapPort::open(0, "t", Some(&path), None, &p).unwrap_err().to_string();
    assert!(e.contains("not Ethernet"), "{e}");
    let e = PcapPort::open(0, "t", Some(&dir.path().join("nope.pcap")), None, &p).unwrap_err().to_string();
    assert!(e.contains("check the rx= path"), "{e}");
    drop(ctx);
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn pool_exhaustion_is_counted_and_reading_resumes() {
    // 8 mbufs and 20 one-mbuf frames: the reader stops when the pool is dry and resumes later.
    let p = pool(8);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.pcap");
    let frs: Vec<Vec<u8>> = (0..20u8).map(|i| vec![i; 64]).collect();
    std::fs::write(&path, pcap_file(&frs, 0xa1b2c3d4, false)).unwrap();
    let mut port = PcapPort::open(0, "t", Some(&path), None, &p).unwrap();
    let mut ctx = Ctx::new(0, &p);
    let mut rx = port.rx_queue(0).unwrap();
    let mut held = Batch::new();
    assert_eq!(rx.rx_burst(&mut ctx, &mut held, 32), 8);
    assert_eq!(rx.rx_burst(&mut ctx, &mut held, 32), 0);
    assert!(port.stats().rx_drops > 0);
    let mut got: Vec<u8> = held.iter().map(|m| m.data()[0]).collect();
    ctx.free_batch(&mut held);
    while !port.rx_exhausted() {
        rx.rx_burst(&mut ctx, &mut held, 8);
        got.extend(held.iter().map(|m| m.data()[0]));
        ctx.free_batch(&mut held);
    }
    assert_eq!(got, (0..20u8).collect::<Vec<_>>(), "no frame lost or repeated across the dry spell");
    drop(rx);
    drop(ctx);
    assert_eq!(p.available(), p.capacity());
}

#[test]
fn infinite_rx_receives_the_file_over_and_over() {
    let p = pool(512);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("in.pcap");
    let small: Vec<Vec<u8>> = frames().into_iter().filter(|f| f.len() <= 1514).collect();
    std::fs::write(&path, pcap_file(&small, 0xa1b2c3d4, false)).unwrap();
    let spec = format!("pcap:rx={},infinite_rx=on", path.display());
    let mut port = PcapPort::from_spec(0, &mut fastpath_pmd::Spec::parse_port(&spec).unwrap(), &p).unwrap();
    let mut rx = port.rx_queue(0).unwrap();
    let mut ctx = Ctx::new(0, &p);
    let (mut got, mut b) = (Vec::new(), Batch::new());
    while got.len() < 10 * small.len() {
        rx.rx_burst(&mut ctx, &mut b, 4);
        got.extend(b.iter().map(|m| m.to_vec()));
        ctx.free_batch(&mut b);
    }
    assert!(!port.rx_exhausted(), "an infinite source never ends");
    for (i, f) in got.iter().enumerate() {
        assert_eq!(f, &small[i % small.len()], "frame {i}");
    }
    drop(rx);
    drop(ctx);
    assert_eq!(p.available(), p.capacity());
    // A frame that needs a chain cannot be replayed from one mbuf: said at open.
    std::fs::write(&path, pcap_file(&frames(), 0xa1b2c3d4, false)).unwrap();
    let e = PcapPort::from_spec(0, &mut fastpath_pmd::Spec::parse_port(&spec).unwrap(), &p).unwrap_err().to_string();
    assert!(e.contains("does not fit one mbuf"), "{e}");
}
