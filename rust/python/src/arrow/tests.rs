use std::sync::Arc;

use arrow_array::cast::AsArray;
use arrow_array::{Array, ArrayRef, Int64Array, RecordBatch, StringArray, StructArray};
use arrow_schema::{DataType, Field, Schema};
use imagetask_core::plan::{RowProblem, Rows};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::columns::CellFailure;
use super::ffi::{ArrowTable, TableReader};
use super::table::{Input, Layout};
use super::{ColumnBuilder, ImageFolders, PreparedColumns};
use crate::errors::ConfigError;
use crate::testing::{eval, with_python};

pub(crate) fn layout(group: bool) -> Layout {
    Layout {
        output_columns: vec!["image".to_owned()],
        image: Some("image".to_owned()),
        image_path: None,
        model_name: "model_name".to_owned(),
        metadata: "meta".to_owned(),
        raw_output: "raw_output_t".to_owned(),
        raw_input: "raw_input_t".to_owned(),
        statistics: "statistics_t".to_owned(),
        error: "error_t".to_owned(),
        grouped: group,
        add_raw_output: true,
        add_raw_input: true,
    }
}

fn builder(py: Python<'_>, n: usize, group: bool) -> PyResult<ColumnBuilder> {
    ColumnBuilder::new(
        py,
        layout(group),
        "prompt".to_owned(),
        "model".to_owned(),
        n,
        false,
        true,
    )
}

/// A prepared batch of an invalid row (a null prompt) then a valid one, `b`; an input
/// column `score` and an upstream metadata struct with a field `source`.
fn prepared(py: Python<'_>) -> PreparedColumns {
    let mut rows = Rows::new(true);
    let problem = RowProblem {
        message: "row 0 of the batch has no text prompt: its column 'prompt' holds a NoneType"
            .to_owned(),
        column: Some("prompt".to_owned()),
    };
    rows.push_invalid(problem).unwrap();
    rows.push_valid();
    let prompt: ArrayRef = Arc::new(StringArray::from(vec![None, Some("b")]));
    let score: ArrayRef = Arc::new(Int64Array::from(vec![7, 8]));
    let source: ArrayRef = Arc::new(StringArray::from(vec!["web", "book"]));
    let meta = StructArray::from(vec![(
        Arc::new(Field::new("source", DataType::Utf8, true)),
        source,
    )]);
    let schema = Arc::new(Schema::new(vec![
        Field::new("prompt", DataType::Utf8, true),
        Field::new("score", DataType::Int64, false),
        Field::new("meta", meta.data_type().clone(), true),
    ]));
    let batch =
        RecordBatch::try_new(schema.clone(), vec![prompt.clone(), score, Arc::new(meta)]).unwrap();
    PreparedColumns {
        prompts: PyList::new(py, ["b"]).unwrap().unbind(),
        rows,
        input: Input {
            schema,
            batches: vec![batch],
        },
        prompt,
        prompt_bytes: 1,
    }
}

fn texts(array: &ArrayRef) -> Vec<Option<String>> {
    let array = array.as_string::<i32>();
    array.iter().map(|v| v.map(str::to_owned)).collect()
}

#[test]
fn grouped_cells_become_one_list_per_row() {
    with_python(|py| {
        let builder = builder(py, 2, true).unwrap();
        let answers = eval(py, "[[{'images': [b'GIF89a'], 'seed': 3}]]");
        let (table, failures) = builder
            .build_batch(py, &prepared(py), &answers, ImageFolders::default())
            .unwrap();
        let schema = table.schema();
        let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["prompt", "score", "image", "model_name", "meta"]);
        assert_eq!(table.num_rows(), 2);
        let score = table
            .column(1)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(score.values().to_vec(), [7, 8]);
        let images = table.column(2).as_list::<i32>();
        assert_eq!(images.value_offsets(), [0, 2, 4]);
        let structs = images.values().as_struct();
        let bytes: Vec<Option<&[u8]>> = structs.column(0).as_binary::<i32>().iter().collect();
        assert_eq!(bytes, [None, None, Some(&b"GIF89a"[..]), None]);
        assert_eq!(structs.null_count(), 3);
        assert_eq!(structs.column(1).null_count(), 4);
        assert_eq!(texts(table.column(3)), vec![Some("model".to_owned()); 2]);
        let meta = table.column(4).as_list::<i32>().values().as_struct();
        let keys: Vec<&str> = meta.column_names();
        assert_eq!(
            keys,
            [
                "source",
                "raw_output_t",
                "raw_input_t",
                "statistics_t",
                "error_t"
            ]
        );
        let web = Some("web".to_owned());
        let book = Some("book".to_owned());
        assert_eq!(
            texts(meta.column(0)),
            [web.clone(), web, book.clone(), book]
        );
        let reference = "{\"images\":[\"sha256:610f5ae4d76e332636a17bd357fd6ce99029316a99d320280d4d77a746bf29e8\"],\"seed\":3}";
        assert_eq!(
            texts(meta.column(1)),
            [None, None, Some(reference.to_owned()), None]
        );
        assert_eq!(
            texts(meta.column(2)),
            [None, None, Some("b".to_owned()), Some("b".to_owned())]
        );
        let invalid = "row 0 of the batch has no text prompt: its column 'prompt' holds a NoneType";
        let fewer = "the model returned 1 image(s) for 2 generation(s)";
        assert_eq!(
            texts(meta.column(4)),
            [
                Some(invalid.to_owned()),
                Some(invalid.to_owned()),
                None,
                Some(fewer.to_owned())
            ]
        );
        let failure = |row, generation, error: &str| CellFailure {
            row,
            generation,
            error: error.to_owned(),
        };
        assert_eq!(
            failures,
            [
                failure(0, 0, invalid),
                failure(0, 1, invalid),
                failure(1, 1, fewer)
            ]
        );
    });
}

#[test]
fn ungrouped_generations_repeat_the_input_rows() {
    with_python(|py| {
        let builder = builder(py, 2, false).unwrap();
        let answers = eval(py, "[[{'images': [b'GIF89a', b'GIF89b']}]]");
        let (table, _) = builder
            .build_batch(py, &prepared(py), &answers, ImageFolders::default())
            .unwrap();
        assert_eq!(table.num_rows(), 4);
        assert_eq!(
            texts(table.column(0)),
            [None, None, Some("b".to_owned()), Some("b".to_owned())]
        );
        let score = table
            .column(1)
            .as_primitive::<arrow_array::types::Int64Type>();
        assert_eq!(score.values().to_vec(), [7, 7, 8, 8]);
        let images = table.column(2).as_struct().column(0).as_binary::<i32>();
        let images: Vec<Option<&[u8]>> = images.iter().collect();
        assert_eq!(
            images,
            [None, None, Some(&b"GIF89a"[..]), Some(&b"GIF89b"[..])]
        );
        assert_eq!(texts(table.column(3)), vec![Some("model".to_owned()); 4]);
    });
}

#[test]
fn a_bad_count_and_a_second_build_are_config_errors() {
    with_python(|py| {
        let err = builder(py, 0, false).err().unwrap();
        assert!(err.is_instance_of::<ConfigError>(py));
        let builder = builder(py, 1, false).unwrap();
        let prepared = prepared(py);
        let answers = eval(py, "[[{'images': [b'GIF89a']}]]");
        builder
            .build_batch(py, &prepared, &answers, ImageFolders::default())
            .unwrap();
        let err = builder
            .build_batch(py, &prepared, &answers, ImageFolders::default())
            .err()
            .unwrap();
        assert!(err.is_instance_of::<ConfigError>(py));
        assert_eq!(
            err.value(py).to_string(),
            "a prepared batch can be built only once"
        );
    });
}

#[test]
fn a_spooled_image_stays_in_its_file_and_its_struct_names_it() {
    with_python(|py| {
        let spool = std::env::temp_dir().join(format!("imagetask-spool-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&spool);
        std::fs::create_dir_all(&spool).unwrap();
        let store = py
            .get_type::<crate::store::ImageStore>()
            .call1((spool.clone(),))
            .unwrap();
        let image = store
            .call_method1("put", (pyo3::types::PyBytes::new(py, b"GIF89a-spooled"),))
            .unwrap();
        let name = format!("{}.gif", image.getattr("sha256").unwrap());
        let answers = PyList::new(py, [PyList::new(py, [eval(py, "{}")]).unwrap()]).unwrap();
        let part = answers.get_item(0).unwrap().get_item(0).unwrap();
        part.set_item("images", PyList::new(py, [image]).unwrap())
            .unwrap();
        let folders = ImageFolders {
            artifacts: None,
            spool: Some(imagetask_core::artifacts::Destination {
                folder: spool.clone(),
                prefix: ".spool/3".to_owned(),
            }),
        };
        let (table, failures) = builder(py, 1, false)
            .unwrap()
            .build_batch(py, &prepared(py), answers.as_any(), folders)
            .unwrap();
        assert_eq!(failures.len(), 1); // the invalid row
        let schema = table.schema();
        let names: Vec<&String> = schema.fields().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["prompt", "score", "image", "model_name", "meta"]);
        let images = table.column(2).as_struct();
        assert_eq!(
            images
                .column(0)
                .as_binary::<i32>()
                .iter()
                .collect::<Vec<_>>(),
            [None, None]
        );
        assert_eq!(
            texts(images.column(1)),
            [None, Some(format!(".spool/3/{name}"))]
        );
        assert_eq!(
            images.logical_nulls().map(|nulls| nulls.null_count()),
            Some(1)
        );
        assert!(images.is_valid(1));
        std::fs::remove_dir_all(&spool).unwrap();
    });
}

#[test]
fn a_table_reader_reads_what_is_no_pyarrow_table_from_its_stream() {
    with_python(|py| {
        let input = prepared(py).input;
        let exported = Bound::new(py, ArrowTable::new(input.batches[0].clone())).unwrap();
        let reader = TableReader::new();
        for _ in 0..2 {
            let read = reader.read(exported.as_any()).expect("reads");
            assert_eq!(read.schema, input.schema);
            assert_eq!(read.batches, input.batches);
        }
    });
}
