//! Pausing Python's cyclic garbage collector while a batch of rows is built.
//!
//! Building a batch allocates several containers per row, none of them in a cycle; each
//! allocation counts toward a collection that would walk every live object (the caller's
//! input rows included). Pausing the collector for the batch and resuming it afterwards
//! leaves one collection where there would be dozens.

use pyo3::{ffi, Python};

/// Disables the collector until dropped, then restores its previous state.
pub struct GcPause<'py> {
    _py: Python<'py>,
    was_enabled: bool,
}

impl<'py> GcPause<'py> {
    pub fn new(py: Python<'py>) -> Self {
        // SAFETY: the `Python` token proves this thread is attached to the interpreter.
        let was_enabled = unsafe { ffi::PyGC_Disable() } != 0;
        Self {
            _py: py,
            was_enabled,
        }
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        if self.was_enabled {
            // SAFETY: still attached: the guard cannot outlive its `Python` token.
            unsafe { ffi::PyGC_Enable() };
        }
    }
}
