//! Tables handed to pyarrow without a stream: a record batch is imported by the address
//! of its C data together with its pyarrow `Schema`, which is imported once per output
//! schema. (Importing a schema and a stream per batch costs more than the cells of a
//! small batch.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use arrow_array::{Array, RecordBatch, StructArray};
use arrow_data::ffi::FFI_ArrowArray;
use arrow_schema::ffi::FFI_ArrowSchema;
use arrow_schema::SchemaRef;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyCapsule, PyDict, PyList, PyType};

use crate::errors::read_error;

/// The pyarrow functions the import calls.
struct Api {
    import_schema: Py<PyAny>,
    import_batch: Py<PyAny>,
    from_batches: Py<PyAny>,
}

static API: PyOnceLock<Api> = PyOnceLock::new();

fn api(py: Python<'_>) -> PyResult<&'static Api> {
    API.get_or_try_init(py, || {
        let pyarrow = py.import("pyarrow")?;
        let attr = |class: &str, name: &str| -> PyResult<Py<PyAny>> {
            Ok(pyarrow.getattr(class)?.getattr(name)?.unbind())
        };
        Ok(Api {
            import_schema: attr("Schema", "_import_from_c_capsule")?,
            import_batch: attr("RecordBatch", "_import_from_c")?,
            from_batches: attr("Table", "from_batches")?,
        })
    })
}

/// The type `pyarrow.Table`, when every pyarrow table is in CPU memory: `None` for a
/// pyarrow built with CUDA, whose tables may hold device memory.
static CPU_TABLE: PyOnceLock<Option<Py<PyType>>> = PyOnceLock::new();

/// Whether `data` is a `pyarrow.Table` of a pyarrow without CUDA, whose data is in CPU
/// memory (never, while pyarrow is not imported).
pub(crate) fn is_cpu_pyarrow_table(data: &Bound<'_, PyAny>) -> PyResult<bool> {
    let py = data.py();
    let table = match CPU_TABLE.get(py) {
        Some(table) => table,
        None => {
            let modules = py.import("sys")?.getattr("modules")?;
            if !modules.contains("pyarrow")? {
                return Ok(false);
            }
            CPU_TABLE.get_or_try_init(py, || {
                let find_spec = py.import("importlib.util")?.getattr("find_spec")?;
                if !find_spec.call1(("pyarrow._cuda",))?.is_none() {
                    return Ok::<_, PyErr>(None);
                }
                let table = py.import("pyarrow")?.getattr("Table")?;
                Ok(Some(table.cast_into::<PyType>()?.unbind()))
            })?
        }
    };
    match table {
        Some(table) => data.is_instance(table.bind(py)),
        None => Ok(false),
    }
}

/// The last schema a `ToPyArrow` met: the batch's schema, the metadata given for it, and
/// the pyarrow `Schema` of the two.
struct Imported {
    schema: SchemaRef,
    metadata: Option<Py<PyDict>>,
    made: Py<PyAny>,
}

/// Makes pyarrow tables of record batches, keeping the pyarrow `Schema` of the last
/// schema it met.
pub(crate) struct ToPyArrow {
    last: Mutex<Option<Imported>>,
}

impl ToPyArrow {
    pub(crate) fn new() -> Self {
        Self {
            last: Mutex::new(None),
        }
    }

    /// `batch` as a one-chunk `pyarrow.Table`, its buffers shared, not copied, its
    /// schema's metadata `metadata` (text keys and values).
    pub(crate) fn table<'py>(
        &self,
        py: Python<'py>,
        batch: RecordBatch,
        metadata: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let api = api(py)?;
        let schema = self.schema(py, api, &batch.schema(), metadata)?;
        let data = StructArray::from(batch).to_data();
        let array = Box::new(FFI_ArrowArray::new(&data));
        let address = &*array as *const FFI_ArrowArray as usize;
        // pyarrow moves the array out of `array`, leaving it released; if it does not,
        // dropping `array` releases it.
        let imported = api.import_batch.bind(py).call1((address, schema))?;
        drop(array);
        api.from_batches
            .bind(py)
            .call1((PyList::new(py, [imported])?,))
    }

    /// The pyarrow `Schema` of `schema` with `metadata`: the last one made, if `schema`
    /// and `metadata` equal those it was made of.
    fn schema<'py>(
        &self,
        py: Python<'py>,
        api: &Api,
        schema: &SchemaRef,
        metadata: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        // Metadata is compared out of the lock: a comparison runs Python code.
        let last = (self.last.lock().expect("not poisoned").as_ref())
            .filter(|last| Arc::ptr_eq(&last.schema, schema) || last.schema == *schema)
            .map(|last| {
                let metadata = last.metadata.as_ref().map(|dict| dict.clone_ref(py));
                (metadata, last.made.clone_ref(py))
            });
        if let Some((last, made)) = last {
            let same = match (&last, metadata) {
                (None, None) => true,
                (Some(last), Some(metadata)) => last.bind(py).eq(metadata)?,
                _ => false,
            };
            if same {
                return Ok(made.into_bound(py));
            }
        }
        let mut described = schema.as_ref().clone();
        if let Some(metadata) = metadata {
            described = described.with_metadata(metadata.extract::<HashMap<String, String>>()?);
        }
        let exported = FFI_ArrowSchema::try_from(&described)
            .map_err(|e| read_error(format!("cannot export the output schema: {e}")))?;
        let capsule = PyCapsule::new_with_value(py, exported, c"arrow_schema")?;
        let made = api.import_schema.bind(py).call1((capsule,))?;
        *self.last.lock().expect("not poisoned") = Some(Imported {
            schema: schema.clone(),
            metadata: metadata
                .map(|dict| dict.copy())
                .transpose()?
                .map(Bound::unbind),
            made: made.clone().unbind(),
        });
        Ok(made)
    }
}
