//! Python exception classes raised by the extension (defined in `imagetask.errors`).

pyo3::import_exception!(imagetask.errors, InputRowError);
