//! Image artifacts on disk: content-addressed, all-or-nothing writes.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use sha2::{Digest, Sha256};

use crate::payload::format::extension;

/// The name of an image's artifact file: `<sha256 hex>.<extension>`.
pub fn file_name(bytes: &[u8]) -> Result<String, String> {
    file_name_of(bytes, &Sha256::digest(bytes).into())
}

/// `file_name` of an image whose SHA-256 is known.
pub fn file_name_of(bytes: &[u8], hash: &[u8; 32]) -> Result<String, String> {
    let ext = extension(bytes).ok_or_else(|| {
        let head: Vec<String> = bytes.iter().take(8).map(|b| format!("{b:02x}")).collect();
        format!(
            "the image bytes are in no known image format (first bytes: {})",
            head.join(" ")
        )
    })?;
    let mut name = String::with_capacity(64 + 1 + ext.len());
    for byte in hash {
        name.push_str(&format!("{byte:02x}"));
    }
    name.push('.');
    name.push_str(ext);
    Ok(name)
}

/// Where image files go: `folder/<name>`, recorded as `prefix/<name>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    pub folder: PathBuf,
    pub prefix: String,
}

impl Destination {
    /// Writes an image's file unless it is there (see [`store`]); `hash` is its SHA-256
    /// when known. Returns the path it is recorded under, or why it was not written.
    pub fn save(&self, bytes: &[u8], hash: Option<&[u8; 32]>) -> Result<String, String> {
        let name = match hash {
            Some(hash) => file_name_of(bytes, hash)?,
            None => file_name(bytes)?,
        };
        store(&self.folder, &name, bytes, false).map_err(|error| {
            format!(
                "could not write {}: {error}",
                self.folder.join(&name).display()
            )
        })?;
        Ok(format!("{}/{name}", self.prefix))
    }
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `bytes` to `dir/name` unless that file exists: first to a temporary file in
/// `dir`, then renamed, so the name never points to a partial file. `durable`: a file the
/// run keeps and does not read back soon (an artifact), synced once written and its
/// cached pages given back (see [`given_back`]). Returns whether the file was written
/// (false: an identical file was already there).
pub fn store(dir: &Path, name: &str, bytes: &[u8], durable: bool) -> io::Result<bool> {
    let target = dir.join(name);
    // Only a regular file counts as stored: a link planted at the name is replaced, never
    // followed (the rename below replaces the link itself).
    if fs::symlink_metadata(&target).is_ok_and(|meta| meta.file_type().is_file()) {
        return Ok(false);
    }
    let temp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    // `create_new` (O_EXCL) refuses any entry at the temporary name, a link included.
    let written = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&temp)
        .and_then(|mut file| {
            file.write_all(bytes)?;
            if durable {
                given_back(&file)?;
            }
            Ok(())
        });
    if let Err(error) = written.and_then(|()| fs::rename(&temp, &target)) {
        let _ = fs::remove_file(&temp);
        return Err(error);
    }
    Ok(true)
}

/// Syncs a file's data, then gives its cached pages back to the next writes (Linux's
/// `posix_fadvise`): written while the kernel still holds them, they cost far less than
/// pages a virtual machine's host took back, and image files add up to gigabytes.
fn given_back(file: &fs::File) -> io::Result<()> {
    file.sync_data()?;
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        // SAFETY: the descriptor is open for the call; the advice changes no data.
        unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch_dir(tag: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("imagetask-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn names_are_the_hash_of_the_bytes() {
        let name = file_name(b"GIF89a").unwrap();
        let hex: String = Sha256::digest(b"GIF89a")
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(name, format!("{hex}.gif"));
        let err = file_name(b"hello").unwrap_err();
        assert!(err.ends_with("(first bytes: 68 65 6c 6c 6f)"), "{err}");
    }

    #[test]
    fn store_writes_once_and_leaves_no_temporary_file() {
        for durable in [false, true] {
            let dir = scratch_dir(&format!("store-{durable}"));
            assert!(store(&dir, "a.gif", b"GIF89a-1", durable).unwrap());
            assert!(!store(&dir, "a.gif", b"GIF89a-1", durable).unwrap());
            assert_eq!(fs::read(dir.join("a.gif")).unwrap(), b"GIF89a-1");
            let names: Vec<_> = fs::read_dir(&dir)
                .unwrap()
                .map(|e| e.unwrap().file_name())
                .collect();
            assert_eq!(names, vec![std::ffi::OsString::from("a.gif")]);
            fs::remove_dir_all(&dir).unwrap();
        }
    }

    #[cfg(unix)]
    #[test]
    fn store_replaces_a_link_at_the_name_and_leaves_its_target_alone() {
        let dir = scratch_dir("link");
        let outside = scratch_dir("link-outside").join("victim");
        fs::write(&outside, b"victim").unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("a.gif")).unwrap();
        assert!(store(&dir, "a.gif", b"GIF89a-1", false).unwrap());
        let meta = fs::symlink_metadata(dir.join("a.gif")).unwrap();
        assert!(meta.file_type().is_file());
        assert_eq!(fs::read(dir.join("a.gif")).unwrap(), b"GIF89a-1");
        assert_eq!(fs::read(&outside).unwrap(), b"victim");
        fs::remove_dir_all(&dir).unwrap();
        fs::remove_dir_all(outside.parent().unwrap()).unwrap();
    }

    #[test]
    fn a_destination_saves_under_the_hash_and_records_its_prefix() {
        let dir = scratch_dir("destination");
        let destination = Destination {
            folder: dir.clone(),
            prefix: "images".to_owned(),
        };
        let name = file_name(b"GIF89a-2").unwrap();
        assert_eq!(
            destination.save(b"GIF89a-2", None),
            Ok(format!("images/{name}"))
        );
        let hash: [u8; 32] = Sha256::digest(b"GIF89a-2").into();
        assert_eq!(
            destination.save(b"GIF89a-2", Some(&hash)),
            Ok(format!("images/{name}"))
        );
        assert_eq!(fs::read(dir.join(&name)).unwrap(), b"GIF89a-2");
        assert_eq!(
            destination.save(b"hello", None),
            Err(
                "the image bytes are in no known image format (first bytes: 68 65 6c 6c 6f)"
                    .to_owned()
            )
        );
        let gone = Destination {
            folder: dir.join("gone"),
            prefix: "images".to_owned(),
        };
        let err = gone.save(b"GIF89a-2", None).unwrap_err();
        let expected = format!(
            "could not write {}: ",
            dir.join("gone").join(&name).display()
        );
        assert!(err.starts_with(&expected), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn store_into_a_missing_folder_is_an_error() {
        let dir = scratch_dir("missing").join("nope");
        assert!(store(&dir, "a.gif", b"GIF89a", false).is_err());
    }
}
