//! The columnar output of a batch: the image, path and metadata columns as Arrow arrays.
//!
//! The binding reads the model's answers into [`Image`]s and the batch's [`Plan`]; this
//! module checks and decodes every image (on every core for large batches), hashes it,
//! writes its artifact file when asked, and builds the columns, one value per cell (row
//! and generation, row-major). It holds no Python object, so it runs with the GIL
//! released.

use std::borrow::Cow;
use std::sync::Arc;

use arrow_array::builder::StringBuilder;
use arrow_array::{ArrayRef, BinaryArray, StringArray};
use arrow_buffer::{Buffer, NullBuffer, NullBufferBuilder, OffsetBuffer, ScalarBuffer};
use imagetask_core::artifacts::Destination;
use imagetask_core::json::{self, Members};
use imagetask_core::payload::decode::{self, Decoded, Work};
use imagetask_core::payload::{self, content_ref, Payload};
use imagetask_core::plan::{Failure, Plan, Source};

/// What the raw output of one image of the model's answer needs (its payload is apart,
/// at the same index: see [`build`]).
pub(crate) struct Image {
    /// JSON of the payload itself, when the binding had to make it (a payload that is not
    /// text or bytes, or text that cannot be encoded).
    pub(crate) payload_json: Option<Box<str>>,
    /// The other members of its answer dict as JSON (without `statistics`); `None` when
    /// it has none (shared by the images of one dict: each would otherwise count its
    /// references, which costs as much as the rest of an image's row).
    pub(crate) members: Option<Arc<Members>>,
    /// Its answer dict's statistics as JSON, when it has any.
    pub(crate) statistics: Option<Arc<str>>,
    /// The artifact file it is already in, when its bytes stay there (its payload is then
    /// not read).
    pub(crate) file: Option<Box<ImageFile>>,
}

/// The members of a dict that has no other.
static NO_MEMBERS: Members = Members {
    before: String::new(),
    after: String::new(),
};

impl Image {
    fn members(&self) -> &Members {
        self.members.as_deref().unwrap_or(&NO_MEMBERS)
    }
}

/// An image already saved as an artifact: its cell records the path and holds no bytes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ImageFile {
    /// The path its rows record (`prefix/<name>`).
    pub(crate) recorded: String,
    /// The SHA-256 of its bytes.
    pub(crate) sha256: [u8; 32],
}

/// How the columns are built.
pub(crate) struct Options {
    pub(crate) raw_output: bool,
    pub(crate) inline_raw_images: bool,
    /// Where the images' files go, when they are saved.
    pub(crate) artifacts: Option<Destination>,
}

/// A generation that has no image, or whose artifact was not saved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct CellFailure {
    pub(crate) row: usize,
    pub(crate) generation: usize,
    pub(crate) error: String,
}

/// The columns of a batch, one value per cell.
pub(crate) struct Columns {
    /// The images' bytes (null for a cell without an image, or whose image is a file).
    pub(crate) image: ArrayRef,
    /// Which cells hold an image (bytes or a file), when not those with bytes.
    pub(crate) image_valid: Option<NullBuffer>,
    pub(crate) image_path: Option<ArrayRef>,
    pub(crate) raw_output: Option<ArrayRef>,
    pub(crate) statistics: ArrayRef,
    pub(crate) error: ArrayRef,
    pub(crate) failures: Vec<CellFailure>,
}

/// The most bytes one batch's binary or string column holds (32-bit offsets).
const MAX_BATCH_BYTES: usize = i32::MAX as usize;

/// Builds the columns of the cells of `plan` from the batch's image `payloads` (each the
/// payload, or why it cannot be an image) and what their raw output needs (`images`, at
/// the same indices); `raw` is the raw output (JSON) each failed answer keeps, by answer.
///
/// The plan takes every image once, in order (the binding reads them so), which lets the
/// decoded images' buffer become the image column's values as it is.
pub(crate) fn build(
    payloads: &[Work<'_>],
    images: &[Image],
    plan: &Plan<'_>,
    raw: &[Option<String>],
    options: &Options,
) -> Result<Columns, String> {
    let cells = plan.len();
    let hash = (options.raw_output && !options.inline_raw_images) || options.artifacts.is_some();
    let decoded = decode::decode_all(payloads, hash);
    if decoded.values.len() > MAX_BATCH_BYTES {
        return Err(format!(
            "the batch's images hold {} bytes, more than one Arrow binary column holds \
             ({MAX_BATCH_BYTES}): use smaller batches",
            decoded.values.len()
        ));
    }
    let saved = options
        .artifacts
        .as_ref()
        .map(|artifacts| save(artifacts, &decoded));
    // Paths are recorded when images are saved, or are already files.
    let recorded = saved.is_some() || images.iter().any(|image| image.file.is_some());

    let mut offsets: Vec<i32> = Vec::with_capacity(cells + 1);
    offsets.push(0);
    // (Bitmaps made only once a cell is null.)
    let mut valid = NullBufferBuilder::new(cells);
    let mut with_bytes = NullBufferBuilder::new(cells);
    let mut raw_output = JsonColumn::with_capacity(if options.raw_output { cells } else { 0 });
    let mut path = SparseText::default();
    let mut statistics = SparseText::default();
    let mut error = SparseText::default();
    let mut failures = Vec::new();
    let mut end = 0;
    for (row, generation, source) in plan.rows().flat_map(|row| {
        row.sources()
            .enumerate()
            .map(move |(k, s)| (row.index, k, s))
    }) {
        let used = match source {
            Source::Image(at) => match (&images[at].file, &decoded.spans[at]) {
                (Some(file), _) => Ok((&images[at], Kept::File(file), at)),
                (None, Ok(span)) => Ok((&images[at], Kept::Bytes(span), at)),
                (None, Err(problem)) => Err((
                    format!("image {generation} of the model's answer {problem}"),
                    RawOutput::Inline(&images[at], &payloads[at]),
                )),
            },
            Source::Failed(failure) => {
                let kept = match failure {
                    Failure::FailedAnswer { answer, .. } => raw[answer].as_deref(),
                    Failure::InvalidRow { .. } | Failure::FewerImages { .. } => None,
                };
                Err((failure.to_string(), RawOutput::Given(kept)))
            }
        };
        match used {
            Ok((source, kept, at)) => {
                let hash = match kept {
                    Kept::Bytes(span) => {
                        end = span.end;
                        span.hash.as_ref()
                    }
                    Kept::File(file) => Some(&file.sha256),
                };
                valid.append(true);
                with_bytes.append(matches!(kept, Kept::Bytes(_)));
                if options.raw_output {
                    match (options.inline_raw_images, hash) {
                        (false, Some(hash)) => raw_output.push_reference(hash, source.members()),
                        _ => raw_output.push_inline(source, &payloads[at]),
                    }
                }
                statistics.append_option(source.statistics.as_deref());
                let saved: Option<Result<&String, &String>> = match kept {
                    Kept::File(file) => Some(Ok(&file.recorded)),
                    Kept::Bytes(_) => saved.as_ref().map(|saved| saved[at].as_ref()),
                };
                match saved {
                    None => {
                        if recorded {
                            path.append_null();
                        }
                        error.append_null();
                    }
                    Some(Ok(name)) => {
                        path.append_value(name.as_str());
                        error.append_null();
                    }
                    Some(Err(problem)) => {
                        let problem = format!("the image artifact was not saved: {problem}");
                        path.append_null();
                        error.append_value(problem.clone());
                        failures.push(CellFailure {
                            row,
                            generation,
                            error: problem,
                        });
                    }
                }
            }
            Err((problem, kept)) => {
                valid.append(false);
                with_bytes.append(false);
                if options.raw_output {
                    match kept {
                        RawOutput::Inline(source, payload) => {
                            raw_output.push_inline(source, payload)
                        }
                        RawOutput::Given(given) => raw_output.push(given),
                    }
                }
                statistics.append_null();
                if recorded {
                    path.append_null();
                }
                error.append_value(problem.clone());
                failures.push(CellFailure {
                    row,
                    generation,
                    error: problem,
                });
            }
        }
        offsets.push(end as i32);
    }
    if raw_output.values.len() > MAX_BATCH_BYTES {
        return Err(format!(
            "the batch's raw outputs hold {} bytes of JSON, more than one Arrow string column \
             holds ({MAX_BATCH_BYTES}): use smaller batches",
            raw_output.values.len()
        ));
    }
    // Failed images and files left no bytes behind (`decode_all` cuts them out), so the
    // values between two offsets are exactly the cell's image.
    let with_bytes = with_bytes.finish();
    let image_valid = match valid.finish() {
        None if with_bytes.is_some() => Some(NullBuffer::new_valid(cells)),
        valid => valid,
    };
    let image = BinaryArray::new(
        OffsetBuffer::new(ScalarBuffer::from(offsets)),
        Buffer::from_vec(decoded.values),
        with_bytes,
    );
    Ok(Columns {
        image: Arc::new(image),
        image_valid,
        image_path: recorded.then(|| Arc::new(path.finish()) as ArrayRef),
        raw_output: options
            .raw_output
            .then(|| Arc::new(raw_output.finish()) as ArrayRef),
        statistics: Arc::new(statistics.finish()),
        error: Arc::new(error.finish()),
        failures,
    })
}

/// Where a cell's image is: its bytes decoded, or a file.
enum Kept<'a> {
    Bytes(&'a decode::Span),
    File(&'a ImageFile),
}

/// The raw output a failed cell keeps.
enum RawOutput<'a, 'b> {
    /// Its answer dict, the image payload inline.
    Inline(&'a Image, &'a Work<'b>),
    /// What the binding made of the answer (JSON), or nothing.
    Given(Option<&'a str>),
}

/// A string column whose cells are mostly null (paths, statistics, errors): its values
/// are kept with their cell as they come, and an all-null column is made at once.
#[derive(Default)]
struct SparseText<'a> {
    len: usize,
    values: Vec<(usize, Cow<'a, str>)>,
}

impl<'a> SparseText<'a> {
    fn append_null(&mut self) {
        self.len += 1;
    }

    fn append_value(&mut self, value: impl Into<Cow<'a, str>>) {
        self.values.push((self.len, value.into()));
        self.len += 1;
    }

    fn append_option(&mut self, value: Option<&'a str>) {
        match value {
            Some(value) => self.append_value(value),
            None => self.append_null(),
        }
    }

    fn finish(self) -> StringArray {
        if self.values.is_empty() {
            return StringArray::new_null(self.len);
        }
        let bytes = self.values.iter().map(|(_, value)| value.len()).sum();
        let mut column = StringBuilder::with_capacity(self.len, bytes);
        let mut next = 0;
        for (cell, value) in &self.values {
            column.append_nulls(cell - next);
            column.append_value(value);
            next = cell + 1;
        }
        column.append_nulls(self.len - next);
        column.finish()
    }
}

/// A string column of JSON texts, written in place.
struct JsonColumn {
    values: String,
    offsets: Vec<i32>,
    valid: NullBufferBuilder,
}

impl JsonColumn {
    fn with_capacity(cells: usize) -> Self {
        let mut offsets = Vec::with_capacity(cells + 1);
        offsets.push(0);
        Self {
            values: String::with_capacity(cells * 96),
            offsets,
            valid: NullBufferBuilder::new(cells),
        }
    }

    fn close(&mut self, valid: bool) {
        self.offsets.push(self.values.len() as i32);
        self.valid.append(valid);
    }

    fn push(&mut self, json: Option<&str>) {
        if let Some(json) = json {
            self.values.push_str(json);
        }
        self.close(json.is_some());
    }

    /// The raw output of an image, referred to by its content hash.
    fn push_reference(&mut self, hash: &[u8; 32], members: &Members) {
        let reference = content_ref(hash);
        json::write_raw_output(&mut self.values, members, |out| {
            out.push('"');
            out.push_str(reference.as_str());
            out.push('"');
        });
        self.close(true);
    }

    /// The raw output of an image, its payload inline.
    fn push_inline(&mut self, image: &Image, payload: &Work<'_>) {
        json::write_raw_output(&mut self.values, image.members(), |out| {
            write_payload(out, image, payload)
        });
        self.close(true);
    }

    fn finish(mut self) -> StringArray {
        let offsets = OffsetBuffer::new(ScalarBuffer::from(self.offsets));
        let values = Buffer::from_vec(self.values.into_bytes());
        let nulls = self.valid.finish();
        // SAFETY: the values are a `String`'s bytes and every offset is its length after a
        // whole text was written (a char boundary), one per cell, in order from 0.
        unsafe { StringArray::new_unchecked(offsets, values, nulls) }
    }
}

/// JSON of an image payload as the raw output keeps it inline.
fn write_payload(out: &mut String, image: &Image, payload: &Work<'_>) {
    if let Some(json) = &image.payload_json {
        out.push_str(json);
        return;
    }
    match payload {
        Ok(Payload::Text(text)) => json::write_str(out, &String::from_utf8_lossy(text)),
        Ok(Payload::Bytes(bytes)) => json::write_str(out, &payload::encode(bytes)),
        Err(_) => out.push_str("null"),
    }
}

/// Writes the artifact file of every decoded image: its recorded path, or why not.
fn save(destination: &Destination, decoded: &Decoded) -> Vec<Result<String, String>> {
    decoded
        .spans
        .iter()
        .map(|span| {
            let span = span
                .as_ref()
                .map_err(|_| "the image is unusable".to_owned())?;
            destination.save(decoded.bytes(span), span.hash.as_ref())
        })
        .collect()
}

/// A column holding `text` `len` times, or why one string column cannot hold them.
pub(crate) fn constant(text: &str, len: usize) -> Result<StringArray, String> {
    let total = text.len().saturating_mul(len);
    if total > MAX_BATCH_BYTES {
        return Err(format!(
            "the model name, once per row of the batch, makes {total} bytes, more than one \
             Arrow string column holds ({MAX_BATCH_BYTES}): use smaller batches"
        ));
    }
    let offsets = OffsetBuffer::new(ScalarBuffer::from_iter(
        (0..=len).map(|i| (i * text.len()) as i32),
    ));
    let values = text.repeat(len).into_bytes().into();
    // SAFETY: the values are `text` `len` times over, each offset where one begins.
    Ok(unsafe { StringArray::new_unchecked(offsets, values, None) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow_array::{Array, BinaryArray};
    use imagetask_core::artifacts;
    use imagetask_core::plan::{Answer, Generations, RowProblem, Rows};

    /// The payloads of images and what their raw output needs (`after`: the other
    /// members of their answer dict).
    fn images<'a>(items: &[(Payload<'a>, &str)]) -> (Vec<Work<'a>>, Vec<Image>) {
        items
            .iter()
            .map(|(payload, after)| {
                let image = Image {
                    payload_json: None,
                    members: Some(Arc::new(Members {
                        before: String::new(),
                        after: (*after).to_owned(),
                    })),
                    statistics: None,
                    file: None,
                };
                (Ok(*payload), image)
            })
            .unzip()
    }

    fn options(raw_output: bool) -> Options {
        Options {
            raw_output,
            inline_raw_images: false,
            artifacts: None,
        }
    }

    fn valid_rows(count: usize) -> Rows {
        let mut rows = Rows::new(true);
        for _ in 0..count {
            rows.push_valid();
        }
        rows
    }

    /// One image per row, `n` generations asked.
    fn one_each(count: usize) -> Vec<Answer> {
        (0..count)
            .map(|start| Answer::Images { start, found: 1 })
            .collect()
    }

    fn n(count: usize) -> Generations {
        Generations::new(count).unwrap()
    }

    fn strings(array: &ArrayRef) -> Vec<Option<String>> {
        let array = array.as_any().downcast_ref::<StringArray>().unwrap();
        array.iter().map(|v| v.map(str::to_owned)).collect()
    }

    fn failures(columns: &Columns) -> Vec<(usize, usize, &str)> {
        columns
            .failures
            .iter()
            .map(|f| (f.row, f.generation, f.error.as_str()))
            .collect()
    }

    #[test]
    fn images_become_bytes_and_raw_output_refers_to_them() {
        let (payloads, images) = images(&[
            (Payload::Text(b"YWJj"), "\"seed\":1"),
            (Payload::Bytes(b"xyz"), ""),
        ]);
        let rows = valid_rows(2);
        let answers = one_each(2);
        let plan = Plan::new(&rows, &answers, n(1)).unwrap();
        let columns = build(&payloads, &images, &plan, &[None, None], &options(true)).unwrap();
        let bytes = columns
            .image
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        assert_eq!(bytes.value(0), b"abc");
        assert_eq!(bytes.value(1), b"xyz");
        let raw = strings(columns.raw_output.as_ref().unwrap());
        assert_eq!(
            raw[0].as_deref(),
            Some(
                "{\"images\":[\"sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad\"],\"seed\":1}"
            )
        );
        assert_eq!(columns.error.null_count(), 2);
        assert!(columns.failures.is_empty());
    }

    #[test]
    fn a_bad_image_fails_its_cell_with_its_payload_inline() {
        let (payloads, images) = images(&[(Payload::Text(b"not base64!"), "")]);
        let rows = valid_rows(1);
        let answers = one_each(1);
        let plan = Plan::new(&rows, &answers, n(2)).unwrap();
        let columns = build(&payloads, &images, &plan, &[None], &options(true)).unwrap();
        assert_eq!(columns.image.null_count(), 2);
        let bad =
            "image 0 of the model's answer is not valid base64 (Invalid symbol 32, offset 3.)";
        let fewer = "the model returned 1 image(s) for 2 generation(s)";
        assert_eq!(
            strings(&columns.error),
            vec![Some(bad.to_owned()), Some(fewer.to_owned())]
        );
        assert_eq!(
            strings(columns.raw_output.as_ref().unwrap()),
            vec![Some("{\"images\":[\"not base64!\"]}".to_owned()), None]
        );
        assert_eq!(failures(&columns), vec![(0, 0, bad), (0, 1, fewer)]);
    }

    #[test]
    fn invalid_rows_and_failed_answers_fail_every_generation() {
        let (payloads, images) = images(&[(Payload::Bytes(b"xyz"), "")]);
        let mut rows = Rows::new(true);
        let problem = RowProblem {
            message: "row 0 of the batch is a int, not a mapping".to_owned(),
            column: None,
        };
        rows.push_invalid(problem).unwrap();
        rows.push_valid();
        rows.push_valid();
        let answers = [
            Answer::Failed {
                error: "the model returned no answer for this input".to_owned(),
            },
            Answer::Images { start: 0, found: 1 },
        ];
        let plan = Plan::new(&rows, &answers, n(1)).unwrap();
        let raw = [Some("[1]".to_owned()), None];
        let columns = build(&payloads, &images, &plan, &raw, &options(true)).unwrap();
        assert_eq!(
            failures(&columns),
            vec![
                (0, 0, "row 0 of the batch is a int, not a mapping"),
                (1, 0, "the model returned no answer for this input"),
            ]
        );
        assert_eq!(
            strings(columns.raw_output.as_ref().unwrap()),
            vec![
                None,
                Some("[1]".to_owned()),
                Some(
                    "{\"images\":[\"sha256:3608bca1e44ea6c4d268eb6db02260269892c0b42b86bbf1e77a6fa16c3c9282\"]}"
                        .to_owned()
                )
            ]
        );
        assert_eq!(columns.image.null_count(), 2);
    }

    #[test]
    fn artifacts_are_written_and_their_paths_recorded() {
        let dir = std::env::temp_dir().join(format!("imagetask-columns-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let (payloads, images) = images(&[
            (Payload::Bytes(b"GIF89a-1"), ""),
            (Payload::Bytes(b"??"), ""),
        ]);
        let opts = Options {
            raw_output: false,
            inline_raw_images: false,
            artifacts: Some(Destination {
                folder: dir.clone(),
                prefix: "images".to_owned(),
            }),
        };
        let rows = valid_rows(2);
        let answers = one_each(2);
        let plan = Plan::new(&rows, &answers, n(1)).unwrap();
        let columns = build(&payloads, &images, &plan, &[None, None], &opts).unwrap();
        let paths = strings(columns.image_path.as_ref().unwrap());
        let name = artifacts::file_name(b"GIF89a-1").unwrap();
        assert_eq!(paths, vec![Some(format!("images/{name}")), None]);
        assert_eq!(std::fs::read(dir.join(&name)).unwrap(), b"GIF89a-1");
        assert_eq!(
            failures(&columns),
            vec![(
                1,
                0,
                "the image artifact was not saved: the image bytes are in no known image format (first bytes: 3f 3f)"
            )]
        );
        // The image stays in its row.
        assert_eq!(columns.image.null_count(), 0);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_image_kept_in_its_file_records_its_path_and_holds_no_bytes() {
        let (mut payloads, mut images) =
            images(&[(Payload::Bytes(b"GIF89a-1"), ""), (Payload::Bytes(b""), "")]);
        let sha256 = [7u8; 32];
        payloads[1] = Err(payload::Problem::Empty);
        images[1].file = Some(Box::new(ImageFile {
            recorded: "images/kept.png".to_owned(),
            sha256,
        }));
        let rows = valid_rows(2);
        let answers = one_each(2);
        let plan = Plan::new(&rows, &answers, n(1)).unwrap();
        let columns = build(&payloads, &images, &plan, &[None, None], &options(true)).unwrap();
        let bytes = columns
            .image
            .as_any()
            .downcast_ref::<BinaryArray>()
            .unwrap();
        assert_eq!(bytes.value(0), b"GIF89a-1");
        assert!(bytes.is_null(1));
        assert_eq!(columns.image_valid.map(|valid| valid.null_count()), Some(0));
        let paths = strings(columns.image_path.as_ref().unwrap());
        assert_eq!(paths, vec![None, Some("images/kept.png".to_owned())]);
        let raw = strings(columns.raw_output.as_ref().unwrap());
        assert_eq!(
            raw[1].as_deref(),
            Some(format!("{{\"images\":[\"sha256:{}\"]}}", "07".repeat(32)).as_str())
        );
        assert!(columns.failures.is_empty());
    }

    #[test]
    fn a_constant_column_repeats_its_text() {
        let names = constant("model", 3).unwrap();
        assert_eq!(names.iter().collect::<Vec<_>>(), vec![Some("model"); 3]);
        assert_eq!(constant("m", 0).unwrap().len(), 0);
        let long = "m".repeat(1 << 20);
        let refused = constant(&long, 2048).unwrap_err();
        assert!(refused.contains("2147483648 bytes"), "{refused}");
    }
}
