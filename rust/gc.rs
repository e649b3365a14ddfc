//! Pausing Python's cyclic garbage collector while a batch of rows is built.
//!
//! Building a batch allocates several containers per row, none of them in a cycle; each
//! allocation counts toward a collection that would walk every live object (the caller's
//! input rows included). Pausing the collector for the batch and resuming it afterwards
//! leaves one collection where there would be dozens.
//!
//! Pauses nest across threads: the first one disables the collector only if it was
//! enabled, and the last one to end re-enables it only if the first one disabled it and
//! it is still disabled. A collector that was off when the first pause began stays off.

use std::sync::{Mutex, MutexGuard};

use pyo3::{ffi, Python};

/// Pauses in progress, and whether the first of them disabled the collector.
struct State {
    depth: usize,
    disabled_here: bool,
}

static STATE: Mutex<State> = Mutex::new(State {
    depth: 0,
    disabled_here: false,
});

fn state() -> MutexGuard<'static, State> {
    STATE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Disables the collector until dropped (see the module's documentation).
pub struct GcPause<'py> {
    _py: Python<'py>,
}

impl<'py> GcPause<'py> {
    pub fn new(py: Python<'py>) -> Self {
        let mut state = state();
        if state.depth == 0 {
            // SAFETY: the `Python` token proves this thread is attached to the interpreter.
            state.disabled_here = unsafe { ffi::PyGC_Disable() } != 0;
        }
        state.depth += 1;
        Self { _py: py }
    }
}

impl Drop for GcPause<'_> {
    fn drop(&mut self) {
        let mut state = state();
        state.depth -= 1;
        if state.depth == 0 && state.disabled_here {
            state.disabled_here = false;
            // SAFETY: still attached: the guard cannot outlive its `Python` token.
            unsafe {
                if ffi::PyGC_IsEnabled() == 0 {
                    ffi::PyGC_Enable();
                }
            }
        }
    }
}
