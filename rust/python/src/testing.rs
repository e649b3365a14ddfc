//! Test support: an embedded interpreter with `imagetask.errors` loaded from the source
//! tree, so that the extension's exceptions resolve without an installed package.

use std::sync::Once;

use pyo3::prelude::*;
use pyo3::types::PyDict;

const ERRORS: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../python/imagetask/errors.py"
);

const LOAD: &std::ffi::CStr = c"
import importlib.util, sys, types
package = types.ModuleType('imagetask')
package.__path__ = []
sys.modules.setdefault('imagetask', package)
spec = importlib.util.spec_from_file_location('imagetask.errors', path)
module = importlib.util.module_from_spec(spec)
sys.modules['imagetask.errors'] = module
spec.loader.exec_module(module)
";

static LOADED: Once = Once::new();

/// Runs `test` attached to the interpreter, `imagetask.errors` loaded.
pub(crate) fn with_python<R>(test: impl for<'py> FnOnce(Python<'py>) -> R) -> R {
    LOADED.call_once(|| {
        Python::attach(|py| {
            let locals = PyDict::new(py);
            locals.set_item("path", ERRORS)?;
            py.run(LOAD, None, Some(&locals))
        })
        .expect("imagetask.errors loads from the source tree");
    });
    Python::attach(test)
}

/// A Python value written as an expression (`__import__` reaches modules).
pub(crate) fn eval<'py>(py: Python<'py>, expression: &str) -> Bound<'py, PyAny> {
    let code = std::ffi::CString::new(expression).expect("no NUL in the expression");
    py.eval(&code, None, None)
        .unwrap_or_else(|err| panic!("{expression}: {err}"))
}
