//! `ArrowRowsDigest`: a digest of input rows read as Arrow record batches, for a run's
//! resume check. Each row is encoded in Arrow's row format (`arrow-row`), which depends on
//! the row's values and the columns' types only, so the digest after N rows is the same
//! however the rows were cut into batches.

use arrow_array::RecordBatch;
use arrow_row::{RowConverter, SortField};
use arrow_schema::{ArrowError, Schema, SchemaRef};
use pyo3::prelude::*;
use sha2::{Digest, Sha256};

use super::ffi::{read_schema, TableReader};
use crate::errors::read_error;

/// The row encoding's name, recorded beside the digest: a digest made with another one
/// cannot be compared with this one's.
pub(crate) const FORMAT: &str = "arrow-row-60";

/// A digest of rows in order, extended batch by batch (plain Rust).
pub(crate) struct RowsDigest {
    hash: Sha256,
    converter: Option<(SchemaRef, RowConverter)>,
}

impl RowsDigest {
    pub(crate) fn new() -> Self {
        Self {
            hash: Sha256::new(),
            converter: None,
        }
    }

    /// Whether rows of `schema` have a row encoding.
    pub(crate) fn reads(schema: &Schema) -> bool {
        let fields: Vec<_> = schema
            .fields()
            .iter()
            .map(|field| SortField::new(field.data_type().clone()))
            .collect();
        RowConverter::supports_fields(&fields)
    }

    /// Extends the digest with `batch`'s rows; every batch must have the first's schema
    /// (its names and types are part of the digest).
    pub(crate) fn add(&mut self, batch: &RecordBatch) -> Result<(), ArrowError> {
        let schema = batch.schema();
        if self.converter.is_none() {
            let fields = schema
                .fields()
                .iter()
                .map(|field| SortField::new(field.data_type().clone()))
                .collect();
            let converter = RowConverter::new(fields)?;
            for field in schema.fields() {
                let described = format!("{}\0{}\0", field.name(), field.data_type());
                self.hash.update(described.as_bytes());
            }
            self.converter = Some((schema.clone(), converter));
        }
        let (first, converter) = self.converter.as_ref().expect("made above");
        let same = first.fields().len() == schema.fields().len()
            && first
                .fields()
                .iter()
                .zip(schema.fields())
                .all(|(a, b)| a.name() == b.name() && a.data_type() == b.data_type());
        if !same {
            return Err(ArrowError::SchemaError(
                "the batch's columns are not those of the batches before".into(),
            ));
        }
        let rows = converter.convert_columns(batch.columns())?;
        for row in rows.iter() {
            let bytes = row.as_ref();
            self.hash.update((bytes.len() as u64).to_be_bytes());
            self.hash.update(bytes);
        }
        Ok(())
    }

    pub(crate) fn hexdigest(&self) -> String {
        self.hash
            .clone()
            .finalize()
            .iter()
            .map(|byte| format!("{byte:02x}"))
            .collect()
    }
}

/// A digest of the rows of Arrow tables, in order (see the module).
#[pyclass(module = "imagetask._core")]
pub(crate) struct ArrowRowsDigest {
    digest: RowsDigest,
    tables: TableReader,
}

#[pymethods]
impl ArrowRowsDigest {
    #[classattr]
    const FORMAT: &'static str = FORMAT;

    #[new]
    fn new() -> Self {
        Self {
            digest: RowsDigest::new(),
            tables: TableReader::new(),
        }
    }

    /// Whether rows of `schema` (any object with `__arrow_c_schema__`) have a row
    /// encoding.
    #[staticmethod]
    fn reads(schema: &Bound<'_, PyAny>) -> PyResult<bool> {
        let schema = read_schema(schema)?;
        Ok(RowsDigest::reads(&schema))
    }

    /// Extends the digest with the rows of `data` (any object with `__arrow_c_stream__`).
    fn add(&mut self, py: Python<'_>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let input = self.tables.read(data)?;
        let digest = &mut self.digest;
        py.detach(|| input.batches.iter().try_for_each(|batch| digest.add(batch)))
            .map_err(|e| read_error(format!("cannot digest the rows: {e}")))
    }

    /// The digest of the rows so far, as hexadecimal text.
    fn hexdigest(&self) -> String {
        self.digest.hexdigest()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use arrow_array::{ArrayRef, Int64Array, RecordBatch, StringArray};

    use super::RowsDigest;

    fn batch(prompts: &[Option<&str>], seeds: &[i64]) -> RecordBatch {
        let prompt: ArrayRef = Arc::new(StringArray::from(prompts.to_vec()));
        let seed: ArrayRef = Arc::new(Int64Array::from(seeds.to_vec()));
        RecordBatch::try_from_iter([("prompt", prompt), ("seed", seed)]).unwrap()
    }

    fn digest_of(batches: &[RecordBatch]) -> String {
        let mut digest = RowsDigest::new();
        for batch in batches {
            digest.add(batch).unwrap();
        }
        digest.hexdigest()
    }

    #[test]
    fn the_digest_does_not_depend_on_how_rows_are_cut_into_batches() {
        let whole = batch(&[Some("a"), None, Some("c")], &[1, 2, 3]);
        let cut = [
            batch(&[Some("a")], &[1]),
            batch(&[None, Some("c")], &[2, 3]),
        ];
        assert_eq!(digest_of(&[whole]), digest_of(&cut));
    }

    #[test]
    fn a_changed_value_order_or_name_changes_the_digest() {
        let rows = digest_of(&[batch(&[Some("a"), Some("b")], &[1, 2])]);
        assert_ne!(rows, digest_of(&[batch(&[Some("a"), Some("x")], &[1, 2])]));
        assert_ne!(rows, digest_of(&[batch(&[Some("b"), Some("a")], &[2, 1])]));
        assert_ne!(rows, digest_of(&[batch(&[Some("a"), None], &[1, 2])]));
        // "ab" + "" and "a" + "b" are different rows.
        assert_ne!(
            digest_of(&[batch(&[Some("ab"), Some("")], &[1, 2])]),
            digest_of(&[batch(&[Some("a"), Some("b")], &[1, 2])]),
        );
        let renamed = RecordBatch::try_from_iter([
            (
                "text",
                Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef,
            ),
            ("seed", Arc::new(Int64Array::from(vec![1, 2])) as ArrayRef),
        ])
        .unwrap();
        assert_ne!(rows, digest_of(&[renamed]));
    }

    #[test]
    fn a_batch_of_other_columns_is_refused() {
        let mut digest = RowsDigest::new();
        digest.add(&batch(&[Some("a")], &[1])).unwrap();
        let other = RecordBatch::try_from_iter([(
            "prompt",
            Arc::new(StringArray::from(vec!["b"])) as ArrayRef,
        )])
        .unwrap();
        assert!(digest.add(&other).is_err());
    }
}
