//! `RowBuilder`: the dict encoder. It turns a batch of input rows and the model's answers
//! into output rows (dicts), following the batch's plan.

mod read;

use imagetask_core::payload::decode::{self, Derived, Needs, Work};
use imagetask_core::payload::{content_ref, Problem};
use imagetask_core::plan::{Failure, Generations, Plan, PlannedRow, Rows, Source};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::answers::{self, row_error, type_name, Answers, Generation};
use crate::errors::{config_error, refused_row};
use crate::gc;
use crate::store::StoredImage;

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
pub(crate) struct RowBuilder {
    keys: Keys,
    model_name: Py<PyAny>,
    inputs: Vec<Column>,
    renames_inputs: bool,
    outputs: Vec<Column>,
    image: Option<usize>,
    n: Generations,
    group: bool,
    add_raw_output: bool,
    add_raw_input: bool,
    image_bytes: bool,
    /// The image column takes each payload as the model gave it (neither decoded nor
    /// encoded): for rows whose images are written as files and then dropped.
    images_as_received: bool,
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

/// A batch being built: its answers, what was derived from their images, and the
/// failures so far.
struct Build<'a, 'py> {
    builder: &'a RowBuilder,
    answers: &'a Answers<'py>,
    derived: &'a [Result<Derived, Problem>],
    format_output: Option<&'a Bound<'py, PyAny>>,
    failures: Vec<(usize, usize, String)>,
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
pub(crate) struct Prepared {
    /// Every row as read, in order (an invalid row's readable columns, or none).
    dicts: Vec<Py<PyDict>>,
    /// The prompts of the valid rows, in order.
    #[pyo3(get)]
    prompts: Py<PyList>,
    /// Which rows are valid, and whether the batch was built.
    rows: Rows,
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
        *, model_name, inputs, outputs, num_generations, group_generations,
        add_raw_output, add_raw_input, image_bytes, inline_raw_images, pass_invalid_rows,
        model_name_column, metadata_column, raw_output_key, raw_input_key, statistics_key,
        error_key, images_as_received=false,
    ))]
    #[expect(
        clippy::too_many_arguments,
        reason = "one argument per keyword argument of the Python constructor"
    )]
    pub(crate) fn new(
        py: Python<'_>,
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
        raw_output_key: &str,
        raw_input_key: &str,
        statistics_key: &str,
        error_key: &str,
        images_as_received: bool,
    ) -> PyResult<Self> {
        let n = Generations::new(num_generations).map_err(config_error)?;
        if inputs.is_empty() {
            return Err(config_error("a task needs at least one input column"));
        }
        let image = outputs.iter().position(|(task, _)| task == "image");
        let renames_inputs = inputs.iter().any(|(task, column)| task != column);
        Ok(Self {
            keys: Keys {
                model_name: interned(py, model_name_column),
                metadata: interned(py, metadata_column),
                raw_output: interned(py, raw_output_key),
                raw_input: interned(py, raw_input_key),
                statistics: interned(py, statistics_key),
                error: interned(py, error_key),
                images: interned(py, "images"),
                answer_statistics: interned(py, "statistics"),
            },
            model_name: model_name.unbind(),
            inputs: columns(py, inputs),
            renames_inputs,
            outputs: columns(py, outputs),
            image,
            n,
            group: group_generations,
            add_raw_output,
            add_raw_input,
            image_bytes,
            images_as_received,
            inline_raw_images,
            pass_invalid_rows,
        })
    }

    /// Reads every row once and formats its prompt: the batch, ready for the model.
    #[pyo3(signature = (rows, format_input=None))]
    pub(crate) fn prepare<'py>(
        &self,
        py: Python<'py>,
        rows: &Bound<'py, PyList>,
        format_input: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Prepared> {
        let items: Vec<Bound<'py, PyAny>> = rows.iter().collect();
        let mut prompts = Vec::with_capacity(items.len());
        let mut dicts = Vec::with_capacity(items.len());
        let mut plan_rows = Rows::new(self.pass_invalid_rows);
        for (index, row) in items.iter().enumerate() {
            let read = self.read_row(py, index, row, format_input)?;
            match read.prompt {
                Ok(prompt) => {
                    prompts.push(prompt);
                    plan_rows.push_valid();
                }
                Err(problem) => plan_rows.push_invalid(problem).map_err(refused_row)?,
            }
            dicts.push(read.dict.unbind());
        }
        Ok(Prepared {
            dicts,
            prompts: PyList::new(py, prompts)?.unbind(),
            rows: plan_rows,
        })
    }

    /// Builds the output rows of a prepared batch; returns `(rows, failures)`.
    #[pyo3(signature = (prepared, answers, format_output=None))]
    pub(crate) fn build<'py>(
        &self,
        py: Python<'py>,
        prepared: &Prepared,
        answers: &Bound<'py, PyAny>,
        format_output: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<(Bound<'py, PyList>, Bound<'py, PyList>)> {
        prepared.rows.start_build().map_err(config_error)?;
        let prompts: Vec<Bound<'py, PyAny>> = prepared.prompts.bind(py).iter().collect();
        let valid = prepared.rows.valid();
        if prompts.len() != valid {
            return Err(config_error(format!(
                "{} prompts for {valid} valid rows",
                prompts.len()
            )));
        }
        let n = self.n.get();
        let read = answers::read(answers, valid, n, self.keys.images.bind(py))?;
        let plan = Plan::new(&prepared.rows, &read.answers, self.n).map_err(config_error)?;
        let derived = self.derive(py, &read)?;
        let mut out = Vec::with_capacity(if self.group {
            prepared.rows.len()
        } else {
            plan.len()
        });
        let mut build = Build {
            builder: self,
            answers: &read,
            derived: &derived,
            format_output,
            failures: Vec::new(),
        };
        for row in plan.rows() {
            let base = prepared.dicts[row.index].bind(py).clone();
            let context = RowContext {
                index: row.index,
                upstream: self.upstream(&base)?,
                base,
                prompt: row.answer().map(|answer| prompts[answer].clone()),
            };
            if self.group {
                out.push(build.grouped_row(py, &context, row)?);
                continue;
            }
            for (k, source) in row.sources().enumerate() {
                // The row read by `prepare` is this batch's own: the last generation
                // takes it, the others a copy.
                let output = if k + 1 == n {
                    context.base.clone()
                } else {
                    context.base.copy()?
                };
                let meta = build.generation(py, &context, k, source, |c, value| {
                    output.set_item(self.outputs[c].1.bind(py), value)
                })?;
                output.set_item(self.keys.model_name.bind(py), self.model_name.bind(py))?;
                output.set_item(self.keys.metadata.bind(py), meta)?;
                gc::untrack(output.as_any());
                out.push(output.into_any());
            }
        }
        Ok((PyList::new(py, out)?, PyList::new(py, build.failures)?))
    }
}

impl RowBuilder {
    fn upstream<'py>(&self, row: &Bound<'py, PyDict>) -> PyResult<Option<Bound<'py, PyDict>>> {
        let py = row.py();
        Ok(match row.get_item(self.keys.metadata.bind(py))? {
            Some(meta) => meta.cast_into::<PyDict>().ok(),
            None => None,
        })
    }

    /// What the batch's payloads need, checked and derived with the GIL released.
    fn derive(
        &self,
        py: Python<'_>,
        read: &Answers<'_>,
    ) -> PyResult<Vec<Result<Derived, Problem>>> {
        let needs = Needs {
            hash: self.add_raw_output && !self.inline_raw_images,
            bytes: self.image_bytes && !self.images_as_received,
            text: !self.image_bytes && !self.images_as_received,
        };
        // A stored image's hash is known and its bytes stay on disk: nothing to derive.
        let mut stored = Vec::with_capacity(read.generations.len());
        let mut work = Vec::with_capacity(read.generations.len());
        for generation in &read.generations {
            let image = (read.stored)
                .then(|| generation.payload.cast::<StoredImage>().ok())
                .flatten();
            match image {
                Some(image) => stored.push(Some(image.get().sha256)),
                None => {
                    stored.push(None);
                    work.push(generation.payload()?);
                }
            }
        }
        let work: Vec<Work<'_>> = work;
        let mut derived = py.detach(|| decode::derive_all(&work, needs)).into_iter();
        Ok(stored
            .into_iter()
            .map(|hash| match hash {
                Some(hash) => Ok(Derived {
                    hash: Some(hash),
                    ..Derived::default()
                }),
                None => derived.next().unwrap_or(Err(Problem::Empty)),
            })
            .collect())
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
                let image = match &derived.hash {
                    Some(hash) => PyString::new(py, content_ref(hash).as_str()).into_any(),
                    // Never met: the hash is derived whenever the raw output refers to it.
                    None => generation.payload.clone(),
                };
                self.narrowed(py, generation, image)?
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

impl<'py> Build<'_, 'py> {
    fn grouped_row(
        &mut self,
        py: Python<'py>,
        context: &RowContext<'py>,
        row: PlannedRow<'_>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let builder = self.builder;
        let n = builder.n.get();
        let mut cells: Vec<Vec<Bound<'py, PyAny>>> = (0..builder.outputs.len())
            .map(|_| Vec::with_capacity(n))
            .collect();
        let mut metas = Vec::with_capacity(n);
        for (k, source) in row.sources().enumerate() {
            let meta = self.generation(py, context, k, source, |c, value| {
                cells[c].push(value);
                Ok(())
            })?;
            metas.push(meta);
        }
        let output = context.base.clone();
        for ((_, column), values) in builder.outputs.iter().zip(cells) {
            let values = PyList::new(py, values)?;
            gc::untrack(values.as_any());
            output.set_item(column.bind(py), values)?;
        }
        let metas = PyList::new(py, metas)?;
        gc::untrack(metas.as_any());
        output.set_item(
            builder.keys.model_name.bind(py),
            builder.model_name.bind(py),
        )?;
        output.set_item(builder.keys.metadata.bind(py), metas)?;
        gc::untrack(output.as_any());
        Ok(output.into_any())
    }

    /// Puts the output columns of generation `k` and returns its metadata.
    fn generation(
        &mut self,
        py: Python<'py>,
        context: &RowContext<'py>,
        k: usize,
        source: Source<'_>,
        mut put: impl FnMut(usize, Bound<'py, PyAny>) -> PyResult<()>,
    ) -> PyResult<Bound<'py, PyDict>> {
        let builder = self.builder;
        let (error, raw) = match source {
            Source::Image(at) => {
                let generation = &self.answers.generations[at];
                match &self.derived[at] {
                    Ok(derived) => {
                        match builder.format(
                            py,
                            context,
                            generation,
                            derived,
                            self.format_output,
                        )? {
                            Ok(values) => {
                                for (c, value) in values.into_iter().enumerate() {
                                    put(c, value)?;
                                }
                                let meta =
                                    builder.success_meta(py, context, generation, derived)?;
                                gc::untrack(meta.as_any());
                                return Ok(meta);
                            }
                            Err(error) => (
                                error,
                                Some(builder.narrowed(
                                    py,
                                    generation,
                                    keepable(&generation.payload),
                                )?),
                            ),
                        }
                    }
                    Err(problem) => (
                        format!("image {k} of the model's answer {problem}"),
                        Some(builder.narrowed(py, generation, keepable(&generation.payload))?),
                    ),
                }
            }
            Source::Failed(failure) => {
                let raw = match failure {
                    Failure::FailedAnswer { answer, .. } => self.answers.raw[answer].clone(),
                    Failure::InvalidRow { .. } | Failure::FewerImages { .. } => None,
                };
                (failure.to_string(), raw)
            }
        };
        for c in 0..builder.outputs.len() {
            put(c, py.None().into_bound(py))?;
        }
        let meta = builder.meta(py, context)?;
        if builder.add_raw_output {
            meta.set_item(builder.keys.raw_output.bind(py), raw)?;
        }
        if builder.add_raw_input {
            meta.set_item(builder.keys.raw_input.bind(py), &context.prompt)?;
        }
        meta.set_item(builder.keys.error.bind(py), &error)?;
        gc::untrack(meta.as_any());
        self.failures.push((context.index, k, error));
        Ok(meta)
    }
}

#[cfg(test)]
mod tests;
