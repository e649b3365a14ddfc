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

impl Needs {
    /// Whether a payload of this kind needs any work at all.
    pub fn any_for(&self, payload_is_text: bool) -> bool {
        if payload_is_text {
            self.hash || self.bytes
        } else {
            self.hash || self.text
        }
    }
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

/// Derives what `needs` asks for from one payload; an error names what is wrong with it.
pub fn derive(
    payload: Payload<'_>,
    needs: Needs,
    scratch: &mut Vec<u8>,
) -> Result<Derived, String> {
    let mut out = Derived::default();
    match payload {
        Payload::Text(text) => {
            if !(needs.hash || needs.bytes) {
                return Ok(out);
            }
            scratch.clear();
            BASE64
                .decode_vec(text, scratch)
                .map_err(|e| format!("is not valid base64 ({e})"))?;
            if needs.hash {
                out.hash = Some(Sha256::digest(&scratch[..]).into());
            }
            if needs.bytes {
                out.bytes = Some(scratch.clone());
            }
        }
        Payload::Bytes(bytes) => {
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
    fn nothing_needed_means_no_decoding() {
        let mut scratch = Vec::new();
        let needs = Needs {
            text: true,
            ..Needs::default()
        };
        assert!(!needs.any_for(true));
        assert!(needs.any_for(false));
        let got = derive(Payload::Text(b"not base64 at all!"), needs, &mut scratch).unwrap();
        assert_eq!(got, Derived::default());
    }
}
