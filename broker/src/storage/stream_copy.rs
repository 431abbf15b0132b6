//! Copies into O_DIRECT write buffers with non-temporal (streaming) stores.
//!
//! The bytes a leader appends are copied once, into the partition's fill buffer, and from
//! there the disk reads them by DMA. A plain copy first reads every destination line into the
//! cache (the fill buffers cycle through the shard's registered I/O memory, so those lines are
//! cold) and then evicts the received bytes the next copy needs. Streaming stores write whole
//! lines to memory without reading them and leave the cache to the receive path. On x86-64
//! with AVX2 the body of a copy uses 32-byte streaming stores; the unaligned head and the tail
//! use an ordinary copy, and so does every other CPU.
//!
//! The stores are weakly ordered: [`StreamCopy::finish`] (a store fence) must run before the
//! buffer is handed to the kernel for a write or read by another path. The appender fences at
//! the end of every push.

/// Copies shorter than this are plain copies (a streaming copy pays off on whole lines).
const MIN_STREAM_BYTES: usize = 4096;

/// A run of copies into one buffer; remembers whether any streamed, so that [`Self::finish`]
/// fences only then.
pub(crate) struct StreamCopy {
    streamed: bool,
}

impl StreamCopy {
    pub(crate) fn new() -> StreamCopy {
        StreamCopy { streamed: false }
    }

    /// Copies `src` into `dst` (same length).
    pub(crate) fn copy(&mut self, dst: &mut [u8], src: &[u8]) {
        assert_eq!(dst.len(), src.len());
        #[cfg(target_arch = "x86_64")]
        if src.len() >= MIN_STREAM_BYTES && avx2() {
            // SAFETY: AVX2 is present (checked above); both slices are valid for `len` bytes
            // and do not overlap (one is borrowed mutably).
            unsafe { x86::stream_copy(dst.as_mut_ptr(), src.as_ptr(), src.len()) };
            self.streamed = true;
            return;
        }
        dst.copy_from_slice(src);
    }

    /// Orders the streaming stores before anything that follows (a write submission).
    pub(crate) fn finish(self) {
        #[cfg(target_arch = "x86_64")]
        if self.streamed {
            // SAFETY: SSE is part of x86-64.
            unsafe { std::arch::x86_64::_mm_sfence() };
        }
    }
}

#[cfg(target_arch = "x86_64")]
fn avx2() -> bool {
    std::is_x86_feature_detected!("avx2")
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::{__m256i, _mm256_loadu_si256, _mm256_stream_si256};

    const LANE: usize = 32;

    /// Plain copy up to the first 32-byte aligned destination address, streaming stores of
    /// 128 bytes per step for the body, plain copy of the tail.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn stream_copy(dst: *mut u8, src: *const u8, len: usize) {
        let head = ((LANE - (dst as usize % LANE)) % LANE).min(len);
        std::ptr::copy_nonoverlapping(src, dst, head);
        let mut at = head;
        while at + 4 * LANE <= len {
            let s = src.add(at) as *const __m256i;
            let d = dst.add(at) as *mut __m256i;
            let (a, b, c, e) = (
                _mm256_loadu_si256(s),
                _mm256_loadu_si256(s.add(1)),
                _mm256_loadu_si256(s.add(2)),
                _mm256_loadu_si256(s.add(3)),
            );
            _mm256_stream_si256(d, a);
            _mm256_stream_si256(d.add(1), b);
            _mm256_stream_si256(d.add(2), c);
            _mm256_stream_si256(d.add(3), e);
            at += 4 * LANE;
        }
        std::ptr::copy_nonoverlapping(src.add(at), dst.add(at), len - at);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_length_and_alignment_copies_exactly() {
        let src: Vec<u8> = (0..20_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        for len in [0, 1, 31, 32, 127, 128, 129, 4095, 4096, 4097, 9000, 19_000] {
            for src_at in [0, 1, 17, 32] {
                for dst_at in [0, 3, 31, 32, 33] {
                    let mut dst = vec![0xAAu8; len + dst_at + 64];
                    let mut copy = StreamCopy::new();
                    copy.copy(&mut dst[dst_at..dst_at + len], &src[src_at..src_at + len]);
                    copy.finish();
                    assert_eq!(&dst[dst_at..dst_at + len], &src[src_at..src_at + len]);
                    assert!(dst[..dst_at].iter().all(|&b| b == 0xAA), "{len} {dst_at}");
                    assert!(
                        dst[dst_at + len..].iter().all(|&b| b == 0xAA),
                        "{len} {dst_at}"
                    );
                }
            }
        }
    }
}
