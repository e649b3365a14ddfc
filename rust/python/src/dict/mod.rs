//! `RowBuilder`: turns a batch of input rows and the model's answers into output rows.

use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyMapping, PyString};

use crate::answers::{
    self, describe_exception, fails_a_row, type_name, Answers, Entry, Generation,
};
use crate::errors::InputRowError;
use crate::gc;
use imagetask_core::payload::{self, content_ref, Derived, Needs, Payload};

/// The most images a task asks per input row.
pub const MAX_GENERATIONS: usize = 10_000;

/// Keys written on every row, built once per builder.
struct Keys {
    model_name: Py<PyString>,
    metadata: Py<PyString>,
    raw_output: Py<PyString>,
    raw_input: Py<PyString>,
    statistics: Py<PyString>,
    error: Py<PyString>,
    images: Py<PyString>,
    answer_statistics: Py<PyString>,
}

/// A `(task name, dataset column)` pair.
type Column = (Py<PyString>, Py<PyString>);

/// Builds the output rows of one task configuration.
#[pyclass(frozen, module = "imagetask._core")]
pub struct RowBuilder {
    keys: Keys,
    model_name: Py<PyAny>,
    inputs: Vec<Column>,
    renames_inputs: bool,
    outputs: Vec<Column>,
    image: Option<usize>,
    n: usize,
    group: bool,
    add_raw_output: bool,
    add_raw_input: bool,
    image_bytes: bool,
    inline_raw_images: bool,
    pass_invalid_rows: bool,
}

/// One input row as the builder sees it while building its output rows.
struct RowContext<'py> {
    index: usize,
    base: Bound<'py, PyDict>,
    upstream: Option<Bound<'py, PyDict>>,
    prompt: Option<Bound<'py, PyAny>>,
}

/// The source of one generation: an image to format, or why there is none.
enum Source<'a, 'py> {
    Image(&'a Generation<'py>, &'a Result<Derived, String>),
    Missing {
        error: String,
        raw: Option<Bound<'py, PyAny>>,
    },
}

fn interned<'py>(py: Python<'py>, text: &str) -> Py<PyString> {
    PyString::intern(py, text).unbind()
}

fn columns(py: Python<'_>, pairs: Vec<(String, String)>) -> Vec<Column> {
    pairs
        .into_iter()
        .map(|(task, column)| (interned(py, &task), interned(py, &column)))
        .collect()
}

fn quoted_keys(dict: &Bound<'_, PyDict>) -> String {
    let keys: Vec<String> = dict
        .keys()
        .iter()
        .map(|key| key.repr().map(|r| r.to_string()).unwrap_or_default())
        .collect();
    if keys.is_empty() {
        "none".to_owned()
    } else {
        keys.join(", ")
    }
}

/// The text of an error a row caused (`Type: message`); an exception that is not a row's
/// failure (`KeyboardInterrupt`, `SystemExit`, `MemoryError`) is raised instead.
fn row_error(py: Python<'_>, err: PyErr) -> PyResult<String> {
    if fails_a_row(err.value(py)) {
        Ok(describe_exception(err.value(py).as_any()))
    } else {
        Err(err)
    }
}

/// A payload as a failure row's raw output keeps it: text that cannot be encoded (lone
/// surrogates) has those characters replaced, so that any sink can write the row.
fn keepable<'py>(payload: &Bound<'py, PyAny>) -> Bound<'py, PyAny> {
    match payload.cast::<PyString>() {
        Ok(text) if text.to_str().is_err() => {
            PyString::new(payload.py(), &text.to_string_lossy()).into_any()
        }
        _ => payload.clone(),
    }
}

/// A batch whose rows were read and whose prompts were formatted, ready for the model.
#[pyclass(frozen, module = "imagetask._core")]
pub struct Prepared {
    /// Every row as read, in order (an invalid row's readable columns, or none).
    rows: Vec<Py<PyDict>>,
    /// The prompts of the valid rows, in order.
    #[pyo3(get)]
    prompts: Py<PyList>,
    /// `(row index, problem)` of the invalid rows, in order.
    invalid: Vec<(usize, String)>,
    built: AtomicBool,
}

#[pymethods]
impl Prepared {
    fn __len__(&self) -> usize {
        self.rows.len()
    }
}

#[pymethods]
impl RowBuilder {
    #[new]
    #[pyo3(signature = (
        *, task_name, model_name, inputs, outputs, num_generations, group_generations,
        add_raw_output, add_raw_input, image_bytes, inline_raw_images, pass_invalid_rows,
        model_name_column, metadata_column,
    ))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        task_name: &str,
        model_name: Bound<'_, PyAny>,
        inputs: Vec<(String, String)>,
        outputs: Vec<(String, String)>,
        num_generations: usize,
        group_generations: bool,
        add_raw_output: bool,
        add_raw_input: bool,
        image_bytes: bool,
        inline_raw_images: bool,
        pass_invalid_rows: bool,
        model_name_column: &str,
        metadata_column: &str,
    ) -> PyResult<Self> {
        if !(1..=MAX_GENERATIONS).contains(&num_generations) {
            return Err(PyValueError::new_err(format!(
                "num_generations must be between 1 and {MAX_GENERATIONS}, got {num_generations}"
            )));
        }
        if inputs.is_empty() {
            return Err(PyValueError::new_err(
                "a task needs at least one input column",
            ));
        }
        let image = outputs.iter().position(|(task, _)| task == "image");
        let renames_inputs = inputs.iter().any(|(task, column)| task != column);
        Ok(Self {
            keys: Keys {
                model_name: interned(py, model_name_column),
                metadata: interned(py, metadata_column),
                raw_output: interned(py, &format!("raw_output_{task_name}")),
                raw_input: interned(py, &format!("raw_input_{task_name}")),
                statistics: interned(py, &format!("statistics_{task_name}")),
                error: interned(py, &format!("error_{task_name}")),
                images: interned(py, "images"),
                answer_statistics: interned(py, "statistics"),
            },
            model_name: model_name.unbind(),
            inputs: columns(py, inputs),
            renames_inputs,
            outputs: columns(py, outputs),
            image,
            n: num_generations,
            group: group_generations,
            add_raw_output,
            add_raw_input,
            image_bytes,
            inline_raw_images,
            pass_invalid_rows,
        })
    }

    /// Reads every row once and formats its prompt: the batch, ready for the model.
    #[pyo3(signature = (rows, format_input=None))]
    fn prepare<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyList>,
        format_input: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Prepared> {
        let items: Vec<Bound<'py, PyAny>> = rows.iter().collect();
        let mut prompts = Vec::with_capacity(items.len());
        let mut read = Vec::with_capacity(items.len());
        let mut invalid = Vec::new();
        for (index, row) in items.iter().enumerate() {
            let (dict, problem) = match self.read_row(py, index, row, format_input)? {
                (dict, Ok(prompt)) => {
                    prompts.push(prompt);
                    (dict, None)
                }
                (dict, Err((message, column))) => {
                    if !self.pass_invalid_rows {
                        return Err(InputRowError::new_err((message, index, column)));
                    }
                    (dict, Some(message))
                }
            };
            if let Some(message) = problem {
                invalid.push((index, message));
            }
            read.push(dict.unbind());
        }
        Ok(Prepared {
            rows: read,
            prompts: PyList::new(py, prompts)?.unbind(),
            invalid,
            built: AtomicBool::new(false),
        })
    }

    /// Builds the output rows of a prepared batch; returns `(rows, failures)`.
    #[pyo3(signature = (prepared, answers, format_output=None))]
    fn build<'py>(
        &self,
        py: Python<'py>,
        prepared: &Prepared,
        answers: &Bound<'py, PyAny>,
        format_output: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        if prepared.built.swap(true, Ordering::AcqRel) {
            return Err(PyValueError::new_err(
                "a prepared batch can be built only once",
            ));
        }
        let prompts: Vec<Bound<'py, PyAny>> = prepared.prompts.bind(py).iter().collect();
        let valid = prepared.rows.len() - prepared.invalid.len();
        if prompts.len() != valid {
            return Err(PyValueError::new_err(format!(
                "{} prompts for {valid} valid rows",
                prompts.len()
            )));
        }
        let read = answers::read(answers, valid, self.n, self.keys.images.bind(py))?;
        let derived = self.derive(py, &read)?;
        let mut out = Vec::with_capacity(if self.group {
            prepared.rows.len()
        } else {
            prepared.rows.len().saturating_mul(self.n)
        });
        let mut failures: Vec<(usize, usize, String)> = Vec::new();
        let mut entries = read.entries.iter();
        let mut prompts = prompts.into_iter();
        let mut invalid = prepared.invalid.iter().peekable();
        for (index, base) in prepared.rows.iter().enumerate() {
            let problem = match invalid.peek() {
                Some((at, message)) if *at == index => {
                    invalid.next();
                    Some(message)
                }
                _ => None,
            };
            let base = base.bind(py).clone();
            let upstream = self.upstream(&base)?;
            let mut context = RowContext {
                index,
                base,
                upstream,
                prompt: None,
            };
            let sources: Vec<Source<'_, 'py>> = match problem {
                Some(error) => (0..self.n)
                    .map(|_| Source::Missing {
                        error: error.clone(),
                        raw: None,
                    })
                    .collect(),
                None => {
                    context.prompt = prompts.next();
                    match entries.next() {
                        Some(Entry::Read { start, found }) => (0..self.n)
                            .map(|k| {
                                if k < *found {
                                    Source::Image(&read.generations[start + k], &derived[start + k])
                                } else {
                                    Source::Missing {
                                        error: format!(
                                            "the model returned {found} image(s) for {} generation(s)",
                                            self.n
                                        ),
                                        raw: None,
                                    }
                                }
                            })
                            .collect(),
                        Some(Entry::Failed { error, raw }) => (0..self.n)
                            .map(|_| Source::Missing {
                                error: error.clone(),
                                raw: raw.clone(),
                            })
                            .collect(),
                        None => return Err(PyValueError::new_err("fewer answers than rows")),
                    }
                }
            };
            if self.group {
                out.push(self.grouped_row(py, &context, sources, format_output, &mut failures)?);
            } else {
                for (k, source) in sources.into_iter().enumerate() {
                    // The row read by `prepare` is this batch's own: the last generation
                    // takes it, the others a copy.
                    let row = if k + 1 == self.n {
                        context.base.clone()
                    } else {
                        context.base.copy()?
                    };
                    let meta = self.generation(
                        py,
                        &context,
                        k,
                        source,
                        format_output,
                        &mut failures,
                        |c, value| row.set_item(self.outputs[c].1.bind(py), value),
                    )?;
                    row.set_item(self.keys.model_name.bind(py), self.model_name.bind(py))?;
                    row.set_item(self.keys.metadata.bind(py), meta)?;
                    gc::untrack(row.as_any());
                    out.push(row.into_any());
                }
            }
        }
        Ok((PyList::new(py, out)?, PyList::new(py, failures)?))
    }
}

impl RowBuilder {
    /// Reads one row into the dict the batch keeps, and its prompt or why the row cannot
    /// be sent (message, column). A row that is not a dict is read into a new one.
    #[allow(clippy::type_complexity)]
    fn read_row<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        row: &Bound<'py, PyAny>,
        format_input: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(
        Bound<'py, PyDict>,
        Result<Bound<'py, PyAny>, (String, Option<String>)>,
    )> {
        let dict = if let Ok(dict) = row.cast::<PyDict>() {
            dict.copy()?
        } else if let Ok(mapping) = row.cast::<PyMapping>() {
            let dict = PyDict::new(py);
            if let Err(err) = dict.update(mapping) {
                let reason = row_error(py, err)?;
                return Ok((
                    PyDict::new(py),
                    Err((
                        format!("row {index} of the batch cannot be read as a mapping: {reason}"),
                        None,
                    )),
                ));
            }
            dict
        } else {
            return Ok((
                PyDict::new(py),
                Err((
                    format!(
                        "row {index} of the batch is a {}, not a mapping",
                        type_name(row)
                    ),
                    None,
                )),
            ));
        };
        let prompt = match self.check_and_format(py, index, &dict, format_input) {
            Ok(result) => result,
            Err(err) => Err((
                format!(
                    "row {index} of the batch cannot be read: {}",
                    row_error(py, err)?
                ),
                None,
            )),
        };
        Ok((dict, prompt))
    }

    /// Checks a row's columns and formats its prompt.
    #[allow(clippy::type_complexity)]
    fn check_and_format<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        dict: &Bound<'py, PyDict>,
        format_input: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Result<Bound<'py, PyAny>, (String, Option<String>)>> {
        for (_, column) in &self.inputs {
            if !dict.contains(column.bind(py))? {
                return Ok(Err((
                    format!(
                        "row {index} of the batch lacks the input column '{column}' (its columns: {})",
                        quoted_keys(dict)
                    ),
                    Some(column.to_string()),
                )));
            }
        }
        if let Some(meta) = dict.get_item(self.keys.metadata.bind(py))? {
            if !meta.is_none() && meta.cast::<PyDict>().is_err() {
                return Ok(Err((
                    format!(
                        "row {index} of the batch has a {} in column '{}', expected a dict of metadata",
                        type_name(&meta),
                        self.keys.metadata
                    ),
                    Some(self.keys.metadata.to_string()),
                )));
            }
        }
        let (prompt, source) = match format_input {
            Some(hook) => match hook.call1((self.view(py, dict)?,)) {
                Ok(prompt) => (prompt, "format_input returned".to_owned()),
                Err(err) => {
                    return Ok(Err((
                        format!(
                            "format_input failed for row {index} of the batch: {}",
                            row_error(py, err)?
                        ),
                        None,
                    )))
                }
            },
            None => {
                let column = self.inputs[0].1.bind(py);
                let value = dict
                    .get_item(column)?
                    .unwrap_or_else(|| py.None().into_bound(py));
                (value, format!("its column '{column}' holds"))
            }
        };
        if prompt.cast::<PyString>().is_err() {
            let column = format_input.map_or_else(|| Some(self.inputs[0].1.to_string()), |_| None);
            return Ok(Err((
                format!(
                    "row {index} of the batch has no text prompt: {source} a {}",
                    type_name(&prompt)
                ),
                column,
            )));
        }
        Ok(Ok(prompt))
    }

    /// The row as the task's hooks see it: dataset columns renamed to the task's inputs.
    /// A copy of its own, so that a hook that changes it changes no row of the batch.
    fn view<'py>(&self, py: Python<'py>, row: &Bound<'py, PyDict>) -> PyResult<Bound<'py, PyDict>> {
        let view = row.copy()?;
        if !self.renames_inputs {
            return Ok(view);
        }
        for (task, column) in &self.inputs {
            if let Some(value) = row.get_item(column.bind(py))? {
                view.del_item(column.bind(py))?;
                view.set_item(task.bind(py), value)?;
            }
        }
        Ok(view)
    }

    fn upstream<'py>(&self, row: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let py = row.py();
        Ok(match row.get_item(self.keys.metadata.bind(py))? {
            Some(meta) => meta.cast_into::<PyDict>().ok(),
            None => None,
        })
    }

    /// What the batch's payloads need, checked and derived with the GIL released.
    fn derive(&self, py: Python<'_>, read: &Answers<'_>) -> PyResult<Vec<Result<Derived, String>>> {
        let needs = Needs {
            hash: self.add_raw_output && !self.inline_raw_images,
            bytes: self.image_bytes,
            text: !self.image_bytes,
        };
        let mut work: Vec<Result<Payload<'_>, String>> = Vec::with_capacity(read.generations.len());
        for generation in &read.generations {
            let payload = &generation.payload;
            let item = if let Ok(text) = payload.cast::<PyString>() {
                match text.to_str() {
                    Ok(text) => Ok(Payload::Text(text.as_bytes())),
                    Err(_) => Err("is not valid base64 (it is not ASCII text)".to_owned()),
                }
            } else if let Ok(bytes) = payload.cast::<PyBytes>() {
                Ok(Payload::Bytes(bytes.as_bytes()))
            } else if payload.is_none() {
                // A backend that lost some images of an input says why under "error".
                Err(match generation.source.get_item("error")? {
                    Some(error) if !error.is_none() => match error.str() {
                        Ok(text) => format!("is missing: {text}"),
                        Err(err) => format!("is missing: {}", row_error(py, err)?),
                    },
                    _ => "is None, expected base64 text or bytes".to_owned(),
                })
            } else {
                Err(format!(
                    "is a {}, expected base64 text or bytes",
                    type_name(payload)
                ))
            };
            work.push(item);
        }
        Ok(py.detach(|| payload::derive_all(&work, needs)))
    }

    fn grouped_row<'py>(
        &self,
        py: Python<'py>,
        context: &RowContext<'py>,
        sources: Vec<Source<'_, 'py>>,
        format_output: Option<&Bound<'py, PyAny>>,
        failures: &mut Vec<(usize, usize, String)>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut cells: Vec<Vec<Bound<'py, PyAny>>> = (0..self.outputs.len())
            .map(|_| Vec::with_capacity(self.n))
            .collect();
        let mut metas = Vec::with_capacity(self.n);
        for (k, source) in sources.into_iter().enumerate() {
            let meta = self.generation(
                py,
                context,
                k,
                source,
                format_output,
                failures,
                |c, value| {
                    cells[c].push(value);
                    Ok(())
                },
            )?;
            metas.push(meta);
        }
        let row = context.base.clone();
        for ((_, column), values) in self.outputs.iter().zip(cells) {
            let values = PyList::new(py, values)?;
            gc::untrack(values.as_any());
            row.set_item(column.bind(py), values)?;
        }
        let metas = PyList::new(py, metas)?;
        gc::untrack(metas.as_any());
        row.set_item(self.keys.model_name.bind(py), self.model_name.bind(py))?;
        row.set_item(self.keys.metadata.bind(py), metas)?;
        gc::untrack(row.as_any());
        Ok(row.into_any())
    }

    /// Puts the output columns of generation `k` and returns its metadata.
    #[allow(clippy::too_many_arguments)]
    fn generation<'py>(
        &self,
        py: Python<'py>,
        context: &RowContext<'py>,
        k: usize,
        source: Source<'_, 'py>,
        format_output: Option<&Bound<'py, PyAny>>,
        failures: &mut Vec<(usize, usize, String)>,
        mut put: impl FnMut(usize, Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let (error, raw) = match source {
            Source::Image(generation, Ok(derived)) => {
                match self.format(py, context, generation, derived, format_output)? {
                    Ok(values) => {
                        for (c, value) in values.into_iter().enumerate() {
                            put(c, value)?;
                        }
                        let meta = self.success_meta(py, context, generation, derived)?;
                        gc::untrack(meta.as_any());
                        return Ok(meta);
                    }
                    Err(error) => (
                        error,
                        Some(self.narrowed(py, generation, keepable(&generation.payload))?),
                    ),
                }
            }
            Source::Image(generation, Err(error)) => (
                format!("image {k} of the model's answer {error}"),
                Some(self.narrowed(py, generation, keepable(&generation.payload))?),
            ),
            Source::Missing { error, raw } => (error, raw),
        };
        for c in 0..self.outputs.len() {
            put(c, py.None().into_bound(py))?;
        }
        let meta = self.meta(py, context)?;
        if self.add_raw_output {
            meta.set_item(self.keys.raw_output.bind(py), raw)?;
        }
        if self.add_raw_input {
            meta.set_item(self.keys.raw_input.bind(py), &context.prompt)?;
        }
        meta.set_item(self.keys.error.bind(py), &error)?;
        gc::untrack(meta.as_any());
        failures.push((context.index, k, error));
        Ok(meta)
    }

    /// The values of the output columns of one generation, or the error of its formatting.
    fn format<'py>(
        &self,
        py: Python<'py>,
        context: &RowContext<'py>,
        generation: &Generation<'py>,
        derived: &Derived,
        format_output: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Result<Vec<Bound<'py, PyAny>>, String>> {
        let Some(hook) = format_output else {
            let image = match (self.image_bytes, &derived.bytes, &derived.text) {
                (true, Some(bytes), _) => PyBytes::new(py, bytes).into_any(),
                (false, _, Some(text)) => PyString::new(py, text).into_any(),
                _ => generation.payload.clone(),
            };
            return Ok(Ok((0..self.outputs.len())
                .map(|c| {
                    if Some(c) == self.image {
                        image.clone()
                    } else {
                        py.None().into_bound(py)
                    }
                })
                .collect()));
        };
        let input = self.view(py, &context.base)?;
        let output = self.narrowed(py, generation, generation.payload.clone())?;
        let formatted = match hook.call1((output, input)) {
            Ok(formatted) => formatted,
            Err(err) => return Ok(Err(row_error(py, err)?)),
        };
        let Ok(formatted) = formatted.cast::<PyDict>() else {
            return Ok(Err(format!(
                "format_output returned a {}, expected a dict",
                type_name(&formatted)
            )));
        };
        let mut values = Vec::with_capacity(self.outputs.len());
        for (task, _) in &self.outputs {
            values.push(
                formatted
                    .get_item(task.bind(py))?
                    .unwrap_or_else(|| py.None().into_bound(py)),
            );
        }
        Ok(Ok(values))
    }

    fn success_meta<'py>(
        &self,
        py: Python<'py>,
        context: &RowContext<'py>,
        generation: &Generation<'py>,
        derived: &Derived,
    ) -> PyResult<Bound<'py, PyDict>> {
        let meta = self.meta(py, context)?;
        if self.add_raw_output {
            let raw = if self.inline_raw_images {
                if generation.alone {
                    generation.source.clone().into_any()
                } else {
                    self.narrowed(py, generation, generation.payload.clone())?
                }
            } else {
                let hash = derived.hash.as_ref().ok_or_else(|| {
                    PyValueError::new_err("internal error: image hash was not computed")
                })?;
                let reference = content_ref(hash);
                // Content references are ASCII by construction.
                let reference = std::str::from_utf8(&reference).unwrap_or_default();
                self.narrowed(py, generation, PyString::new(py, reference).into_any())?
            };
            meta.set_item(self.keys.raw_output.bind(py), raw)?;
        }
        if self.add_raw_input {
            meta.set_item(self.keys.raw_input.bind(py), &context.prompt)?;
        }
        if !generation.alone {
            if let Some(statistics) = generation
                .source
                .get_item(self.keys.answer_statistics.bind(py))?
            {
                if !statistics.is_none() {
                    meta.set_item(self.keys.statistics.bind(py), statistics)?;
                }
            }
        }
        Ok(meta)
    }

    /// A generation's part of the answer: its dict with the images narrowed to `image`,
    /// and the statistics left out (they have a metadata key of their own).
    fn narrowed<'py>(
        &self,
        py: Python<'py>,
        generation: &Generation<'py>,
        image: Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dict = if generation.alone {
            PyDict::new(py)
        } else {
            let dict = generation.source.copy()?;
            let statistics = self.keys.answer_statistics.bind(py);
            if dict.contains(statistics)? {
                dict.del_item(statistics)?;
            }
            dict
        };
        let images = PyList::new(py, [image])?;
        gc::untrack(images.as_any());
        dict.set_item(self.keys.images.bind(py), images)?;
        gc::untrack(dict.as_any());
        Ok(dict.into_any())
    }

    /// A fresh metadata dict holding the row's upstream metadata (but this task's own error
    /// and statistics keys).
    fn meta<'py>(
        &self,
        py: Python<'py>,
        context: &RowContext<'py>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let Some(upstream) = &context.upstream else {
            return Ok(PyDict::new(py));
        };
        let meta = upstream.copy()?;
        // This task's own error and statistics keys say what this generation did: an
        // earlier run's under the same name (a retried failure, say) are not carried on.
        for key in [&self.keys.error, &self.keys.statistics] {
            let key = key.bind(py);
            if meta.contains(key)? {
                meta.del_item(key)?;
            }
        }
        Ok(meta)
    }
}
