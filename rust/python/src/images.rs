//! Python-facing image functions: placeholder pictures and artifact files for built rows.

use std::path::PathBuf;

use imagetask_core::artifacts::Destination;
use imagetask_core::payload::decode::{self, Needs};
use imagetask_core::payload::{Payload, Problem};
use imagetask_core::png;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use crate::answers::{describe_exception, fails_a_row, image_payload, type_name};
use crate::errors::{config_error, sink_error};
use crate::store::StoredImage;

/// Placeholder PNG pictures: `num_generations` per prompt, `width` x `height` pixels.
#[pyfunction]
#[pyo3(signature = (prompts, *, num_generations, seed, width, height))]
pub(crate) fn placeholder_images(
    py: Python<'_>,
    prompts: Vec<String>,
    num_generations: u32,
    seed: u64,
    width: u32,
    height: u32,
) -> PyResult<Vec<Vec<Py<PyBytes>>>> {
    let pictures = pictures(py, &prompts, num_generations, seed, width, height)?;
    Ok(pictures
        .into_iter()
        .map(|images| {
            images
                .into_iter()
                .map(|image| PyBytes::new(py, &image).unbind())
                .collect()
        })
        .collect())
}

/// The placeholder backend's answers: for each prompt, `num_generations` dicts
/// `{"images": [picture], "seed": seed, "statistics": {"image_bytes": size}}`; a picture
/// of `stored_from` bytes or more goes to `store` (its `put` returns what the answer holds).
#[pyfunction]
#[pyo3(signature = (prompts, *, num_generations, seed, width, height, store=None, stored_from))]
#[allow(clippy::too_many_arguments)] // the keyword arguments of a Python function
pub(crate) fn placeholder_answers<'py>(
    py: Python<'py>,
    prompts: Vec<String>,
    num_generations: u32,
    seed: u64,
    width: u32,
    height: u32,
    store: Option<Bound<'py, PyAny>>,
    stored_from: usize,
) -> PyResult<Bound<'py, PyList>> {
    let pictures = pictures(py, &prompts, num_generations, seed, width, height)?;
    let seed = seed.into_pyobject(py)?;
    let answers = PyList::empty(py);
    for images in pictures {
        let entry = PyList::empty(py);
        for image in images {
            let size = image.len();
            let bytes = PyBytes::new(py, &image).into_any();
            let picture = match &store {
                Some(store) if size >= stored_from => {
                    store.call_method1(pyo3::intern!(py, "put"), (bytes,))?
                }
                _ => bytes,
            };
            let statistics = PyDict::new(py);
            statistics.set_item(pyo3::intern!(py, "image_bytes"), size)?;
            let answer = PyDict::new(py);
            answer.set_item(pyo3::intern!(py, "images"), PyList::new(py, [picture])?)?;
            answer.set_item(pyo3::intern!(py, "seed"), &seed)?;
            answer.set_item(pyo3::intern!(py, "statistics"), statistics)?;
            entry.append(answer)?;
        }
        answers.append(entry)?;
    }
    Ok(answers)
}

/// The pictures of `placeholder_images`, made with the GIL released.
fn pictures(
    py: Python<'_>,
    prompts: &[String],
    num_generations: u32,
    seed: u64,
    width: u32,
    height: u32,
) -> PyResult<Vec<Vec<Vec<u8>>>> {
    for (side, value) in [("width", width), ("height", height)] {
        if value == 0 || value > png::MAX_SIDE {
            return Err(config_error(format!(
                "placeholder {side} must be between 1 and {}, got {value}",
                png::MAX_SIDE
            )));
        }
    }
    Ok(py.detach(|| {
        prompts
            .iter()
            .map(|prompt| {
                (0..num_generations)
                    .map(|k| png::placeholder(prompt.as_bytes(), seed, k, width, height))
                    .collect()
            })
            .collect()
    }))
}

/// One image of a built row, owned so that it can be written with the GIL released.
struct Slot {
    row: usize,
    k: usize,
    image: Result<Option<Owned>, String>,
}

enum Owned {
    Text(Vec<u8>),
    Bytes(Vec<u8>),
    Stored(StoredImage),
}

/// A row's image, copied out of Python: `None` when the row has none.
fn owned(value: &Bound<'_, PyAny>) -> Result<Option<Owned>, String> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(stored) = value.cast::<StoredImage>() {
        return Ok(Some(Owned::Stored(stored.get().clone())));
    }
    match image_payload(value) {
        Ok(Payload::Text(text)) => Ok(Some(Owned::Text(text.to_vec()))),
        Ok(Payload::Bytes(bytes)) => Ok(Some(Owned::Bytes(bytes.to_vec()))),
        Err(problem) => Err(the_image(&problem)),
    }
}

/// A payload's problem as a sentence about the row's image.
fn the_image(problem: &Problem) -> String {
    format!("the image {problem}")
}

fn decoded(image: Owned) -> Result<Vec<u8>, String> {
    match image {
        Owned::Bytes(bytes) => Ok(bytes),
        Owned::Stored(stored) => stored.bytes(),
        Owned::Text(text) => {
            let needs = Needs {
                bytes: true,
                ..Needs::default()
            };
            let mut scratch = Vec::new();
            let derived = decode::derive(Payload::Text(&text), needs, &mut scratch)
                .map_err(|problem| the_image(&problem))?;
            Ok(derived.bytes.unwrap_or_default())
        }
    }
}

/// The recorded path of a stored image whose file is in the destination folder already
/// (the store writes into the artifacts folder): nothing to write.
fn already_saved(destination: &Destination, stored: &StoredImage) -> Option<String> {
    let name = stored.path().file_name()?.to_str()?;
    let there = std::fs::symlink_metadata(destination.folder.join(name))
        .is_ok_and(|meta| meta.file_type().is_file());
    there.then(|| format!("{}/{name}", destination.prefix))
}

/// Calls the user's converter on one image's bytes: the converted image, or why it could
/// not be converted. An exception that is not an `Exception` (Ctrl-C) is raised.
fn convert(
    py: Python<'_>,
    hook: &Bound<'_, PyAny>,
    image: Owned,
) -> PyResult<Result<Option<Owned>, String>> {
    let bytes = match decoded(image) {
        Ok(bytes) => bytes,
        Err(error) => return Ok(Err(error)),
    };
    let converted = match hook.call1((PyBytes::new(py, &bytes),)) {
        Ok(converted) => converted,
        Err(err) if fails_a_row(err.value(py)) => {
            return Ok(Err(describe_exception(err.value(py).as_any())))
        }
        Err(err) => return Err(err),
    };
    Ok(match converted.cast::<PyBytes>() {
        Ok(bytes) => Ok(Some(Owned::Bytes(bytes.as_bytes().to_vec()))),
        Err(_) => Err(format!(
            "the converter returned a {}, expected bytes",
            type_name(&converted)
        )),
    })
}

/// Writes the image of every built row to `folder/<sha256>.<ext>` and sets the row's
/// path column to `prefix/<sha256>.<ext>` once the file is on disk.
///
/// Grouped rows (the image column holds a list) get a list of paths. A row without an
/// image gets `None`; a row whose image cannot be written keeps its image, gets `None`
/// as its path and the error under `error_key` in its metadata. Returns those failures
/// as `(row, generation, error)`.
#[pyfunction]
#[pyo3(signature = (
    rows, *, image_column, path_column, metadata_column, error_key, folder, prefix, convert=None
))]
#[expect(
    clippy::too_many_arguments,
    reason = "one argument per keyword argument of the Python function"
)]
pub(crate) fn write_artifacts(
    py: Python<'_>,
    rows: &Bound<'_, PyList>,
    image_column: &str,
    path_column: &str,
    metadata_column: &str,
    error_key: &str,
    folder: PathBuf,
    prefix: &str,
    convert: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<(usize, usize, String)>> {
    let image_key = PyString::intern(py, image_column);
    let path_key = PyString::intern(py, path_column);
    // The rows as they are now: a converter that changes the list cannot move them.
    let rows: Vec<Bound<'_, PyDict>> = rows
        .iter()
        .enumerate()
        .map(|(index, row)| {
            row.cast_into::<PyDict>().map_err(|err| {
                sink_error(format!(
                    "row {index} is a {}, expected a dict",
                    type_name(&err.into_inner())
                ))
            })
        })
        .collect::<PyResult<_>>()?;
    let mut slots = Vec::with_capacity(rows.len());
    let mut grouped = vec![false; rows.len()];
    for (index, row) in rows.iter().enumerate() {
        let value = row
            .get_item(&image_key)?
            .ok_or_else(|| sink_error(format!("row {index} has no column {image_column:?}")))?;
        let images: Vec<Bound<'_, PyAny>> = match value.cast::<PyList>() {
            Ok(list) => {
                grouped[index] = true;
                list.iter().collect()
            }
            Err(_) => vec![value],
        };
        for (k, image) in images.iter().enumerate() {
            let image = match (owned(image), convert) {
                (Ok(Some(image)), Some(hook)) => self::convert(py, hook, image)?,
                (image, _) => image,
            };
            slots.push(Slot {
                row: index,
                k,
                image,
            });
        }
    }
    let destination = Destination {
        folder,
        prefix: prefix.to_owned(),
    };
    let written: Vec<Result<Option<String>, String>> = py.detach(|| {
        slots
            .iter_mut()
            .map(|slot| {
                let image = std::mem::replace(&mut slot.image, Ok(None));
                let Some(image) = image? else {
                    return Ok(None);
                };
                if let Owned::Stored(stored) = &image {
                    if let Some(path) = already_saved(&destination, stored) {
                        return Ok(Some(path));
                    }
                }
                let bytes = decoded(image)?;
                destination.save(&bytes, None).map(Some)
            })
            .collect()
    });
    let mut failures = Vec::new();
    let mut paths: Vec<Vec<Option<String>>> = vec![Vec::new(); rows.len()];
    for (slot, result) in slots.iter().zip(written) {
        let path = match result {
            Ok(path) => path,
            Err(error) => {
                let error = format!("the image artifact was not saved: {error}");
                let meta = rows[slot.row].as_any().get_item(metadata_column)?;
                let meta = if grouped[slot.row] {
                    meta.get_item(slot.k)?
                } else {
                    meta
                };
                meta.set_item(error_key, &error)?;
                failures.push((slot.row, slot.k, error));
                None
            }
        };
        paths[slot.row].push(path);
    }
    for ((index, row), mut row_paths) in rows.iter().enumerate().zip(paths) {
        if grouped[index] {
            row.set_item(&path_key, row_paths)?;
        } else {
            row.set_item(&path_key, row_paths.pop().flatten())?;
        }
    }
    Ok(failures)
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;

    use super::{placeholder_answers, placeholder_images};
    use crate::testing::{eval, with_python};

    #[test]
    fn answers_hold_the_pictures_their_seed_and_size_and_the_large_ones_go_to_the_store() {
        with_python(|py| {
            let prompts = vec!["a".to_owned(), "b".to_owned()];
            let pictures = placeholder_images(py, prompts.clone(), 2, 7, 4, 4).unwrap();
            let store = eval(
                py,
                "type('Store', (), {'put': lambda self, data: ('stored', len(data))})()",
            );
            let answers = |stored_from: usize| {
                let made = placeholder_answers(
                    py,
                    prompts.clone(),
                    2,
                    7,
                    4,
                    4,
                    Some(store.clone()),
                    stored_from,
                )
                .unwrap();
                made.repr().unwrap().to_string()
            };
            let expected = |stored: bool| {
                let entries: Vec<String> = (pictures.iter())
                    .map(|images| {
                        let parts: Vec<String> = (images.iter())
                            .map(|picture| {
                                let picture = picture.bind(py);
                                let size = picture.as_bytes().len();
                                let image = if stored {
                                    format!("('stored', {size})")
                                } else {
                                    picture.repr().unwrap().to_string()
                                };
                                format!(
                                    "{{'images': [{image}], 'seed': 7, \
                                     'statistics': {{'image_bytes': {size}}}}}"
                                )
                            })
                            .collect();
                        format!("[{}]", parts.join(", "))
                    })
                    .collect();
                format!("[{}]", entries.join(", "))
            };
            assert_eq!(answers(usize::MAX), expected(false));
            assert_eq!(answers(1), expected(true));
        });
    }
}
