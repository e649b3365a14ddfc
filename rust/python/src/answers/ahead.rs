//! The objects of the answers read next brought into the cache while an answer is read.
//!
//! Reading an answer visits one object after another, each found through the one before:
//! the entry list, its items, the dict and the dict's keys, then its images. A batch of
//! answers out of the cache waits on memory at each step. While entry `i` is read, the
//! levels of the entries a few ahead are asked for, each level a step after the one it is
//! found through (the items of entry `i + 6`, the dict of `i + 4`, its keys for `i + 2`),
//! so that an entry's objects are in the cache when it is read. Looking ahead reads and
//! prefetches only: it calls nothing and changes nothing.

use pyo3::prelude::*;

/// Asks for the objects of the entries ahead of entry `index` of `answers` (a list or a
/// tuple) that their reading will visit. (Not on a free-threaded Python, whose lists may
/// change under another thread, nor on one whose objects are not CPython's.)
pub(super) fn fetch(answers: &Bound<'_, PyAny>, index: usize) {
    #[cfg(not(any(Py_GIL_DISABLED, PyPy, GraalPy)))]
    // SAFETY: the GIL is held (no other thread changes these objects).
    unsafe {
        cpython::fetch(answers.as_ptr(), index);
    }
    #[cfg(any(Py_GIL_DISABLED, PyPy, GraalPy))]
    let _ = (answers, index);
}

#[cfg(not(any(Py_GIL_DISABLED, PyPy, GraalPy)))]
mod cpython {
    use pyo3::ffi;

    /// Entries between two levels.
    const STEP: usize = 2;

    /// `super::fetch`.
    ///
    /// # Safety
    /// The GIL is held and `answers` is a live object.
    pub(super) unsafe fn fetch(answers: *mut ffi::PyObject, index: usize) {
        // SAFETY: each object read is reached from `answers` now, no Python code running.
        unsafe {
            let entries = items(answers);
            if let Some(&entry) = entries.get(index + 3 * STEP) {
                if ffi::PyList_CheckExact(entry) != 0 && ffi::Py_SIZE(entry) > 0 {
                    prefetch((*entry.cast::<ffi::PyListObject>()).ob_item.cast());
                }
            }
            if let Some(&entry) = entries.get(index + 2 * STEP) {
                if let Some(&part) = items(entry).first() {
                    prefetch(part);
                }
            }
            let dict = (entries.get(index + STEP))
                .and_then(|&entry| items(entry).first().copied())
                .filter(|&part| ffi::PyDict_CheckExact(part) != 0);
            if let Some(dict) = dict {
                let keys = (*dict.cast::<ffi::PyDictObject>()).ma_keys.cast::<u8>();
                prefetch(keys.cast());
                prefetch(keys.wrapping_add(64).cast());
            }
        }
    }

    /// The items of an exact list or tuple, else none.
    ///
    /// # Safety
    /// `obj` is a live object; the slice is read before any Python code runs.
    unsafe fn items<'a>(obj: *mut ffi::PyObject) -> &'a [*mut ffi::PyObject] {
        // SAFETY: `obj` is live; an exact list's `ob_item` holds its `Py_SIZE` items, a
        // tuple's items follow its header.
        unsafe {
            let (start, len) = if ffi::PyList_CheckExact(obj) != 0 {
                let list = obj.cast::<ffi::PyListObject>();
                ((*list).ob_item.cast_const(), ffi::Py_SIZE(obj))
            } else if ffi::PyTuple_CheckExact(obj) != 0 {
                let tuple = obj.cast::<ffi::PyTupleObject>();
                ((*tuple).ob_item.as_ptr(), ffi::Py_SIZE(obj))
            } else {
                return &[];
            };
            match usize::try_from(len) {
                Ok(len) if len > 0 && !start.is_null() => std::slice::from_raw_parts(start, len),
                _ => &[],
            }
        }
    }

    /// Asks for the cache line holding `address` (a hint: no address makes it fault).
    #[inline(always)]
    fn prefetch(address: *const ffi::PyObject) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch loads nothing into a register and never faults.
        unsafe {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            _mm_prefetch::<_MM_HINT_T0>(address.cast());
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = address;
    }
}
