//! Plain-Rust core of imagetask: what a batch's rows and answers become, with no Python.
//!
//! The Python extension (`rust/python`, `imagetask._core`) reads Python objects into the
//! types of this crate and turns its results back into Python objects; everything else
//! lives here and is covered by `cargo test`.

pub mod artifacts;
pub mod batch_output;
pub mod images_api;
pub mod json;
pub mod payload;
pub mod plan;
pub mod png;
