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

/// The extension's own allocations go to mimalloc: a batch's Arrow buffers are a dozen or
/// more small 64-byte aligned allocations, which the system allocator makes slowly
/// enough to be a third of a small batch's native build. mimalloc keeps freed memory a
/// second before giving it back, so a run's next batch reuses the pages of the one before.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    use crate::arrow::table::check_repeatable;
    #[pymodule_export]
    use crate::arrow::{ColumnBuilder, PreparedColumns};
    #[pymodule_export]
    use crate::dict::{Prepared, RowBuilder};
    #[pymodule_export]
    use crate::images::{placeholder_answers, placeholder_images, write_artifacts};
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
