//! The output table of a batch, assembled from its input table and its cells (one per row
//! and generation): the input columns (each row repeated once per generation when the
//! generations are neither one nor grouped), the output columns, `model_name` and the
//! metadata struct, whose upstream fields are kept beside the task's own keys. The image
//! column is the Hugging Face `Image` struct `{bytes, path}`; grouped, every output
//! column and the metadata hold one list per row.

use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{
    new_null_array, Array, ArrayRef, ListArray, RecordBatch, RecordBatchOptions, StringArray,
    StructArray, UInt64Array,
};
use arrow_buffer::{NullBuffer, OffsetBuffer};
use arrow_data::transform::MutableArrayData;
use arrow_schema::{DataType, Field, FieldRef, Fields, Schema, SchemaRef};
use arrow_select::take::take;
use pyo3::prelude::*;

use super::ffi::read_table;
use crate::errors::{config_error, read_error};

/// The names of what one task configuration writes (read from its `OutputSchema`).
#[derive(Debug, Clone, FromPyObject)]
pub(crate) struct Layout {
    /// The output columns written on every row besides `model_name`, in order.
    pub(crate) output_columns: Vec<String>,
    pub(crate) image: Option<String>,
    pub(crate) image_path: Option<String>,
    pub(crate) model_name: String,
    pub(crate) metadata: String,
    pub(crate) raw_output: String,
    pub(crate) raw_input: String,
    pub(crate) statistics: String,
    pub(crate) error: String,
    pub(crate) grouped: bool,
    pub(crate) add_raw_output: bool,
    pub(crate) add_raw_input: bool,
}

impl Layout {
    /// Whether an input column named `name` is replaced by one the task writes.
    fn writes(&self, name: &str) -> bool {
        name == self.model_name
            || name == self.metadata
            || self.output_columns.iter().any(|column| column == name)
    }

    /// Whether the input rows are repeated, once per generation.
    fn repeats(&self, n: usize) -> bool {
        !self.grouped && n > 1
    }
}

/// An input table: its schema and its record batches.
pub(crate) struct Input {
    pub(crate) schema: SchemaRef,
    pub(crate) batches: Vec<RecordBatch>,
}

impl Input {
    pub(crate) fn rows(&self) -> usize {
        self.batches.iter().map(RecordBatch::num_rows).sum()
    }

    /// The chunks of the column at `index`.
    pub(crate) fn chunks(&self, index: usize) -> Vec<ArrayRef> {
        self.batches
            .iter()
            .map(|batch| batch.column(index).clone())
            .collect()
    }
}

/// The cells of a batch, one value per row and generation (row-major).
pub(crate) struct Cells {
    /// Each output column by its name; the image column holds the image bytes.
    pub(crate) outputs: Vec<(String, ArrayRef)>,
    /// Which cells of the image column hold an image, when not only those with bytes
    /// (an image kept in its file has none).
    pub(crate) image_valid: Option<NullBuffer>,
    /// The paths of the images kept in files when no output column records them: the
    /// image structs' own.
    pub(crate) file_paths: Option<ArrayRef>,
    pub(crate) model_name: ArrayRef,
    /// The task's own metadata keys that are recorded, in order.
    pub(crate) metadata: Vec<(String, ArrayRef)>,
}

/// The output table of `input` (every row `n` generations) and its `cells`.
pub(crate) fn assemble(
    layout: &Layout,
    n: usize,
    input: &Input,
    cells: Cells,
) -> Result<RecordBatch, String> {
    let rows = input.rows();
    let count = rows * n;
    for (name, column) in cells.outputs.iter().chain(&cells.metadata) {
        if column.len() != count {
            return Err(format!(
                "the cells of {name:?} hold {} values, not {rows} rows x {n} generations",
                column.len()
            ));
        }
    }
    if cells.model_name.len() != count {
        return Err(format!(
            "the cells of model_name hold {} values, not {rows} rows x {n} generations",
            cells.model_name.len()
        ));
    }
    let mut columns: Vec<(FieldRef, ArrayRef)> = Vec::new();
    for (index, field) in input.schema.fields().iter().enumerate() {
        if layout.writes(field.name()) {
            continue;
        }
        let chunks = input.chunks(index);
        let times = if layout.repeats(n) { n } else { 1 };
        let column = repeat(&chunks, field.data_type(), times)
            .map_err(|e| format!("cannot repeat the column {:?}: {e}", field.name()))?;
        columns.push((self::field(field.name(), field.data_type()), column));
    }
    let grouped = layout
        .grouped
        .then(|| OffsetBuffer::from_repeated_length(n, rows));
    let per_row = |name: &str, values: ArrayRef| -> (FieldRef, ArrayRef) {
        match &grouped {
            Some(offsets) => {
                let item = Arc::new(Field::new("item", values.data_type().clone(), true));
                let list = ListArray::new(item, offsets.clone(), values, None);
                (field(name, list.data_type()), Arc::new(list))
            }
            None => (field(name, values.data_type()), values),
        }
    };
    let paths = layout.image_path.as_ref().and_then(|path| {
        cells
            .outputs
            .iter()
            .find(|(name, _)| name == path)
            .map(|(_, column)| column.clone())
    });
    let paths = paths.or(cells.file_paths);
    for (name, values) in &cells.outputs {
        let values = if layout.image.as_deref() == Some(name.as_str()) {
            image_structs(values, paths.as_ref(), cells.image_valid.clone())
        } else {
            values.clone()
        };
        columns.push(per_row(name, values));
    }
    let model_name = if layout.grouped {
        first_of_groups(&cells.model_name, rows, n)?
    } else {
        cells.model_name
    };
    columns.push((
        field(&layout.model_name, model_name.data_type()),
        model_name,
    ));
    let metadata = metadata_struct(layout, n, input, cells.metadata)?;
    columns.push(per_row(&layout.metadata, Arc::new(metadata)));
    let (fields, arrays): (Vec<FieldRef>, Vec<ArrayRef>) = columns.into_iter().unzip();
    let schema = Arc::new(Schema::new(fields));
    let rows_out = if layout.repeats(n) { count } else { rows };
    RecordBatch::try_new_with_options(
        schema,
        arrays,
        &RecordBatchOptions::new().with_row_count(Some(rows_out)),
    )
    .map_err(|e| format!("cannot assemble the output table: {e}"))
}

fn field(name: &str, kind: &DataType) -> FieldRef {
    Arc::new(Field::new(name, kind.clone(), true))
}

/// The type of the Hugging Face `Image` feature's storage: `struct<bytes, path>`.
pub(crate) fn image_fields() -> Fields {
    Fields::from(vec![
        Field::new("bytes", DataType::Binary, true),
        Field::new("path", DataType::Utf8, true),
    ])
}

/// Image bytes as `Image` structs whose path is the matching artifact path (or null),
/// null where `valid` (else the bytes) says there is no image; a column of another type
/// (a hook's own values) is kept as it is.
fn image_structs(
    values: &ArrayRef,
    paths: Option<&ArrayRef>,
    valid: Option<NullBuffer>,
) -> ArrayRef {
    match values.data_type() {
        DataType::Binary => {}
        DataType::Null => return new_null_array(&DataType::Struct(image_fields()), values.len()),
        _ => return values.clone(),
    }
    let paths = match paths {
        Some(paths) if paths.data_type() == &DataType::Utf8 => paths.clone(),
        _ => Arc::new(StringArray::new_null(values.len())) as ArrayRef,
    };
    let nulls = valid.or_else(|| values.logical_nulls());
    Arc::new(StructArray::new(
        image_fields(),
        vec![values.clone(), paths],
        nulls,
    ))
}

/// The first cell of each row's `n`.
fn first_of_groups(cells: &ArrayRef, rows: usize, n: usize) -> Result<ArrayRef, String> {
    let indices = UInt64Array::from_iter_values((0..rows).map(|row| (row * n) as u64));
    take_rows(cells, &indices)
}

/// The metadata struct: the upstream struct's fields (each row once per generation) that
/// the task's own recorded keys do not replace, then those keys.
fn metadata_struct(
    layout: &Layout,
    n: usize,
    input: &Input,
    ours: Vec<(String, ArrayRef)>,
) -> Result<StructArray, String> {
    let mut fields: Vec<(FieldRef, ArrayRef)> = Vec::new();
    let upstream = input.schema.index_of(&layout.metadata).ok();
    if let Some(index) = upstream {
        let kind = input.schema.field(index).data_type();
        if matches!(kind, DataType::Struct(_)) {
            let repeated = repeat(&input.chunks(index), kind, n)
                .map_err(|e| format!("cannot repeat the column {:?}: {e}", layout.metadata))?;
            let repeated = repeated.as_struct();
            for (field, values) in repeated.fields().iter().zip(repeated.columns()) {
                if ours.iter().any(|(name, _)| name == field.name()) {
                    continue;
                }
                let values = with_parent_nulls(values, repeated.nulls());
                fields.push((self::field(field.name(), values.data_type()), values));
            }
        }
    }
    let count = input.rows() * n;
    fields.extend(
        ours.into_iter()
            .map(|(name, values)| (field(&name, values.data_type()), values)),
    );
    if fields.is_empty() {
        return Ok(StructArray::new_empty_fields(count, None));
    }
    let (names, arrays): (Vec<FieldRef>, Vec<ArrayRef>) = fields.into_iter().unzip();
    Ok(StructArray::new(Fields::from(names), arrays, None))
}

/// A struct's child with the struct's nulls added to its own.
fn with_parent_nulls(values: &ArrayRef, parent: Option<&NullBuffer>) -> ArrayRef {
    let Some(parent) = parent else {
        return values.clone();
    };
    if matches!(
        values.data_type(),
        DataType::Null | DataType::RunEndEncoded(_, _) | DataType::Union(_, _)
    ) {
        return values.clone();
    }
    let nulls = NullBuffer::union(Some(parent), values.nulls());
    let data = values.to_data().into_builder().nulls(nulls);
    // SAFETY: only the validity changes, to a buffer of the same length.
    arrow_array::make_array(unsafe { data.build_unchecked() })
}

/// The rows of a chunked column, each `n` times in order, as one array; an error when
/// the repeated values do not fit the column's type (its offsets or run ends).
pub(crate) fn repeat(chunks: &[ArrayRef], kind: &DataType, n: usize) -> Result<ArrayRef, String> {
    let joined = concatenate(chunks, kind)?;
    if n == 1 {
        return Ok(joined);
    }
    let rows = joined.len() as u64;
    let indices =
        UInt64Array::from_iter_values((0..rows).flat_map(|row| std::iter::repeat_n(row, n)));
    take_rows(&joined, &indices)
}

/// Raises `ConfigError` when a column of `table` named in `columns` cannot be repeated
/// `num_generations` times (its offsets or run ends, at any depth, cannot count the
/// repeated values): the repeat itself, made before the model is called and dropped.
#[pyfunction]
#[pyo3(signature = (*, table, columns, num_generations))]
pub(crate) fn check_repeatable(
    table: &Bound<'_, PyAny>,
    columns: Vec<String>,
    num_generations: usize,
) -> PyResult<()> {
    let input = read_table(table)?;
    for name in &columns {
        let index = (input.schema.index_of(name))
            .map_err(|_| read_error(format!("the table has no column '{name}'")))?;
        let kind = input.schema.field(index).data_type();
        let chunks = input.chunks(index);
        (table.py().detach(|| repeat(&chunks, kind, num_generations))).map_err(|e| {
            config_error(format!(
                "process_arrow cannot repeat the column '{name}': {e}"
            ))
        })?;
    }
    Ok(())
}

/// The rows of `array` at `indices` (in bounds), in their order.
fn take_rows(array: &ArrayRef, indices: &UInt64Array) -> Result<ArrayRef, String> {
    if !holds_runs(array.data_type()) {
        return take(array, indices, None).map_err(|e| e.to_string());
    }
    let data = array.to_data();
    let mut taken = MutableArrayData::new(vec![&data], true, indices.len());
    for &row in indices.values() {
        let row = row as usize;
        taken
            .try_extend(0, row, row + 1)
            .map_err(|e| e.to_string())?;
    }
    Ok(arrow_array::make_array(taken.freeze()))
}

/// Whether a type holds run-end encoded values: `take` encodes the runs of what it takes
/// anew (comparing their values), so these are copied row by row, their runs as they are.
fn holds_runs(kind: &DataType) -> bool {
    match kind {
        DataType::RunEndEncoded(_, _) => true,
        DataType::List(item)
        | DataType::LargeList(item)
        | DataType::ListView(item)
        | DataType::LargeListView(item)
        | DataType::FixedSizeList(item, _)
        | DataType::Map(item, _) => holds_runs(item.data_type()),
        DataType::Struct(fields) => fields.iter().any(|field| holds_runs(field.data_type())),
        DataType::Union(fields, _) => fields
            .iter()
            .any(|(_, field)| holds_runs(field.data_type())),
        DataType::Dictionary(_, values) => holds_runs(values),
        _ => false,
    }
}

/// A chunked column as one array (the chunk itself when there is one).
pub(crate) fn concatenate(chunks: &[ArrayRef], kind: &DataType) -> Result<ArrayRef, String> {
    match chunks {
        [] => Ok(arrow_array::new_empty_array(kind)),
        [chunk] => Ok(chunk.clone()),
        _ => {
            let data: Vec<_> = chunks.iter().map(|chunk| chunk.to_data()).collect();
            let rows = data.iter().map(|chunk| chunk.len()).sum();
            let mut joined = MutableArrayData::new(data.iter().collect(), true, rows);
            for (index, chunk) in data.iter().enumerate() {
                joined
                    .try_extend(index, 0, chunk.len())
                    .map_err(|e| e.to_string())?;
            }
            Ok(arrow_array::make_array(joined.freeze()))
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::cast::AsArray;
    use arrow_array::types::{Int32Type, Int64Type};
    use arrow_array::{Array, ArrayRef, Int32Array, Int64Array, RunArray, StringArray};

    use super::{first_of_groups, repeat};

    #[test]
    fn repeating_keeps_each_row_n_times_in_order_across_chunks() {
        let chunks: Vec<ArrayRef> = vec![
            Arc::new(Int64Array::from(vec![Some(1), None])),
            Arc::new(Int64Array::from(vec![Some(3)])),
        ];
        let kind = chunks[0].data_type().clone();
        let repeated = repeat(&chunks, &kind, 2).expect("repeats");
        let values: Vec<Option<i64>> = repeated.as_primitive::<Int64Type>().iter().collect();
        assert_eq!(values, [Some(1), Some(1), None, None, Some(3), Some(3)]);
        let texts: ArrayRef = Arc::new(StringArray::from(vec![Some("a"), None]));
        let repeated = repeat(&[texts], &arrow_schema::DataType::Utf8, 3).expect("repeats");
        let values: Vec<Option<&str>> = repeated.as_string::<i32>().iter().collect();
        assert_eq!(
            values,
            [Some("a"); 3]
                .into_iter()
                .chain([None; 3])
                .collect::<Vec<_>>()
        );
        assert!(repeat(&[], &kind, 2).expect("repeats").is_empty());
    }

    #[test]
    fn run_end_encoded_rows_are_repeated_keeping_their_type_and_values() {
        let runs = RunArray::<Int32Type>::try_new(
            &Int32Array::from(vec![2, 3]),
            &StringArray::from(vec!["x", "y"]),
        )
        .expect("runs");
        let kind = runs.data_type().clone();
        let repeated = repeat(&[Arc::new(runs) as ArrayRef], &kind, 2).expect("repeats");
        assert_eq!(repeated.data_type(), &kind);
        repeated.to_data().validate_full().expect("valid");
        let runs = repeated.as_run::<Int32Type>();
        let values = runs.downcast::<StringArray>().expect("strings");
        let logical: Vec<Option<&str>> = values.into_iter().collect();
        assert_eq!(
            logical,
            [Some("x"); 4]
                .into_iter()
                .chain([Some("y"); 2])
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn the_first_cell_of_each_group_is_taken() {
        let cells: ArrayRef = Arc::new(StringArray::from(vec!["a0", "a1", "b0", "b1"]));
        let first = first_of_groups(&cells, 2, 2).expect("takes");
        let values: Vec<Option<&str>> = first.as_string::<i32>().iter().collect();
        assert_eq!(values, [Some("a0"), Some("b0")]);
    }
}
