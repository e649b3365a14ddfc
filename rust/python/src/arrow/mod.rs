//! `ColumnBuilder`: the columnar path's binding. It reads the prompt column of an Arrow
//! table, then turns the model's answers into the output columns (see `columns`).

pub(crate) mod columns;
pub(crate) mod ffi;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, StructArray};
use arrow_schema::{DataType, Field};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use self::columns::{Artifacts, Cell, Image, Options};
use self::ffi::{read_stream, ArrowArray};
use crate::answers::{self, type_name, Entry, Generation};
use crate::dict::MAX_GENERATIONS;
use crate::errors::InputRowError;
use crate::pyjson;
use imagetask_core::json::Members;
use imagetask_core::payload::Payload;

/// Builds the output columns of one task configuration from Arrow input.
#[pyclass(frozen, module = "imagetask._core")]
pub struct ColumnBuilder {
    prompt_column: String,
    model_name: String,
    n: usize,
    group: bool,
    raw_output: bool,
    inline_raw_images: bool,
    pass_invalid_rows: bool,
    images: Py<PyString>,
}

/// A batch of Arrow rows whose prompts were read, ready for the model.
#[pyclass(frozen, module = "imagetask._core")]
pub struct PreparedColumns {
    rows: usize,
    /// The prompts of the valid rows, in order.
    #[pyo3(get)]
    prompts: Py<PyList>,
    /// `(row index, problem)` of the invalid rows, in order.
    invalid: Vec<(usize, String)>,
    built: AtomicBool,
}

#[pymethods]
impl PreparedColumns {
    fn __len__(&self) -> usize {
        self.rows
    }
}

#[pymethods]
impl ColumnBuilder {
    #[new]
    #[pyo3(signature = (
        *, prompt_column, model_name, num_generations, group_generations, add_raw_output,
        inline_raw_images, pass_invalid_rows,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        prompt_column: String,
        model_name: String,
        num_generations: usize,
        group_generations: bool,
        add_raw_output: bool,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
    ) -> PyResult<Self> {
        if !(1..=MAX_GENERATIONS).contains(&num_generations) {
            return Err(PyValueError::new_err(format!(
                "num_generations must be between 1 and {MAX_GENERATIONS}, got {num_generations}"
            )));
        }
        Ok(Self {
            prompt_column,
            model_name,
            n: num_generations,
            group: group_generations,
            raw_output: add_raw_output,
            inline_raw_images,
            pass_invalid_rows,
            images: PyString::intern(py, "images").unbind(),
        })
    }

    /// Reads the prompt column (any object exporting an Arrow stream of strings).
    fn prepare(&self, py: Python<'_>, prompts: &Bound<'_, PyAny>) -> PyResult<PreparedColumns> {
        let chunks = read_stream(prompts)?;
        let rows: usize = chunks.iter().map(|chunk| chunk.len()).sum();
        let mut texts = Vec::with_capacity(rows);
        let mut invalid = Vec::new();
        let mut index = 0;
        for chunk in &chunks {
            for value in strings(chunk)? {
                match value {
                    Some(text) => texts.push(PyString::new(py, text)),
                    None => {
                        let message = format!(
                            "row {index} of the batch has no text prompt: its column '{}' holds a NoneType",
                            self.prompt_column
                        );
                        if !self.pass_invalid_rows {
                            return Err(InputRowError::new_err((
                                message,
                                index,
                                self.prompt_column.clone(),
                            )));
                        }
                        invalid.push((index, message));
                    }
                }
                index += 1;
            }
        }
        Ok(PreparedColumns {
            rows,
            prompts: PyList::new(py, texts)?.unbind(),
            invalid,
            built: AtomicBool::new(false),
        })
    }

    /// Builds the output columns of a prepared batch; returns
    /// `(columns, rows, offsets, failures)`.
    ///
    /// `columns` is a struct array, one entry per output cell (row and generation):
    /// `image`, `image_path` (with an artifacts folder), `raw_output` (with raw output),
    /// `statistics`, `error` and `model_name`. `rows` holds the input row of each cell;
    /// `offsets`, when grouped, the list offsets of each row's cells.
    #[pyo3(signature = (prepared, answers, artifacts_folder=None, artifacts_prefix=None))]
    fn build<'py>(
        &self,
        py: Python<'py>,
        prepared: &PreparedColumns,
        answers: &Bound<'py, PyAny>,
        artifacts_folder: Option<PathBuf>,
        artifacts_prefix: Option<String>,
    ) -> PyResult<(
        ArrowArray,
        ArrowArray,
        Option<ArrowArray>,
        Bound<'py, PyList>,
    )> {
        if prepared.built.swap(true, Ordering::AcqRel) {
            return Err(PyValueError::new_err(
                "a prepared batch can be built only once",
            ));
        }
        let valid = prepared.rows - prepared.invalid.len();
        let read = answers::read(answers, valid, self.n, self.images.bind(py))?;
        let images = self.images(&read.generations)?;
        let cells = self.cells(prepared, &read.entries)?;
        let options = Options {
            raw_output: self.raw_output,
            inline_raw_images: self.inline_raw_images,
            artifacts: artifacts_folder.map(|folder| Artifacts {
                folder,
                prefix: artifacts_prefix.unwrap_or_default(),
            }),
        };
        let built = py
            .detach(|| columns::build(&images, &cells, self.n, &options))
            .map_err(PyValueError::new_err)?;
        let mut fields = vec![("image", built.image)];
        if let Some(path) = built.image_path {
            fields.push(("image_path", path));
        }
        if let Some(raw) = built.raw_output {
            fields.push(("raw_output", raw));
        }
        fields.push(("statistics", built.statistics));
        fields.push(("error", built.error));
        fields.push((
            "model_name",
            Arc::new(columns::constant(&self.model_name, cells.len())) as ArrayRef,
        ));
        let struct_array = StructArray::from(
            fields
                .into_iter()
                .map(|(name, array)| {
                    (
                        Arc::new(Field::new(name, array.data_type().clone(), true)),
                        array,
                    )
                })
                .collect::<Vec<_>>(),
        );
        let rows = ArrowArray::new(Arc::new(columns::repeated_rows(prepared.rows, self.n)));
        let offsets = self.group.then(|| {
            ArrowArray::new(Arc::new(columns::group_offsets(prepared.rows, self.n)) as ArrayRef)
        });
        let failures = built
            .failures
            .into_iter()
            .map(|failure| (failure.row, failure.generation, failure.error));
        Ok((
            ArrowArray::new(Arc::new(struct_array)),
            rows,
            offsets,
            PyList::new(py, failures)?,
        ))
    }
}

/// The values of a string column (`utf8`, `large_utf8` or `utf8_view`).
fn strings(array: &ArrayRef) -> PyResult<Box<dyn Iterator<Item = Option<&str>> + '_>> {
    Ok(match array.data_type() {
        DataType::Utf8 => Box::new(array.as_string::<i32>().iter()),
        DataType::LargeUtf8 => Box::new(array.as_string::<i64>().iter()),
        DataType::Utf8View => Box::new(array.as_string_view().iter()),
        other => {
            return Err(PyValueError::new_err(format!(
                "the prompt column holds {other}, expected strings"
            )))
        }
    })
}

impl ColumnBuilder {
    /// Every generation's image as the columnar core reads it.
    fn images<'py>(&self, generations: &'py [Generation<'py>]) -> PyResult<Vec<Image<'py>>> {
        // Answer dicts are shared by the images they hold: their JSON is made once.
        let mut dicts: HashMap<usize, (Arc<Members>, Option<Arc<str>>)> = HashMap::new();
        let mut images = Vec::with_capacity(generations.len());
        let empty = Arc::new(Members::default());
        for generation in generations {
            let source = &generation.source;
            // A dict that holds nothing but this image has nothing else to describe.
            let (members, statistics) = if generation.alone {
                (empty.clone(), None)
            } else {
                dicts
                    .entry(source.as_ptr() as usize)
                    .or_insert_with(|| self.describe_dict(source))
                    .clone()
            };
            let payload = &generation.payload;
            let (payload, payload_json) = if let Ok(text) = payload.cast::<PyString>() {
                match text.to_str() {
                    Ok(text) => (Ok(Payload::Text(text.as_bytes())), None),
                    Err(_) => (
                        Err("is not valid base64 (it is not ASCII text)".to_owned()),
                        Some(pyjson::to_json(payload)),
                    ),
                }
            } else if let Ok(bytes) = payload.cast::<PyBytes>() {
                (Ok(Payload::Bytes(bytes.as_bytes())), None)
            } else if payload.is_none() {
                let error = match source.get_item("error")? {
                    Some(error) if !error.is_none() => match error.str() {
                        Ok(text) => format!("is missing: {}", text.to_string_lossy()),
                        Err(_) => format!("is missing: <{}>", type_name(&error)),
                    },
                    _ => "is None, expected base64 text or bytes".to_owned(),
                };
                (Err(error), Some("null".to_owned()))
            } else {
                (
                    Err(format!(
                        "is a {}, expected base64 text or bytes",
                        type_name(payload)
                    )),
                    Some(pyjson::to_json(payload)),
                )
            };
            images.push(Image {
                payload,
                payload_json,
                members,
                statistics,
            });
        }
        Ok(images)
    }

    /// The JSON of an answer dict's other members and of its statistics.
    fn describe_dict(&self, source: &Bound<'_, PyDict>) -> (Arc<Members>, Option<Arc<str>>) {
        let members = if self.raw_output {
            pyjson::members(source, "statistics")
        } else {
            Members::default()
        };
        let statistics = match source.get_item("statistics") {
            Ok(Some(value)) if !value.is_none() => Some(pyjson::to_json(&value).into()),
            _ => None,
        };
        (Arc::new(members), statistics)
    }

    /// What each output cell holds, row by row.
    fn cells(&self, prepared: &PreparedColumns, entries: &[Entry<'_>]) -> PyResult<Vec<Cell>> {
        let mut cells = Vec::with_capacity(prepared.rows.saturating_mul(self.n));
        let mut entries = entries.iter();
        let mut invalid = prepared.invalid.iter().peekable();
        for index in 0..prepared.rows {
            if let Some((_, message)) = invalid.next_if(|(at, _)| *at == index) {
                let error: Arc<str> = message.as_str().into();
                cells.extend((0..self.n).map(|_| Cell::Failed {
                    error: error.clone(),
                    raw: None,
                }));
                continue;
            }
            match entries.next() {
                Some(Entry::Read { start, found }) => {
                    cells.extend((0..*found).map(|k| Cell::Image(start + k)));
                    if *found < self.n {
                        let missing: Arc<str> = format!(
                            "the model returned {found} image(s) for {} generation(s)",
                            self.n
                        )
                        .into();
                        cells.extend((*found..self.n).map(|_| Cell::Failed {
                            error: missing.clone(),
                            raw: None,
                        }));
                    }
                }
                Some(Entry::Failed { error, raw }) => {
                    let error: Arc<str> = error.as_str().into();
                    let raw: Option<Arc<str>> = match raw {
                        Some(raw) if self.raw_output => Some(pyjson::to_json(raw).into()),
                        _ => None,
                    };
                    cells.extend((0..self.n).map(|_| Cell::Failed {
                        error: error.clone(),
                        raw: raw.clone(),
                    }));
                }
                None => return Err(PyValueError::new_err("fewer answers than rows")),
            }
        }
        Ok(cells)
    }
}
