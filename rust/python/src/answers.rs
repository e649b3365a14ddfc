//! The model's answer for a batch: one entry per input, flattened into generations.
//!
//! An entry is a list of dicts, each `{"images": [...], ...}`. Both shapes seen in the
//! wild are read the same way: one dict holding all `n` images, or `n` dicts holding one
//! image each. Generation `k` of an input is the k-th image across its entry's dicts.

use pyo3::exceptions::{PyBaseException, PyException, PyMemoryError};
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyString, PyTuple};

/// One generated image and the dict of the answer it came from.
pub struct Generation<'py> {
    pub source: Bound<'py, PyDict>,
    pub payload: Bound<'py, PyAny>,
    /// The source dict holds nothing but this one image under its images key.
    pub alone: bool,
}

/// What was read from one input's entry.
pub enum Entry<'py> {
    /// Nothing usable: every generation of the input fails with `error`; `raw` is the
    /// entry itself when there is one worth keeping.
    Failed {
        error: String,
        raw: Option<Bound<'py, PyAny>>,
    },
    /// `found` generations (at most `n`) starting at `start` in [`Answers::generations`].
    Read { start: usize, found: usize },
}

/// A batch's answers, read.
pub struct Answers<'py> {
    pub entries: Vec<Entry<'py>>,
    pub generations: Vec<Generation<'py>>,
}

/// `TypeName: message` for an exception object.
pub fn describe_exception(exc: &Bound<'_, PyAny>) -> String {
    let name = type_name(exc);
    match exc.str() {
        Ok(text) if !text.is_empty().unwrap_or(true) => format!("{name}: {text}"),
        _ => name,
    }
}

/// The name of an object's type, for messages.
pub fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

/// Whether an exception is a row's failure: an `Exception`, but not a `MemoryError`. The
/// others (`KeyboardInterrupt`, `SystemExit`, a cancelled request, memory exhausted)
/// stop the work instead.
pub fn fails_a_row(exc: &Bound<'_, PyAny>) -> bool {
    exc.is_instance_of::<PyException>() && !exc.is_instance_of::<PyMemoryError>()
}

/// Raises an answer that is an exception but not a row's failure.
fn stop_if_interrupted(answer: &Bound<'_, PyAny>) -> PyResult<()> {
    if answer.is_instance_of::<PyBaseException>() && !fails_a_row(answer) {
        return Err(PyErr::from_value(answer.clone()));
    }
    Ok(())
}

/// The items of a list or a tuple, read in place.
enum Items<'py> {
    List(Bound<'py, PyList>),
    Tuple(Bound<'py, PyTuple>),
}

impl<'py> Items<'py> {
    fn len(&self) -> usize {
        match self {
            Items::List(list) => list.len(),
            Items::Tuple(tuple) => tuple.len(),
        }
    }

    fn iter(&self) -> impl Iterator<Item = Bound<'py, PyAny>> + '_ {
        // A list is read by index: its length is read again at each step.
        (0..).map_while(move |index| match self {
            Items::List(list) => list.get_item(index).ok(),
            Items::Tuple(tuple) => tuple.get_item(index).ok(),
        })
    }
}

fn items<'py>(obj: &Bound<'py, PyAny>) -> Option<Items<'py>> {
    if let Ok(list) = obj.cast::<PyList>() {
        Some(Items::List(list.clone()))
    } else if let Ok(tuple) = obj.cast::<PyTuple>() {
        Some(Items::Tuple(tuple.clone()))
    } else {
        None
    }
}

/// Reads the model's answer for `inputs` inputs and `n` generations each.
pub fn read<'py>(
    answers: &Bound<'py, PyAny>,
    inputs: usize,
    n: usize,
    images_key: &Bound<'py, PyString>,
) -> PyResult<Answers<'py>> {
    let mut read = Answers {
        entries: Vec::with_capacity(inputs),
        generations: Vec::with_capacity(inputs),
    };
    stop_if_interrupted(answers)?;
    let batch_error = if answers.is_instance_of::<PyBaseException>() {
        Some(format!("the model raised {}", describe_exception(answers)))
    } else if answers.is_none() {
        Some("the model returned None instead of a list of answers".to_owned())
    } else {
        match items(answers) {
            None => Some(format!(
                "the model returned {}, expected a list of {inputs} answers",
                type_name(answers)
            )),
            Some(list) if list.len() != inputs => Some(format!(
                "the model returned {} answers for {inputs} inputs; they cannot be matched to rows",
                list.len()
            )),
            Some(list) => {
                for entry in list.iter() {
                    let entry = read_entry(&entry, n, images_key, &mut read.generations)?;
                    read.entries.push(entry);
                }
                None
            }
        }
    };
    if let Some(error) = batch_error {
        read.entries = (0..inputs)
            .map(|_| Entry::Failed {
                error: error.clone(),
                raw: None,
            })
            .collect();
    }
    Ok(read)
}

fn read_entry<'py>(
    entry: &Bound<'py, PyAny>,
    n: usize,
    images_key: &Bound<'py, PyString>,
    generations: &mut Vec<Generation<'py>>,
) -> PyResult<Entry<'py>> {
    stop_if_interrupted(entry)?;
    if entry.is_instance_of::<PyBaseException>() {
        return Ok(Entry::Failed {
            error: format!("the model raised {}", describe_exception(entry)),
            raw: None,
        });
    }
    if entry.is_none() {
        return Ok(Entry::Failed {
            error: "the model returned no answer for this input".to_owned(),
            raw: None,
        });
    }
    let Some(parts) = items(entry) else {
        return Ok(Entry::Failed {
            error: format!(
                "the model's answer is {}, expected a list of dicts with an 'images' list",
                type_name(entry)
            ),
            raw: Some(entry.clone()),
        });
    };
    let start = generations.len();
    for (index, part) in parts.iter().enumerate() {
        let images = match part.cast::<PyDict>() {
            Ok(dict) => dict.get_item(images_key)?.and_then(|images| items(&images)),
            Err(_) => None,
        };
        let (Ok(source), Some(images)) = (part.cast::<PyDict>(), images) else {
            generations.truncate(start);
            return Ok(Entry::Failed {
                error: format!(
                    "part {index} of the model's answer is not a dict with an 'images' list"
                ),
                raw: Some(entry.clone()),
            });
        };
        let alone = images.len() == 1 && source.len() == 1;
        for payload in images.iter().take(n - (generations.len() - start)) {
            generations.push(Generation {
                source: source.clone(),
                payload,
                alone,
            });
        }
    }
    Ok(Entry::Read {
        start,
        found: generations.len() - start,
    })
}
