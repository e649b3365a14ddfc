//! `ColumnBuilder`: the Arrow encoder. It reads the prompt column of an Arrow table, then
//! turns the model's answers into the output columns following the batch's plan (see
//! `columns`).

pub(crate) mod columns;
pub(crate) mod ffi;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, StructArray};
use arrow_schema::{DataType, Field};
use imagetask_core::artifacts::Destination;
use imagetask_core::json::Members;
use imagetask_core::payload::Problem;
use imagetask_core::plan::{Generations, Plan, RowProblem, Rows};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString};

use self::columns::{Image, Options};
use self::ffi::{read_stream, ArrowArray};
use crate::answers::{self, Generation};
use crate::errors::{config_error, read_error, refused_row};
use crate::pyjson;

/// Builds the output columns of one task configuration from Arrow input.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct ColumnBuilder {
    prompt_column: String,
    model_name: String,
    n: Generations,
    group: bool,
    raw_output: bool,
    inline_raw_images: bool,
    pass_invalid_rows: bool,
    images: Py<PyString>,
}

/// A batch of Arrow rows whose prompts were read, ready for the model.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct PreparedColumns {
    /// The prompts of the valid rows, in order.
    #[pyo3(get)]
    prompts: Py<PyList>,
    /// Which rows are valid, and whether the batch was built.
    rows: Rows,
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
        *, prompt_column, model_name, num_generations, group_generations, add_raw_output,
        inline_raw_images, pass_invalid_rows,
    ))]
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per keyword argument of the Python constructor"
    )]
    pub(crate) fn new(
        py: Python<'_>,
        prompt_column: String,
        model_name: String,
        num_generations: usize,
        group_generations: bool,
        add_raw_output: bool,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
    ) -> PyResult<Self> {
        Ok(Self {
            prompt_column,
            model_name,
            n: Generations::new(num_generations).map_err(config_error)?,
            group: group_generations,
            raw_output: add_raw_output,
            inline_raw_images,
            pass_invalid_rows,
            images: PyString::intern(py, "images").unbind(),
        })
    }

    /// Reads the prompt column (any object exporting an Arrow stream of strings).
    pub(crate) fn prepare(
        &self,
        py: Python<'_>,
        prompts: &Bound<'_, PyAny>,
    ) -> PyResult<PreparedColumns> {
        let chunks = read_stream(prompts)?;
        let count: usize = chunks.iter().map(|chunk| chunk.len()).sum();
        let mut texts = Vec::with_capacity(count);
        let mut rows = Rows::new(self.pass_invalid_rows);
        for chunk in &chunks {
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
        Ok(PreparedColumns {
            prompts: PyList::new(py, texts)?.unbind(),
            rows,
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
    pub(crate) fn build<'py>(
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
        prepared.rows.start_build().map_err(config_error)?;
        let valid = prepared.rows.valid();
        let read = answers::read(answers, valid, self.n.get(), self.images.bind(py))?;
        let plan = Plan::new(&prepared.rows, &read.answers, self.n).map_err(config_error)?;
        let images = self.images(&read.generations)?;
        // The raw output a failed answer keeps, as JSON.
        let raw: Vec<Option<String>> = read
            .raw
            .iter()
            .map(|raw| match raw {
                Some(raw) if self.raw_output => Some(pyjson::to_json(raw)),
                _ => None,
            })
            .collect();
        let options = Options {
            raw_output: self.raw_output,
            inline_raw_images: self.inline_raw_images,
            artifacts: artifacts_folder.map(|folder| Destination {
                folder,
                prefix: artifacts_prefix.unwrap_or_default(),
            }),
        };
        let built = py
            .detach(|| columns::build(&images, &plan, &raw, &options))
            .map_err(config_error)?;
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
            Arc::new(columns::constant(&self.model_name, plan.len())) as ArrayRef,
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
        let (count, n) = (prepared.rows.len(), self.n.get());
        let rows = ArrowArray::new(Arc::new(columns::repeated_rows(count, n)));
        let offsets = self
            .group
            .then(|| ArrowArray::new(Arc::new(columns::group_offsets(count, n)) as ArrayRef));
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
            return Err(read_error(format!(
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
            let payload = generation.payload()?;
            // A payload that is no image is kept in the raw output as it was.
            let payload_json = match &payload {
                Err(Problem::Missing { .. }) => Some("null".to_owned()),
                Err(_) => Some(pyjson::to_json(&generation.payload)),
                Ok(_) => None,
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
}

#[cfg(test)]
mod tests;
