//! The rows of a batch as read before the model is called: which are valid, which are
//! not and why, and whether the batch was built.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// A row that cannot be sent to the model.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InvalidRow {
    /// The row's index in its batch.
    pub index: usize,
    /// What is wrong with it (the message names the row).
    pub problem: String,
}

/// What is wrong with an input row: the message (naming the row) and the column at
/// fault, when one is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RowProblem {
    pub message: String,
    pub column: Option<String>,
}

/// An input row refused: the batch does not pass invalid rows on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefusedRow {
    pub index: usize,
    pub problem: RowProblem,
}

/// A prepared batch was given to be built a second time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AlreadyBuilt;

impl fmt::Display for AlreadyBuilt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a prepared batch can be built only once")
    }
}

impl std::error::Error for AlreadyBuilt {}

/// The rows of a prepared batch, read in order.
#[derive(Debug, Default)]
pub struct Rows {
    pass_invalid: bool,
    len: usize,
    invalid: Vec<InvalidRow>,
    built: AtomicBool,
}

impl Rows {
    /// No rows yet. With `pass_invalid`, an invalid row fails its generations; without,
    /// it is refused (see [`Rows::push_invalid`]).
    pub fn new(pass_invalid: bool) -> Self {
        Self {
            pass_invalid,
            ..Self::default()
        }
    }

    /// Records the next row, valid.
    pub fn push_valid(&mut self) {
        self.len += 1;
    }

    /// Records the next row, invalid; refused unless invalid rows are passed on.
    pub fn push_invalid(&mut self, problem: RowProblem) -> Result<(), RefusedRow> {
        let index = self.len;
        if !self.pass_invalid {
            return Err(RefusedRow { index, problem });
        }
        self.invalid.push(InvalidRow {
            index,
            problem: problem.message,
        });
        self.len += 1;
        Ok(())
    }

    /// The index the next row gets.
    pub fn next_index(&self) -> usize {
        self.len
    }

    /// How many rows the batch holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the batch holds no rows.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many rows are valid: one answer is expected for each.
    pub fn valid(&self) -> usize {
        self.len - self.invalid.len()
    }

    /// The invalid rows, in order.
    pub fn invalid(&self) -> &[InvalidRow] {
        &self.invalid
    }

    /// Marks the batch built; an error if it already was.
    pub fn start_build(&self) -> Result<(), AlreadyBuilt> {
        if self.built.swap(true, Ordering::AcqRel) {
            Err(AlreadyBuilt)
        } else {
            Ok(())
        }
    }
}
