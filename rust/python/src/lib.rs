//! Native core of imagetask: the per-row and per-batch loops of an `ImageTask`.

mod answers;
mod arrow;
mod dict;
mod errors;
mod gc;
mod images;
mod pyjson;
mod store;
#[cfg(test)]
mod testing;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use crate::answers::{answer_facts, AnswerFacts};
    #[pymodule_export]
    use crate::arrow::digest::ArrowRowsDigest;
    #[pymodule_export]
    use crate::arrow::ffi::ArrowTable;
    #[pymodule_export]
    use crate::arrow::hooked::assemble_rows;
    #[pymodule_export]
    use crate::arrow::{ColumnBuilder, PreparedColumns};
    #[pymodule_export]
    use crate::dict::{Prepared, RowBuilder};
    #[pymodule_export]
    use crate::images::{placeholder_images, write_artifacts};
    #[pymodule_export]
    use crate::pyjson::json_text;
    #[pymodule_export]
    use crate::store::{ImageStore, ImagesAnswer, OutputLine, StoredImage};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("MAX_GENERATIONS", imagetask_core::plan::MAX_GENERATIONS)
    }
}
