//! Native core of imagetask: the per-row and per-batch loops of an `ImageTask`.

pub mod answers;
pub mod arrow_ffi;
pub mod artifacts;
pub mod column_builder;
pub mod columns;
pub mod errors;
pub mod gc;
pub mod images;
pub mod json;
pub mod payload;
pub mod png;
pub mod pyjson;
pub mod rows;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use crate::arrow_ffi::ArrowArray;
    #[pymodule_export]
    use crate::column_builder::{ColumnBuilder, PreparedColumns};
    #[pymodule_export]
    use crate::images::{placeholder_images, write_artifacts};
    #[pymodule_export]
    use crate::pyjson::json_text;
    #[pymodule_export]
    use crate::rows::{Prepared, RowBuilder};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("MAX_GENERATIONS", crate::rows::MAX_GENERATIONS)
    }
}
