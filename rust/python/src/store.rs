//! `ImageStore`: the images of a run's answers written to disk as they arrive, each once,
//! named by its content; `StoredImage`: the handle an answer holds instead of the image.

use std::collections::HashSet;
use std::fs;
use std::io::BufReader;
use std::os::fd::BorrowedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use imagetask_core::artifacts::{file_name_of, store};
use imagetask_core::batch_output::{read_line, Line, Lines};
use imagetask_core::images_api::{self, Image, ImagesBody};
use imagetask_core::payload;
use pyo3::ffi::{self, Py_ssize_t};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyString, PyTuple};
use sha2::{Digest, Sha256};

use crate::errors::{read_error, request_error, sink_error};

/// An image written by an `ImageStore`: its file, SHA-256, size and format.
#[pyclass(frozen, eq, module = "imagetask._core")]
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct StoredImage {
    path: PathBuf,
    pub(crate) sha256: [u8; 32],
    size: usize,
    format: String,
}

fn hex(hash: &[u8; 32]) -> String {
    hash.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn unhex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl StoredImage {
    /// The image's bytes, read from its file.
    pub(crate) fn bytes(&self) -> Result<Vec<u8>, String> {
        fs::read(&self.path).map_err(|error| {
            format!(
                "could not read the stored image {}: {error}",
                self.path.display()
            )
        })
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Writes the image's bytes as base64 text into `out` (exactly its length), read from
    /// its file a piece at a time; `ReadError` when the file cannot be read.
    fn encode_into(&self, out: &mut [u8]) -> PyResult<()> {
        let file = fs::File::open(&self.path).map_err(|error| self.unreadable(error))?;
        payload::encode_into(file, self.size, out).map_err(|error| self.unreadable(error))
    }

    fn unreadable(&self, error: std::io::Error) -> PyErr {
        read_error(format!(
            "could not read the stored image {}: {error}",
            self.path.display()
        ))
    }
}

#[pymethods]
impl StoredImage {
    #[new]
    fn new(path: PathBuf, sha256: &str, size: usize, format: String) -> PyResult<Self> {
        let sha256 = unhex(sha256).ok_or_else(|| {
            read_error(format!(
                "StoredImage: sha256 {sha256:?} is not 64 hex digits"
            ))
        })?;
        Ok(Self {
            path,
            sha256,
            size,
            format,
        })
    }

    /// The SHA-256 of the image's bytes, in hex.
    #[getter]
    fn sha256(&self) -> String {
        hex(&self.sha256)
    }

    /// The image's length in bytes.
    #[getter]
    fn size(&self) -> usize {
        self.size
    }

    /// The image's format, as its file extension (`png`, `jpg`, ...).
    #[getter]
    fn format(&self) -> &str {
        &self.format
    }

    /// The file's path.
    #[getter(path)]
    fn path_text(&self) -> String {
        self.path.display().to_string()
    }

    /// The image's bytes (`ReadError` when its file cannot be read).
    fn read<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let bytes = py.detach(|| self.bytes()).map_err(read_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// The image's base64 text as a JSON string, quotes included (base64 needs no
    /// escapes), as bytes: what a JSON encoder can copy without looking at it.
    fn json_string<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyBytes>> {
        let length = payload::encoded_len(self.size);
        let size = Py_ssize_t::try_from(length + 2).map_err(|_| read_error("image too large"))?;
        // SAFETY: a new bytes object of `length + 2` bytes that no one else sees until
        // every one of them is written below.
        let text = unsafe {
            Bound::from_owned_ptr_or_err(
                py,
                ffi::PyBytes_FromStringAndSize(std::ptr::null(), size),
            )?
        };
        let data = unsafe { ffi::PyBytes_AsString(text.as_ptr()) }.cast::<u8>();
        let out = unsafe { std::slice::from_raw_parts_mut(data, length + 2) };
        out[0] = b'"';
        out[length + 1] = b'"';
        py.detach(|| self.encode_into(&mut out[1..=length]))?;
        Ok(text.cast_into::<PyBytes>()?)
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let this = slf.get();
        let args = (
            this.path.clone(),
            this.sha256(),
            this.size,
            this.format.clone(),
        );
        Ok((slf.get_type().into_any(), args.into_pyobject(slf.py())?))
    }

    fn __repr__(&self) -> String {
        format!(
            "StoredImage({}, sha256={}, {} bytes, {})",
            self.path.display(),
            &hex(&self.sha256)[..12],
            self.size,
            self.format
        )
    }
}

/// What an Images API response body held: per image, the stored image (or, for an image
/// that is none, the `b64_json` text as sent; for an image in no known format, its bytes),
/// or `None` where the server gave a `url`.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct ImagesAnswer {
    /// Per image: a `StoredImage`, `bytes`, `str`, or `None` (a `url`).
    #[pyo3(get)]
    images: Vec<Py<PyAny>>,
    /// Per image: its `url`, or `None`.
    #[pyo3(get)]
    urls: Vec<Option<String>>,
    /// Per image: its `revised_prompt` when it is text.
    #[pyo3(get)]
    revised_prompts: Vec<Option<String>>,
    /// The JSON text of the answer's `usage`, if any.
    #[pyo3(get)]
    usage: Option<String>,
}

/// Writes images into `folder` (made with the first), each once, as
/// `<sha256>.<extension>` (written to a temporary file, then renamed); `durable`: each
/// synced once written, its cached pages given back (a run's artifacts, not read back
/// soon).
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct ImageStore {
    folder: PathBuf,
    durable: bool,
    /// Whether `folder` was made (by this store's first image).
    made: AtomicBool,
}

/// What storing one image's bytes gave: the stored image, or the bytes to keep as they
/// are (in no known image format), or the write's error.
enum Put {
    Stored(StoredImage),
    Unknown(Vec<u8>),
}

impl ImageStore {
    /// Stores the images of a body read natively.
    fn store_body(&self, read: ImagesBody<'_>) -> Result<StoredBody, String> {
        let mut entries = Vec::with_capacity(read.items.len());
        let mut revised_prompts = Vec::with_capacity(read.items.len());
        for item in read.items {
            entries.push(match item.image {
                Image::Decoded(image) => Entry::Put(self.put_decoded(image.bytes, image.sha256)?),
                Image::Undecodable { text, .. } => Entry::Text(text.into_owned()),
                Image::Url(url) => Entry::Url(url.into_owned()),
            });
            revised_prompts.push(item.revised_prompt.map(|text| text.into_owned()));
        }
        Ok(StoredBody {
            entries,
            revised_prompts,
            usage: read.usage.map(str::to_owned),
        })
    }

    /// What one line of a Batch API file becomes: nothing (skipped), its answer read and
    /// stored, or the line whole (for the caller, as is a body the native reader does
    /// not take). `Err`: an image could not be written.
    fn read_output_line(
        &self,
        line: &[u8],
        wanted: &HashSet<String>,
    ) -> Result<Option<ReadLine>, String> {
        match read_line(line) {
            Line::NotJson => Ok(None),
            Line::Other => Ok(Some(ReadLine::Whole(line.to_vec()))),
            Line::Answered {
                custom_id: Some(custom_id),
                body,
            } if wanted.contains(custom_id.as_ref()) => match images_api::read(body.as_bytes()) {
                Ok(read) => Ok(Some(ReadLine::Answered {
                    custom_id: custom_id.into_owned(),
                    body: self.store_body(read)?,
                })),
                Err(_) => Ok(Some(ReadLine::Whole(line.to_vec()))),
            },
            Line::Answered { .. } => Ok(None),
        }
    }

    /// Makes the folder, once: with the store's first image (a batch storing none makes
    /// none).
    fn make_folder(&self) -> std::io::Result<()> {
        if !self.made.load(Ordering::Acquire) {
            fs::create_dir_all(&self.folder)?;
            self.made.store(true, Ordering::Release);
        }
        Ok(())
    }

    fn put_decoded(&self, bytes: Vec<u8>, sha256: [u8; 32]) -> Result<Put, String> {
        let Ok(name) = file_name_of(&bytes, &sha256) else {
            return Ok(Put::Unknown(bytes));
        };
        let format = name.rsplit('.').next().unwrap_or_default().to_owned();
        self.make_folder()
            .and_then(|()| store(&self.folder, &name, &bytes, self.durable))
            .map_err(|error| {
                format!(
                    "could not write {}: {error}",
                    self.folder.join(&name).display()
                )
            })?;
        Ok(Put::Stored(StoredImage {
            path: self.folder.join(name),
            sha256,
            size: bytes.len(),
            format,
        }))
    }
}

/// One image of a body read natively, stored.
enum Entry {
    Put(Put),
    Text(String),
    Url(String),
}

/// A body read natively, its images stored, before it becomes an `ImagesAnswer`.
struct StoredBody {
    entries: Vec<Entry>,
    revised_prompts: Vec<Option<String>>,
    usage: Option<String>,
}

impl StoredBody {
    fn into_answer(self, py: Python<'_>) -> PyResult<ImagesAnswer> {
        let mut images = Vec::with_capacity(self.entries.len());
        let mut urls = Vec::with_capacity(self.entries.len());
        for entry in self.entries {
            let (image, url) = match entry {
                Entry::Put(put) => (put_into_python(py, put)?, None),
                Entry::Text(text) => (PyString::new(py, &text).into_any().unbind(), None),
                Entry::Url(url) => (py.None(), Some(url)),
            };
            images.push(image);
            urls.push(url);
        }
        Ok(ImagesAnswer {
            images,
            urls,
            revised_prompts: self.revised_prompts,
            usage: self.usage,
        })
    }
}

/// A line of a Batch API file as `read_batch_output` keeps it.
enum ReadLine {
    Answered { custom_id: String, body: StoredBody },
    Whole(Vec<u8>),
}

impl ReadLine {
    fn into_python(self, py: Python<'_>) -> PyResult<OutputLine> {
        Ok(match self {
            ReadLine::Answered { custom_id, body } => OutputLine {
                custom_id: Some(custom_id),
                answer: Some(Py::new(py, body.into_answer(py)?)?),
                line: None,
            },
            ReadLine::Whole(line) => OutputLine {
                custom_id: None,
                answer: None,
                line: Some(PyBytes::new(py, &line).unbind()),
            },
        })
    }
}

/// A line of a Batch API output or error file, read by `ImageStore.read_batch_output`:
/// a wanted request's 200 answer (its `custom_id` and `answer`), or the line whole.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct OutputLine {
    /// The request's `custom_id` (an answer read natively), or `None`.
    #[pyo3(get)]
    custom_id: Option<String>,
    /// The answer's images, stored, or `None`.
    #[pyo3(get)]
    answer: Option<Py<ImagesAnswer>>,
    /// The line as read (not an answer read natively), or `None`.
    #[pyo3(get)]
    line: Option<Py<PyBytes>>,
}

fn put_into_python(py: Python<'_>, put: Put) -> PyResult<Py<PyAny>> {
    Ok(match put {
        Put::Stored(image) => Py::new(py, image)?.into_any(),
        Put::Unknown(bytes) => PyBytes::new(py, &bytes).into_any().unbind(),
    })
}

#[pymethods]
impl ImageStore {
    #[new]
    #[pyo3(signature = (folder, durable = false))]
    fn new(folder: PathBuf, durable: bool) -> Self {
        Self {
            folder,
            durable,
            made: AtomicBool::new(false),
        }
    }

    /// The folder the images are written to.
    #[getter]
    fn folder(&self) -> PathBuf {
        self.folder.clone()
    }

    /// Whether each image is synced once written and its cached pages given back.
    #[getter]
    fn durable(&self) -> bool {
        self.durable
    }

    /// Whether this store made its folder (with its first image).
    #[getter]
    fn made(&self) -> bool {
        self.made.load(Ordering::Acquire)
    }

    /// Stores an image's bytes: its `StoredImage`, or the bytes themselves when they are
    /// empty or in no known image format. `SinkError` when the file cannot be written.
    fn put(&self, py: Python<'_>, data: &Bound<'_, PyBytes>) -> PyResult<Py<PyAny>> {
        let bytes: &[u8] = data.as_bytes();
        if bytes.is_empty() {
            return Ok(data.clone().into_any().unbind());
        }
        let put = py
            .detach(|| {
                let sha256 = Sha256::digest(bytes).into();
                self.put_decoded(bytes.to_vec(), sha256)
            })
            .map_err(sink_error)?;
        match put {
            Put::Unknown(_) => Ok(data.clone().into_any().unbind()),
            stored => put_into_python(py, stored),
        }
    }

    /// Reads an Images API response body and stores its `b64_json` images (see
    /// `ImagesAnswer`). `RequestError` for a body of another shape, `SinkError` when a
    /// file cannot be written.
    fn read_images_body(
        &self,
        py: Python<'_>,
        body: &Bound<'_, PyBytes>,
    ) -> PyResult<ImagesAnswer> {
        let body: &[u8] = body.as_bytes();
        let stored = py.detach(|| -> PyResult<StoredBody> {
            let read = images_api::read(body).map_err(request_error)?;
            self.store_body(read).map_err(sink_error)
        })?;
        stored.into_answer(py)
    }

    /// Reads a Batch API output or error file from its current position, a line at a
    /// time (one line held at once), with the GIL released: each 200 answer of a
    /// `wanted` request has its body read as `read_images_body` does, its images stored;
    /// any other JSON line is handed over whole; a line that is not JSON, or answers a
    /// request not wanted, is skipped. `fd`: the open file's descriptor (duplicated; the
    /// caller keeps it open). `ReadError` when the file cannot be read, `SinkError` when
    /// an image cannot be written.
    fn read_batch_output(
        &self,
        py: Python<'_>,
        fd: i32,
        wanted: HashSet<String>,
    ) -> PyResult<Vec<OutputLine>> {
        if fd < 0 {
            return Err(read_error(format!(
                "could not read the file: no descriptor {fd}"
            )));
        }
        // SAFETY: `fd` is not -1, and is borrowed only to be duplicated, while the caller
        // holds it open (a descriptor not open fails to duplicate).
        let file = unsafe { BorrowedFd::borrow_raw(fd) }
            .try_clone_to_owned()
            .map_err(|error| read_error(format!("could not read the file: {error}")))?;
        let read = py.detach(|| -> Result<Vec<ReadLine>, PyErr> {
            let mut lines = Lines::new(BufReader::with_capacity(1 << 20, fs::File::from(file)));
            let mut read = Vec::new();
            loop {
                let line = lines
                    .next(|line| self.read_output_line(line, &wanted))
                    .map_err(|error| read_error(format!("could not read the file: {error}")))?;
                match line {
                    None => return Ok(read),
                    Some(line) => read.extend(line.map_err(sink_error)?),
                }
            }
        })?;
        read.into_iter().map(|line| line.into_python(py)).collect()
    }

    fn __reduce__<'py>(
        slf: &Bound<'py, Self>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        let store = slf.get();
        let args = (store.folder.clone(), store.durable);
        Ok((slf.get_type().into_any(), args.into_pyobject(slf.py())?))
    }

    fn __repr__(&self) -> String {
        format!(
            "ImageStore({}, durable={})",
            self.folder.display(),
            if self.durable { "True" } else { "False" }
        )
    }
}
