//! `ColumnBuilder`: the Arrow encoder. It reads an Arrow table and its prompt column, then
//! turns the model's answers into the output cells following the batch's plan (see
//! `columns`) and assembles the output table (see `table`).

pub(crate) mod columns;
pub(crate) mod digest;
pub(crate) mod ffi;
pub(crate) mod hooked;
pub(crate) mod pyarrow;
pub(crate) mod table;

use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, RecordBatch};
use arrow_schema::DataType;
use imagetask_core::artifacts::Destination;
use imagetask_core::json::Members;
use imagetask_core::payload::decode::Work;
use imagetask_core::payload::{Payload, Problem};
use imagetask_core::plan::{Generations, Plan, RowProblem, Rows};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use self::columns::{CellFailure, Image, ImageFile, Options};
use self::ffi::TableReader;
use self::pyarrow::ToPyArrow;
use self::table::{Cells, Input, Layout};
use crate::answers::{self, Generation};
use crate::errors::{config_error, read_error, refused_row};
use crate::pyjson;
use crate::store::StoredImage;

/// Builds the output columns of one task configuration from Arrow input.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct ColumnBuilder {
    layout: Layout,
    prompt_column: String,
    model_name: String,
    n: Generations,
    inline_raw_images: bool,
    pass_invalid_rows: bool,
    images: Py<PyString>,
    inputs: TableReader,
    tables: ToPyArrow,
}

/// A batch of Arrow rows whose prompts were read, ready for the model.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct PreparedColumns {
    /// The prompts of the valid rows, in order.
    #[pyo3(get)]
    prompts: Py<PyList>,
    /// Which rows are valid, and whether the batch was built.
    rows: Rows,
    /// The input table.
    input: Input,
    /// The prompt column, every row once.
    prompt: ArrayRef,
    /// The bytes of text in the prompt column.
    #[pyo3(get)]
    prompt_bytes: usize,
}

#[pymethods]
impl PreparedColumns {
    fn __len__(&self) -> usize {
        self.rows.len()
    }
}

#[pymethods]
impl ColumnBuilder {
    #[new]
    #[pyo3(signature = (
        *, schema, prompt_column, model_name, num_generations, inline_raw_images,
        pass_invalid_rows,
    ))]
    pub(crate) fn new(
        py: Python<'_>,
        schema: Layout,
        prompt_column: String,
        model_name: String,
        num_generations: usize,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            layout: schema,
            prompt_column,
            model_name,
            n: Generations::new(num_generations).map_err(config_error)?,
            inline_raw_images,
            pass_invalid_rows,
            images: PyString::intern(py, "images").unbind(),
            inputs: TableReader::new(),
            tables: ToPyArrow::new(),
        })
    }

    /// Reads a table (any object exporting an Arrow stream of record batches) and its
    /// prompt column.
    pub(crate) fn prepare(
        &self,
        py: Python<'_>,
        table: &Bound<'_, PyAny>,
    ) -> PyResult<PreparedColumns> {
        let input = self.inputs.read(table)?;
        let index = input
            .schema
            .index_of(&self.prompt_column)
            .map_err(|_| read_error(format!("the table has no column '{}'", self.prompt_column)))?;
        let chunks = input.chunks(index);
        let count = input.rows();
        let mut texts = Vec::with_capacity(count);
        let mut rows = Rows::new(self.pass_invalid_rows);
        for chunk in &chunks {
            if chunk.data_type() == &DataType::Utf8 && chunk.null_count() == 0 {
                // Every row valid: its texts straight from the offsets.
                let array = chunk.as_string::<i32>();
                let offsets = array.value_offsets();
                let (first, last) = (offsets[0] as usize, offsets[array.len()] as usize);
                let ascii = array.value_data()[first..last].is_ascii();
                for text in (0..array.len()).map(|row| array.value(row)) {
                    texts.push(if ascii {
                        ascii_text(py, text)?
                    } else {
                        PyString::new(py, text)
                    });
                    rows.push_valid();
                }
                continue;
            }
            for value in strings(chunk)? {
                match value {
                    Some(text) => {
                        texts.push(PyString::new(py, text));
                        rows.push_valid();
                    }
                    None => {
                        let problem = RowProblem {
                            message: format!(
                                "row {} of the batch has no text prompt: its column '{}' holds a NoneType",
                                rows.next_index(),
                                self.prompt_column
                            ),
                            column: Some(self.prompt_column.clone()),
                        };
                        rows.push_invalid(problem).map_err(refused_row)?;
                    }
                }
            }
        }
        let prompt = utf8(&chunks, count)?;
        let offsets = prompt.as_string::<i32>().value_offsets();
        let prompt_bytes = (offsets[offsets.len() - 1] - offsets[0]) as usize;
        Ok(PreparedColumns {
            prompts: PyList::new(py, texts)?.unbind(),
            rows,
            input,
            prompt,
            prompt_bytes,
        })
    }

    /// Builds the output table of a prepared batch, its schema carrying
    /// `schema_metadata`; returns `(table, failures)`: a `pyarrow.Table` and the failures
    /// as `(row, generation, error)`.
    #[allow(clippy::too_many_arguments)] // the keyword arguments of a Python method
    #[pyo3(signature = (
        prepared, answers, artifacts_folder=None, artifacts_prefix=None, schema_metadata=None,
        spool_folder=None, spool_prefix=None,
    ))]
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        prepared: &PreparedColumns,
        answers: &Bound<'py, PyAny>,
        artifacts_folder: Option<PathBuf>,
        artifacts_prefix: Option<String>,
        schema_metadata: Option<Bound<'py, PyDict>>,
        spool_folder: Option<PathBuf>,
        spool_prefix: Option<String>,
    ) -> PyResult<(Bound<'py, PyAny>, Bound<'py, PyList>)> {
        let destination = |folder: Option<PathBuf>, prefix: Option<String>| {
            folder.map(|folder| Destination {
                folder,
                prefix: prefix.unwrap_or_default(),
            })
        };
        let folders = ImageFolders {
            artifacts: destination(artifacts_folder, artifacts_prefix),
            spool: destination(spool_folder, spool_prefix),
        };
        let (batch, failures) = self.build_batch(py, prepared, answers, folders)?;
        let failures = failures
            .into_iter()
            .map(|failure| (failure.row, failure.generation, failure.error));
        let table = self.tables.table(py, batch, schema_metadata.as_ref())?;
        Ok((table, PyList::new(py, failures)?))
    }
}

/// A string column's rows as one `utf8` array (its one chunk, when it is one).
fn utf8(chunks: &[ArrayRef], count: usize) -> PyResult<ArrayRef> {
    if let [chunk] = chunks {
        if chunk.data_type() == &DataType::Utf8 {
            return Ok(chunk.clone());
        }
    }
    let mut joined = arrow_array::builder::StringBuilder::with_capacity(count, 0);
    let mut total = 0;
    for chunk in chunks {
        for value in strings(chunk)? {
            total += value.map_or(0, str::len);
            if total > i32::MAX as usize {
                return Err(config_error(format!(
                    "the prompts of the batch hold more than {} bytes, more than one Arrow \
                     string column holds: use a smaller input_batch_size",
                    i32::MAX
                )));
            }
            joined.append_option(value);
        }
    }
    Ok(Arc::new(joined.finish()))
}

/// The values of a string column (`utf8`, `large_utf8` or `utf8_view`).
fn strings(array: &ArrayRef) -> PyResult<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        other => {
            return Err(read_error(format!(
                "the prompt column holds {other}, expected strings"
            )))
        }
    })
}

/// An answer dict's other members and its statistics, as JSON.
type Described = (Option<Arc<Members>>, Option<Arc<str>>);

/// How a generation's image reaches the columns.
enum Stored {
    /// As its answer holds it (no `StoredImage`).
    Answer,
    /// Its bytes, read from the file a `StoredImage` names.
    Read(Vec<u8>),
    /// Left in its file, an artifact the row records the path of.
    Kept(ImageFile),
}

/// Where a batch's image files are: its artifacts folder (images saved there, or already
/// written there), and the spool its answers' images wait in until the batch is written.
#[derive(Default)]
pub(crate) struct ImageFolders {
    pub(crate) artifacts: Option<Destination>,
    pub(crate) spool: Option<Destination>,
}

/// The file of a `StoredImage` in `folder`, as a row records it.
fn file_in(image: &StoredImage, folder: &Destination) -> Option<ImageFile> {
    let name = image.path().file_name()?.to_str()?;
    (image.path().parent() == Some(folder.folder.as_path())).then(|| ImageFile {
        recorded: format!("{}/{name}", folder.prefix),
        sha256: image.sha256,
    })
}

/// Every generation's image as `Stored`: a `StoredImage` in one of `kept` (when given)
/// is kept in its file, any other is read (with the GIL released). Empty when the answers
/// hold no `StoredImage` (`Answers::stored`): every image is then as its answer holds it.
fn stored_images(
    py: Python<'_>,
    read: &answers::Answers<'_>,
    kept: &[&Destination],
) -> PyResult<Vec<Stored>> {
    if !read.stored {
        return Ok(Vec::new());
    }
    let generations = &read.generations;
    let stored: Vec<Option<StoredImage>> = generations
        .iter()
        .map(|generation| {
            generation
                .payload
                .cast::<StoredImage>()
                .ok()
                .map(|image| image.get().clone())
        })
        .collect();
    py.detach(|| {
        stored
            .into_iter()
            .map(|image| {
                let Some(image) = image else {
                    return Ok(Stored::Answer);
                };
                match kept.iter().find_map(|folder| file_in(&image, folder)) {
                    Some(file) => Ok(Stored::Kept(file)),
                    None => image.bytes().map(Stored::Read),
                }
            })
            .collect::<Result<Vec<_>, String>>()
    })
    .map_err(read_error)
}

/// Adds the JSON of generation `index`'s payload, which is no image (`problem`), as the
/// raw output keeps it (apart from the loop over the generations: few fail).
#[cold]
#[inline(never)]
fn payload_json_into(
    payload_jsons: &mut Vec<(usize, Box<str>)>,
    index: usize,
    problem: &Problem,
    payload: &Bound<'_, PyAny>,
) {
    let json = match problem {
        Problem::Missing { .. } => "null".into(),
        _ => pyjson::to_json(payload).into(),
    };
    payload_jsons.push((index, json));
}

/// A `str` of ASCII text, its bytes copied in as they are (not decoded as UTF-8).
#[cfg(not(any(PyPy, GraalPy)))]
fn ascii_text<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyString>> {
    debug_assert!(text.is_ascii());
    let length = pyo3::ffi::Py_ssize_t::try_from(text.len())
        .map_err(|_| read_error("a prompt is too long for a Python string"))?;
    // SAFETY: the GIL is held; a new compact ASCII string holds `length` one-byte
    // characters, written before it is shared.
    unsafe {
        let made = pyo3::ffi::PyUnicode_New(length, 127);
        let made = Bound::from_owned_ptr_or_err(py, made)?.cast_into_unchecked::<PyString>();
        let data = pyo3::ffi::PyUnicode_1BYTE_DATA(made.as_ptr());
        std::ptr::copy_nonoverlapping(text.as_ptr(), data, text.len());
        Ok(made)
    }
}

/// A `str` of ASCII text (a Python whose strings are not CPython's decodes it).
#[cfg(any(PyPy, GraalPy))]
fn ascii_text<'py>(py: Python<'py>, text: &str) -> PyResult<Bound<'py, PyString>> {
    Ok(PyString::new(py, text))
}

impl ColumnBuilder {
    /// The output record batch of a prepared batch and the generations that failed.
    pub(crate) fn build_batch<'py>(
        &self,
        py: Python<'py>,
        prepared: &PreparedColumns,
        answers: &Bound<'py, PyAny>,
        folders: ImageFolders,
    ) -> PyResult<(RecordBatch, Vec<CellFailure>)> {
        prepared.rows.start_build().map_err(config_error)?;
        let valid = prepared.rows.valid();
        let read = answers::read(answers, valid, self.n.get(), self.images.bind(py))?;
        let plan = Plan::new(&prepared.rows, &read.answers, self.n).map_err(config_error)?;
        let raw_output = self.layout.add_raw_output;
        // An image already in a file is left there unless the raw output inlines it: an
        // artifact when a column records its path, a spooled image for the sink to read
        // (its `Image` struct holding the path alone).
        let inline = raw_output && self.inline_raw_images;
        let ImageFolders { artifacts, spool } = folders;
        let kept: Vec<&Destination> = (artifacts.iter())
            .filter(|_| self.layout.image_path.is_some())
            .chain(&spool)
            .filter(|_| !inline)
            .collect();
        let stored = stored_images(py, &read, &kept)?;
        let (payloads, images) = self.images(&read.generations, &stored)?;
        // The raw output a failed answer keeps, as JSON.
        let raw: Vec<Option<String>> = read
            .raw
            .iter()
            .map(|raw| match raw {
                Some(raw) if raw_output => Some(pyjson::to_json(raw)),
                _ => None,
            })
            .collect();
        let options = Options {
            raw_output,
            inline_raw_images: self.inline_raw_images,
            artifacts,
        };
        let n = self.n.get();
        py.detach(|| {
            let built = columns::build(&payloads, &images, &plan, &raw, &options)?;
            let image_valid = built.image_valid;
            let layout = &self.layout;
            let mut outputs = Vec::new();
            if let Some(image) = &layout.image {
                outputs.push((image.clone(), built.image));
            }
            // A path no column records is the image's own (a spooled file).
            let mut file_paths = built.image_path;
            if let Some(path) = &layout.image_path {
                let paths = file_paths
                    .take()
                    .unwrap_or_else(|| Arc::new(arrow_array::StringArray::new_null(plan.len())));
                outputs.push((path.clone(), paths));
            }
            let mut metadata = Vec::new();
            if let Some(raw) = built.raw_output {
                metadata.push((layout.raw_output.clone(), raw));
            }
            if layout.add_raw_input {
                let prompts =
                    table::repeat(std::slice::from_ref(&prepared.prompt), &DataType::Utf8, n)
                        .map_err(|e| format!("cannot repeat the prompts: {e}"))?;
                metadata.push((layout.raw_input.clone(), prompts));
            }
            metadata.push((layout.statistics.clone(), built.statistics));
            metadata.push((layout.error.clone(), built.error));
            let cells = Cells {
                outputs,
                image_valid,
                file_paths,
                model_name: Arc::new(columns::constant(&self.model_name, plan.len())?),
                metadata,
            };
            let table = table::assemble(layout, n, &prepared.input, cells)?;
            Ok::<_, String>((table, built.failures))
        })
        .map_err(config_error)
    }

    /// Every generation's image as the columnar core reads it: its payload, and what its
    /// raw output needs; `stored`: how each reaches the columns (see `stored_images`).
    fn images<'a>(
        &self,
        generations: &'a [Generation<'_>],
        stored: &'a [Stored],
    ) -> PyResult<(Vec<Work<'a>>, Vec<Image>)> {
        // Each vector is collected in a pass of its own: pushed one at a time, their
        // items were copied through the stack (each read back whole just after it was
        // written in parts, a load the CPU cannot forward). What runs Python code runs in
        // the first pass, generation after generation: an answer dict's description when
        // the dict changes (made once for its consecutive images), then the payload, then
        // the JSON of a payload that is no image (kept in the raw output as it was).
        let mut raised = None;
        let mut last: Option<*mut pyo3::ffi::PyObject> = None;
        let mut descriptions: Vec<(usize, Described)> = Vec::new();
        let mut payload_jsons: Vec<(usize, Box<str>)> = Vec::new();
        let payloads: Vec<Work<'a>> = (generations.iter().enumerate())
            .map(|(index, generation)| {
                if raised.is_some() {
                    // None read once an error is raised.
                    return Err(Problem::Empty);
                }
                // A dict that holds nothing but this image has nothing else to describe.
                let source = &generation.source;
                if !generation.alone && last != Some(source.as_ptr()) {
                    last = Some(source.as_ptr());
                    self.describe_into(&mut descriptions, index, source);
                }
                let payload = match stored.get(index) {
                    Some(Stored::Read(bytes)) => return Ok(Payload::Bytes(bytes)),
                    // Its bytes stay in its file: nothing to decode.
                    Some(Stored::Kept(_)) => return Err(Problem::Empty),
                    Some(Stored::Answer) | None => match generation.payload() {
                        Ok(payload) => payload,
                        Err(err) => {
                            raised = Some(err);
                            return Err(Problem::Empty);
                        }
                    },
                };
                if let Err(problem) = &payload {
                    payload_json_into(&mut payload_jsons, index, problem, &generation.payload);
                }
                payload
            })
            .collect();
        if let Some(err) = raised {
            return Err(err);
        }
        let mut descriptions = descriptions.into_iter().peekable();
        let mut payload_jsons = payload_jsons.into_iter().peekable();
        let mut described: Described = (None, None);
        let images = (generations.iter().enumerate())
            .map(|(index, generation)| {
                let (members, statistics) = if generation.alone {
                    (None, None)
                } else {
                    if let Some((_, next)) = descriptions.next_if(|(at, _)| *at == index) {
                        described = next;
                    }
                    described.clone()
                };
                let file = match stored.get(index) {
                    Some(Stored::Kept(file)) => Some(Box::new(file.clone())),
                    _ => None,
                };
                let payload_json =
                    (payload_jsons.next_if(|(at, _)| *at == index)).map(|(_, json)| json);
                Image {
                    payload_json,
                    members,
                    statistics,
                    file,
                }
            })
            .collect();
        Ok((payloads, images))
    }

    /// Adds the description of generation `index`'s answer dict (a call apart from the
    /// loop over the generations, which it keeps small: a dict alone with its one image
    /// has none).
    #[inline(never)]
    fn describe_into(
        &self,
        descriptions: &mut Vec<(usize, Described)>,
        index: usize,
        source: &Bound<'_, PyDict>,
    ) {
        descriptions.push((index, self.describe_dict(source)));
    }

    /// The JSON of an answer dict's other members and of its statistics.
    fn describe_dict(&self, source: &Bound<'_, PyDict>) -> Described {
        let members = (self.layout.add_raw_output)
            .then(|| pyjson::members(source, "statistics"))
            .filter(|members| members != &Members::default())
            .map(Arc::new);
        let statistics = match source.get_item(pyo3::intern!(source.py(), "statistics")) {
            Ok(Some(value)) if !value.is_none() => Some(pyjson::to_json(&value).into()),
            _ => None,
        };
        (members, statistics)
    }
}

#[cfg(test)]
mod tests;
