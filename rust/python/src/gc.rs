//! Keeping the containers of built rows out of Python's cyclic garbage collector.
//!
//! A batch builds a few containers per output row (the row, its metadata, the raw
//! output and its list of images). Left tracked, they outlive the young collections that
//! run while the batch is built and its rows are used, are promoted, and make the full
//! collections that walk every live object come sooner and more often. Untracked, they
//! cost the collector nothing; CPython does the same for dicts and tuples holding only
//! atomic values.
//!
//! A container made here is in no cycle: it is new, and only the containers built around
//! it refer to it. CPython tracks a dict again when a container is put in it, but a cycle
//! the caller later builds through these containers (a row put inside its own metadata,
//! say) is not collected: it is freed only once broken.

use pyo3::{ffi, Bound, PyAny};

/// Stops the collector from tracking `container`, a dict or list the builder made and
/// has filled (filling a dict with a container tracks it again).
pub fn untrack(container: &Bound<'_, PyAny>) {
    // SAFETY: `Bound` proves the thread is attached; untracking an untracked object is a
    // no-op, and the object stays valid (only its collector links are cleared).
    unsafe { ffi::PyObject_GC_UnTrack(container.as_ptr().cast()) }
}
