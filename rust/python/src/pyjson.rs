//! JSON text of Python values, for the metadata the columnar path stores as text.
//!
//! `None`, booleans, numbers, strings, lists, tuples and dicts map to their JSON kinds;
//! bytes become base64 text, a float that is not finite becomes `null`, a dict key that
//! is not a string its `str()`, and any other value its `str()` as a string. Text that
//! cannot be encoded (lone surrogates) has those characters replaced.

use std::fmt::Write;

use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use imagetask_core::json::{self, Members};
use imagetask_core::payload;

/// How deep values nest before the rest is written as a note instead.
const MAX_DEPTH: usize = 128;

/// The JSON text of `value`.
pub fn to_json(value: &Bound<'_, PyAny>) -> String {
    let mut out = String::new();
    write(&mut out, value, 0);
    out
}

/// The members of an answer dict around its `images` key, as JSON, leaving out `skip`.
pub fn members(dict: &Bound<'_, PyDict>, skip: &str) -> Members {
    let mut members = Members::default();
    let mut after = false;
    for (key, value) in dict.iter() {
        if let Ok(name) = key.cast::<PyString>() {
            match name.to_str() {
                Ok("images") => {
                    after = true;
                    continue;
                }
                Ok(name) if name == skip => continue,
                _ => {}
            }
        }
        let out = if after {
            &mut members.after
        } else {
            &mut members.before
        };
        if !out.is_empty() {
            out.push(',');
        }
        write_key(out, &key);
        out.push(':');
        write(out, &value, 1);
    }
    members
}

fn text(value: &Bound<'_, PyAny>) -> String {
    match value.str() {
        Ok(text) => text.to_string_lossy().into_owned(),
        Err(_) => format!("<{}>", crate::answers::type_name(value)),
    }
}

fn write_key(out: &mut String, key: &Bound<'_, PyAny>) {
    match key.cast::<PyString>() {
        Ok(name) => json::write_str(out, &name.to_string_lossy()),
        Err(_) => json::write_str(out, &text(key)),
    }
}

fn write(out: &mut String, value: &Bound<'_, PyAny>, depth: usize) {
    if depth > MAX_DEPTH {
        json::write_str(out, &format!("<nested deeper than {MAX_DEPTH} levels>"));
    } else if value.is_none() {
        out.push_str("null");
    } else if let Ok(flag) = value.cast::<PyBool>() {
        out.push_str(if flag.is_true() { "true" } else { "false" });
    } else if value.cast::<PyInt>().is_ok() {
        match value.extract::<i64>() {
            Ok(number) => {
                let _ = write!(out, "{number}");
            }
            Err(_) => out.push_str(&text(value)),
        }
    } else if let Ok(float) = value.cast::<PyFloat>() {
        let number = float.value();
        if number.is_finite() {
            let _ = write!(out, "{number:?}");
        } else {
            out.push_str("null");
        }
    } else if let Ok(string) = value.cast::<PyString>() {
        json::write_str(out, &string.to_string_lossy());
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        json::write_str(out, &payload::encode(bytes.as_bytes()));
    } else if let Ok(dict) = value.cast::<PyDict>() {
        out.push('{');
        for (index, (key, item)) in dict.iter().enumerate() {
            if index > 0 {
                out.push(',');
            }
            write_key(out, &key);
            out.push(':');
            write(out, &item, depth + 1);
        }
        out.push('}');
    } else if let Ok(list) = value.cast::<PyList>() {
        write_items(out, list.iter(), depth);
    } else if let Ok(tuple) = value.cast::<PyTuple>() {
        write_items(out, tuple.iter(), depth);
    } else {
        json::write_str(out, &text(value));
    }
}

fn write_items<'py>(
    out: &mut String,
    items: impl Iterator<Item = Bound<'py, PyAny>>,
    depth: usize,
) {
    out.push('[');
    for (index, item) in items.enumerate() {
        if index > 0 {
            out.push(',');
        }
        write(out, &item, depth + 1);
    }
    out.push(']');
}

/// `to_json` for Python: the JSON text the columnar path stores for a value.
#[pyfunction]
pub fn json_text(value: &Bound<'_, PyAny>) -> String {
    to_json(value)
}
