//! The whole 32-character blocks a base64 text starts with, decoded with AVX2
//! instructions. The general SIMD decoder leaves a text's last 32 to 37 characters to a
//! loop of table lookups (its stores write past the bytes they decode), which is half of
//! a small image's text; a block here is written exactly, so none is left out.

/// Decodes the whole 32-character blocks that `text` starts with into `out` (24 bytes
/// each), up to the first block holding a character outside the standard alphabet
/// (padding included) or as many as `out` holds; returns how many it decoded (none where
/// the CPU has no AVX2).
pub(super) fn decode(text: &[u8], out: &mut [u8]) -> usize {
    #[cfg(target_arch = "x86_64")]
    if avx2::available() {
        // SAFETY: the CPU has AVX2.
        return unsafe { avx2::decode(text, out) };
    }
    let _ = (text, out);
    0
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use std::arch::x86_64::*;
    use std::sync::OnceLock;

    pub(super) fn available() -> bool {
        static AVAILABLE: OnceLock<bool> = OnceLock::new();
        *AVAILABLE.get_or_init(|| is_x86_feature_detected!("avx2"))
    }

    /// Each lane's table repeated over both lanes.
    macro_rules! lanes {
        ($($byte:expr),* $(,)?) => {
            _mm256_setr_epi8($($byte),*, $($byte),*)
        };
    }

    /// `super::decode`. A character's low and high nibbles select two bit sets whose
    /// intersection is empty exactly for the alphabet's characters; the high nibble (and
    /// whether the character is `/`) selects what to add to it to make its 6-bit value;
    /// multiply-adds pack each four values into three bytes.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn decode(text: &[u8], out: &mut [u8]) -> usize {
        let lo_sets = lanes!(
            0x15, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x13, 0x1A, 0x1B, 0x1B,
            0x1B, 0x1A
        );
        let hi_sets = lanes!(
            0x10, 0x10, 0x01, 0x02, 0x04, 0x08, 0x04, 0x08, 0x10, 0x10, 0x10, 0x10, 0x10, 0x10,
            0x10, 0x10
        );
        let shifts = lanes!(0, 16, 19, 4, -65, -65, -71, -71, 0, 0, 0, 0, 0, 0, 0, 0);
        let slash = _mm256_set1_epi8(0x2F);
        let order = lanes!(2, 1, 0, 6, 5, 4, 10, 9, 8, 14, 13, 12, -1, -1, -1, -1);
        let pack = _mm256_setr_epi32(0, 1, 2, 4, 5, 6, 6, 6);
        let blocks = (text.len() / 32).min(out.len() / 24);
        for block in 0..blocks {
            // SAFETY: `block` is below both counts of whole blocks.
            let (from, to) = unsafe {
                (
                    text.as_ptr().add(32 * block),
                    out.as_mut_ptr().add(24 * block),
                )
            };
            // SAFETY: 32 bytes of `text` from `from`.
            let chars = unsafe { _mm256_loadu_si256(from.cast()) };
            let hi = _mm256_and_si256(_mm256_srli_epi32(chars, 4), slash);
            let lo = _mm256_and_si256(chars, slash);
            let outside = _mm256_and_si256(
                _mm256_shuffle_epi8(lo_sets, lo),
                _mm256_shuffle_epi8(hi_sets, hi),
            );
            if _mm256_testz_si256(outside, outside) == 0 {
                return block;
            }
            let is_slash = _mm256_cmpeq_epi8(chars, slash);
            let shift = _mm256_shuffle_epi8(shifts, _mm256_add_epi8(is_slash, hi));
            let values = _mm256_add_epi8(chars, shift);
            let pairs = _mm256_maddubs_epi16(values, _mm256_set1_epi32(0x0140_0140));
            let triples = _mm256_madd_epi16(pairs, _mm256_set1_epi32(0x0001_1000));
            let bytes = _mm256_permutevar8x32_epi32(_mm256_shuffle_epi8(triples, order), pack);
            // SAFETY: 24 bytes of `out` from `to`: 16, then 8.
            unsafe {
                _mm_storeu_si128(to.cast(), _mm256_castsi256_si128(bytes));
                _mm_storel_epi64(to.add(16).cast(), _mm256_extracti128_si256::<1>(bytes));
            }
        }
        blocks
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use super::decode;

    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    /// A text of `len` characters of the alphabet, varied by `seed`.
    fn text(len: usize, seed: u64) -> Vec<u8> {
        let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                ALPHABET[(state % 64) as usize]
            })
            .collect()
    }

    #[test]
    fn whole_blocks_decode_as_the_reference_does() {
        for len in [0, 4, 31, 32, 36, 63, 64, 96, 100, 320] {
            for seed in 0..50 {
                let text = text(len, seed);
                let expected = STANDARD.decode(&text[..len / 4 * 4]).expect("valid");
                let mut out = vec![0; expected.len()];
                let blocks = decode(&text, &mut out);
                if has_avx2() {
                    assert_eq!(blocks, len / 32, "{len}");
                }
                assert_eq!(out[..24 * blocks], expected[..24 * blocks], "{len} {seed}");
                assert!(
                    out[24 * blocks..].iter().all(|&byte| byte == 0),
                    "nothing more written"
                );
            }
        }
    }

    fn has_avx2() -> bool {
        cfg!(target_arch = "x86_64") && std::is_x86_feature_detected!("avx2")
    }

    #[test]
    fn every_byte_value_in_every_position_is_accepted_only_from_the_alphabet() {
        let valid = text(64, 7);
        for position in 0..64 {
            for byte in 0..=255u8 {
                let mut text = valid.clone();
                text[position] = byte;
                let mut out = [0u8; 48];
                let blocks = decode(&text, &mut out);
                let accepted = if ALPHABET.contains(&byte) {
                    2
                } else {
                    position / 32
                };
                if has_avx2() {
                    assert_eq!(blocks, accepted, "{position} {byte}");
                }
                let expected = STANDARD.decode(&text[..32 * blocks]).expect("valid");
                assert_eq!(out[..24 * blocks], expected, "{position} {byte}");
            }
        }
    }

    #[test]
    fn no_more_blocks_than_the_output_holds() {
        let text = text(96, 3);
        let mut out = [0u8; 47];
        let blocks = decode(&text, &mut out);
        assert!(blocks <= 1);
        assert_eq!(
            out[..24 * blocks],
            STANDARD.decode(&text).expect("valid")[..24 * blocks]
        );
        assert!(out[24..].iter().all(|&byte| byte == 0));
    }
}
