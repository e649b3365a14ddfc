//! OpenAI Images API answers: a response body (`{"data": [{"b64_json" | "url",
//! "revised_prompt"?}, ...], "usage"?: {...}}`) read into its images, each decoded and
//! hashed. Strings are borrowed from the body unless they hold escapes.

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::payload::{decode_base64, Problem};

/// An image decoded from `b64_json`: its bytes and their SHA-256.
#[derive(Debug, PartialEq, Eq)]
pub struct DecodedImage {
    pub bytes: Vec<u8>,
    pub sha256: [u8; 32],
}

/// One image of an answer.
#[derive(Debug, PartialEq, Eq)]
pub enum Image<'a> {
    /// `b64_json`, decoded.
    Decoded(DecodedImage),
    /// `b64_json` that decodes to no image: the text as sent, and why.
    Undecodable {
        text: Cow<'a, str>,
        problem: Problem,
    },
    /// `url`: the image is to be downloaded.
    Url(Cow<'a, str>),
}

/// One item of an answer's `data`.
#[derive(Debug, PartialEq, Eq)]
pub struct Item<'a> {
    pub image: Image<'a>,
    /// `revised_prompt` when it is text.
    pub revised_prompt: Option<Cow<'a, str>>,
}

/// A response body, read.
#[derive(Debug)]
pub struct ImagesBody<'a> {
    pub items: Vec<Item<'a>>,
    /// The JSON text of `usage`, when the answer has one (`null` counts as none).
    pub usage: Option<&'a str>,
}

/// Why a body is not an Images API answer.
#[derive(Debug, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON of the expected shape; the parser's reason.
    Malformed(String),
    /// No `data` list.
    NoData,
    /// An item with neither `b64_json` nor `url` text.
    Neither { index: usize },
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::Malformed(reason) => {
                write!(f, "the server's answer is not an Images API body: {reason}")
            }
            BodyError::NoData => f.write_str("the server's answer has no `data` list of images"),
            BodyError::Neither { index } => write!(
                f,
                "the server returned an image with neither b64_json nor url (item {index} of `data`)"
            ),
        }
    }
}

impl std::error::Error for BodyError {}

#[derive(Deserialize)]
struct RawBody<'a> {
    #[serde(borrow, default)]
    data: Option<Vec<RawItem<'a>>>,
    #[serde(borrow, default)]
    usage: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct RawItem<'a> {
    #[serde(borrow, default)]
    b64_json: Option<Text<'a>>,
    #[serde(borrow, default)]
    url: Option<Text<'a>>,
    #[serde(borrow, default)]
    revised_prompt: Option<Text<'a>>,
}

/// A string field, or a value of another type (then ignored, as `null` is).
#[derive(Deserialize)]
#[serde(untagged)]
enum Text<'a> {
    Text(#[serde(borrow)] Cow<'a, str>),
    Other(serde::de::IgnoredAny),
}

impl<'a> Text<'a> {
    fn text(field: Option<Text<'a>>) -> Option<Cow<'a, str>> {
        match field {
            Some(Text::Text(text)) => Some(text),
            _ => None,
        }
    }
}

/// Reads a response body: every item's image decoded and hashed (or kept with why it
/// does not decode), its `revised_prompt`, and the answer's `usage`.
pub fn read(body: &[u8]) -> Result<ImagesBody<'_>, BodyError> {
    let raw: RawBody<'_> =
        serde_json::from_slice(body).map_err(|e| BodyError::Malformed(e.to_string()))?;
    let data = raw.data.ok_or(BodyError::NoData)?;
    let mut items = Vec::with_capacity(data.len());
    for (index, item) in data.into_iter().enumerate() {
        let image = match (Text::text(item.b64_json), Text::text(item.url)) {
            (Some(text), _) => decoded(text),
            (None, Some(url)) => Image::Url(url),
            (None, None) => return Err(BodyError::Neither { index }),
        };
        items.push(Item {
            image,
            revised_prompt: Text::text(item.revised_prompt),
        });
    }
    let usage = raw.usage.map(RawValue::get).filter(|text| *text != "null");
    Ok(ImagesBody { items, usage })
}

fn decoded(text: Cow<'_, str>) -> Image<'_> {
    match decode_base64(text.as_bytes()) {
        Ok(bytes) if !bytes.is_empty() => {
            let sha256 = Sha256::digest(&bytes).into();
            Image::Decoded(DecodedImage { bytes, sha256 })
        }
        Ok(_) => Image::Undecodable {
            text,
            problem: Problem::Empty,
        },
        Err(problem) => Image::Undecodable { text, problem },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::payload::encode;

    const PNG: &[u8] = b"\x89PNG\r\n\x1a\nrest";

    fn decoded_png() -> Image<'static> {
        Image::Decoded(DecodedImage {
            bytes: PNG.to_vec(),
            sha256: Sha256::digest(PNG).into(),
        })
    }

    #[test]
    fn images_prompts_and_usage_are_read() {
        let body = format!(
            r#"{{"created": 1, "data": [{{"b64_json": "{}", "revised_prompt": "a cat"}},
                {{"url": "http://x/a.png", "revised_prompt": null}}],
                "usage": {{"input_tokens": 3, "input_tokens_details": {{"text_tokens": 3}}}}}}"#,
            encode(PNG)
        );
        let read = read(body.as_bytes()).unwrap();
        assert_eq!(
            read.items,
            vec![
                Item {
                    image: decoded_png(),
                    revised_prompt: Some(Cow::Borrowed("a cat")),
                },
                Item {
                    image: Image::Url(Cow::Borrowed("http://x/a.png")),
                    revised_prompt: None,
                },
            ]
        );
        assert_eq!(
            read.usage,
            Some(r#"{"input_tokens": 3, "input_tokens_details": {"text_tokens": 3}}"#)
        );
    }

    #[test]
    fn escaped_text_is_unescaped_and_null_usage_is_none() {
        let text = encode(PNG).replace('/', "\\/");
        let body = format!(r#"{{"data": [{{"b64_json": "{text}"}}], "usage": null}}"#);
        let read = read(body.as_bytes()).unwrap();
        assert_eq!(read.items[0].image, decoded_png());
        assert_eq!(read.usage, None);
    }

    #[test]
    fn images_that_do_not_decode_keep_their_text_and_why() {
        let body = br#"{"data": [{"b64_json": "iV!ORw=="}, {"b64_json": ""}, {"b64_json": 5, "url": "u"}]}"#;
        let read = read(body).unwrap();
        assert_eq!(
            read.items[0].image,
            Image::Undecodable {
                text: Cow::Borrowed("iV!ORw=="),
                problem: Problem::InvalidBase64 {
                    reason: "Invalid symbol 33, offset 2.".to_owned()
                },
            }
        );
        assert_eq!(
            read.items[1].image,
            Image::Undecodable {
                text: Cow::Borrowed(""),
                problem: Problem::Empty,
            }
        );
        assert_eq!(read.items[2].image, Image::Url(Cow::Borrowed("u")));
    }

    #[test]
    fn bodies_of_another_shape_are_clear_errors() {
        let err = read(b"{\"data\": [").unwrap_err();
        assert!(
            err.to_string().starts_with(
                "the server's answer is not an Images API body: EOF while parsing a list"
            ),
            "{err}"
        );
        assert_eq!(read(b"{}").unwrap_err(), BodyError::NoData);
        assert_eq!(read(br#"{"data": null}"#).unwrap_err(), BodyError::NoData);
        assert_eq!(
            read(br#"{"data": [{"b64_json": "iVBORw=="}, {"revised_prompt": "x"}]}"#)
                .unwrap_err()
                .to_string(),
            "the server returned an image with neither b64_json nor url (item 1 of `data`)"
        );
        assert!(matches!(
            read(br#"{"data": {"b64_json": "x"}}"#).unwrap_err(),
            BodyError::Malformed(_)
        ));
        assert!(matches!(read(b"[1]").unwrap_err(), BodyError::Malformed(_)));
    }
}
