//! Arrow data across the boundary, through the Arrow PyCapsule interface: arrays and tables
//! read from any object with `__arrow_c_stream__` (a pyarrow table's record batches one by
//! one, see `TableReader`), and tables handed back as objects with `__arrow_c_stream__`
//! (pyarrow, Polars and others read them without copying).

use std::ffi::{c_void, CStr};
use std::ptr::NonNull;
use std::sync::{Arc, Mutex};

use arrow_array::ffi::{from_ffi_and_data_type, FFI_ArrowArray};
use arrow_array::ffi_stream::{ArrayStreamReader, FFI_ArrowArrayStream, RecordBatchStreamReader};
use arrow_array::{
    Array, ArrayRef, RecordBatch, RecordBatchIterator, RecordBatchOptions, RecordBatchReader,
    StructArray,
};
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::{DataType, Schema, SchemaRef};
use pyo3::prelude::*;
use pyo3::types::PyCapsule;

use super::pyarrow::is_cpu_pyarrow_table;
use super::table::Input;
use crate::errors::read_error;

/// The capsule that `data.<method>()` returns, and the pointer it holds under `name`.
fn exported<'py>(
    data: &Bound<'py, PyAny>,
    method: &str,
    name: &CStr,
) -> PyResult<(Bound<'py, PyCapsule>, NonNull<c_void>)> {
    let capsule = data
        .call_method0(method)?
        .cast_into::<PyCapsule>()
        .map_err(|_| read_error(format!("{method} did not return a capsule")))?;
    let pointer = capsule.pointer_checked(Some(name))?;
    Ok((capsule, pointer))
}

/// The schema of an object that exports one (`__arrow_c_schema__`: a pyarrow `Schema`).
pub(crate) fn read_schema(data: &Bound<'_, PyAny>) -> PyResult<Schema> {
    let (_capsule, pointer) = exported(data, "__arrow_c_schema__", c"arrow_schema")?;
    // SAFETY: the capsule holds an `ArrowSchema` (its name says so), borrowed here while
    // the capsule lives.
    let schema = unsafe { &*pointer.cast::<FFI_ArrowSchema>().as_ptr() };
    Schema::try_from(schema).map_err(|e| read_error(format!("cannot read the Arrow schema: {e}")))
}

/// The arrays of an object that exports an Arrow stream (a pyarrow `ChunkedArray`, say),
/// each checked to be valid Arrow data.
pub(crate) fn read_stream(data: &Bound<'_, PyAny>) -> PyResult<Vec<ArrayRef>> {
    let (_capsule, pointer) = exported(data, "__arrow_c_stream__", c"arrow_array_stream")?;
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

/// The schema and record batches of an object that exports an Arrow stream of them (a
/// pyarrow `Table`, say), each checked to be valid Arrow data: a `TableReader` used once.
pub(crate) fn read_table(data: &Bound<'_, PyAny>) -> PyResult<Input> {
    TableReader::new().read(data)
}

/// `read_table` of an object that hands its stream over in a capsule.
fn read_exported_table(data: &Bound<'_, PyAny>) -> PyResult<Input> {
    let (_capsule, pointer) = exported(data, "__arrow_c_stream__", c"arrow_array_stream")?;
    // SAFETY: as in `read_stream`.
    let reader = unsafe {
        RecordBatchStreamReader::from_raw(pointer.cast::<FFI_ArrowArrayStream>().as_ptr())
    }
    .map_err(|e| read_error(format!("cannot read the Arrow table: {e}")))?;
    let schema = reader.schema();
    let batches = reader
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| read_error(format!("cannot read the Arrow table: {e}")))?;
    validated(Input { schema, batches })
}

/// `input`, once every column of it is checked to be valid Arrow data (offsets, views,
/// UTF-8): data from elsewhere is checked whole before it is read.
fn validated(input: Input) -> PyResult<Input> {
    for batch in &input.batches {
        for column in batch.columns() {
            column
                .to_data()
                .validate_full()
                .map_err(|e| read_error(format!("the Arrow data is not valid: {e}")))?;
        }
    }
    Ok(input)
}

/// Reads tables, keeping the schema of the last pyarrow `Table` it read. A pyarrow table
/// in CPU memory has its record batches exported one by one (its `__arrow_c_stream__`
/// would first check each column's device, in Python), its schema read only when it is
/// not the last one (batches of one file share theirs: a schema's export and import cost
/// more than a small batch's arrays); any other object hands its stream over in a capsule.
pub(crate) struct TableReader {
    last: Mutex<Option<(Py<PyAny>, SchemaRef)>>,
}

impl TableReader {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new(None),
        }
    }

    /// The schema and record batches of `data`, each checked to be valid Arrow data.
    pub(crate) fn read(&self, data: &Bound<'_, PyAny>) -> PyResult<Input> {
        if !is_cpu_pyarrow_table(data)? {
            return read_exported_table(data);
        }
        let py = data.py();
        let schema = self.schema(&data.getattr(pyo3::intern!(py, "schema"))?)?;
        let kind = DataType::Struct(schema.fields().clone());
        let mut batches = Vec::new();
        for batch in data
            .call_method0(pyo3::intern!(py, "to_batches"))?
            .try_iter()?
        {
            let mut array = FFI_ArrowArray::empty();
            let address = &mut array as *mut FFI_ArrowArray as usize;
            batch?.call_method1(pyo3::intern!(py, "_export_to_c"), (address,))?;
            // SAFETY: pyarrow wrote a struct array of the table's columns, whose type is
            // `kind` (the table's schema is the one its batches share).
            let data = unsafe { from_ffi_and_data_type(array, kind.clone()) }
                .map_err(|e| read_error(format!("cannot read the Arrow table: {e}")))?;
            let columns = StructArray::from(data);
            let rows = columns.len();
            let options = RecordBatchOptions::new().with_row_count(Some(rows));
            let (_, columns, _) = columns.into_parts();
            batches.push(
                RecordBatch::try_new_with_options(schema.clone(), columns, &options)
                    .map_err(|e| read_error(format!("cannot read the Arrow table: {e}")))?,
            );
        }
        validated(Input { schema, batches })
    }

    /// The schema of `schema` (a pyarrow `Schema`): the last one read, if it equals it
    /// (its metadata too).
    fn schema(&self, schema: &Bound<'_, PyAny>) -> PyResult<SchemaRef> {
        let py = schema.py();
        // Not compared under the lock: pyarrow may let another thread run meanwhile.
        let last = (self.last.lock().expect("not poisoned").as_ref())
            .map(|(last, read)| (last.clone_ref(py), read.clone()));
        if let Some((last, read)) = last {
            let equal = last
                .bind(py)
                .call_method1(pyo3::intern!(py, "equals"), (schema, true))?;
            if equal.is_truthy()? {
                return Ok(read);
            }
        }
        let read = Arc::new(read_schema(schema)?);
        *self.last.lock().expect("not poisoned") = Some((schema.clone().unbind(), read.clone()));
        Ok(read)
    }
}

/// An Arrow table handed to Python: `pyarrow.table(it)` takes it without copying.
#[pyclass(frozen, module = "imagetask._core")]
pub(crate) struct ArrowTable {
    batch: RecordBatch,
}

impl ArrowTable {
    pub(crate) fn new(batch: RecordBatch) -> Self {
        Self { batch }
    }
}

#[pymethods]
impl ArrowTable {
    /// The Arrow PyCapsule interface: a stream capsule of the table's one batch.
    #[pyo3(signature = (requested_schema=None))]
    fn __arrow_c_stream__<'py>(
        &self,
        py: Python<'py>,
        requested_schema: Option<Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyCapsule>> {
        let _ = requested_schema; // the table is handed over in its own schema
        let batches = RecordBatchIterator::new([Ok(self.batch.clone())], self.batch.schema());
        let stream = FFI_ArrowArrayStream::new(Box::new(batches));
        PyCapsule::new_with_value(py, stream, c"arrow_array_stream")
    }

    fn __len__(&self) -> usize {
        self.batch.num_rows()
    }
}
