//! The format of an image, read from its first bytes.

/// The file extension of an image's format, read from its first bytes.
pub fn extension(bytes: &[u8]) -> Option<&'static str> {
    let starts = |magic: &[u8]| bytes.starts_with(magic);
    if starts(b"\x89PNG\r\n\x1a\n") {
        Some("png")
    } else if starts(b"\xff\xd8\xff") {
        Some("jpg")
    } else if starts(b"GIF87a") || starts(b"GIF89a") {
        Some("gif")
    } else if bytes.len() >= 12 && starts(b"RIFF") && &bytes[8..12] == b"WEBP" {
        Some("webp")
    } else if starts(b"BM") {
        Some("bmp")
    } else if starts(b"II*\0") || starts(b"MM\0*") {
        Some("tiff")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_recognised_by_their_magic_bytes() {
        assert_eq!(extension(b"\x89PNG\r\n\x1a\nrest"), Some("png"));
        assert_eq!(extension(b"\xff\xd8\xff\xe0"), Some("jpg"));
        assert_eq!(extension(b"GIF89a.."), Some("gif"));
        assert_eq!(extension(b"RIFF\0\0\0\0WEBPVP8 "), Some("webp"));
        assert_eq!(extension(b"RIFF\0\0\0\0WAVE"), None);
        assert_eq!(extension(b"II*\0"), Some("tiff"));
        assert_eq!(extension(b"hello"), None);
    }
}
