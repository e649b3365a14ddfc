//! Image payloads: base64 decoding and encoding, content references, format sniffing.
//!
//! Plain Rust with no Python types, so that it runs with the GIL released and is covered
//! by `cargo test`.

use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use sha2::{Digest, Sha256};

/// Prefix of a content reference: `sha256:<64 hex digits>`.
pub const REF_PREFIX: &[u8; 7] = b"sha256:";
/// Length of a content reference in bytes (all ASCII).
pub const REF_LEN: usize = REF_PREFIX.len() + 64;

/// Standard alphabet, padding optional: servers differ on trailing `=`.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// What must be derived from each image payload of a batch.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Needs {
    /// The SHA-256 of the image bytes.
    pub hash: bool,
    /// The image bytes themselves (decoded from base64 when the payload is text).
    pub bytes: bool,
    /// The image as base64 text (encoded when the payload is bytes).
    pub text: bool,
}

/// One image payload as the model returned it.
#[derive(Clone, Copy, Debug)]
pub enum Payload<'a> {
    /// Base64 text.
    Text(&'a [u8]),
    /// Raw image bytes.
    Bytes(&'a [u8]),
}

/// What was derived from one payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Derived {
    pub hash: Option<[u8; 32]>,
    pub bytes: Option<Vec<u8>>,
    pub text: Option<String>,
}

/// Checks one payload and derives what `needs` asks for from it; an error names what is
/// wrong with it. Every payload is checked the same way whatever is needed: base64 text
/// must decode, and an image must not be empty.
pub fn derive(
    payload: Payload<'_>,
    needs: Needs,
    scratch: &mut Vec<u8>,
) -> Result<Derived, String> {
    let mut out = Derived::default();
    match payload {
        Payload::Text(text) => {
            scratch.clear();
            BASE64
                .decode_vec(text, scratch)
                .map_err(|e| format!("is not valid base64 ({e})"))?;
            if scratch.is_empty() {
                return Err("is empty".to_owned());
            }
            if needs.hash {
                out.hash = Some(Sha256::digest(&scratch[..]).into());
            }
            if needs.bytes {
                out.bytes = Some(scratch.clone());
            }
        }
        Payload::Bytes(bytes) => {
            if bytes.is_empty() {
                return Err("is empty".to_owned());
            }
            if needs.hash {
                out.hash = Some(Sha256::digest(bytes).into());
            }
            if needs.text {
                out.text = Some(BASE64.encode(bytes));
            }
        }
    }
    Ok(out)
}

/// Standard base64 text of `bytes`, padded.
pub fn encode(bytes: &[u8]) -> String {
    BASE64.encode(bytes)
}

/// Payload bytes above which a batch is checked on every core.
const PARALLEL_BYTES: usize = 1 << 20;

/// `derive` for every payload of a batch (an `Err` is passed through), in order; a batch
/// with many bytes is split across the machine's cores.
pub fn derive_all(
    work: &[Result<Payload<'_>, String>],
    needs: Needs,
) -> Vec<Result<Derived, String>> {
    let run = |work: &[Result<Payload<'_>, String>]| {
        let mut scratch = Vec::new();
        work.iter()
            .map(|item| match item {
                Ok(payload) => derive(*payload, needs, &mut scratch),
                Err(error) => Err(error.clone()),
            })
            .collect::<Vec<_>>()
    };
    let chunk = parallel_chunk(work).max(1);
    in_parallel(work.chunks(chunk).collect(), run)
}

/// `run` on every part, one thread each when there are several, the results in order.
fn in_parallel<P: Send, T: Send>(parts: Vec<P>, run: impl Fn(P) -> Vec<T> + Sync) -> Vec<T> {
    if parts.len() == 1 {
        return parts.into_iter().flat_map(run).collect();
    }
    let run = &run;
    std::thread::scope(|scope| {
        let handles: Vec<_> = parts
            .into_iter()
            .map(|part| scope.spawn(move || run(part)))
            .collect();
        handles
            .into_iter()
            .flat_map(|handle| {
                handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    })
}

/// One image of a batch decoded into [`Decoded::values`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Span {
    pub start: usize,
    pub end: usize,
    pub hash: Option<[u8; 32]>,
}

/// A batch's images decoded into one buffer, in order, each checked as `derive` checks;
/// the buffer holds nothing but the images, back to back.
#[derive(Debug, Default)]
pub struct Decoded {
    pub values: Vec<u8>,
    pub spans: Vec<Result<Span, String>>,
}

impl Decoded {
    /// The bytes of a decoded image.
    pub fn bytes(&self, span: &Span) -> &[u8] {
        &self.values[span.start..span.end]
    }
}

/// The length of the bytes a payload holds, as far as its length tells (base64 text that
/// turns out invalid is found out when decoded).
fn decoded_len(payload: &Result<Payload<'_>, String>) -> usize {
    match payload {
        Ok(Payload::Text(text)) => {
            let pads = text
                .iter()
                .rev()
                .take(2)
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
        Ok(Payload::Bytes(bytes)) => bytes.len(),
        Err(_) => 0,
    }
}

/// Decodes one payload into `out` (sized by `decoded_len`).
fn decode_into(payload: &Result<Payload<'_>, String>, out: &mut [u8]) -> Result<(), String> {
    match payload {
        Ok(Payload::Text(text)) => match BASE64.decode_slice(text, out) {
            Ok(written) if written == out.len() => {}
            Ok(_) | Err(base64::DecodeSliceError::OutputSliceTooSmall) => {
                return Err("is not valid base64 (its length does not fit its padding)".to_owned())
            }
            Err(base64::DecodeSliceError::DecodeError(e)) => {
                return Err(format!("is not valid base64 ({e})"))
            }
        },
        Ok(Payload::Bytes(bytes)) => out.copy_from_slice(bytes),
        Err(error) => return Err(error.clone()),
    }
    if out.is_empty() {
        return Err("is empty".to_owned());
    }
    Ok(())
}

/// The payloads one core decodes, and where their bytes go (`out` starts at `base`).
struct Part<'a, 'p> {
    items: &'a [Result<Payload<'p>, String>],
    lengths: &'a [usize],
    out: &'a mut [u8],
    base: usize,
}

/// Decodes every payload of a batch (an `Err` is passed through) into one buffer, hashing
/// each when asked. Each payload's bytes go straight to their place in the buffer; a batch
/// with many bytes is split across the machine's cores.
pub fn decode_all(work: &[Result<Payload<'_>, String>], hash: bool) -> Decoded {
    let sizes: Vec<usize> = work.iter().map(decoded_len).collect();
    let mut values = vec![0u8; sizes.iter().sum()];
    let chunk = parallel_chunk(work).max(1);
    let mut parts = Vec::new();
    let mut rest: &mut [u8] = &mut values;
    let mut base = 0;
    for (items, lengths) in work.chunks(chunk).zip(sizes.chunks(chunk)) {
        let length: usize = lengths.iter().sum();
        let (head, tail) = std::mem::take(&mut rest).split_at_mut(length);
        rest = tail;
        parts.push(Part {
            items,
            lengths,
            out: head,
            base,
        });
        base += length;
    }
    let run = |part: Part<'_, '_>| {
        let mut at = 0;
        part.items
            .iter()
            .zip(part.lengths)
            .map(|(item, length)| {
                let target = &mut part.out[at..at + length];
                let start = part.base + at;
                at += length;
                decode_into(item, target)?;
                let hash = hash.then(|| Sha256::digest(&*target).into());
                Ok(Span {
                    start,
                    end: start + length,
                    hash,
                })
            })
            .collect::<Vec<Result<Span, String>>>()
    };
    let spans = in_parallel(parts, run);
    let mut decoded = Decoded { values, spans };
    let wasted = decoded
        .spans
        .iter()
        .zip(&sizes)
        .any(|(span, size)| span.is_err() && *size > 0);
    if wasted {
        decoded.compact();
    }
    decoded
}

impl Decoded {
    /// Drops the room left by payloads that failed, keeping the images back to back.
    fn compact(&mut self) {
        let mut end = 0;
        for span in self.spans.iter_mut().flatten() {
            let length = span.end - span.start;
            self.values.copy_within(span.start..span.end, end);
            span.start = end;
            span.end = end + length;
            end += length;
        }
        self.values.truncate(end);
    }
}

/// How many payloads each core takes: all of them when the batch is too small to split.
fn parallel_chunk(work: &[Result<Payload<'_>, String>]) -> usize {
    let bytes: usize = work
        .iter()
        .map(|item| match item {
            Ok(Payload::Text(data) | Payload::Bytes(data)) => data.len(),
            Err(_) => 0,
        })
        .sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if bytes < PARALLEL_BYTES || threads < 2 {
        work.len()
    } else {
        work.len().div_ceil(threads).max(1)
    }
}

/// The content reference `sha256:<hex>` of a digest, as ASCII bytes.
pub fn content_ref(hash: &[u8; 32]) -> [u8; REF_LEN] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; REF_LEN];
    out[..REF_PREFIX.len()].copy_from_slice(REF_PREFIX);
    for (i, byte) in hash.iter().enumerate() {
        out[REF_PREFIX.len() + 2 * i] = HEX[usize::from(byte >> 4)];
        out[REF_PREFIX.len() + 2 * i + 1] = HEX[usize::from(byte & 0x0f)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Needs = Needs {
        hash: true,
        bytes: true,
        text: true,
    };

    fn hex_ref(data: &[u8]) -> String {
        let hash: [u8; 32] = Sha256::digest(data).into();
        String::from_utf8(content_ref(&hash).to_vec()).unwrap()
    }

    #[test]
    fn reference_of_known_content() {
        assert_eq!(
            hex_ref(b"abc"),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(hex_ref(b"").len(), REF_LEN);
    }

    #[test]
    fn text_payload_is_decoded_then_hashed() {
        let mut scratch = Vec::new();
        let got = derive(Payload::Text(b"YWJj"), ALL, &mut scratch).unwrap();
        assert_eq!(got.bytes.as_deref(), Some(&b"abc"[..]));
        assert_eq!(got.hash, Some(Sha256::digest(b"abc").into()));
        assert_eq!(got.text, None);
    }

    #[test]
    fn padding_is_optional() {
        let mut scratch = Vec::new();
        let padded = derive(Payload::Text(b"YWI="), ALL, &mut scratch).unwrap();
        let bare = derive(Payload::Text(b"YWI"), ALL, &mut scratch).unwrap();
        assert_eq!(padded, bare);
        assert_eq!(bare.bytes.as_deref(), Some(&b"ab"[..]));
    }

    #[test]
    fn bytes_payload_is_encoded_and_hashed_as_is() {
        let mut scratch = Vec::new();
        let got = derive(Payload::Bytes(b"\x89PNG"), ALL, &mut scratch).unwrap();
        assert_eq!(got.text.as_deref(), Some("iVBORw=="));
        assert_eq!(got.hash, Some(Sha256::digest(b"\x89PNG").into()));
        assert_eq!(got.bytes, None);
    }

    #[test]
    fn invalid_base64_is_an_error_naming_the_offset() {
        let mut scratch = Vec::new();
        let err = derive(Payload::Text(b"ab!d"), ALL, &mut scratch).unwrap_err();
        assert!(err.starts_with("is not valid base64"), "{err}");
        assert!(err.contains("offset 2"), "{err}");
    }

    #[test]
    fn every_payload_is_checked_whatever_is_needed() {
        let mut scratch = Vec::new();
        let none = Needs::default();
        let err = derive(Payload::Text(b"not base64!"), none, &mut scratch).unwrap_err();
        assert!(err.starts_with("is not valid base64"), "{err}");
        let err = derive(
            Payload::Text(b"data:image/png;base64,iVBO"),
            none,
            &mut scratch,
        );
        assert!(err.unwrap_err().starts_with("is not valid base64"));
        assert_eq!(
            derive(Payload::Text(b""), none, &mut scratch).unwrap_err(),
            "is empty"
        );
        assert!(derive(Payload::Text(b"="), none, &mut scratch).is_err());
        assert_eq!(
            derive(Payload::Bytes(b""), none, &mut scratch).unwrap_err(),
            "is empty"
        );
        let got = derive(Payload::Text(b"YWJj"), none, &mut scratch).unwrap();
        assert_eq!(got, Derived::default());
    }

    #[test]
    fn a_batch_decodes_into_one_buffer_in_order() {
        let big = vec![7u8; PARALLEL_BYTES];
        let text = encode(&big);
        let work = vec![
            Ok(Payload::Text(b"YWJj")),
            Ok(Payload::Text(b"!!")),
            Err("is None".to_owned()),
            Ok(Payload::Bytes(b"xyz")),
            Ok(Payload::Text(text.as_bytes())),
            Ok(Payload::Bytes(b"")),
        ];
        let decoded = decode_all(&work, true);
        let spans = &decoded.spans;
        let first = spans[0].as_ref().unwrap();
        assert_eq!(decoded.bytes(first), b"abc");
        assert_eq!(first.hash, Some(Sha256::digest(b"abc").into()));
        assert!(spans[1]
            .as_ref()
            .unwrap_err()
            .starts_with("is not valid base64"));
        assert_eq!(spans[2].as_ref().unwrap_err(), "is None");
        assert_eq!(decoded.bytes(spans[3].as_ref().unwrap()), b"xyz");
        assert_eq!(decoded.bytes(spans[4].as_ref().unwrap()), &big[..]);
        assert_eq!(spans[5].as_ref().unwrap_err(), "is empty");
        assert_eq!(decoded.values.len(), 3 + 3 + big.len());
    }
}
