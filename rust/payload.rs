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
const PARALLEL_BYTES: usize = 4 << 20;

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
    let bytes: usize = work
        .iter()
        .map(|item| match item {
            Ok(Payload::Text(data) | Payload::Bytes(data)) => data.len(),
            Err(_) => 0,
        })
        .sum();
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    if bytes < PARALLEL_BYTES || threads < 2 || work.len() < 2 {
        return run(work);
    }
    let chunk = work.len().div_ceil(threads);
    std::thread::scope(|scope| {
        let handles: Vec<_> = work
            .chunks(chunk)
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
}
