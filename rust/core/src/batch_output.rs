//! OpenAI Batch API output files: one JSON line per request (`{"custom_id", "response":
//! {"status_code", "body"}, "error"}`), read one line at a time into one reused buffer.
//! A line answered with status 200 is read up to its body, left as JSON text for
//! `images_api::read`; any other line is left to the caller to read whole.

use std::borrow::Cow;
use std::io::{self, BufRead};

use serde::Deserialize;
use serde_json::value::RawValue;

/// One line of an output or error file, looked at up to its body.
#[derive(Debug, PartialEq, Eq)]
pub enum Line<'a> {
    /// A 200 answer with a body (not `null`): the request's `custom_id` (when it is text) and the
    /// body's JSON text.
    Answered {
        custom_id: Option<Cow<'a, str>>,
        body: &'a str,
    },
    /// Not JSON (a line no request can be matched to).
    NotJson,
    /// JSON of any other kind: an error, another status, or another shape.
    Other,
}

#[derive(Deserialize)]
struct RawLine<'a> {
    #[serde(borrow, default)]
    custom_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    response: Option<RawResponse<'a>>,
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    #[serde(borrow, default)]
    status_code: Option<&'a RawValue>,
    #[serde(borrow, default)]
    body: Option<&'a RawValue>,
}

/// Reads one line (its newline included or not).
pub fn read_line(line: &[u8]) -> Line<'_> {
    let raw: RawLine<'_> = match serde_json::from_slice(line) {
        Ok(raw) => raw,
        Err(error) if error.is_data() => return Line::Other,
        Err(_) => return Line::NotJson,
    };
    let Some(RawResponse {
        status_code: Some(status),
        body: Some(body),
    }) = raw.response
    else {
        return Line::Other;
    };
    // A number equal to 200 (`200`, `200.0`, `2e2`), as a JSON reader comparing values sees it.
    if serde_json::from_str::<f64>(status.get()).ok() != Some(200.0) {
        return Line::Other;
    }
    let custom_id = raw
        .custom_id
        .and_then(|id| serde_json::from_str::<Cow<'_, str>>(id.get()).ok());
    Line::Answered {
        custom_id,
        body: body.get(),
    }
}

/// The lines of a file, each read into the same buffer: `lines.next(|line| ...)` hands
/// the next one to a function, so that a file of 4 MB answers holds one of them at a time.
pub struct Lines<R> {
    reader: R,
    buffer: Vec<u8>,
}

impl<R: BufRead> Lines<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            buffer: Vec::new(),
        }
    }

    /// Calls `read` with the next line (`None` at the end of the file).
    pub fn next<T>(&mut self, read: impl FnOnce(&[u8]) -> T) -> io::Result<Option<T>> {
        self.buffer.clear();
        if self.reader.read_until(b'\n', &mut self.buffer)? == 0 {
            return Ok(None);
        }
        Ok(Some(read(&self.buffer)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered<'a>(custom_id: Option<&'a str>, body: &'a str) -> Line<'a> {
        Line::Answered {
            custom_id: custom_id.map(Cow::Borrowed),
            body,
        }
    }

    #[test]
    fn a_200_answer_is_read_up_to_its_body() {
        let line = br#"{"id": "r1", "custom_id": "req-1", "response": {"status_code": 200, "request_id": "x", "body": {"data": [{"b64_json": "iVBO"}]}}, "error": null}
"#;
        assert_eq!(
            read_line(line),
            answered(Some("req-1"), r#"{"data": [{"b64_json": "iVBO"}]}"#)
        );
        let escaped =
            br#"{"custom_id": "req\u002d2", "response": {"body": [], "status_code": 2e2}}"#;
        assert_eq!(read_line(escaped), answered(Some("req-2"), "[]"));
        let unnamed = br#"{"custom_id": 7, "response": {"status_code": 200.0, "body": {}}}"#;
        assert_eq!(read_line(unnamed), answered(None, "{}"));
    }

    #[test]
    fn other_answers_and_shapes_are_left_to_the_caller() {
        for line in [
            r#"{"custom_id": "a", "response": {"status_code": 400, "body": {"error": {}}}}"#,
            r#"{"custom_id": "a", "response": {"status_code": "200", "body": {}}}"#,
            r#"{"custom_id": "a", "response": {"status_code": 200}}"#,
            r#"{"custom_id": "a", "response": {"status_code": 200, "body": null}}"#,
            r#"{"custom_id": "a", "response": null, "error": {"code": "batch_expired"}}"#,
            r#"{"custom_id": "a", "response": 5}"#,
            r#"{"custom_id": "a", "response": {"status_code": 200, "body": {}, "body": {}}}"#,
            r#"[1, 2]"#,
            r#""text""#,
        ] {
            assert_eq!(read_line(line.as_bytes()), Line::Other, "{line}");
        }
    }

    #[test]
    fn lines_that_are_not_json_are_told_apart() {
        for line in [&b"not json"[..], b"{\"custom_id\": \"a\", ", b"", b"\xff"] {
            assert_eq!(read_line(line), Line::NotJson, "{line:?}");
        }
    }

    #[test]
    fn lines_are_read_one_at_a_time_into_one_buffer() {
        let file = b"first line\n\nlast, without a newline";
        let mut lines = Lines::new(&file[..]);
        let mut seen = Vec::new();
        while let Some(line) = lines.next(<[u8]>::to_vec).unwrap() {
            seen.push(line);
        }
        assert_eq!(
            seen,
            [&b"first line\n"[..], b"\n", b"last, without a newline"]
        );
        let capacity = lines.buffer.capacity();
        assert!(lines.next(|_| ()).unwrap().is_none());
        assert_eq!(lines.buffer.capacity(), capacity);
    }
}
