//! The model's answer for a batch: one entry per input, flattened into generations.
//!
//! An entry is a list of dicts, each `{"images": [...], ...}`. Both shapes seen in the
//! wild are read the same way: one dict holding all `n` images, or `n` dicts holding one
//! image each. Generation `k` of an input is the k-th image across its entry's dicts.

use imagetask_core::payload::{Payload, Problem};
use imagetask_core::plan::Answer;
use pyo3::exceptions::{PyBaseException, PyException, PyMemoryError};
use pyo3::prelude::*;
use pyo3::types::{PyBool, PyBytes, PyDict, PyFloat, PyInt, PyList, PyString, PyTuple};

use crate::store::StoredImage;

mod ahead;

/// One generated image and the dict of the answer it came from.
pub(crate) struct Generation<'py> {
    pub(crate) source: Bound<'py, PyDict>,
    pub(crate) payload: Bound<'py, PyAny>,
    /// The source dict holds nothing but this one image under its images key.
    pub(crate) alone: bool,
}

impl Generation<'_> {
    /// The image payload as the core reads it, or why it is none (a `None` payload is
    /// missing, with the answer dict's `error` when it has one).
    // (Inlined into the loops that push its result: returned through memory, it was
    // copied again through the stack.)
    #[inline(always)]
    pub(crate) fn payload(&self) -> PyResult<Result<Payload<'_>, Problem>> {
        if self.payload.is_none() {
            let error = match self
                .source
                .get_item(pyo3::intern!(self.source.py(), "error"))?
            {
                Some(error) if !error.is_none() => Some(match error.str() {
                    Ok(text) => text.to_string_lossy().into_owned(),
                    Err(err) => row_error(self.payload.py(), err)?,
                }),
                _ => None,
            };
            return Ok(Err(Problem::Missing { error }));
        }
        Ok(image_payload(&self.payload))
    }
}

/// A value read as an image payload: base64 text or bytes, or why it is neither.
#[inline(always)]
pub(crate) fn image_payload<'a>(value: &'a Bound<'_, PyAny>) -> Result<Payload<'a>, Problem> {
    if let Ok(text) = value.cast::<PyString>() {
        match text.to_str() {
            Ok(text) => Ok(Payload::Text(text.as_bytes())),
            Err(_) => Err(Problem::NotAscii),
        }
    } else if let Ok(bytes) = value.cast::<PyBytes>() {
        Ok(Payload::Bytes(bytes.as_bytes()))
    } else if value.is_none() {
        Err(Problem::Missing { error: None })
    } else {
        Err(Problem::WrongType {
            type_name: type_name(value),
        })
    }
}

/// What a batch's answers hold, found in one pass over the images their dicts list
/// under `"images"` (lists only; answers and entries are lists or tuples, anything else
/// holds no image).
#[pyclass(frozen, get_all, module = "imagetask._core")]
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct AnswerFacts {
    /// The length of the images held as text or bytes.
    image_bytes: usize,
    /// The estimated cost: each dict's `statistics["cost_usd"]` (a finite number, not
    /// negative) times its images that are not `None`, summed.
    cost_usd: f64,
    /// The images that cost counts.
    priced_images: usize,
}

#[pymethods]
impl AnswerFacts {
    fn __repr__(&self) -> String {
        format!(
            "AnswerFacts(image_bytes={}, cost_usd={:?}, priced_images={})",
            self.image_bytes, self.cost_usd, self.priced_images
        )
    }
}

/// The `AnswerFacts` of a batch's answers.
#[pyfunction]
pub(crate) fn answer_facts(answers: &Bound<'_, PyAny>) -> PyResult<AnswerFacts> {
    let py = answers.py();
    let mut facts = AnswerFacts {
        image_bytes: 0,
        cost_usd: 0.0,
        priced_images: 0,
    };
    let Some(answers) = items(answers) else {
        return Ok(facts);
    };
    for entry in answers.iter() {
        let Some(parts) = items(&entry) else { continue };
        for part in parts.iter() {
            let Ok(part) = part.cast::<PyDict>() else {
                continue;
            };
            let Some(images) = part.get_item(pyo3::intern!(py, "images"))? else {
                continue;
            };
            let Ok(images) = images.cast::<PyList>() else {
                continue;
            };
            let mut made = 0;
            for image in images.iter() {
                if let Ok(text) = image.cast::<PyString>() {
                    facts.image_bytes += text.len()?;
                } else if let Ok(bytes) = image.cast::<PyBytes>() {
                    facts.image_bytes += bytes.as_bytes().len();
                } else if image.is_none() {
                    continue;
                }
                made += 1;
            }
            if let Some(usd) = price(part)? {
                facts.cost_usd += usd * made as f64;
                facts.priced_images += made;
            }
        }
    }
    Ok(facts)
}

/// An answer dict's `statistics["cost_usd"]`, when it is a finite number (an `int` or a
/// `float`, not a `bool`) that is not negative.
fn price(part: &Bound<'_, PyDict>) -> PyResult<Option<f64>> {
    let py = part.py();
    let Some(statistics) = part.get_item(pyo3::intern!(py, "statistics"))? else {
        return Ok(None);
    };
    let Ok(statistics) = statistics.cast::<PyDict>() else {
        return Ok(None);
    };
    let Some(usd) = statistics.get_item(pyo3::intern!(py, "cost_usd"))? else {
        return Ok(None);
    };
    let number = usd.is_instance_of::<PyFloat>()
        || (usd.is_instance_of::<PyInt>() && !usd.is_instance_of::<PyBool>());
    if !number {
        return Ok(None);
    }
    // An int too large for a float is no price.
    Ok(usd
        .extract::<f64>()
        .ok()
        .filter(|usd| usd.is_finite() && *usd >= 0.0))
}

/// A batch's answers, read: one per valid row.
pub(crate) struct Answers<'py> {
    /// What each answer holds, as the plan reads it.
    pub(crate) answers: Vec<Answer>,
    /// Each answer as a failure's raw output keeps it: a failed answer worth keeping,
    /// else `None`.
    pub(crate) raw: Vec<Option<Bound<'py, PyAny>>>,
    /// Every image of every answer, in order.
    pub(crate) generations: Vec<Generation<'py>>,
    /// Whether an image is a `StoredImage`.
    pub(crate) stored: bool,
}

impl<'py> Answers<'py> {
    fn push(&mut self, answer: Answer, raw: Option<Bound<'py, PyAny>>) {
        self.answers.push(answer);
        self.raw.push(raw);
    }
}

/// The text of an error a row caused (`Type: message`); an exception that is not a row's
/// failure (`KeyboardInterrupt`, `SystemExit`, `MemoryError`) is raised instead.
pub(crate) fn row_error(py: Python<'_>, err: PyErr) -> PyResult<String> {
    if fails_a_row(err.value(py)) {
        Ok(describe_exception(err.value(py).as_any()))
    } else {
        Err(err)
    }
}

/// `TypeName: message` for an exception object.
pub(crate) fn describe_exception(exc: &Bound<'_, PyAny>) -> String {
    let name = type_name(exc);
    match exc.str() {
        Ok(text) if !text.is_empty().unwrap_or(true) => format!("{name}: {text}"),
        _ => name,
    }
}

/// The name of an object's type, for messages.
pub(crate) fn type_name(obj: &Bound<'_, PyAny>) -> String {
    obj.get_type()
        .name()
        .map(|name| name.to_string())
        .unwrap_or_else(|_| "object".to_owned())
}

/// Whether an exception is a row's failure: an `Exception`, but not a `MemoryError`. The
/// others (`KeyboardInterrupt`, `SystemExit`, a cancelled request, memory exhausted)
/// stop the work instead.
pub(crate) fn fails_a_row(exc: &Bound<'_, PyAny>) -> bool {
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
        // A list is read by index: its length is read again at each step (an index
        // past the end is not asked, which would raise an IndexError to discard).
        (0..).map_while(move |index| {
            if index >= self.len() {
                return None;
            }
            match self {
                // A free-threaded Python's lists may change under another thread.
                Items::List(list) if cfg!(Py_GIL_DISABLED) => list.get_item(index).ok(),
                // SAFETY: `index` is below the length, the GIL held.
                Items::List(list) => Some(unsafe { list.get_item_unchecked(index) }),
                // SAFETY: `index` is below the length.
                Items::Tuple(tuple) => Some(unsafe { tuple.get_item_unchecked(index) }),
            }
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
pub(crate) fn read<'py>(
    answers: &Bound<'py, PyAny>,
    inputs: usize,
    n: usize,
    images_key: &Bound<'py, PyString>,
) -> PyResult<Answers<'py>> {
    let mut read = Answers {
        answers: Vec::with_capacity(inputs),
        raw: Vec::with_capacity(inputs),
        generations: Vec::with_capacity(inputs),
        stored: false,
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
                for (index, entry) in list.iter().enumerate() {
                    ahead::fetch(answers, index);
                    let (answer, raw) = read_entry(&entry, n, images_key, &mut read)?;
                    read.push(answer, raw);
                }
                None
            }
        }
    };
    if let Some(error) = batch_error {
        for _ in 0..inputs {
            read.push(
                Answer::Failed {
                    error: error.clone(),
                },
                None,
            );
        }
    }
    Ok(read)
}

/// What an image of an answer dict is, as the builders read it.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Held {
    /// A value read as it is: text, bytes, `None`, or anything else (no image).
    Value,
    /// A `StoredImage`, which the builders read themselves.
    Stored,
    /// An `ImageFile` (it has a `size` and a `read()` that hands its bytes over once): kept
    /// in its file until the rows are built.
    File,
}

fn held(image: &Bound<'_, PyAny>) -> PyResult<Held> {
    if image.is_instance_of::<PyString>() || image.is_instance_of::<PyBytes>() || image.is_none() {
        return Ok(Held::Value);
    }
    if image.is_instance_of::<StoredImage>() {
        return Ok(Held::Stored);
    }
    let py = image.py();
    // An object whose attributes raise is no file (its generation fails as a wrong type);
    // Ctrl-C while they are looked up still stops the work.
    let has = |name: &Bound<'_, PyString>| match image.hasattr(name) {
        Ok(has) => Ok(has),
        Err(err) if fails_a_row(err.value(py)) => Ok(false),
        Err(err) => Err(err),
    };
    let file = has(pyo3::intern!(py, "read"))? && has(pyo3::intern!(py, "size"))?;
    Ok(if file { Held::File } else { Held::Value })
}

/// An answer dict's images with each `ImageFile` among them replaced by its bytes (what
/// its `read()` returns), or `None` when none is one; `stored` is set when one is a
/// `StoredImage` or a file's `read()` returns one. The dict is given the new list, so
/// that its raw output holds the bytes, and the files are read just before the rows are
/// built: a batch waiting for that holds none of them in memory.
fn read_files<'py>(
    py: Python<'py>,
    images: &Items<'py>,
    stored: &mut bool,
) -> PyResult<Option<Bound<'py, PyList>>> {
    let mut read: Option<Bound<'py, PyList>> = None;
    for (index, image) in images.iter().enumerate() {
        let held = held(&image)?;
        *stored |= held == Held::Stored;
        let file = held == Held::File;
        if file && read.is_none() {
            // The images before the first file, as they are.
            read = Some(PyList::new(py, images.iter().take(index))?);
        }
        if let Some(read) = &read {
            if file {
                let bytes = image.call_method0(pyo3::intern!(py, "read"))?;
                *stored |= bytes.is_instance_of::<StoredImage>();
                read.append(bytes)?;
            } else {
                read.append(image)?;
            }
        }
    }
    Ok(read)
}

/// One input's answer, and the entry itself when a failure's raw output keeps it.
type Entry<'py> = (Answer, Option<Bound<'py, PyAny>>);

fn read_entry<'py>(
    entry: &Bound<'py, PyAny>,
    n: usize,
    images_key: &Bound<'py, PyString>,
    read: &mut Answers<'py>,
) -> PyResult<Entry<'py>> {
    let generations = &mut read.generations;
    stop_if_interrupted(entry)?;
    if entry.is_instance_of::<PyBaseException>() {
        let error = format!("the model raised {}", describe_exception(entry));
        return Ok((Answer::Failed { error }, None));
    }
    if entry.is_none() {
        let error = "the model returned no answer for this input".to_owned();
        return Ok((Answer::Failed { error }, None));
    }
    let Some(parts) = items(entry) else {
        let error = format!(
            "the model's answer is {}, expected a list of dicts with an 'images' list",
            type_name(entry)
        );
        return Ok((Answer::Failed { error }, Some(entry.clone())));
    };
    let start = generations.len();
    for (index, part) in parts.iter().enumerate() {
        let images = match part.cast::<PyDict>() {
            Ok(dict) => dict.get_item(images_key)?.and_then(|images| items(&images)),
            Err(_) => None,
        };
        let (Ok(source), Some(mut images)) = (part.cast::<PyDict>(), images) else {
            generations.truncate(start);
            let error =
                format!("part {index} of the model's answer is not a dict with an 'images' list");
            return Ok((Answer::Failed { error }, Some(entry.clone())));
        };
        if let Some(read) = read_files(entry.py(), &images, &mut read.stored)? {
            source.set_item(images_key, &read)?;
            images = Items::List(read);
        }
        let alone = images.len() == 1 && source.len() == 1;
        for payload in images.iter().take(n - (generations.len() - start)) {
            generations.push(Generation {
                source: source.clone(),
                payload,
                alone,
            });
        }
    }
    let found = generations.len() - start;
    Ok((Answer::Images { start, found }, None))
}

#[cfg(test)]
mod tests {
    use pyo3::prelude::*;
    use pyo3::types::PyString;

    use super::{answer_facts, read, AnswerFacts};
    use crate::testing::{eval, with_python};

    /// An `ImageFile` expression: its bytes are `data`, handed over by `read()`.
    fn file(data: &str) -> String {
        format!("type('F', (), {{'size': 1, 'read': lambda self: {data}}})()")
    }

    #[test]
    fn images_in_files_are_read_into_their_answer_dicts() {
        with_python(|py| {
            let answers = eval(
                py,
                &format!(
                    "[[{{'images': ['YQ==', {}, None], 'seed': 1}}], ({{'images': ({},)}},)]",
                    file("b'b'"),
                    file("b'c'")
                ),
            );
            let key = PyString::new(py, "images");
            let read = read(&answers, 2, 3, &key).expect("reads");
            let payloads: Vec<String> = (read.generations.iter())
                .map(|generation| generation.payload.repr().unwrap().to_string())
                .collect();
            assert_eq!(payloads, ["'YQ=='", "b'b'", "None", "b'c'"]);
            // The dicts hold the bytes too (their raw output keeps them).
            assert_eq!(
                answers.repr().unwrap().to_string(),
                "[[{'images': ['YQ==', b'b', None], 'seed': 1}], ({'images': [b'c']},)]"
            );
        });
    }

    #[test]
    fn an_image_whose_attributes_raise_is_no_file_unless_it_is_interrupted() {
        with_python(|py| {
            let raising = |error: &str| {
                format!(
                    "[[{{'images': [type('R', (), {{'__getattr__': lambda self, name: \
                     (_ for _ in ()).throw({error})}})()]}}]]"
                )
            };
            let key = PyString::new(py, "images");
            let answers = eval(py, &raising("ValueError('no')"));
            let found = read(&answers, 1, 1, &key).expect("reads");
            assert_eq!(found.generations.len(), 1);
            assert_eq!(super::type_name(&found.generations[0].payload), "R");
            let answers = eval(py, &raising("KeyboardInterrupt()"));
            let err = read(&answers, 1, 1, &key).err().expect("stops");
            assert!(err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py));
        });
    }

    #[test]
    fn a_file_that_cannot_be_read_raises_its_error() {
        with_python(|py| {
            let answers = eval(
                py,
                &format!("[[{{'images': [{}]}}]]", file("open('/nonexistent/x.png')")),
            );
            let key = PyString::new(py, "images");
            let err = read(&answers, 1, 1, &key).err().expect("raises");
            assert!(err.is_instance_of::<pyo3::exceptions::PyFileNotFoundError>(py));
        });
    }

    #[test]
    fn facts_count_images_their_bytes_and_their_price() {
        with_python(|py| {
            let facts = |answers: &str| answer_facts(&eval(py, answers)).expect("reads");
            let priced = "{'images': ['aGk=', b'xy', None], 'statistics': {'cost_usd': 0.5}}";
            assert_eq!(
                facts(&format!("[[{priced}], ({{'images': []}},)]")),
                AnswerFacts {
                    image_bytes: 6,
                    cost_usd: 1.0,
                    priced_images: 2
                }
            );
            let empty = AnswerFacts {
                image_bytes: 0,
                cost_usd: 0.0,
                priced_images: 0,
            };
            assert_eq!(
                facts("[('not a dict', {'images': 'not a list'}), None, 3]"),
                empty
            );
            assert_eq!(facts("'not a list'"), empty);
        });
    }

    #[test]
    fn only_finite_numbers_not_negative_are_prices() {
        with_python(|py| {
            let cost = |usd: &str| {
                let answers =
                    format!("[[{{'images': ['aGk='], 'statistics': {{'cost_usd': {usd}}}}}]]");
                let facts = answer_facts(&eval(py, &answers)).expect("reads");
                (facts.cost_usd, facts.priced_images)
            };
            assert_eq!(cost("2"), (2.0, 1));
            assert_eq!(cost("0.25"), (0.25, 1));
            for refused in [
                "True",
                "-1.0",
                "float('nan')",
                "float('inf')",
                "'1'",
                "None",
                "10**400",
            ] {
                assert_eq!(cost(refused), (0.0, 0), "{refused}");
            }
        });
    }
}
