//! The plan of a batch: for every input row and generation, the image it gets or why it
//! has none.
//!
//! A batch's rows are read first ([`Rows`]): each is valid (its prompt goes to the model)
//! or invalid (it fails whole). The model answers each valid row ([`Answer`]): some
//! images, or a failure. [`Plan`] puts the two together, row by row and generation by
//! generation ([`Source`]); both encoders of the extension (dict rows and Arrow columns)
//! build their output from it.

mod generations;
mod rows;

use std::fmt;

pub use generations::{Generations, GenerationsOutOfRange, MAX_GENERATIONS};
pub use rows::{AlreadyBuilt, InvalidRow, RefusedRow, RowProblem, Rows};

/// The model's answer for one valid row, as read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Answer {
    /// `found` images (at most the generations asked), from `start` on in the batch's
    /// images.
    Images { start: usize, found: usize },
    /// No usable image: every generation of the row fails with `error`.
    Failed { error: String },
}

/// Why a generation has no image.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Failure<'a> {
    /// The row could not be sent to the model: the problem found when it was read.
    InvalidRow { problem: &'a str },
    /// The model returned fewer images than generations asked.
    FewerImages { found: usize, asked: usize },
    /// The row's answer (the `answer`-th of the batch) failed whole.
    FailedAnswer { answer: usize, error: &'a str },
}

impl fmt::Display for Failure<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::InvalidRow { problem } => f.write_str(problem),
            Failure::FewerImages { found, asked } => write!(
                f,
                "the model returned {found} image(s) for {asked} generation(s)"
            ),
            Failure::FailedAnswer { error, .. } => f.write_str(error),
        }
    }
}

/// What one generation of a row comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source<'a> {
    /// The image at this index of the batch's images.
    Image(usize),
    /// No image, and why.
    Failed(Failure<'a>),
}

/// The answers do not fit the batch: not one per valid row.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnswerCount {
    pub answers: usize,
    pub valid_rows: usize,
}

impl fmt::Display for AnswerCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (answers, rows) = (self.answers, self.valid_rows);
        let which = if answers < rows { "fewer" } else { "more" };
        write!(
            f,
            "{which} answers than rows: {answers} answer(s) for {rows} valid row(s)"
        )
    }
}

impl std::error::Error for AnswerCount {}

/// Every row of a batch with its generations' sources.
#[derive(Clone, Copy, Debug)]
pub struct Plan<'a> {
    rows: &'a Rows,
    answers: &'a [Answer],
    generations: Generations,
}

impl<'a> Plan<'a> {
    /// The plan of `rows` answered by `answers` (one per valid row, in order).
    pub fn new(
        rows: &'a Rows,
        answers: &'a [Answer],
        generations: Generations,
    ) -> Result<Self, AnswerCount> {
        if answers.len() != rows.valid() {
            return Err(AnswerCount {
                answers: answers.len(),
                valid_rows: rows.valid(),
            });
        }
        Ok(Self {
            rows,
            answers,
            generations,
        })
    }

    /// How many generations each row has.
    pub fn generations(&self) -> usize {
        self.generations.get()
    }

    /// How many generations the batch has in all (`rows * generations`).
    pub fn len(&self) -> usize {
        self.rows.len().saturating_mul(self.generations.get())
    }

    /// Whether the batch has no rows.
    pub fn is_empty(&self) -> bool {
        self.rows.len() == 0
    }

    /// The rows, in order.
    pub fn rows(&self) -> impl Iterator<Item = PlannedRow<'a>> + 'a {
        let answers = self.answers;
        let asked = self.generations.get();
        let mut invalid = self.rows.invalid().iter().peekable();
        let mut next_answer = 0;
        (0..self.rows.len()).map(move |index| {
            let kind = match invalid.next_if(|row| row.index == index) {
                Some(row) => RowKind::Invalid {
                    problem: &row.problem,
                },
                None => {
                    let answer = next_answer;
                    next_answer += 1;
                    RowKind::Answered {
                        answer,
                        read: &answers[answer],
                    }
                }
            };
            PlannedRow { index, kind, asked }
        })
    }
}

/// One row of a [`Plan`].
#[derive(Clone, Copy, Debug)]
pub struct PlannedRow<'a> {
    /// The row's index in its batch.
    pub index: usize,
    kind: RowKind<'a>,
    asked: usize,
}

#[derive(Clone, Copy, Debug)]
enum RowKind<'a> {
    Invalid { problem: &'a str },
    Answered { answer: usize, read: &'a Answer },
}

impl<'a> PlannedRow<'a> {
    /// The index of the row's answer (and prompt) among the valid rows; `None` for an
    /// invalid row.
    pub fn answer(&self) -> Option<usize> {
        match self.kind {
            RowKind::Invalid { .. } => None,
            RowKind::Answered { answer, .. } => Some(answer),
        }
    }

    /// The source of generation `k` (below the generations asked).
    pub fn source(&self, k: usize) -> Source<'a> {
        debug_assert!(k < self.asked);
        let failure = match self.kind {
            RowKind::Invalid { problem } => Failure::InvalidRow { problem },
            RowKind::Answered {
                read: Answer::Images { start, found },
                ..
            } => {
                if k < *found {
                    return Source::Image(start + k);
                }
                Failure::FewerImages {
                    found: *found,
                    asked: self.asked,
                }
            }
            RowKind::Answered {
                answer,
                read: Answer::Failed { error },
            } => Failure::FailedAnswer { answer, error },
        };
        Source::Failed(failure)
    }

    /// The sources of the row's generations, in order.
    pub fn sources(self) -> impl Iterator<Item = Source<'a>> {
        (0..self.asked).map(move |k| self.source(k))
    }
}

#[cfg(test)]
mod tests;
