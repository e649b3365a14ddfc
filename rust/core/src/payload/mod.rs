//! Image payloads as models return them: base64 text or bytes, checked and decoded
//! ([`decode`]), referred to by content ([`content_ref`]), their format read from their
//! first bytes ([`format`]).

mod base64_blocks;
pub mod decode;
pub mod format;
pub mod sha256;

use std::fmt;
use std::io::{self, Read};

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;

/// Prefix of a content reference: `sha256:<64 hex digits>`.
pub const REF_PREFIX: &[u8; 7] = b"sha256:";
/// Length of a content reference in bytes (all ASCII).
pub const REF_LEN: usize = REF_PREFIX.len() + 64;

/// Standard alphabet, padding optional: servers differ on trailing `=`.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// One image payload as the model returned it.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// Base64 text.
    Text(&'a [u8]),
    /// Raw image bytes.
    Bytes(&'a [u8]),
}

/// Why a payload is no image. Displayed as the end of a sentence about the image
/// (`image 0 of the model's answer <problem>`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// Text with characters that are not ASCII (and cannot be encoded).
    NotAscii,
    /// No payload; the backend's error when it gave one.
    Missing { error: Option<String> },
    /// A value that is neither text nor bytes, named by its type.
    WrongType { type_name: String },
    /// Text that does not decode as base64; the decoder's reason.
    InvalidBase64 { reason: String },
    /// No bytes at all.
    Empty,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::NotAscii => f.write_str("is not valid base64 (it is not ASCII text)"),
            Problem::Missing { error: Some(error) } => write!(f, "is missing: {error}"),
            Problem::Missing { error: None } => {
                f.write_str("is None, expected base64 text or bytes")
            }
            Problem::WrongType { type_name } => {
                write!(f, "is a {type_name}, expected base64 text or bytes")
            }
            Problem::InvalidBase64 { reason } => write!(f, "is not valid base64 ({reason})"),
            Problem::Empty => f.write_str("is empty"),
        }
    }
}

impl std::error::Error for Problem {}

/// The bytes of standard base64 text, padding optional (`decode_base64_into` a buffer of
/// `base64_len(text)` bytes).
pub fn decode_base64(text: &[u8]) -> Result<Vec<u8>, Problem> {
    let mut out = vec![0; base64_len(text)];
    decode_base64_into(text, &mut out)?;
    Ok(out)
}

/// The length of the bytes base64 text holds, as far as its length and padding tell
/// (text that turns out invalid is found out when decoded).
pub(crate) fn base64_len(text: &[u8]) -> usize {
    let pads = (text.iter().rev().take(2))
        .take_while(|&&b| b == b'=')
        .count();
    let digits = text.len() - pads;
    digits / 4 * 3
        + match digits % 4 {
            2 => 1,
            3 => 2,
            _ => 0,
        }
}

/// The bytes of standard base64 text, padding optional, decoded into `out`, which must
/// be the decoded length, with SIMD instructions where the machine has them. Text the
/// fast decoders refuse is decoded again by the reference one, which accepts the same
/// texts and says why it refuses one.
pub fn decode_base64_into(text: &[u8], out: &mut [u8]) -> Result<(), Problem> {
    let engine = fast_decoder(text);
    let length = out.len();
    // (`decode` panics when `out` is shorter than the text's bytes.)
    if engine
        .decoded_length(text)
        .is_ok_and(|decoded| decoded == length)
    {
        // The whole blocks of the alphabet first, then the rest (its padding with it).
        let blocks = base64_blocks::decode(text, out);
        let rest = &text[32 * blocks..];
        let out = base64_simd::Out::from_slice(&mut out[24 * blocks..]);
        if rest.is_empty() || engine.decode(rest, out).is_ok() {
            return Ok(());
        }
    }
    match BASE64.decode_slice(text, out) {
        Ok(written) if written == length => Ok(()),
        // Sized by the padding the text ends with: the reference decoder says what is
        // wrong with the text itself.
        Ok(_) | Err(base64::DecodeSliceError::OutputSliceTooSmall) => match BASE64.decode(text) {
            Err(e) => Err(invalid_base64(e)),
            Ok(_) => Err(Problem::InvalidBase64 {
                reason: "its length does not fit its padding".to_owned(),
            }),
        },
        Err(base64::DecodeSliceError::DecodeError(e)) => Err(invalid_base64(e)),
    }
}

/// The SIMD decoder for `text`: padded when its length is a multiple of 4, else unpadded.
fn fast_decoder(text: &[u8]) -> &'static base64_simd::Base64 {
    if text.len().is_multiple_of(4) {
        &base64_simd::STANDARD
    } else {
        &base64_simd::STANDARD_NO_PAD
    }
}

/// The reference decoder's refusal, as a `Problem`.
fn invalid_base64(error: base64::DecodeError) -> Problem {
    Problem::InvalidBase64 {
        reason: error.to_string(),
    }
}

/// Standard base64 text of `bytes`, padded (encoded with SIMD instructions where the
/// machine has them).
pub fn encode(bytes: &[u8]) -> String {
    base64_simd::STANDARD.encode_to_string(bytes)
}

/// The length of the padded base64 text of `size` bytes.
pub fn encoded_len(size: usize) -> usize {
    base64_simd::STANDARD.encoded_length(size)
}

/// Bytes read from `source` a piece at a time: a multiple of 3, so that each piece's
/// text has no padding; small enough to come from the allocator's heap, not a mapping.
const PIECE: usize = 3 * 32 * 1024;

/// Writes the padded base64 text of the `size` bytes of `source` into `out` (as long as
/// that text: `encoded_len(size)`), reading a piece at a time: no copy of the whole source
/// is held. An `InvalidData` error when `source` holds another number of bytes, or `out`
/// has another length.
pub fn encode_into(mut source: impl Read, size: usize, out: &mut [u8]) -> io::Result<()> {
    let other = |what: &str| io::Error::new(io::ErrorKind::InvalidData, what.to_owned());
    if out.len() != encoded_len(size) {
        return Err(other(
            "the text's room is not the length of the text of the source",
        ));
    }
    let mut piece = vec![0u8; PIECE];
    let (mut read, mut written) = (0, 0);
    loop {
        let mut filled = 0;
        while filled < PIECE {
            match source.read(&mut piece[filled..]) {
                Ok(0) => break,
                Ok(count) => filled += count,
                Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
                Err(error) => return Err(error),
            }
        }
        read += filled;
        if read > size {
            return Err(other("the source holds more bytes than expected"));
        }
        let target = &mut out[written..written + encoded_len(filled)];
        let text =
            base64_simd::STANDARD.encode(&piece[..filled], base64_simd::Out::from_slice(target));
        written += text.len();
        if filled < PIECE {
            break;
        }
    }
    if read != size {
        return Err(other("the source holds fewer bytes than expected"));
    }
    Ok(())
}

/// A content reference, `sha256:<64 hex digits>`, held on the stack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ContentRef([u8; REF_LEN]);

impl ContentRef {
    /// The reference as text.
    pub fn as_str(&self) -> &str {
        // SAFETY: only ASCII is ever written into it (`REF_PREFIX` and `HEX_PAIRS`, in
        // `content_ref`), and ASCII is UTF-8.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }
}

/// The two lowercase hex digits of every byte.
#[cfg(not(target_arch = "x86_64"))]
const HEX_PAIRS: [[u8; 2]; 256] = {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut pairs = [[0u8; 2]; 256];
    let mut byte = 0;
    while byte < 256 {
        pairs[byte] = [HEX[byte >> 4], HEX[byte & 0x0f]];
        byte += 1;
    }
    pairs
};

/// The content reference of a SHA-256 digest.
pub fn content_ref(hash: &[u8; 32]) -> ContentRef {
    let mut out = [0u8; REF_LEN];
    let (prefix, digits) = out.split_at_mut(REF_PREFIX.len());
    prefix.copy_from_slice(REF_PREFIX);
    let digits: &mut [u8; 64] = digits.try_into().expect("64 hex digits follow the prefix");
    hex(hash, digits);
    ContentRef(out)
}

/// The lowercase hex digits of `bytes`, 16 bytes at a time.
#[cfg(target_arch = "x86_64")]
fn hex(bytes: &[u8; 32], out: &mut [u8; 64]) {
    // SAFETY: every x86-64 CPU has SSE2.
    unsafe { hex_sse2(bytes, out) }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse2")]
fn hex_sse2(bytes: &[u8; 32], out: &mut [u8; 64]) {
    use std::arch::x86_64::*;
    /// Each nibble's digit: '0' + n, and 39 more ('a' - '0' - 10) from 10 on.
    #[target_feature(enable = "sse2")]
    fn digits(n: __m128i) -> __m128i {
        let letters = _mm_and_si128(_mm_cmpgt_epi8(n, _mm_set1_epi8(9)), _mm_set1_epi8(39));
        _mm_add_epi8(_mm_add_epi8(n, _mm_set1_epi8(b'0' as i8)), letters)
    }
    let nibble = _mm_set1_epi8(0x0f);
    for (chunk, out) in bytes.chunks_exact(16).zip(out.chunks_exact_mut(32)) {
        // SAFETY: `chunk` holds 16 bytes and `out` 32: one load, two stores, unaligned.
        let value = unsafe { _mm_loadu_si128(chunk.as_ptr().cast()) };
        let high = digits(_mm_and_si128(_mm_srli_epi16(value, 4), nibble));
        let low = digits(_mm_and_si128(value, nibble));
        let out = out.as_mut_ptr().cast::<__m128i>();
        // SAFETY: as above.
        unsafe {
            _mm_storeu_si128(out, _mm_unpacklo_epi8(high, low));
            _mm_storeu_si128(out.add(1), _mm_unpackhi_epi8(high, low));
        }
    }
}

/// The lowercase hex digits of `bytes`.
#[cfg(not(target_arch = "x86_64"))]
fn hex(bytes: &[u8; 32], out: &mut [u8; 64]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair.copy_from_slice(&HEX_PAIRS[usize::from(*byte)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn reference_of_known_content() {
        let hash: [u8; 32] = Sha256::digest(b"abc").into();
        assert_eq!(
            content_ref(&hash).as_str(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(content_ref(&[0; 32]).as_str().len(), REF_LEN);
    }

    #[test]
    fn every_byte_has_its_two_hex_digits() {
        for start in (0..=255u8).step_by(32) {
            let hash: [u8; 32] = std::array::from_fn(|i| start.wrapping_add(i as u8));
            let expected: String = hash.iter().map(|byte| format!("{byte:02x}")).collect();
            assert_eq!(content_ref(&hash).as_str(), format!("sha256:{expected}"));
        }
    }

    #[test]
    fn decoding_into_a_slice_accepts_and_refuses_what_the_reference_decoder_does() {
        let texts: [&[u8]; 14] = [
            b"YWJj",
            b"YWI=",
            b"YWI",
            b"YQ==",
            b"YQ",
            b"YR==",
            b"YWJ=",
            b"Y===",
            b"YQ===",
            b"YWJjZA===",
            b"YW!j",
            b"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4OQ==",
            b"YWJjZGVmZ2hpamtsbW5vcHFyc3R1dnd4eXo0NTY3ODkwMTIzNDU2Nzg5MDEyMzQ1Njc4O$==",
            b"",
        ];
        for text in texts {
            let reference = BASE64.decode(text);
            // Sized from the text, as the batch decoder sizes it.
            let mut out = vec![0u8; base64_len(text)];
            let fast = decode_base64_into(text, &mut out);
            match reference {
                Ok(bytes) => {
                    assert_eq!(fast, Ok(()), "{text:?}");
                    assert_eq!(out, bytes, "{text:?}");
                }
                Err(e) => assert_eq!(
                    fast,
                    Err(Problem::InvalidBase64 {
                        reason: e.to_string()
                    }),
                    "{text:?}"
                ),
            }
        }
    }

    #[test]
    fn decoding_into_a_slice_agrees_with_the_reference_over_lengths_and_corruptions() {
        let agree = |text: &[u8]| {
            let mut out = vec![0u8; base64_len(text)];
            let fast = decode_base64_into(text, &mut out).map(|()| out);
            let reference = BASE64.decode(text).map_err(invalid_base64);
            assert_eq!(fast, reference, "{:?}", String::from_utf8_lossy(text));
            assert_eq!(decode_base64(text), reference);
        };
        for size in 0..100usize {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 37 + size) as u8).collect();
            let padded = encode(&bytes).into_bytes();
            let unpadded: Vec<u8> = padded.iter().copied().filter(|&c| c != b'=').collect();
            for text in [padded, unpadded] {
                agree(&text);
                for position in (0..text.len()).step_by(5) {
                    for bad in [b'!', b'=', b'-', b' ', 0x80] {
                        let mut text = text.clone();
                        text[position] = bad;
                        agree(&text);
                    }
                }
            }
        }
    }

    #[test]
    fn every_byte_is_written_as_two_lowercase_hex_digits() {
        for byte in 0..=255u8 {
            let expected = format!("sha256:{}", format!("{byte:02x}").repeat(32));
            assert_eq!(content_ref(&[byte; 32]).as_str(), expected);
        }
    }

    #[test]
    fn problems_end_a_sentence_about_the_image() {
        let cases = [
            (
                Problem::NotAscii,
                "is not valid base64 (it is not ASCII text)",
            ),
            (
                Problem::Missing {
                    error: Some("the server said 503".to_owned()),
                },
                "is missing: the server said 503",
            ),
            (
                Problem::Missing { error: None },
                "is None, expected base64 text or bytes",
            ),
            (
                Problem::WrongType {
                    type_name: "int".to_owned(),
                },
                "is a int, expected base64 text or bytes",
            ),
            (
                Problem::InvalidBase64 {
                    reason: "Invalid byte 33, offset 2.".to_owned(),
                },
                "is not valid base64 (Invalid byte 33, offset 2.)",
            ),
            (Problem::Empty, "is empty"),
        ];
        for (problem, text) in cases {
            assert_eq!(problem.to_string(), text);
        }
    }

    #[test]
    fn base64_decodes_with_or_without_padding_and_says_why_it_refuses() {
        assert_eq!(decode_base64(b"iVBORw==").unwrap(), b"\x89PNG");
        assert_eq!(decode_base64(b"iVBORw").unwrap(), b"\x89PNG");
        assert_eq!(decode_base64(b"").unwrap(), b"");
        let long = vec![7u8; 3000];
        assert_eq!(decode_base64(encode(&long).as_bytes()).unwrap(), long);
        assert_eq!(
            decode_base64(b"iV!ORw=="),
            Err(Problem::InvalidBase64 {
                reason: "Invalid symbol 33, offset 2.".to_owned()
            })
        );
    }

    #[test]
    fn bytes_encode_as_padded_base64() {
        assert_eq!(encode(b"\x89PNG"), "iVBORw==");
        assert_eq!(encode(b""), "");
    }

    #[test]
    fn a_source_encodes_into_its_text_a_piece_at_a_time() {
        for size in [
            0,
            1,
            2,
            3,
            PIECE - 1,
            PIECE,
            PIECE + 1,
            2 * PIECE,
            2 * PIECE + 2,
        ] {
            let bytes: Vec<u8> = (0..size).map(|i| (i * 7 % 251) as u8).collect();
            let mut out = vec![0u8; encoded_len(size)];
            encode_into(bytes.as_slice(), size, &mut out).unwrap();
            assert_eq!(out, BASE64.encode(&bytes).into_bytes(), "{size} bytes");
        }
    }

    #[test]
    fn a_source_of_another_length_is_an_error() {
        let reason = |source: &[u8], size: usize, room: usize| {
            encode_into(source, size, &mut vec![0u8; room])
                .unwrap_err()
                .to_string()
        };
        let fewer = "the source holds fewer bytes than expected";
        let more = "the source holds more bytes than expected";
        assert_eq!(reason(&[1; 4], 5, encoded_len(5)), fewer);
        assert_eq!(
            reason(&[1; PIECE], PIECE + 1, encoded_len(PIECE + 1)),
            fewer
        );
        assert_eq!(reason(&[1; 5], 4, encoded_len(4)), more);
        assert_eq!(reason(&[1; PIECE + 1], PIECE, encoded_len(PIECE)), more);
        assert_eq!(
            reason(&[1; 4], 4, 4),
            "the text's room is not the length of the text of the source"
        );
    }
}
