//! The Internet checksum (RFC 1071): one's-complement sums, pseudo-headers, incremental updates
//! (RFC 1624), and sums across the segments of an mbuf chain.
//!
//! The sum over a buffer ([`sum`]) runs one of three kernels, chosen once at run time:
//!
//! - AVX-512BW: 64 bytes per step into 16 lanes, the tail read with a masked load;
//! - AVX2: 32 bytes per step into 8 lanes, 4 vectors per iteration;
//! - scalar: 64-bit words into four 128-bit accumulators (an add and an add-with-carry each),
//!   unrolled 32 bytes per iteration.
//!
//! The vector kernels split every 32-bit lane into its two 16-bit halves and add them into 32-bit
//! lane accumulators, which are widened into a 64-bit total every 16384 steps, long before a
//! lane could overflow. Buffers shorter than 128 bytes (headers) always take the scalar kernel,
//! which is inlined and needs no dispatch.
//!
//! All kernels sum native-endian words; RFC 1071's byte-order independence lets us swap the folded
//! result once at the end. A sum over data starting at an odd offset is the byte-swap of its sum
//! as if it started at an even one: [`Sum`] uses that to carry a sum across segments of any
//! length. Every function is correct for every length and alignment (property-tested against a
//! plain 16-bit reference).
//!
//! Values: a *sum* is the folded 16-bit one's-complement sum in host order (as if the data were
//! read as big-endian 16-bit words); the *checksum* written into a header is `!sum`.

use std::sync::atomic::{AtomicU8, Ordering};

use fastpath_mempool::Mbuf;

/// Folds a 64-bit one's-complement accumulator to 16 bits (end-around carry).
#[inline(always)]
pub fn fold(mut acc: u64) -> u16 {
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff_ffff) + (acc >> 32);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc = (acc & 0xffff) + (acc >> 16);
    acc as u16
}

#[inline(always)]
fn fold128(acc: u128) -> u64 {
    let (s, c) = (acc as u64).overflowing_add((acc >> 64) as u64);
    s + c as u64
}

/// One's-complement addition of two 16-bit sums.
#[inline(always)]
pub fn add(a: u16, b: u16) -> u16 {
    let (s, c) = a.overflowing_add(b);
    s + c as u16
}

/// Scalar kernel: native-endian sum of `d`, unfolded (congruent modulo 2^16 - 1, zero only for
/// all-zero data).
#[inline(always)]
fn raw_scalar(d: &[u8]) -> u64 {
    let mut acc = [0u128; 4];
    let mut chunks = d.chunks_exact(32);
    for c in &mut chunks {
        for (i, a) in acc.iter_mut().enumerate() {
            let w = u64::from_ne_bytes([
                c[i * 8],
                c[i * 8 + 1],
                c[i * 8 + 2],
                c[i * 8 + 3],
                c[i * 8 + 4],
                c[i * 8 + 5],
                c[i * 8 + 6],
                c[i * 8 + 7],
            ]);
            *a += w as u128;
        }
    }
    let mut rest = chunks.remainder();
    let mut tail = 0u128;
    while rest.len() >= 8 {
        tail += u64::from_ne_bytes([rest[0], rest[1], rest[2], rest[3], rest[4], rest[5], rest[6], rest[7]]) as u128;
        rest = &rest[8..];
    }
    if rest.len() >= 4 {
        tail += u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as u128;
        rest = &rest[4..];
    }
    if rest.len() >= 2 {
        tail += u16::from_ne_bytes([rest[0], rest[1]]) as u128;
        rest = &rest[2..];
    }
    if let Some(&b) = rest.first() {
        // The odd last byte is the first byte of a word whose second byte is zero.
        tail += u16::from_ne_bytes([b, 0]) as u128;
    }
    let t = (acc[0] >> 64) + (acc[1] >> 64) + (acc[2] >> 64) + (acc[3] >> 64) + (tail >> 64);
    let lo = (acc[0] as u64 as u128) + (acc[1] as u64 as u128) + (acc[2] as u64 as u128) + (acc[3] as u64 as u128);
    fold128(lo + (tail as u64 as u128) + t)
}

/// Converts a folded native-endian sum to host order as if the data had been read big-endian.
#[inline(always)]
fn to_host(native: u16) -> u16 {
    u16::from_be(native)
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Steps of one vector before the 32-bit lanes are widened (each step adds < 2^17 per lane).
    const BLOCK: usize = 16384;

    /// AVX2 kernel.
    ///
    /// # Safety
    /// The CPU must support AVX2.
    #[target_feature(enable = "avx2")]
    pub unsafe fn raw_avx2(d: &[u8]) -> u64 {
        let mask = _mm256_set1_epi32(0xffff);
        let mut total: u64 = 0;
        let mut p = d.as_ptr();
        let mut left = d.len();
        while left >= 128 {
            let steps = (left / 128).min(BLOCK / 4);
            let (mut a0, mut a1, mut a2, mut a3) =
                (_mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256(), _mm256_setzero_si256());
            for _ in 0..steps {
                // SAFETY: 128 bytes are left from p (steps * 128 <= left); unaligned loads.
                let (v0, v1, v2, v3) = unsafe {
                    (
                        _mm256_loadu_si256(p.cast()),
                        _mm256_loadu_si256(p.add(32).cast()),
                        _mm256_loadu_si256(p.add(64).cast()),
                        _mm256_loadu_si256(p.add(96).cast()),
                    )
                };
                a0 = _mm256_add_epi32(a0, _mm256_add_epi32(_mm256_and_si256(v0, mask), _mm256_srli_epi32(v0, 16)));
                a1 = _mm256_add_epi32(a1, _mm256_add_epi32(_mm256_and_si256(v1, mask), _mm256_srli_epi32(v1, 16)));
                a2 = _mm256_add_epi32(a2, _mm256_add_epi32(_mm256_and_si256(v2, mask), _mm256_srli_epi32(v2, 16)));
                a3 = _mm256_add_epi32(a3, _mm256_add_epi32(_mm256_and_si256(v3, mask), _mm256_srli_epi32(v3, 16)));
                // SAFETY: stays within d (checked above).
                p = unsafe { p.add(128) };
            }
            left -= steps * 128;
            // Each lane is below steps * 2^17 <= 2^29: the four sum without overflow.
            total += lanes256(_mm256_add_epi32(_mm256_add_epi32(a0, a1), _mm256_add_epi32(a2, a3)));
        }
        // SAFETY: p .. p + left is the unread rest of d.
        let rest = unsafe { std::slice::from_raw_parts(p, left) };
        let (s, c) = total.overflowing_add(super::raw_scalar(rest));
        s + c as u64
    }

    #[target_feature(enable = "avx2")]
    fn lanes256(a: __m256i) -> u64 {
        let mut l = [0u32; 8];
        // SAFETY: l is 32 bytes; unaligned store.
        unsafe { _mm256_storeu_si256(l.as_mut_ptr().cast(), a) };
        l.iter().map(|&x| x as u64).sum()
    }

    /// AVX-512BW kernel.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn raw_avx512(d: &[u8]) -> u64 {
        let mask = _mm512_set1_epi32(0xffff);
        let mut total: u64 = 0;
        let mut p = d.as_ptr();
        let mut left = d.len();
        while left >= 256 {
            let steps = (left / 256).min(BLOCK / 4);
            let (mut a0, mut a1, mut a2, mut a3) =
                (_mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512(), _mm512_setzero_si512());
            for _ in 0..steps {
                // SAFETY: 256 bytes are left from p; unaligned loads.
                let (v0, v1, v2, v3) = unsafe {
                    (
                        _mm512_loadu_si512(p.cast()),
                        _mm512_loadu_si512(p.add(64).cast()),
                        _mm512_loadu_si512(p.add(128).cast()),
                        _mm512_loadu_si512(p.add(192).cast()),
                    )
                };
                a0 = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_and_si512(v0, mask), _mm512_srli_epi32(v0, 16)));
                a1 = _mm512_add_epi32(a1, _mm512_add_epi32(_mm512_and_si512(v1, mask), _mm512_srli_epi32(v1, 16)));
                a2 = _mm512_add_epi32(a2, _mm512_add_epi32(_mm512_and_si512(v2, mask), _mm512_srli_epi32(v2, 16)));
                a3 = _mm512_add_epi32(a3, _mm512_add_epi32(_mm512_and_si512(v3, mask), _mm512_srli_epi32(v3, 16)));
                // SAFETY: stays within d (checked above).
                p = unsafe { p.add(256) };
            }
            left -= steps * 256;
            // Each lane is below steps * 2^17 <= 2^29: the four sum without overflow.
            total += lanes512(_mm512_add_epi32(_mm512_add_epi32(a0, a1), _mm512_add_epi32(a2, a3)));
        }
        // Up to 255 bytes: whole vectors, then one masked load (bytes past the end read as zero).
        let mut acc = _mm512_setzero_si512();
        while left >= 64 {
            // SAFETY: 64 bytes are left from p.
            let v = unsafe { _mm512_loadu_si512(p.cast()) };
            acc = _mm512_add_epi32(acc, _mm512_add_epi32(_mm512_and_si512(v, mask), _mm512_srli_epi32(v, 16)));
            // SAFETY: stays within d.
            p = unsafe { p.add(64) };
            left -= 64;
        }
        if left > 0 {
            let k: __mmask64 = (1u64 << left) - 1;
            // SAFETY: the masked load reads only the `left` bytes that remain in d (masked-off
            // lanes are not accessed and cannot fault).
            let v = unsafe { _mm512_maskz_loadu_epi8(k, p.cast()) };
            acc = _mm512_add_epi32(acc, _mm512_add_epi32(_mm512_and_si512(v, mask), _mm512_srli_epi32(v, 16)));
        }
        total + lanes512(acc)
    }

    /// AVX-512BW copy of `src` into `dst` (the same length) that sums what it copies: one pass
    /// instead of a copy and a sum.
    ///
    /// # Safety
    /// The CPU must support AVX-512F and AVX-512BW; `dst.len() == src.len()`.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub unsafe fn copy_raw_avx512(dst: &mut [u8], src: &[u8]) -> u64 {
        debug_assert_eq!(dst.len(), src.len());
        let mask = _mm512_set1_epi32(0xffff);
        let mut total: u64 = 0;
        let (mut s, mut d) = (src.as_ptr(), dst.as_mut_ptr());
        let mut left = src.len().min(dst.len());
        while left >= 128 {
            let steps = (left / 128).min(BLOCK / 2);
            let (mut a0, mut a1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
            for _ in 0..steps {
                // SAFETY: 128 bytes are left from s and from d (same length); unaligned loads
                // and stores; the two slices do not overlap (&mut and & borrows).
                unsafe {
                    let v0 = _mm512_loadu_si512(s.cast());
                    let v1 = _mm512_loadu_si512(s.add(64).cast());
                    _mm512_storeu_si512(d.cast(), v0);
                    _mm512_storeu_si512(d.add(64).cast(), v1);
                    a0 = _mm512_add_epi32(a0, _mm512_add_epi32(_mm512_and_si512(v0, mask), _mm512_srli_epi32(v0, 16)));
                    a1 = _mm512_add_epi32(a1, _mm512_add_epi32(_mm512_and_si512(v1, mask), _mm512_srli_epi32(v1, 16)));
                    s = s.add(128);
                    d = d.add(128);
                }
            }
            left -= steps * 128;
            total += lanes512(_mm512_add_epi32(a0, a1));
        }
        let mut acc = _mm512_setzero_si512();
        while left > 0 {
            let n = left.min(64);
            let k: __mmask64 = if n == 64 { !0 } else { (1u64 << n) - 1 };
            // SAFETY: the masked load and store touch only the `n` bytes left in src and dst
            // (masked-off lanes are not accessed and cannot fault).
            unsafe {
                let v = _mm512_maskz_loadu_epi8(k, s.cast());
                _mm512_mask_storeu_epi8(d.cast(), k, v);
                acc = _mm512_add_epi32(acc, _mm512_add_epi32(_mm512_and_si512(v, mask), _mm512_srli_epi32(v, 16)));
                s = s.add(n);
                d = d.add(n);
            }
            left -= n;
        }
        total + lanes512(acc)
    }

    #[target_feature(enable = "avx512f")]
    fn lanes512(a: __m512i) -> u64 {
        let lo = _mm512_cvtepu32_epi64(_mm512_castsi512_si256(a));
        let hi = _mm512_cvtepu32_epi64(_mm512_extracti64x4_epi64::<1>(a));
        _mm512_reduce_add_epi64(_mm512_add_epi64(lo, hi)) as u64
    }
}

/// The sum kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// Portable 64-bit words.
    Scalar,
    /// AVX2.
    Avx2,
    /// AVX-512BW.
    Avx512,
}

static KERNEL: AtomicU8 = AtomicU8::new(0);

impl Kernel {
    /// The best kernel this CPU supports (detected once, then cached).
    #[inline]
    pub fn detect() -> Kernel {
        // Relaxed: the cached value is derived from the CPU alone; every thread that races here
        // computes the same value, so nothing else needs to be ordered with it.
        match KERNEL.load(Ordering::Relaxed) {
            1 => Kernel::Scalar,
            2 => Kernel::Avx2,
            3 => Kernel::Avx512,
            _ => Self::detect_slow(),
        }
    }

    #[cold]
    fn detect_slow() -> Kernel {
        let k = Self::supported().last().copied().unwrap_or(Kernel::Scalar);
        let code = match k {
            Kernel::Scalar => 1,
            Kernel::Avx2 => 2,
            Kernel::Avx512 => 3,
        };
        // Relaxed: see detect().
        KERNEL.store(code, Ordering::Relaxed);
        k
    }

    /// Every kernel this CPU can run, slowest first.
    pub fn supported() -> Vec<Kernel> {
        #[allow(unused_mut)]
        let mut v = vec![Kernel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if is_x86_feature_detected!("avx2") {
                v.push(Kernel::Avx2);
            }
            if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
                v.push(Kernel::Avx512);
            }
        }
        v
    }

    /// The unfolded native-endian sum of `d` with this kernel. Falls back to scalar when the CPU
    /// lacks the kernel's instructions.
    #[inline]
    pub fn raw(self, d: &[u8]) -> u64 {
        #[cfg(target_arch = "x86_64")]
        match self {
            Kernel::Avx512 if Self::detect() == Kernel::Avx512 => {
                // SAFETY: detect() found AVX-512F and AVX-512BW on this CPU.
                return unsafe { x86::raw_avx512(d) };
            }
            Kernel::Avx2 if Self::detect() != Kernel::Scalar => {
                // SAFETY: detect() found at least AVX2 on this CPU (AVX-512 implies it here).
                return unsafe { x86::raw_avx2(d) };
            }
            _ => {}
        }
        raw_scalar(d)
    }

    /// The folded sum of `d` (host order) with this kernel.
    #[inline]
    pub fn sum(self, d: &[u8]) -> u16 {
        to_host(fold(self.raw(d)))
    }
}

/// Below this length the scalar kernel is used without dispatch.
const SMALL: usize = 128;

#[inline(always)]
fn raw(d: &[u8]) -> u64 {
    if d.len() < SMALL {
        raw_scalar(d)
    } else {
        Kernel::detect().raw(d)
    }
}

/// The one's-complement sum of `d` (host order, not inverted).
#[inline]
pub fn sum(d: &[u8]) -> u16 {
    to_host(fold(raw(d)))
}

/// The sum of an IPv4 header without options (20 bytes), unrolled: five 32-bit words.
#[inline(always)]
pub fn sum20(h: &[u8; 20]) -> u16 {
    let w = |i: usize| u32::from_ne_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]) as u64;
    to_host(fold(w(0) + w(4) + w(8) + w(12) + w(16)))
}

/// The sum of an IPv4 header (20 bytes take the unrolled [`sum20`]).
#[inline(always)]
pub fn sum_ipv4_header(h: &[u8]) -> u16 {
    match <&[u8; 20]>::try_from(h) {
        Ok(a) => sum20(a),
        Err(_) => sum(h),
    }
}

/// Copies `src` into `dst` (the same length; the shorter length otherwise) and returns the
/// one's-complement sum of the bytes copied (host order, as [`sum`]): with AVX-512 one pass
/// reads, writes and sums, else a copy then a sum. For segmentation, which copies a payload
/// and needs its checksum.
#[inline]
pub fn copy_sum(dst: &mut [u8], src: &[u8]) -> u16 {
    let n = dst.len().min(src.len());
    let (dst, src) = (&mut dst[..n], &src[..n]);
    #[cfg(target_arch = "x86_64")]
    if n >= SMALL && Kernel::detect() == Kernel::Avx512 {
        // SAFETY: detect() found AVX-512F and AVX-512BW; the lengths are equal.
        return to_host(fold(unsafe { x86::copy_raw_avx512(dst, src) }));
    }
    dst.copy_from_slice(src);
    sum(dst)
}

/// The Internet checksum of `d` (the value a header field holds): `!sum(d)`.
#[inline]
pub fn checksum(d: &[u8]) -> u16 {
    !sum(d)
}

/// A running sum over pieces of any length that follow each other (segments of a chain).
#[derive(Debug, Clone, Copy, Default)]
pub struct Sum {
    acc: u64,
    odd: bool,
}

impl Sum {
    /// A sum starting at `initial` (e.g. a pseudo-header sum, host order).
    #[inline]
    pub fn new(initial: u16) -> Sum {
        Sum { acc: initial.to_be() as u64, odd: false }
    }

    /// Adds the bytes that follow the ones added so far.
    #[inline]
    pub fn add_bytes(&mut self, d: &[u8]) {
        let mut s = fold(raw(d));
        if self.odd {
            s = s.swap_bytes();
        }
        self.acc += s as u64;
        self.odd ^= d.len() & 1 == 1;
    }

    /// Adds a 16-bit host-order value at an even position (a pseudo-header field); only valid
    /// while an even number of bytes has been added.
    #[inline]
    pub fn add_u16(&mut self, v: u16) {
        self.acc += v.to_be() as u64;
    }

    /// The folded sum (host order).
    #[inline]
    pub fn sum(&self) -> u16 {
        to_host(fold(self.acc))
    }

    /// The checksum: `!sum`.
    #[inline]
    pub fn checksum(&self) -> u16 {
        !self.sum()
    }
}

/// Adds to `s` the `len` bytes of the chain `m` that start at packet offset `off`, across
/// segments of any length. `None` when the chain holds fewer bytes.
pub fn add_chain(s: &mut Sum, m: &Mbuf, mut off: usize, len: usize) -> Option<()> {
    if off.checked_add(len)? > m.pkt_len() {
        return None;
    }
    let mut left = len;
    for seg in m.segments() {
        if left == 0 {
            break;
        }
        if off >= seg.len() {
            off -= seg.len();
            continue;
        }
        let n = (seg.len() - off).min(left);
        s.add_bytes(&seg[off..off + n]);
        left -= n;
        off = 0;
    }
    (left == 0).then_some(())
}

/// Sum of the IPv4 pseudo-header (RFC 768 / 793): addresses, protocol and L4 length.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], proto: u8, len: u32) -> u16 {
    let acc = u16::from_be_bytes([src[0], src[1]]) as u64
        + u16::from_be_bytes([src[2], src[3]]) as u64
        + u16::from_be_bytes([dst[0], dst[1]]) as u64
        + u16::from_be_bytes([dst[2], dst[3]]) as u64
        + proto as u64
        + (len >> 16) as u64
        + (len & 0xffff) as u64;
    fold(acc)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1).
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u16 {
    let mut acc = proto_len(next_header, len);
    for c in src.chunks_exact(2).chain(dst.chunks_exact(2)) {
        acc += u16::from_be_bytes([c[0], c[1]]) as u64;
    }
    fold(acc)
}

#[inline(always)]
fn proto_len(p: u8, len: u32) -> u64 {
    p as u64 + (len >> 16) as u64 + (len & 0xffff) as u64
}

/// RFC 1624 eqn. 3: the checksum after one 16-bit word of the covered data changes from `old`
/// to `new`: `HC' = ~(~HC + ~m + m')`.
#[inline]
pub fn update16(csum: u16, old: u16, new: u16) -> u16 {
    !add(add(!csum, !old), new)
}

/// [`update16`] for a 32-bit field (two words).
#[inline]
pub fn update32(csum: u16, old: u32, new: u32) -> u16 {
    update16(update16(csum, (old >> 16) as u16, (new >> 16) as u16), old as u16, new as u16)
}

/// A UDP checksum as written on the wire: a computed 0 is sent as 0xffff (RFC 768), because 0
/// means "no checksum".
#[inline]
pub fn udp_wire(csum: u16) -> u16 {
    if csum == 0 {
        0xffff
    } else {
        csum
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain reference: big-endian 16-bit words into a u64, end-around carry.
    fn reference(d: &[u8]) -> u16 {
        let mut acc = 0u64;
        for c in d.chunks(2) {
            acc += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u64;
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: 00 01 f2 03 f4 f5 f6 f7 sums to ddf2.
        let d = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        for k in Kernel::supported() {
            assert_eq!(k.sum(&d), 0xddf2, "{k:?}");
        }
        assert_eq!(sum(&d), 0xddf2);
        assert_eq!(checksum(&d), !0xddf2);
    }

    #[test]
    fn ipv4_header_golden() {
        // From a capture: IPv4 header with checksum b861.
        let h = [
            0x45, 0x00, 0x00, 0x73, 0x00, 0x00, 0x40, 0x00, 0x40, 0x11, 0xb8, 0x61, 0xc0, 0xa8, 0x00, 0x01, 0xc0, 0xa8,
            0x00, 0xc7,
        ];
        assert_eq!(sum(&h), 0xffff);
        let mut z = h;
        z[10] = 0;
        z[11] = 0;
        assert_eq!(checksum(&z), 0xb861);
    }

    #[test]
    fn every_kernel_every_length_and_offset() {
        let data: Vec<u8> = (0..20000u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
        let lens = (0..300).chain([511, 512, 513, 1499, 1500, 1501, 4095, 9000, 9001, 16383, 19000]);
        for len in lens {
            for off in 0..4 {
                let d = &data[off..off + len];
                let want = reference(d);
                for k in Kernel::supported() {
                    assert_eq!(k.sum(d), want, "{k:?} len {len} off {off}");
                }
            }
        }
        // All 0xff: the lane accumulators at their largest, over more than two widening blocks.
        let ones = vec![0xffu8; 2_500_000];
        for k in Kernel::supported() {
            assert_eq!(k.sum(&ones), reference(&ones), "{k:?}");
        }
        assert_eq!(sum(&[]), 0);
        assert_eq!(sum(&[0, 0, 0]), 0);
    }

    #[test]
    fn incremental_update_matches_recompute() {
        let mut h = [
            0x45u8, 0x00, 0x00, 0x73, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0xc0, 0xa8, 0x00, 0x01, 0xc0,
            0xa8, 0x00, 0xc7,
        ];
        let c = checksum(&h);
        h[10..12].copy_from_slice(&c.to_be_bytes());
        // TTL 64 -> 63 in the word ttl|proto.
        let old = u16::from_be_bytes([h[8], h[9]]);
        h[8] = 63;
        let new = u16::from_be_bytes([h[8], h[9]]);
        let inc = update16(c, old, new);
        h[10] = 0;
        h[11] = 0;
        assert_eq!(inc, checksum(&h));
        assert_eq!(update32(0x1234, 0xdead_beef, 0xdead_beef), 0x1234);
    }

    proptest! {
        #[test]
        fn copy_sum_copies_and_sums(d in proptest::collection::vec(any::<u8>(), 0..5000), off in 0usize..64) {
            let off = off.min(d.len());
            let src = &d[off..];
            let mut dst = vec![0xa5u8; src.len() + 3];
            let s = copy_sum(&mut dst[1..1 + src.len()], src);
            prop_assert_eq!(&dst[1..1 + src.len()], src);
            prop_assert_eq!((dst[0], dst[src.len() + 1]), (0xa5, 0xa5), "nothing written outside");
            prop_assert_eq!(s, reference(src));
        }

        #[test]
        fn sum_matches_reference(d in proptest::collection::vec(any::<u8>(), 0..3000), off in 0usize..64) {
            let off = off.min(d.len());
            let d = &d[off..];
            let want = reference(d);
            for k in Kernel::supported() {
                prop_assert_eq!(k.sum(d), want);
            }
            prop_assert_eq!(sum(d), want);
        }

        #[test]
        fn split_sum_matches_whole(d in proptest::collection::vec(any::<u8>(), 0..3000),
                                   cuts in proptest::collection::vec(0usize..3000, 0..6)) {
            let mut cuts: Vec<usize> = cuts.into_iter().map(|c| c.min(d.len())).collect();
            cuts.sort_unstable();
            let mut s = Sum::new(0x1234);
            let mut prev = 0;
            for c in cuts.into_iter().chain([d.len()]) {
                s.add_bytes(&d[prev..c]);
                prev = c;
            }
            prop_assert_eq!(s.sum(), add(reference(&d), 0x1234));
        }

        #[test]
        fn update16_matches_recompute(mut d in proptest::collection::vec(any::<u8>(), 2..200),
                                      at in 0usize..100, new in any::<u16>()) {
            let at = (at * 2) % (d.len() & !1);
            let c = checksum(&d);
            let old = u16::from_be_bytes([d[at], d[at + 1]]);
            d[at..at + 2].copy_from_slice(&new.to_be_bytes());
            // Equal in one's complement (0 and 0xffff are both zero).
            let (a, b) = (update16(c, old, new), checksum(&d));
            prop_assert!(a == b || (a == 0 && b == 0xffff) || (a == 0xffff && b == 0), "{:x} {:x}", a, b);
        }
    }
}
