//! The output table of an Arrow batch whose rows a task's own hooks built as dicts
//! (`format_input`, `format_output`, `complete_rows`): their cells are read natively
//! (one per row and generation), then assembled as the native builder's are (see
//! `table`). The image column becomes bytes (base64 text decoded, text that is not base64
//! as its UTF-8 bytes; an `Image` struct dict its bytes and path), the artifact paths, `model_name`, `statistics` and `error` text,
//! the raw output and statistics JSON text. An output column of the task's own holds
//! whatever its hook returned, so its values are handed to `infer` (pyarrow's type
//! inference): Arrow has no rule of its own for the type of arbitrary Python values.

use std::sync::Arc;

use arrow_array::builder::{BinaryBuilder, StringBuilder};
use arrow_array::{ArrayRef, StructArray};
use arrow_buffer::NullBufferBuilder;
use base64::alphabet::STANDARD;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use imagetask_core::plan::Generations;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyList, PyString};

use super::ffi::{read_stream, read_table, ArrowTable};
use super::table::{self, Cells, Layout};
use crate::answers::{row_error, type_name};
use crate::errors::{config_error, read_error};
use crate::pyjson;

/// Python's `base64.b64decode(text + padding, validate=True)`: the standard alphabet,
/// canonical padding, the unused bits of the last character ignored.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// The output table of `table` (each row `num_generations` times) from the dict `rows`
/// the task's hooks built for it; `infer` makes an Arrow array (an object exporting an
/// Arrow stream) of a list of the values of one of the task's other output columns.
#[pyfunction]
#[pyo3(signature = (*, schema, num_generations, table, rows, infer))]
pub(crate) fn assemble_rows(
    schema: Layout,
    num_generations: usize,
    table: &Bound<'_, PyAny>,
    rows: &Bound<'_, PyList>,
    infer: &Bound<'_, PyAny>,
) -> PyResult<ArrowTable> {
    let n = Generations::new(num_generations)
        .map_err(config_error)?
        .get();
    let input = read_table(table)?;
    let RowCells {
        outputs,
        mut model_name,
        metadata,
    } = RowCells::read(&schema, rows)?;
    let outputs = outputs
        .into_iter()
        .map(|(name, column)| Ok((name, column.finish(infer)?)))
        .collect::<PyResult<Vec<_>>>()?;
    let metadata = metadata
        .into_iter()
        .map(|(name, mut values)| (name, Arc::new(values.finish()) as ArrayRef))
        .collect();
    let cells = Cells {
        outputs,
        image_valid: None,
        file_paths: None,
        model_name: Arc::new(model_name.finish()),
        metadata,
    };
    let table = table::assemble(&schema, n, &input, cells).map_err(config_error)?;
    Ok(ArrowTable::new(table))
}

/// An output column's cells as they are read.
enum Column<'py> {
    Image(ImageCells),
    Text(StringBuilder),
    /// The hook's own values, for `infer`.
    Values(Bound<'py, PyList>),
}

impl Column<'_> {
    fn finish(self, infer: &Bound<'_, PyAny>) -> PyResult<ArrayRef> {
        Ok(match self {
            Column::Image(cells) => cells.finish(),
            Column::Text(mut values) => Arc::new(values.finish()),
            Column::Values(values) => {
                let chunks = read_stream(&infer.call1((values,))?)?;
                let kind = chunks
                    .first()
                    .map(|chunk| chunk.data_type().clone())
                    .unwrap_or(arrow_schema::DataType::Null);
                table::concatenate(&chunks, &kind).map_err(read_error)?
            }
        })
    }
}

/// The image column's cells: bytes, or `Image` struct dicts (`{"bytes": ..., "path":
/// ...}`, as Hugging Face's `Image` feature holds an image).
struct ImageCells {
    bytes: BinaryBuilder,
    paths: StringBuilder,
    valid: NullBufferBuilder,
    /// Whether a cell was an `Image` struct dict.
    structs: bool,
}

impl ImageCells {
    fn new() -> Self {
        Self {
            bytes: BinaryBuilder::new(),
            paths: StringBuilder::new(),
            valid: NullBufferBuilder::new(0),
            structs: false,
        }
    }

    fn append(&mut self, value: &Bound<'_, PyAny>, index: usize, name: &str) -> PyResult<()> {
        let (bytes, path) = match value.cast::<PyDict>() {
            Ok(image) => {
                self.structs = true;
                image_struct(image, index, name)?
            }
            Err(_) => (image_bytes(value, index, name)?, None),
        };
        self.valid.append(bytes.is_some() || path.is_some());
        self.bytes.append_option(bytes);
        self.paths.append_option(path);
        Ok(())
    }

    /// The image bytes, or `Image` structs when a cell was one.
    fn finish(mut self) -> ArrayRef {
        let bytes = Arc::new(self.bytes.finish()) as ArrayRef;
        if !self.structs {
            return bytes;
        }
        let paths = Arc::new(self.paths.finish()) as ArrayRef;
        let nulls = self.valid.finish();
        Arc::new(StructArray::new(
            table::image_fields(),
            vec![bytes, paths],
            nulls,
        ))
    }
}

/// The bytes and the path of an `Image` struct dict: `bytes` an image cell's bytes,
/// `path` text (each missing or `None` for none); any other key is a `ReadError`.
fn image_struct(
    image: &Bound<'_, PyDict>,
    index: usize,
    name: &str,
) -> PyResult<(Option<Vec<u8>>, Option<String>)> {
    let mut bytes = None;
    let mut path = None;
    for (key, value) in image.iter() {
        let key_text = key
            .cast::<PyString>()
            .ok()
            .and_then(|key| key.to_str().ok());
        match key_text {
            Some("bytes") => bytes = image_bytes(&value, index, name)?,
            Some("path") => path = text(&value, index, &format!("{name}.path"))?,
            _ => {
                return Err(read_error(format!(
                    "output row {index}: '{name}' holds a dict with the key {}, not an Image \
                     struct (its keys are 'bytes' and 'path')",
                    key.repr()
                        .map_or_else(|_| "?".to_owned(), |key| key.to_string())
                )))
            }
        }
    }
    Ok((bytes, path))
}

/// The cells of dict rows, one per row and generation (row-major).
struct RowCells<'py> {
    outputs: Vec<(String, Column<'py>)>,
    model_name: StringBuilder,
    /// The task's recorded metadata keys: their text, or JSON text.
    metadata: Vec<(String, StringBuilder)>,
}

impl<'py> RowCells<'py> {
    fn read(layout: &Layout, rows: &Bound<'py, PyList>) -> PyResult<Self> {
        let py = rows.py();
        let mut outputs: Vec<(String, Column<'py>)> = layout
            .output_columns
            .iter()
            .map(|name| {
                let column = if layout.image.as_ref() == Some(name) {
                    Column::Image(ImageCells::new())
                } else if layout.image_path.as_ref() == Some(name) {
                    Column::Text(StringBuilder::new())
                } else {
                    Column::Values(PyList::empty(py))
                };
                (name.clone(), column)
            })
            .collect();
        let keys = metadata_keys(layout);
        let mut metadata: Vec<(String, StringBuilder)> = keys
            .iter()
            .map(|(key, _)| (key.clone(), StringBuilder::new()))
            .collect();
        let mut model_name = StringBuilder::new();
        for (index, row) in rows.iter().enumerate() {
            let row = row
                .cast_into::<PyDict>()
                .map_err(|_| read_error(format!("output row {index} is not a dict")))?;
            let item = |name: &str| -> PyResult<Bound<'py, PyAny>> {
                row.get_item(name)?
                    .ok_or_else(|| read_error(format!("output row {index} has no column '{name}'")))
            };
            let metas = item(&layout.metadata)?;
            let metas: Vec<Bound<'py, PyAny>> = if layout.grouped {
                metas
                    .cast_into::<PyList>()
                    .map_err(|_| grouped(index, &layout.metadata))?
                    .iter()
                    .collect()
            } else {
                vec![metas]
            };
            let name = item(&layout.model_name)?;
            for (k, meta) in metas.iter().enumerate() {
                for (column, cells) in &mut outputs {
                    let value = item(column)?;
                    let value = if layout.grouped {
                        value
                            .cast_into::<PyList>()
                            .map_err(|_| grouped(index, column))?
                            .get_item(k)?
                    } else {
                        value
                    };
                    match cells {
                        Column::Image(cells) => cells.append(&value, index, column)?,
                        Column::Text(values) => values.append_option(text(&value, index, column)?),
                        Column::Values(values) => values.append(value)?,
                    }
                }
                let meta = meta.cast::<PyDict>().map_err(|_| {
                    read_error(format!(
                        "output row {index}: its '{}' is not a dict",
                        layout.metadata
                    ))
                })?;
                for ((key, json), (_, values)) in keys.iter().zip(&mut metadata) {
                    match meta.get_item(key)? {
                        Some(value) if !value.is_none() => {
                            if *json {
                                values.append_value(pyjson::to_json(&value));
                            } else {
                                values.append_option(text(&value, index, key)?);
                            }
                        }
                        _ => values.append_null(),
                    }
                }
                model_name.append_option(text(&name, index, &layout.model_name)?);
            }
        }
        Ok(Self {
            outputs,
            model_name,
            metadata,
        })
    }
}

/// The task's recorded metadata keys in the order the struct holds them, each with
/// whether its values are stored as JSON text.
fn metadata_keys(layout: &Layout) -> Vec<(String, bool)> {
    let mut keys = Vec::new();
    if layout.add_raw_output {
        keys.push((layout.raw_output.clone(), true));
    }
    if layout.add_raw_input {
        keys.push((layout.raw_input.clone(), false));
    }
    keys.push((layout.statistics.clone(), true));
    keys.push((layout.error.clone(), false));
    keys
}

fn grouped(index: usize, column: &str) -> PyErr {
    read_error(format!(
        "output row {index}: its '{column}' is not a list, one item per generation"
    ))
}

/// A text cell of output row `index`: `None` or a string.
fn text(value: &Bound<'_, PyAny>, index: usize, name: &str) -> PyResult<Option<String>> {
    if value.is_none() {
        return Ok(None);
    }
    let text = value.cast::<PyString>().map_err(|_| {
        read_error(format!(
            "output row {index}: '{name}' holds a {}, expected text",
            value
                .get_type()
                .name()
                .map_or_else(|_| "value".to_owned(), |name| name.to_string())
        ))
    })?;
    Ok(Some(text.to_string_lossy().into_owned()))
}

/// An image cell of output row `index` as bytes: bytes as they are, base64 text decoded,
/// other text as its UTF-8 bytes (lone surrogates escaped), any other value as
/// `bytes(value)`, or a `ReadError` naming the row and column when `bytes` refuses it.
fn image_bytes(value: &Bound<'_, PyAny>, index: usize, name: &str) -> PyResult<Option<Vec<u8>>> {
    if value.is_none() {
        return Ok(None);
    }
    if let Ok(bytes) = value.cast::<PyBytes>() {
        return Ok(Some(bytes.as_bytes().to_vec()));
    }
    if let Ok(text) = value.cast::<PyString>() {
        if let Ok(text) = text.to_str() {
            let mut padded = text.to_owned();
            padded.extend(std::iter::repeat_n('=', (4 - text.len() % 4) % 4));
            return Ok(Some(
                BASE64
                    .decode(padded.as_bytes())
                    .unwrap_or_else(|_| text.as_bytes().to_vec()),
            ));
        }
        let encoded = text.call_method1("encode", ("utf-8", "backslashreplace"))?;
        return Ok(Some(encoded.cast::<PyBytes>()?.as_bytes().to_vec()));
    }
    let py = value.py();
    let bytes = match py.import("builtins")?.getattr("bytes")?.call1((value,)) {
        Ok(bytes) => bytes,
        Err(err) => {
            let reason = row_error(py, err)?;
            return Err(read_error(format!(
                "output row {index}: '{name}' holds a {}, not image bytes or base64 text \
                 ({reason})",
                type_name(value)
            )));
        }
    };
    Ok(Some(bytes.cast::<PyBytes>()?.as_bytes().to_vec()))
}

#[cfg(test)]
mod tests {
    use arrow_array::{Array, BinaryArray, StringArray};

    use super::*;
    use crate::testing::{eval, with_python};

    #[test]
    fn image_cells_are_bytes_as_the_dict_rows_hold_them() {
        with_python(|py| {
            let cases = [
                ("'YR'", Some(&b"a"[..])),
                ("'YWJj'", Some(b"abc")),
                ("'YQ='", Some(b"a")),
                ("'not base64!'", Some(b"not base64!")),
                ("b'GIF89a'", Some(b"GIF89a")),
                ("bytearray(b'xy')", Some(b"xy")),
                ("None", None),
            ];
            for (value, expected) in cases {
                let got = image_bytes(&eval(py, value), 0, "image").unwrap();
                assert_eq!(got.as_deref(), expected, "{value}");
            }
            let refused = image_bytes(&eval(py, "{'bytes': b'x', 'path': 'x.png'}"), 3, "image");
            let err = refused.unwrap_err();
            assert!(err.is_instance_of::<crate::errors::ReadError>(py));
            let message = err.value(py).to_string();
            assert!(
                message.starts_with("output row 3: 'image' holds a dict, not image bytes"),
                "{message}"
            );
        });
    }

    #[test]
    fn image_struct_dicts_make_the_column_image_structs() {
        with_python(|py| {
            let mut cells = ImageCells::new();
            for value in [
                "b'x'",
                "{'path': 'a.png'}",
                "None",
                "{'bytes': 'YWJj', 'path': None}",
            ] {
                cells.append(&eval(py, value), 0, "image").unwrap();
            }
            let images = cells.finish();
            let images = images.as_any().downcast_ref::<StructArray>().unwrap();
            let bytes = images.column(0).as_any().downcast_ref::<BinaryArray>();
            let paths = images.column(1).as_any().downcast_ref::<StringArray>();
            assert_eq!(
                bytes.unwrap().iter().collect::<Vec<_>>(),
                [Some(&b"x"[..]), None, None, Some(b"abc")]
            );
            assert_eq!(
                paths.unwrap().iter().collect::<Vec<_>>(),
                [None, Some("a.png"), None, None]
            );
            assert_eq!(images.null_count(), 1);
            assert!(images.is_null(2));
            let mut plain = ImageCells::new();
            plain.append(&eval(py, "b'x'"), 0, "image").unwrap();
            assert_eq!(plain.finish().data_type(), &arrow_schema::DataType::Binary);
            let err = ImageCells::new()
                .append(&eval(py, "{'bytes': b'x', 1: 2}"), 4, "image")
                .unwrap_err();
            assert_eq!(
                err.value(py).to_string(),
                "output row 4: 'image' holds a dict with the key 1, not an Image struct \
                 (its keys are 'bytes' and 'path')"
            );
        });
    }

    #[test]
    fn grouped_rows_give_one_cell_per_generation_and_bad_cells_name_their_row() {
        with_python(|py| {
            let layout = crate::arrow::tests::layout(true);
            let rows = eval(
                py,
                "[{'image': ['YWJj', None], 'model_name': 'm', \
                  'meta': [{'raw_output_t': {'images': ['x']}, 'raw_input_t': 'p'}, \
                  {'error_t': 'failed'}]}]",
            );
            let rows = rows.cast::<PyList>().unwrap();
            let mut cells = RowCells::read(&layout, rows).unwrap();
            let (_, Column::Image(images)) = cells.outputs.remove(0) else {
                panic!("the image column is read as images");
            };
            let images = images.finish();
            let images = images.as_any().downcast_ref::<BinaryArray>().unwrap();
            assert_eq!(images.iter().collect::<Vec<_>>(), [Some(&b"abc"[..]), None]);
            assert_eq!(
                cells.model_name.finish().iter().collect::<Vec<_>>(),
                [Some("m"); 2]
            );
            let metadata: Vec<(String, Vec<Option<String>>)> = cells
                .metadata
                .iter_mut()
                .map(|(key, values)| {
                    let values = values.finish();
                    (
                        key.clone(),
                        values.iter().map(|v| v.map(str::to_owned)).collect(),
                    )
                })
                .collect();
            let text = |value: &str| Some(value.to_owned());
            assert_eq!(
                metadata,
                [
                    (
                        "raw_output_t".to_owned(),
                        vec![text("{\"images\":[\"x\"]}"), None]
                    ),
                    ("raw_input_t".to_owned(), vec![text("p"), None]),
                    ("statistics_t".to_owned(), vec![None, None]),
                    ("error_t".to_owned(), vec![None, text("failed")]),
                ]
            );
            let bad = eval(py, "[{'image': 'YWJj', 'model_name': 'm', 'meta': {}}]");
            let err = RowCells::read(&layout, bad.cast::<PyList>().unwrap())
                .err()
                .unwrap();
            assert_eq!(
                err.value(py).to_string(),
                "output row 0: its 'meta' is not a list, one item per generation"
            );
            assert_eq!(images.null_count(), 1);
        });
    }
}
