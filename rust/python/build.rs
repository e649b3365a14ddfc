//! Sets the configuration flags of the Python the extension is built for
//! (`Py_GIL_DISABLED` on a free-threaded build).

fn main() {
    pyo3_build_config::use_pyo3_cfgs();
}
