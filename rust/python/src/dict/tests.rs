use pyo3::prelude::*;
use pyo3::types::{PyList, PyString};

use super::RowBuilder;
use crate::errors::{ConfigError, InputRowError};
use crate::testing::{eval, with_python};

fn builder(py: Python<'_>, n: usize, pass_invalid_rows: bool) -> PyResult<RowBuilder> {
    RowBuilder::new(
        py,
        PyString::new(py, "model").into_any(),
        vec![("prompt".to_owned(), "prompt".to_owned())],
        vec![("image".to_owned(), "image".to_owned())],
        n,
        false,
        true,
        true,
        false,
        false,
        pass_invalid_rows,
        "model_name",
        "meta",
        "raw_output_t",
        "raw_input_t",
        "statistics_t",
        "error_t",
        false,
    )
}

fn rows<'py>(py: Python<'py>, expression: &str) -> Bound<'py, PyList> {
    eval(py, expression).cast_into::<PyList>().unwrap()
}

#[test]
fn every_generation_gets_its_image_or_the_reason_it_has_none() {
    with_python(|py| {
        let builder = builder(py, 2, true).unwrap();
        let input = rows(py, "[{'prompt': 'a'}, {'prompt': 'b'}, 7]");
        let prepared = builder.prepare(py, &input, None).unwrap();
        let answers = eval(py, "[[{'images': ['R0lGODlh']}], RuntimeError('quota')]");
        let (out, failures) = builder.build(py, &prepared, &answers, None).unwrap();
        let expected = eval(
            py,
            "(lambda ref, fewer, quota, bad: [
                {'prompt': 'a', 'image': 'R0lGODlh', 'model_name': 'model',
                 'meta': {'raw_output_t': {'images': [ref]}, 'raw_input_t': 'a'}},
                {'prompt': 'a', 'image': None, 'model_name': 'model',
                 'meta': {'raw_output_t': None, 'raw_input_t': 'a', 'error_t': fewer}},
                *[{'prompt': 'b', 'image': None, 'model_name': 'model',
                   'meta': {'raw_output_t': None, 'raw_input_t': 'b', 'error_t': quota}}] * 2,
                *[{'image': None, 'model_name': 'model',
                   'meta': {'raw_output_t': None, 'raw_input_t': None, 'error_t': bad}}] * 2,
            ])(
                'sha256:' + __import__('hashlib').sha256(b'GIF89a').hexdigest(),
                'the model returned 1 image(s) for 2 generation(s)',
                'the model raised RuntimeError: quota',
                'row 2 of the batch is a int, not a mapping',
            )",
        );
        assert!(out.eq(&expected).unwrap(), "{out}");
        let expected_failures = eval(
            py,
            "[(0, 1, 'the model returned 1 image(s) for 2 generation(s)'),
              (1, 0, 'the model raised RuntimeError: quota'),
              (1, 1, 'the model raised RuntimeError: quota'),
              (2, 0, 'row 2 of the batch is a int, not a mapping'),
              (2, 1, 'row 2 of the batch is a int, not a mapping')]",
        );
        assert!(failures.eq(&expected_failures).unwrap(), "{failures}");
    });
}

#[test]
fn an_invalid_row_is_an_input_row_error_naming_it() {
    with_python(|py| {
        let builder = builder(py, 1, false).unwrap();
        let input = rows(py, "[{'prompt': 'a'}, {'text': 'b'}]");
        let err = builder.prepare(py, &input, None).err().unwrap();
        assert!(err.is_instance_of::<InputRowError>(py));
        let args = eval(
            py,
            "(\"row 1 of the batch lacks the input column 'prompt' (its columns: 'text')\", 1, 'prompt')",
        );
        assert!(err.value(py).getattr("args").unwrap().eq(&args).unwrap());
    });
}

#[test]
fn bad_counts_and_a_second_build_are_config_errors() {
    with_python(|py| {
        for n in [0, 10_001] {
            let err = builder(py, n, false).err().unwrap();
            assert!(err.is_instance_of::<ConfigError>(py));
            assert_eq!(
                err.value(py).to_string(),
                format!("num_generations must be between 1 and 10000, got {n}")
            );
        }
        let builder = builder(py, 1, false).unwrap();
        let prepared = builder
            .prepare(py, &rows(py, "[{'prompt': 'a'}]"), None)
            .unwrap();
        let answers = eval(py, "[[{'images': ['R0lGODlh']}]]");
        builder.build(py, &prepared, &answers, None).unwrap();
        let err = builder.build(py, &prepared, &answers, None).err().unwrap();
        assert!(err.is_instance_of::<ConfigError>(py));
        assert_eq!(
            err.value(py).to_string(),
            "a prepared batch can be built only once"
        );
    });
}

#[test]
fn a_format_input_input_row_error_keeps_its_message_and_others_name_the_row() {
    with_python(|py| {
        let builder = builder(py, 1, false).unwrap();
        let input = rows(py, "[{'prompt': 'a'}]");
        let refusing = eval(
            py,
            "(lambda error: lambda row: (_ for _ in ()).throw(error))(
                __import__('sys').modules['imagetask.errors'].InputRowError(
                    \"row 0 of the batch, column 'image': holds an empty path\", 0, 'image'))",
        );
        let failing = eval(py, "lambda row: {}['style']");
        let expected = [
            (
                refusing,
                "(\"row 0 of the batch, column 'image': holds an empty path\", 0, 'image')",
            ),
            (
                failing,
                "(\"format_input failed for row 0 of the batch: KeyError: 'style'\", 0, None)",
            ),
        ];
        for (hook, args) in expected {
            let err = builder.prepare(py, &input, Some(&hook)).err().unwrap();
            assert!(err.is_instance_of::<InputRowError>(py));
            let args = eval(py, args);
            let got = err.value(py).getattr("args").unwrap();
            assert!(got.eq(&args).unwrap(), "{got}");
        }
    });
}
