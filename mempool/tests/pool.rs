//! Pool accounting, caches, chains and clones. Every test ends with the pool full again.

use fastpath_mempool::{Batch, Mempool, PagePolicy, PoolConfig, HEADROOM, MAX_BURST};

fn pool(n: u32) -> Mempool {
    Mempool::new("test", &PoolConfig { mbufs: n, chunk_size: 2048, pages: PagePolicy::Small }).unwrap()
}

#[test]
fn bulk_alloc_and_free_account_for_every_mbuf() {
    let p = pool(1024);
    assert_eq!(p.available(), 1024);
    let mut c = p.cache();
    let mut b = Batch::new();
    assert!(c.alloc_bulk(&mut b, 32));
    assert_eq!(b.len(), 32);
    assert_eq!(p.available(), 1024 - 32, "cache contents count as available");
    for m in b.iter() {
        assert_eq!(m.data_off(), HEADROOM as usize);
        assert_eq!(m.data_len(), 0);
        assert_eq!(m.nb_segs(), 1);
        assert!(m.is_writable());
    }
    c.free_batch(&mut b);
    assert!(b.is_empty());
    assert_eq!(p.available(), 1024);
    drop(c);
    assert_eq!(p.available(), 1024);
}

#[test]
fn bulk_is_all_or_nothing_and_pool_runs_dry_cleanly() {
    let p = pool(100);
    let mut c = p.cache();
    let mut held = Vec::new();
    loop {
        let mut b = Batch::new();
        if !c.alloc_bulk(&mut b, 32) {
            assert!(b.is_empty(), "a failed bulk alloc hands out nothing");
            break;
        }
        held.push(b);
    }
    assert_eq!(held.len(), 3);
    assert_eq!(p.available(), 4);
    let mut b = Batch::new();
    assert!(c.alloc_bulk(&mut b, 4));
    assert!(c.alloc().is_none());
    held.push(b);
    for mut b in held {
        c.free_batch(&mut b);
    }
    assert_eq!(p.available(), 100);
}

#[test]
fn dropping_mbufs_returns_them_to_the_ring() {
    let p = pool(64);
    let mut c = p.cache();
    let mut b = Batch::new();
    assert!(c.alloc_bulk(&mut b, 64));
    assert_eq!(p.available(), 0);
    drop(b);
    assert_eq!(p.available(), 64);
    let m = p.alloc().unwrap();
    assert_eq!(p.available(), 63);
    drop(m);
    assert_eq!(p.available(), 64);
}

#[test]
fn data_window_operations() {
    let p = pool(8);
    let mut m = p.alloc().unwrap();
    assert_eq!(m.headroom(), 256);
    assert_eq!(m.tailroom(), 2048 - 128 - 256);
    m.append(4).unwrap().copy_from_slice(b"abcd");
    assert_eq!(m.data(), b"abcd");
    m.prepend(2).unwrap().copy_from_slice(b"xy");
    assert_eq!(m.data(), b"xyabcd");
    assert_eq!(m.pkt_len(), 6);
    assert!(m.adj(3));
    assert_eq!(m.data(), b"bcd");
    assert!(m.trim(1));
    assert_eq!(m.data(), b"bc");
    assert!(m.prepend(1000).is_none(), "more than the headroom");
    assert!(m.append(4000).is_none(), "more than the tailroom");
    assert!(!m.adj(3));
    assert!(!m.set_len(5000));
    assert!(m.set_len(64));
    assert_eq!(m.pkt_len(), 64);
    drop(m);
    assert_eq!(p.available(), 8);
}

#[test]
fn chains_free_every_segment() {
    let p = pool(64);
    let mut c = p.cache();
    let mut head = c.alloc().unwrap();
    head.append(10).unwrap().fill(1);
    for i in 0..5u8 {
        let mut s = c.alloc().unwrap();
        s.append(100).unwrap().fill(i + 2);
        head.chain(s).unwrap();
    }
    assert_eq!(head.nb_segs(), 6);
    assert_eq!(head.pkt_len(), 510);
    assert_eq!(head.segments().count(), 6);
    let v = head.to_vec();
    assert_eq!(v.len(), 510);
    assert_eq!(v[9], 1);
    assert_eq!(v[10], 2);
    assert_eq!(v[509], 6);
    let mut buf = [0u8; 20];
    assert!(head.read_at(105, &mut buf));
    assert_eq!(&buf[..5], &[2; 5]);
    assert_eq!(&buf[5..], &[3; 15]);
    assert!(!head.read_at(500, &mut buf));
    assert_eq!(p.available(), 64 - 6);
    c.free(head);
    assert_eq!(p.available(), 64);
    // And through Drop.
    let mut head = c.alloc().unwrap();
    head.chain(c.alloc().unwrap()).unwrap();
    let tail = head.split_first().unwrap();
    assert_eq!(head.nb_segs(), 1);
    drop(tail);
    drop(head);
    drop(c);
    assert_eq!(p.available(), 64);
}

#[test]
fn refcounted_clone_shares_and_frees_in_any_order() {
    let p = pool(64);
    let mut c = p.cache();
    let mut m = c.alloc().unwrap();
    m.append(60).unwrap().copy_from_slice(&[7u8; 60]);
    let mut s = c.alloc().unwrap();
    s.append(40).unwrap().copy_from_slice(&[9u8; 40]);
    m.chain(s).unwrap();
    m.set_out_port(3);

    let k = c.clone_shallow(&m).unwrap();
    assert_eq!(k.to_vec(), m.to_vec());
    assert_eq!(k.out_port(), 3);
    assert!(k.is_indirect());
    assert!(!m.is_writable(), "a cloned buffer is read-only");
    assert!(!k.is_writable());
    assert_eq!(m.refcnt(), 2);
    // A clone of the clone attaches to the same direct buffers.
    let k2 = c.clone_shallow(&k).unwrap();
    assert_eq!(m.refcnt(), 3);
    assert_eq!(p.available(), 64 - 6);

    // Free the original first: its chunks stay until the clones go.
    c.free(m);
    assert_eq!(p.available(), 64 - 6);
    assert_eq!(k.to_vec()[..60], [7u8; 60]);
    drop(k);
    assert_eq!(p.available(), 64 - 4);
    c.free(k2);
    assert_eq!(p.available(), 64, "last clone frees the direct chunks");

    // Writable again once clones are gone.
    let mut m = c.alloc().unwrap();
    m.append(1).unwrap()[0] = 1;
    let k = c.clone_shallow(&m).unwrap();
    assert!(m.prepend(1).is_none(), "no writes while shared");
    c.free(k);
    assert!(m.is_writable());
    m.prepend(1).unwrap()[0] = 2;
    assert_eq!(m.data(), &[2, 1]);
    c.free(m);
    drop(c);
    assert_eq!(p.available(), 64);
}

#[test]
fn clone_n_takes_every_reference_at_once() {
    let p = pool(64);
    let mut c = p.cache();
    let mut m = c.alloc().unwrap();
    m.append(60).unwrap().copy_from_slice(&[5u8; 60]);
    m.set_out_port(4);
    m.set_segment(7);
    let mut out = Batch::new();
    assert_eq!(c.clone_n(&m, 10, &mut out), 10);
    assert_eq!(m.refcnt(), 11);
    assert!(out.iter().all(|k| k.is_indirect() && k.to_vec() == m.to_vec() && k.segment() == 7));
    // A clone of a clone attaches to the same direct buffer.
    let first = out.pop().unwrap();
    assert_eq!(c.clone_n(&first, 2, &mut out), 2);
    out.push(first).unwrap();
    assert_eq!(m.refcnt(), 13);
    // Bounded by the pool: 64 - 1 - 12 left.
    let mut more = Batch::new();
    assert_eq!(c.clone_n(&m, 100, &mut more), 51);
    c.free_batch(&mut more);
    c.free_batch(&mut out);
    assert!(m.is_writable());
    // A chain takes the general path.
    let mut s = c.alloc().unwrap();
    s.append(10).unwrap();
    m.chain(s).unwrap();
    assert_eq!(c.clone_n(&m, 3, &mut out), 3);
    assert!(out.iter().all(|k| k.nb_segs() == 2 && k.to_vec() == m.to_vec()));
    c.free_batch(&mut out);
    c.free(m);
    drop(c);
    assert_eq!(p.available(), 64);
}

#[test]
fn deep_copy_spans_segments() {
    let p = pool(64);
    let mut c = p.cache();
    let mut m = c.alloc().unwrap();
    let data: Vec<u8> = (0..1600u32).map(|i| i as u8).collect();
    m.append(1600).unwrap().copy_from_slice(&data);
    let mut big = c.copy(&m).unwrap();
    assert_eq!(big.to_vec(), data);
    // Prepend the copy's tail and copy again: 2 segments.
    big.chain(c.copy(&m).unwrap()).unwrap();
    let k = c.copy(&big).unwrap();
    assert_eq!(k.pkt_len(), 3200);
    assert_eq!(k.nb_segs(), 2);
    assert_eq!(k.to_vec(), big.to_vec());
    for x in [m, big, k] {
        c.free(x);
    }
    drop(c);
    assert_eq!(p.available(), 64);
}

#[test]
fn caches_flush_and_refill_across_threads() {
    let p = pool(4096);
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let p = p.clone();
            std::thread::spawn(move || {
                let mut c = p.cache();
                let mut held: Vec<Batch> = Vec::new();
                for round in 0..2000 {
                    let mut b = Batch::new();
                    if c.alloc_bulk(&mut b, MAX_BURST.min(32 + round % 64)) {
                        held.push(b);
                    }
                    if held.len() > 20 || round % 7 == 0 {
                        for mut b in held.drain(..) {
                            c.free_batch(&mut b);
                        }
                    }
                }
                for mut b in held {
                    c.free_batch(&mut b);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(p.available(), 4096);
}

#[test]
fn mbufs_move_between_threads_and_pools_dont_mix() {
    let a = pool(64);
    let b = pool(64);
    let mut ca = a.cache();
    let mut batch = Batch::new();
    assert!(ca.alloc_bulk(&mut batch, 16));
    let mut cb = b.cache();
    assert!(cb.alloc_bulk(&mut batch, 16));
    // Free the mixed batch on another thread through a cache of pool b.
    let t = std::thread::spawn(move || {
        cb.free_batch(&mut batch);
        drop(cb);
    });
    t.join().unwrap();
    assert_eq!(a.available(), 64);
    assert_eq!(b.available(), 64);
}

#[test]
fn bad_configs_are_errors() {
    let e = Mempool::new("x", &PoolConfig { mbufs: 10, chunk_size: 1000, pages: PagePolicy::Small }).unwrap_err();
    assert!(e.to_string().contains("use 2048 or 4096"), "{e}");
    assert!(Mempool::new("x", &PoolConfig { mbufs: 1, chunk_size: 2048, pages: PagePolicy::Small }).is_err());
}

#[test]
fn partition_keeps_order_on_both_sides() {
    let p = pool(64);
    let mut c = p.cache();
    let mut b = Batch::new();
    assert!(c.alloc_bulk(&mut b, 10));
    for (i, m) in b.iter_mut().enumerate() {
        m.set_userdata(i as u64);
    }
    let mut out = Batch::new();
    b.partition_into(&mut out, |m| m.userdata() % 3 != 0);
    let kept: Vec<u64> = b.iter().map(|m| m.userdata()).collect();
    let moved: Vec<u64> = out.iter().map(|m| m.userdata()).collect();
    assert_eq!(kept, vec![1, 2, 4, 5, 7, 8]);
    assert_eq!(moved, vec![0, 3, 6, 9]);
    c.free_batch(&mut b);
    c.free_batch(&mut out);
    drop(c);
    assert_eq!(p.available(), 64);
}
