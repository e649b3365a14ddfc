//! Native core of imagetask: the per-row and per-batch loops of an `ImageTask`.

pub mod answers;
pub mod artifacts;
pub mod errors;
pub mod gc;
pub mod images;
pub mod payload;
pub mod png;
pub mod rows;

use pyo3::prelude::*;

#[pymodule(gil_used = false)]
mod _core {
    #[pymodule_export]
    use crate::images::{placeholder_images, write_artifacts};
    #[pymodule_export]
    use crate::rows::{Prepared, RowBuilder};

    use pyo3::prelude::*;

    #[pymodule_init]
    fn init(module: &Bound<'_, PyModule>) -> PyResult<()> {
        module.add("MAX_GENERATIONS", crate::rows::MAX_GENERATIONS)
    }
}
