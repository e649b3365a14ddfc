use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, UInt32Type};
use imagetask_core::plan::{RowProblem, Rows};
use pyo3::prelude::*;
use pyo3::types::PyList;

use super::{ColumnBuilder, PreparedColumns};
use crate::errors::ConfigError;
use crate::testing::{eval, with_python};

fn builder(py: Python<'_>, n: usize, group: bool) -> PyResult<ColumnBuilder> {
    ColumnBuilder::new(
        py,
        "prompt".to_owned(),
        "model".to_owned(),
        n,
        group,
        true,
        false,
        true,
    )
}

/// A prepared batch of an invalid row (a null prompt) then a valid one, `b`.
fn prepared(py: Python<'_>) -> PreparedColumns {
    let mut rows = Rows::new(true);
    let problem = RowProblem {
        message: "row 0 of the batch has no text prompt: its column 'prompt' holds a NoneType"
            .to_owned(),
        column: Some("prompt".to_owned()),
    };
    rows.push_invalid(problem).unwrap();
    rows.push_valid();
    PreparedColumns {
        prompts: PyList::new(py, ["b"]).unwrap().unbind(),
        rows,
    }
}

#[test]
fn every_cell_gets_its_image_or_the_reason_it_has_none() {
    with_python(|py| {
        let builder = builder(py, 2, true).unwrap();
        let answers = eval(py, "[[{'images': [b'GIF89a'], 'seed': 3}]]");
        let (columns, rows, offsets, failures) = builder
            .build(py, &prepared(py), &answers, None, None)
            .unwrap();
        let columns = columns.array().as_struct();
        let names: Vec<&str> = columns.column_names();
        assert_eq!(
            names,
            ["image", "raw_output", "statistics", "error", "model_name"]
        );
        let image = columns.column(0).as_binary::<i32>();
        let images: Vec<Option<&[u8]>> = image.iter().collect();
        assert_eq!(images, [None, None, Some(&b"GIF89a"[..]), None]);
        let texts = |at: usize| -> Vec<Option<String>> {
            let column = columns.column(at).as_string::<i32>();
            column.iter().map(|v| v.map(str::to_owned)).collect()
        };
        let invalid = "row 0 of the batch has no text prompt: its column 'prompt' holds a NoneType";
        let fewer = "the model returned 1 image(s) for 2 generation(s)";
        let reference = "{\"images\":[\"sha256:610f5ae4d76e332636a17bd357fd6ce99029316a99d320280d4d77a746bf29e8\"],\"seed\":3}";
        assert_eq!(texts(1), [None, None, Some(reference.to_owned()), None]);
        assert_eq!(
            texts(3),
            [
                Some(invalid.to_owned()),
                Some(invalid.to_owned()),
                None,
                Some(fewer.to_owned())
            ]
        );
        assert_eq!(texts(4), vec![Some("model".to_owned()); 4]);
        let rows = rows.array().as_primitive::<UInt32Type>();
        assert_eq!(rows.values().to_vec(), [0, 0, 1, 1]);
        let offsets = offsets.unwrap();
        let offsets = offsets.array().as_primitive::<Int32Type>();
        assert_eq!(offsets.values().to_vec(), [0, 2, 4]);
        let expected = eval(
            py,
            &format!("[(0, 0, {invalid:?}), (0, 1, {invalid:?}), (1, 1, {fewer:?})]"),
        );
        assert!(failures.eq(&expected).unwrap(), "{failures}");
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
        builder.build(py, &prepared, &answers, None, None).unwrap();
        let err = builder
            .build(py, &prepared, &answers, None, None)
            .err()
            .unwrap();
        assert!(err.is_instance_of::<ConfigError>(py));
        assert_eq!(
            err.value(py).to_string(),
            "a prepared batch can be built only once"
        );
    });
}
