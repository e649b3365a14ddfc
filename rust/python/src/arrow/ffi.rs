//! Arrow data across the boundary, through the Arrow PyCapsule interface: arrays read from
//! any object with `__arrow_c_stream__`, and arrays handed back as objects with
//! `__arrow_c_array__` (pyarrow, Polars and others read them without copying).

use arrow_array::ffi::{to_ffi, FFI_ArrowArray, FFI_ArrowSchema};
use arrow_array::ffi_stream::{ArrayStreamReader, FFI_ArrowArrayStream};
use arrow_array::{Array, ArrayRef};
use pyo3::prelude::*;
use pyo3::types::{PyCapsule, PyTuple};

use crate::errors::{read_error, sink_error};

/// The arrays of an object that exports an Arrow stream (a pyarrow `ChunkedArray`, say),
/// each checked to be valid Arrow data.
pub(crate) fn read_stream(data: &Bound<'_, PyAny>) -> PyResult<Vec<ArrayRef>> {
    let capsule = data
        .call_method0("__arrow_c_stream__")?
        .cast_into::<PyCapsule>()
        .map_err(|_| read_error("__arrow_c_stream__ did not return a capsule"))?;
    let pointer = capsule.pointer_checked(Some(c"arrow_array_stream"))?;
    // SAFETY: the capsule holds an `ArrowArrayStream` (its name says so); `from_raw` moves
    // the stream out and leaves a released one behind for the capsule's destructor.
    let reader =
        unsafe { ArrayStreamReader::from_raw(pointer.cast::<FFI_ArrowArrayStream>().as_ptr()) }
            .map_err(|e| read_error(format!("cannot read the Arrow stream: {e}")))?;
    let arrays = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(format!("cannot read the Arrow stream: {e}")))?;
    // Data from elsewhere is checked whole (offsets, views, UTF-8) before it is read.
    for array in &arrays {
        array
            .to_data()
            .validate_full()
            .map_err(|e| read_error(format!("the Arrow data is not valid: {e}")))?;
    }
    Ok(arrays)
}

/// An Arrow array handed to Python: `pyarrow.array(it)` (or `pyarrow.record_batch(it)`
/// for a struct array) takes it without copying.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct ArrowArray {
    array: ArrayRef,
}

impl ArrowArray {
    pub(crate) fn new(array: ArrayRef) -> Self {
        Self { array }
    }

    /// The array itself.
    #[cfg(test)]
    pub(crate) fn array(&self) -> &ArrayRef {
        &self.array
    }
}

#[pymethods]
impl ArrowArray {
    /// The Arrow PyCapsule interface: `(schema capsule, array capsule)`.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_array__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyTuple>> {
        let _ = requested_schema; // the array is handed over in its own type
        let (array, schema): (FFI_ArrowArray, FFI_ArrowSchema) = to_ffi(&self.array.to_data())
            .map_err(|e| sink_error(format!("cannot export the Arrow array: {e}")))?;
        let schema = PyCapsule::new_with_value(py, schema, c"arrow_schema")?;
        let array = PyCapsule::new_with_value(py, array, c"arrow_array")?;
        PyTuple::new(py, [schema.into_any(), array.into_any()])
    }

    fn __len__(&self) -> usize {
        self.array.len()
    }
}
