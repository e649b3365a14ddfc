//! Placeholder pictures: deterministic RGB images derived from a prompt, encoded as PNG.

use sha2::{Digest, Sha256};

const SIGNATURE: &[u8; 8] = b"\x89PNG\r\n\x1a\n";

/// Largest width or height accepted, in pixels.
pub const MAX_SIDE: u32 = 8192;

/// Filtered scanlines up to this many bytes are stored, not compressed: building a deflate
/// block's Huffman tables costs microseconds, more than a few stored bytes are worth.
const STORE_UP_TO: usize = 1024;

/// Encodes 8-bit RGB pixels (`width * height * 3` bytes, row-major) as a PNG file.
pub fn encode_rgb(width: u32, height: u32, pixels: &[u8]) -> Vec<u8> {
    let stride = width as usize * 3;
    debug_assert_eq!(pixels.len(), stride * height as usize);
    // Each scanline is filtered with "Sub" (type 1): gradients become runs of equal bytes.
    let mut filtered = Vec::with_capacity((stride + 1) * height as usize);
    for line in pixels.chunks_exact(stride.max(1)).take(height as usize) {
        filtered.push(1);
        for (i, &byte) in line.iter().enumerate() {
            let left = if i >= 3 { line[i - 3] } else { 0 };
            filtered.push(byte.wrapping_sub(left));
        }
    }
    let compressed = if filtered.len() <= STORE_UP_TO {
        zlib_stored(&filtered)
    } else {
        miniz_oxide::deflate::compress_to_vec_zlib(&filtered, 3)
    };
    let mut out = Vec::with_capacity(compressed.len() + 64);
    out.extend_from_slice(SIGNATURE);
    let mut header = [0u8; 13];
    header[..4].copy_from_slice(&width.to_be_bytes());
    header[4..8].copy_from_slice(&height.to_be_bytes());
    // Bit depth 8, colour type 2 (RGB), deflate, adaptive filtering, no interlace.
    header[8..].copy_from_slice(&[8, 2, 0, 0, 0]);
    chunk(&mut out, b"IHDR", &header);
    chunk(&mut out, b"IDAT", &compressed);
    chunk(&mut out, b"IEND", &[]);
    out
}

/// A zlib stream of `data` in stored (uncompressed) deflate blocks.
fn zlib_stored(data: &[u8]) -> Vec<u8> {
    const BLOCK: usize = u16::MAX as usize;
    let mut out = Vec::with_capacity(data.len() + 6 + 5 * data.len().div_ceil(BLOCK).max(1));
    // Deflate with a 32 KiB window, no preset dictionary; FCHECK makes the header a multiple of 31.
    out.extend_from_slice(&[0x78, 0x01]);
    let mut blocks = data.chunks(BLOCK).peekable();
    if blocks.peek().is_none() {
        out.extend_from_slice(&[1, 0, 0, 0xff, 0xff]);
    }
    while let Some(block) = blocks.next() {
        let len = block.len() as u16;
        out.push(u8::from(blocks.peek().is_none()));
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&(!len).to_le_bytes());
        out.extend_from_slice(block);
    }
    out.extend_from_slice(&adler32(data).to_be_bytes());
    out
}

fn adler32(data: &[u8]) -> u32 {
    const MOD: u32 = 65_521;
    // 5,552 bytes is the most that can be summed before `b` could overflow 32 bits.
    let (mut a, mut b) = (1u32, 0u32);
    for part in data.chunks(5_552) {
        for &byte in part {
            a += u32::from(byte);
            b += a;
        }
        a %= MOD;
        b %= MOD;
    }
    (b << 16) | a
}

fn chunk(out: &mut Vec<u8>, kind: &[u8; 4], data: &[u8]) {
    let len = u32::try_from(data.len()).expect("PNG chunk larger than 4 GiB");
    out.extend_from_slice(&len.to_be_bytes());
    let start = out.len();
    out.extend_from_slice(kind);
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start..]);
    out.extend_from_slice(&crc.to_be_bytes());
}

/// The seed of one picture: a digest of the prompt, the seed and the generation index.
fn digest(prompt: &[u8], seed: u64, index: u32) -> [u8; 32] {
    let mut hasher = Sha256::new();
    hasher.update((prompt.len() as u64).to_le_bytes());
    hasher.update(prompt);
    hasher.update(seed.to_le_bytes());
    hasher.update(index.to_le_bytes());
    hasher.finalize().into()
}

/// A placeholder picture for `prompt`: a diagonal two-colour gradient with a block of a
/// third colour, all chosen by a digest of `(prompt, seed, index)`. The same arguments
/// always give the same PNG bytes; any other index gives other pixels.
pub fn placeholder(prompt: &[u8], seed: u64, index: u32, width: u32, height: u32) -> Vec<u8> {
    let d = digest(prompt, seed, index);
    let (from, to, block) = ([d[0], d[1], d[2]], [d[3], d[4], d[5]], [d[6], d[7], d[8]]);
    let (w, h) = (width as usize, height as usize);
    // Block corners, as fractions of the picture in 1/256ths.
    let x0 = w * usize::from(d[9] / 2) / 256;
    let y0 = h * usize::from(d[10] / 2) / 256;
    let x1 = x0 + (w * (64 + usize::from(d[11] / 2)) / 256).max(1);
    let y1 = y0 + (h * (64 + usize::from(d[12] / 2)) / 256).max(1);
    let span = (w + h).saturating_sub(2).max(1);
    let mut pixels = vec![0u8; w * h * 3];
    for (y, line) in pixels.chunks_exact_mut((w * 3).max(1)).take(h).enumerate() {
        for (x, pixel) in line.chunks_exact_mut(3).enumerate() {
            let colour = if (x0..x1).contains(&x) && (y0..y1).contains(&y) {
                block
            } else {
                let t = (x + y) * 255 / span;
                let mix =
                    |a: u8, b: u8| ((usize::from(a) * (255 - t) + usize::from(b) * t) / 255) as u8;
                [
                    mix(from[0], to[0]),
                    mix(from[1], to[1]),
                    mix(from[2], to[2]),
                ]
            };
            pixel.copy_from_slice(&colour);
        }
    }
    encode_rgb(width, height, &pixels)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads a PNG written by `encode_rgb` back into its pixels, checking every CRC.
    fn decode(png: &[u8]) -> (u32, u32, Vec<u8>) {
        assert_eq!(&png[..8], SIGNATURE);
        let mut at = 8;
        let (mut width, mut height, mut data) = (0, 0, Vec::new());
        while at < png.len() {
            let len = u32::from_be_bytes(png[at..at + 4].try_into().unwrap()) as usize;
            let body = &png[at + 4..at + 8 + len];
            let crc = u32::from_be_bytes(png[at + 8 + len..at + 12 + len].try_into().unwrap());
            assert_eq!(crc32fast::hash(body), crc);
            match &body[..4] {
                b"IHDR" => {
                    width = u32::from_be_bytes(body[4..8].try_into().unwrap());
                    height = u32::from_be_bytes(body[8..12].try_into().unwrap());
                    assert_eq!(&body[12..17], &[8, 2, 0, 0, 0]);
                }
                b"IDAT" => data.extend_from_slice(&body[4..]),
                b"IEND" => assert_eq!(len, 0),
                other => panic!("unexpected chunk {other:?}"),
            }
            at += 12 + len;
        }
        let raw = miniz_oxide::inflate::decompress_to_vec_zlib(&data).unwrap();
        let stride = width as usize * 3;
        let mut pixels = Vec::new();
        for line in raw.chunks_exact(stride + 1) {
            assert_eq!(line[0], 1);
            let start = pixels.len();
            for (i, &byte) in line[1..].iter().enumerate() {
                let left = if i >= 3 { pixels[start + i - 3] } else { 0 };
                pixels.push(byte.wrapping_add(left));
            }
        }
        (width, height, pixels)
    }

    #[test]
    fn encoded_pixels_read_back() {
        let pixels: Vec<u8> = (0..5 * 3 * 3).map(|i| (i * 37 % 251) as u8).collect();
        let png = encode_rgb(5, 3, &pixels);
        assert_eq!(decode(&png), (5, 3, pixels));
    }

    #[test]
    fn stored_streams_inflate_to_their_data() {
        for len in [0, 1, 1_000, 65_535, 65_536, 200_000] {
            let data: Vec<u8> = (0..len).map(|i| (i * 131 % 256) as u8).collect();
            let stream = zlib_stored(&data);
            assert_eq!(u16::from_be_bytes([stream[0], stream[1]]) % 31, 0);
            assert_eq!(
                miniz_oxide::inflate::decompress_to_vec_zlib(&stream).unwrap(),
                data
            );
        }
    }

    #[test]
    fn small_pictures_are_stored_and_large_ones_compressed() {
        let png = placeholder(b"a cat", 0, 0, 4, 4);
        // Signature, IHDR (25), IDAT (12 + 2 + 5 + 4 lines of 13 + 4), IEND (12).
        assert_eq!(png.len(), 8 + 25 + 12 + 2 + 5 + 52 + 4 + 12);
        let (_, _, pixels) = decode(&placeholder(b"a cat", 0, 0, 64, 64));
        assert!(placeholder(b"a cat", 0, 0, 64, 64).len() < pixels.len() / 4);
    }

    #[test]
    fn placeholder_has_the_requested_size() {
        let (w, h, pixels) = decode(&placeholder(b"a cat", 0, 0, 17, 9));
        assert_eq!((w, h, pixels.len()), (17, 9, 17 * 9 * 3));
        let (w, h, _) = decode(&placeholder(b"a cat", 0, 0, 1, 1));
        assert_eq!((w, h), (1, 1));
    }

    #[test]
    fn placeholder_is_deterministic_and_distinct() {
        let base = placeholder(b"a cat", 7, 0, 32, 32);
        assert_eq!(base, placeholder(b"a cat", 7, 0, 32, 32));
        for other in [
            placeholder(b"a cat", 7, 1, 32, 32),
            placeholder(b"a cat", 8, 0, 32, 32),
            placeholder(b"a dog", 7, 0, 32, 32),
        ] {
            assert_ne!(decode(&base).2, decode(&other).2);
        }
    }
}
