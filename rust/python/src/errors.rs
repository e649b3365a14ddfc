//! The exceptions the extension raises: the classes of `imagetask.errors`.

use std::fmt::Display;

use imagetask_core::plan::RefusedRow;
use pyo3::PyErr;

pyo3::import_exception!(imagetask.errors, ConfigError);
pyo3::import_exception!(imagetask.errors, InputRowError);
pyo3::import_exception!(imagetask.errors, ReadError);
pyo3::import_exception!(imagetask.errors, RequestError);
pyo3::import_exception!(imagetask.errors, SinkError);

/// A `ConfigError`: a bad value for a builder, or a batch built against its rules.
pub(crate) fn config_error(error: impl Display) -> PyErr {
    ConfigError::new_err(error.to_string())
}

/// A `ReadError`: input data that cannot be read.
pub(crate) fn read_error(error: impl Display) -> PyErr {
    ReadError::new_err(error.to_string())
}

/// A `RequestError`: a server's answer that cannot be read.
pub(crate) fn request_error(error: impl Display) -> PyErr {
    RequestError::new_err(error.to_string())
}

/// A `SinkError`: output that cannot be written.
pub(crate) fn sink_error(error: impl Display) -> PyErr {
    SinkError::new_err(error.to_string())
}

/// The `InputRowError` of a refused input row: its message, index and column.
pub(crate) fn refused_row(refused: RefusedRow) -> PyErr {
    let RefusedRow { index, problem } = refused;
    InputRowError::new_err((problem.message, index, problem.column))
}
