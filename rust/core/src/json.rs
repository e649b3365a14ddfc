//! JSON text for the metadata the columnar path stores as text: string escaping and the
//! raw output of one generation assembled from its parts.

use std::fmt::Write;

/// Appends `text` as a JSON string literal.
pub fn write_str(out: &mut String, text: &str) {
    out.push('"');
    let mut start = 0;
    for (at, byte) in text.bytes().enumerate() {
        let escape = match byte {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            0x00..=0x1f => "",
            _ => continue,
        };
        out.push_str(&text[start..at]);
        if escape.is_empty() {
            let _ = write!(out, "\\u{byte:04x}");
        } else {
            out.push_str(escape);
        }
        start = at + 1;
    }
    out.push_str(&text[start..]);
    out.push('"');
}

/// The members of an answer dict around its `images` key, as JSON without braces.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Members {
    pub before: String,
    pub after: String,
}

/// Appends a generation's raw output: its answer dict with `images` narrowed to one
/// image (written by `image`), between the dict's other members, in the dict's order.
pub fn write_raw_output(out: &mut String, members: &Members, image: impl FnOnce(&mut String)) {
    out.push('{');
    if !members.before.is_empty() {
        out.push_str(&members.before);
        out.push(',');
    }
    out.push_str("\"images\":[");
    image(out);
    out.push(']');
    if !members.after.is_empty() {
        out.push(',');
        out.push_str(&members.after);
    }
    out.push('}');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn quoted(text: &str) -> String {
        let mut out = String::new();
        write_str(&mut out, text);
        out
    }

    #[test]
    fn strings_are_escaped() {
        assert_eq!(quoted("plain"), "\"plain\"");
        assert_eq!(quoted("a\"b\\c"), "\"a\\\"b\\\\c\"");
        assert_eq!(quoted("l1\nl2\t\r"), "\"l1\\nl2\\t\\r\"");
        assert_eq!(quoted("\u{1}x\u{1f}"), "\"\\u0001x\\u001f\"");
        assert_eq!(quoted("ünï 🎨"), "\"ünï 🎨\"");
    }

    fn raw_output(image: &str, members: &Members) -> String {
        let mut out = String::new();
        write_raw_output(&mut out, members, |out| out.push_str(image));
        out
    }

    #[test]
    fn raw_output_narrows_images_and_keeps_the_order() {
        let none = Members::default();
        assert_eq!(
            raw_output("\"sha256:ab\"", &none),
            "{\"images\":[\"sha256:ab\"]}"
        );
        let members = Members {
            before: "\"seed\":3".to_owned(),
            after: "\"revised_prompt\":\"r\"".to_owned(),
        };
        assert_eq!(
            raw_output("\"x\"", &members),
            "{\"seed\":3,\"images\":[\"x\"],\"revised_prompt\":\"r\"}"
        );
    }
}
