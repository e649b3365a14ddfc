//! Reading an input row: its columns checked and its prompt formatted.

use imagetask_core::plan::RowProblem;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyMapping, PyString};

use super::RowBuilder;
use crate::answers::{row_error, type_name};
use crate::errors::InputRowError;

/// One input row as read: the dict the batch keeps (an unreadable row's readable
/// columns, or none), and its prompt or why it cannot be sent.
pub(super) struct ReadRow<'py> {
    pub(super) dict: Bound<'py, PyDict>,
    pub(super) prompt: Result<Bound<'py, PyAny>, RowProblem>,
}

fn problem(message: String, column: Option<String>) -> RowProblem {
    RowProblem { message, column }
}

/// Why `format_input` failed on row `index`: an `InputRowError` it raised as it is (it
/// names its row and column), any other row failure prefixed with the row.
fn hook_problem(py: Python<'_>, err: PyErr, index: usize) -> PyResult<RowProblem> {
    let value = err.value(py);
    if value.is_instance_of::<InputRowError>() {
        let column = value.getattr("column")?;
        let column = if column.is_none() {
            None
        } else {
            Some(column.str()?.to_string())
        };
        return Ok(problem(value.str()?.to_string(), column));
    }
    Ok(problem(
        format!(
            "format_input failed for row {index} of the batch: {}",
            row_error(py, err)?
        ),
        None,
    ))
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

impl RowBuilder {
    /// Reads one row into the dict the batch keeps, and its prompt or why the row cannot
    /// be sent. A row that is not a dict is read into a new one.
    pub(super) fn read_row<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        row: &Bound<'py, PyAny>,
        format_input: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<ReadRow<'py>> {
        let dict = if let Ok(dict) = row.cast::<PyDict>() {
            dict.copy()?
        } else if let Ok(mapping) = row.cast::<PyMapping>() {
            let dict = PyDict::new(py);
            if let Err(err) = dict.update(mapping) {
                let reason = row_error(py, err)?;
                return Ok(ReadRow {
                    dict: PyDict::new(py),
                    prompt: Err(problem(
                        format!("row {index} of the batch cannot be read as a mapping: {reason}"),
                        None,
                    )),
                });
            }
            dict
        } else {
            return Ok(ReadRow {
                dict: PyDict::new(py),
                prompt: Err(problem(
                    format!(
                        "row {index} of the batch is a {}, not a mapping",
                        type_name(row)
                    ),
                    None,
                )),
            });
        };
        let prompt = match self.check_and_format(py, index, &dict, format_input) {
            Ok(result) => result,
            Err(err) => Err(problem(
                format!(
                    "row {index} of the batch cannot be read: {}",
                    row_error(py, err)?
                ),
                None,
            )),
        };
        Ok(ReadRow { dict, prompt })
    }

    /// Checks a row's columns and formats its prompt.
    fn check_and_format<'py>(
        &self,
        py: Python<'py>,
        index: usize,
        dict: &Bound<'py, PyDict>,
        format_input: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Result<Bound<'py, PyAny>, RowProblem>> {
        for (_, column) in &self.inputs {
            if !dict.contains(column.bind(py))? {
                return Ok(Err(problem(
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
                return Ok(Err(problem(
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
                Err(err) => return Ok(Err(hook_problem(py, err, index)?)),
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
            return Ok(Err(problem(
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
    pub(super) fn view<'py>(
        &self,
        py: Python<'py>,
        row: &Bound<'py, PyDict>,
    ) -> PyResult<Bound<'py, PyDict>> {
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
}
