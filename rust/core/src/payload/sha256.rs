//! The SHA-256 of a batch's images. On x86-64 CPUs with the SHA extensions two images
//! are hashed at once ([`hash_pair`]), their rounds interleaved: one image's rounds wait
//! on the latency of the SHA instructions, which two hide from each other. Elsewhere, one
//! after another.

use sha2::{Digest, Sha256};

/// The SHA-256 of two items, computed together where the CPU allows.
pub fn hash_pair(a: &[u8], b: &[u8]) -> ([u8; 32], [u8; 32]) {
    #[cfg(target_arch = "x86_64")]
    if shani::available() {
        // SAFETY: the CPU has the features `shani::pair` is compiled for.
        return unsafe { shani::pair(a, b) };
    }
    (hash(a), hash(b))
}

/// The SHA-256 of one item.
pub fn hash(item: &[u8]) -> [u8; 32] {
    Sha256::digest(item).into()
}

#[cfg(target_arch = "x86_64")]
mod shani {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    /// Whether the CPU has what `pair` needs.
    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| {
            is_x86_feature_detected!("sha")
                && is_x86_feature_detected!("sse4.1")
                && is_x86_feature_detected!("ssse3")
        })
    }

    const H0: [u32; 8] = [
        0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab,
        0x5be0cd19,
    ];

    const K: [u32; 64] = [
        0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4,
        0xab1c5ed5, 0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe,
        0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f,
        0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7,
        0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc,
        0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b,
        0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116,
        0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
        0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
        0xc67178f2,
    ];

    /// A message cut into 64-byte blocks: its whole blocks in place, then its last bytes
    /// with the padding and the length in bits (one block or two).
    struct Blocks<'a> {
        whole: &'a [[u8; 64]],
        tail: [[u8; 64]; 2],
        count: usize,
    }

    impl<'a> Blocks<'a> {
        fn new(message: &'a [u8]) -> Self {
            let (whole, rest) = message.as_chunks::<64>();
            let mut tail = [0u8; 128];
            tail[..rest.len()].copy_from_slice(rest);
            tail[rest.len()] = 0x80;
            let tail_blocks = if rest.len() + 9 <= 64 { 1 } else { 2 };
            let bits = (message.len() as u64).wrapping_mul(8).to_be_bytes();
            tail[tail_blocks * 64 - 8..tail_blocks * 64].copy_from_slice(&bits);
            let (tail, _) = tail.as_chunks::<64>();
            Self {
                whole,
                tail: [tail[0], tail[1]],
                count: whole.len() + tail_blocks,
            }
        }

        fn block(&self, index: usize) -> &[u8; 64] {
            self.whole
                .get(index)
                .unwrap_or_else(|| &self.tail[index - self.whole.len()])
        }
    }

    /// A SHA-256 state in the order the SHA instructions keep it.
    #[derive(Clone, Copy)]
    struct State {
        abef: __m128i,
        cdgh: __m128i,
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn initial() -> State {
        // SAFETY: `H0` holds 8 words, two unaligned 16-byte loads.
        let (dcba, efgh) = unsafe {
            let words = H0.as_ptr().cast::<__m128i>();
            (_mm_loadu_si128(words), _mm_loadu_si128(words.add(1)))
        };
        let cdab = _mm_shuffle_epi32(dcba, 0xB1);
        let efgh = _mm_shuffle_epi32(efgh, 0x1B);
        State {
            abef: _mm_alignr_epi8(cdab, efgh, 8),
            cdgh: _mm_blend_epi16(efgh, cdab, 0xF0),
        }
    }

    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    fn digest(state: State) -> [u8; 32] {
        let feba = _mm_shuffle_epi32(state.abef, 0x1B);
        let dchg = _mm_shuffle_epi32(state.cdgh, 0xB1);
        let mut words = [0u32; 8];
        // SAFETY: `words` holds 8 words, two unaligned 16-byte stores.
        unsafe {
            let out = words.as_mut_ptr().cast::<__m128i>();
            _mm_storeu_si128(out, _mm_blend_epi16(feba, dchg, 0xF0));
            _mm_storeu_si128(out.add(1), _mm_alignr_epi8(dchg, feba, 8));
        }
        let mut bytes = [0u8; 32];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        bytes
    }

    /// One 64-byte block into each of `N` states, the `N` computed step by step together.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    #[inline]
    fn compress<const N: usize>(states: &mut [State; N], blocks: [&[u8; 64]; N]) {
        let mask = _mm_set_epi64x(
            0x0C0D_0E0F_0809_0A0Bu64 as i64,
            0x0405_0607_0001_0203u64 as i64,
        );
        let saved = *states;
        let mut window = [[_mm_setzero_si128(); 4]; N];
        for (words, block) in window.iter_mut().zip(blocks) {
            for (quarter, word) in words.iter_mut().enumerate() {
                // SAFETY: the block holds 64 bytes, four unaligned 16-byte loads.
                let loaded =
                    unsafe { _mm_loadu_si128(block.as_ptr().cast::<__m128i>().add(quarter)) };
                *word = _mm_shuffle_epi8(loaded, mask);
            }
        }
        for group in 0..16 {
            // SAFETY: `K` holds 64 words, four from `4 * group` (at most 60).
            let k = unsafe { _mm_loadu_si128(K.as_ptr().add(4 * group).cast::<__m128i>()) };
            for (state, words) in states.iter_mut().zip(window.iter_mut()) {
                let current = if group < 4 {
                    words[group]
                } else {
                    let [w0, w1, w2, w3] = *words;
                    let next = _mm_sha256msg2_epu32(
                        _mm_add_epi32(_mm_sha256msg1_epu32(w0, w1), _mm_alignr_epi8(w3, w2, 4)),
                        w3,
                    );
                    *words = [w1, w2, w3, next];
                    next
                };
                let sum = _mm_add_epi32(current, k);
                state.cdgh = _mm_sha256rnds2_epu32(state.cdgh, state.abef, sum);
                let high = _mm_shuffle_epi32(sum, 0x0E);
                state.abef = _mm_sha256rnds2_epu32(state.abef, state.cdgh, high);
            }
        }
        for (state, saved) in states.iter_mut().zip(saved) {
            state.abef = _mm_add_epi32(state.abef, saved.abef);
            state.cdgh = _mm_add_epi32(state.cdgh, saved.cdgh);
        }
    }

    /// The SHA-256 of two messages, computed together while both have blocks left.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn pair(a: &[u8], b: &[u8]) -> ([u8; 32], [u8; 32]) {
        let (a, b) = (Blocks::new(a), Blocks::new(b));
        let mut both = [initial(), initial()];
        let common = a.count.min(b.count);
        for index in 0..common {
            compress(&mut both, [a.block(index), b.block(index)]);
        }
        let [mut first, mut second] = both;
        for index in common..a.count {
            compress(std::array::from_mut(&mut first), [a.block(index)]);
        }
        for index in common..b.count {
            compress(std::array::from_mut(&mut second), [b.block(index)]);
        }
        (digest(first), digest(second))
    }
}

#[cfg(test)]
mod tests {
    use super::{hash, hash_pair};

    #[test]
    fn every_length_and_pairing_hashes_as_sha2_does() {
        // Lengths around every padding edge (55, 56, 63, 64, 119, 120, ...), paired with
        // messages of fewer, as many and more blocks.
        let data: Vec<u8> = (0..700u32).map(|i| (i * 31 + 7) as u8).collect();
        let lengths: Vec<usize> = (0..=200)
            .chain([255, 256, 257, 511, 512, 640, 700])
            .collect();
        for &first in &lengths {
            for other in [0, 55, 56, 64, 119, first, 700] {
                let (a, b) = (&data[..first], &data[..other]);
                assert_eq!(hash_pair(a, b), (hash(a), hash(b)), "{first} and {other}");
                assert_eq!(hash_pair(b, a), (hash(b), hash(a)), "{other} and {first}");
            }
        }
    }

    #[test]
    fn a_known_digest() {
        let (abc, empty) = hash_pair(b"abc", b"");
        assert_eq!(abc[..4], [0xba, 0x78, 0x16, 0xbf]);
        assert_eq!(empty[..4], [0xe3, 0xb0, 0xc4, 0x42]);
        assert_eq!(hash(b"abc"), abc);
    }
}
