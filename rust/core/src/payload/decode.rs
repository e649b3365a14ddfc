//! Checking and decoding the payloads of a batch: one at a time into what a dict row
//! needs ([`derive_all`]), or all into one buffer for a binary column ([`decode_all`]).
//! Both check every payload the same way: base64 text must decode, and an image must not
//! be empty. Batches with many bytes are split across the machine's cores.

use std::ops::Range;

use super::{base64_len, decode_base64, decode_base64_into, encode, sha256, Payload, Problem};

/// A payload to check, or why the binding found it is none.
pub type Work<'a> = Result<Payload<'a>, Problem>;

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

/// What was derived from one payload.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Derived {
    pub hash: Option<[u8; 32]>,
    pub bytes: Option<Vec<u8>>,
    pub text: Option<String>,
}

/// Checks one payload and derives what `needs` asks for from it. Every payload is
/// checked the same way whatever is needed.
pub fn derive(
    payload: Payload<'_>,
    needs: Needs,
    scratch: &mut Vec<u8>,
) -> Result<Derived, Problem> {
    let mut out = Derived::default();
    match payload {
        Payload::Text(text) => {
            *scratch = decode_base64(text)?;
            if scratch.is_empty() {
                return Err(Problem::Empty);
            }
            if needs.hash {
                out.hash = Some(sha256::hash(scratch));
            }
            if needs.bytes {
                out.bytes = Some(scratch.clone());
            }
        }
        Payload::Bytes(bytes) => {
            if bytes.is_empty() {
                return Err(Problem::Empty);
            }
            if needs.hash {
                out.hash = Some(sha256::hash(bytes));
            }
            if needs.text {
                out.text = Some(encode(bytes));
            }
        }
    }
    Ok(out)
}

/// Payload bytes above which a batch is checked on every core.
const PARALLEL_BYTES: usize = 1 << 20;

/// `derive` for every payload of a batch (an `Err` is passed through), in order; a batch
/// with many bytes is split across the machine's cores.
pub fn derive_all(work: &[Work<'_>], needs: Needs) -> Vec<Result<Derived, Problem>> {
    let run = |work: &[Work<'_>]| {
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
        return parts.into_iter().next().map(run).unwrap_or_default();
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
    pub spans: Vec<Result<Span, Problem>>,
}

impl Decoded {
    /// The bytes of a decoded image.
    pub fn bytes(&self, span: &Span) -> &[u8] {
        &self.values[span.start..span.end]
    }
}

/// The length of the bytes a payload holds, as far as its length tells (base64 text that
/// turns out invalid is found out when decoded).
pub(crate) fn decoded_len(payload: &Work<'_>) -> usize {
    match payload {
        Ok(Payload::Text(text)) => base64_len(text),
        Ok(Payload::Bytes(bytes)) => bytes.len(),
        Err(_) => 0,
    }
}

/// Decodes one payload into `out` (sized by `decoded_len`).
fn decode_into(payload: &Work<'_>, out: &mut [u8]) -> Result<(), Problem> {
    match payload {
        Ok(Payload::Text(text)) => decode_base64_into(text, out)?,
        Ok(Payload::Bytes(bytes)) => out.copy_from_slice(bytes),
        Err(problem) => return Err(problem.clone()),
    }
    if out.is_empty() {
        return Err(Problem::Empty);
    }
    Ok(())
}

/// The payloads one core decodes, and where their bytes go (`out` starts at `base`).
struct Part<'a, 'p> {
    items: &'a [Work<'p>],
    lengths: &'a [usize],
    out: &'a mut [u8],
    base: usize,
}

/// Decodes every payload of a batch (an `Err` is passed through) into one buffer, hashing
/// each when asked. Each payload's bytes go straight to their place in the buffer; a batch
/// with many bytes is split across the machine's cores.
pub fn decode_all(work: &[Work<'_>], hash: bool) -> Decoded {
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
        let Part {
            items,
            lengths,
            out,
            base,
        } = part;
        let mut at = 0;
        // The image decoded last that waits for another to be hashed with (two at a time,
        // each pair while its bytes are still in the cache), and the digests made.
        let mut waiting: Option<(usize, Range<usize>)> = None;
        let mut digests = Vec::with_capacity(if hash { items.len() } else { 0 });
        // Collected, not pushed: a pushed `Result` went through the stack, written in parts
        // and read back whole, a load the CPU cannot forward.
        let mut spans: Vec<Result<Span, Problem>> = (items.iter().zip(lengths).enumerate())
            .map(|(index, (item, &length))| {
                let range = at..at + length;
                at += length;
                decode_into(item, &mut out[range.clone()])?;
                if hash {
                    match waiting.take() {
                        None => waiting = Some((index, range.clone())),
                        Some((first, earlier)) => {
                            let (a, b) = sha256::hash_pair(&out[earlier], &out[range.clone()]);
                            digests.extend([(first, a), (index, b)]);
                        }
                    }
                }
                Ok(Span {
                    start: base + range.start,
                    end: base + range.end,
                    hash: None,
                })
            })
            .collect();
        if let Some((index, range)) = waiting {
            digests.push((index, sha256::hash(&out[range])));
        }
        for (index, digest) in digests {
            if let Ok(span) = &mut spans[index] {
                span.hash = Some(digest);
            }
        }
        spans
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
fn parallel_chunk(work: &[Work<'_>]) -> usize {
    let bytes: usize = work
        .iter()
        .map(|item| match item {
            Ok(Payload::Text(data) | Payload::Bytes(data)) => data.len(),
            Err(_) => 0,
        })
        .sum();
    if bytes < PARALLEL_BYTES {
        return work.len();
    }
    match threads() {
        1 => work.len(),
        threads => work.len().div_ceil(threads).max(1),
    }
}

/// The threads the machine runs at once, asked once (the question reads system files).
fn threads() -> usize {
    static THREADS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *THREADS.get_or_init(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::encode;
    use sha2::{Digest, Sha256};

    const ALL: Needs = Needs {
        hash: true,
        bytes: true,
        text: true,
    };

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

    fn invalid(reason: &str) -> Problem {
        Problem::InvalidBase64 {
            reason: reason.to_owned(),
        }
    }

    #[test]
    fn invalid_base64_is_an_error_naming_the_offset() {
        let mut scratch = Vec::new();
        let err = derive(Payload::Text(b"ab!d"), ALL, &mut scratch).unwrap_err();
        assert_eq!(err, invalid("Invalid symbol 33, offset 2."));
        assert_eq!(
            err.to_string(),
            "is not valid base64 (Invalid symbol 33, offset 2.)"
        );
    }

    #[test]
    fn every_payload_is_checked_whatever_is_needed() {
        let mut scratch = Vec::new();
        let none = Needs::default();
        let mut check = |payload| derive(payload, none, &mut scratch);
        assert_eq!(
            check(Payload::Text(b"not base64!")),
            Err(invalid("Invalid symbol 32, offset 3."))
        );
        assert_eq!(
            check(Payload::Text(b"data:image/png;base64,iVBO")),
            Err(invalid("Invalid symbol 58, offset 4."))
        );
        assert_eq!(check(Payload::Text(b"")), Err(Problem::Empty));
        assert_eq!(
            check(Payload::Text(b"=")),
            Err(invalid("Invalid symbol 61, offset 0."))
        );
        assert_eq!(check(Payload::Bytes(b"")), Err(Problem::Empty));
        assert_eq!(check(Payload::Text(b"YWJj")), Ok(Derived::default()));
    }

    #[test]
    fn a_batch_decodes_into_one_buffer_in_order() {
        let big = vec![7u8; PARALLEL_BYTES];
        let text = encode(&big);
        let missing = Problem::Missing { error: None };
        let work = vec![
            Ok(Payload::Text(b"YWJj")),
            Ok(Payload::Text(b"!!")),
            Err(missing.clone()),
            Ok(Payload::Bytes(b"xyz")),
            Ok(Payload::Text(text.as_bytes())),
            Ok(Payload::Bytes(b"")),
            Ok(Payload::Text(b"YWJjZ")),
        ];
        let decoded = decode_all(&work, true);
        let spans = &decoded.spans;
        let first = spans[0].as_ref().unwrap();
        assert_eq!(decoded.bytes(first), b"abc");
        assert_eq!(first.hash, Some(Sha256::digest(b"abc").into()));
        assert_eq!(spans[1], Err(invalid("Invalid symbol 33, offset 0.")));
        assert_eq!(spans[2], Err(missing));
        assert_eq!(decoded.bytes(spans[3].as_ref().unwrap()), b"xyz");
        assert_eq!(decoded.bytes(spans[4].as_ref().unwrap()), &big[..]);
        assert_eq!(spans[5], Err(Problem::Empty));
        assert_eq!(spans[6], Err(invalid("Invalid input length: 5")));
        assert_eq!(decoded.values.len(), 3 + 3 + big.len());
        // Every image is hashed, failures between them or not (they are hashed in pairs).
        for span in spans.iter().flatten() {
            assert_eq!(span.hash, Some(Sha256::digest(decoded.bytes(span)).into()));
        }
        let images = [b"a".as_slice(), b"bc", b"def", b"ghij", b"klmno"];
        for count in 0..=images.len() {
            let work: Vec<Work<'_>> = images[..count]
                .iter()
                .map(|i| Ok(Payload::Bytes(i)))
                .collect();
            let decoded = decode_all(&work, true);
            for (span, image) in decoded.spans.iter().zip(&images) {
                let span = span.as_ref().unwrap();
                assert_eq!(
                    span.hash,
                    Some(Sha256::digest(image).into()),
                    "{count} images"
                );
            }
        }
    }
}
