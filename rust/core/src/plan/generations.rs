//! The number of images asked per input row, bounded.

use std::fmt;

/// The most images a task asks per input row.
pub const MAX_GENERATIONS: usize = 10_000;

/// How many images are asked per input row: between 1 and [`MAX_GENERATIONS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Generations(usize);

impl Generations {
    /// `count` generations, if it is within bounds.
    pub fn new(count: usize) -> Result<Self, GenerationsOutOfRange> {
        if (1..=MAX_GENERATIONS).contains(&count) {
            Ok(Self(count))
        } else {
            Err(GenerationsOutOfRange { count })
        }
    }

    /// The count.
    pub fn get(self) -> usize {
        self.0
    }
}

/// A number of generations out of bounds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GenerationsOutOfRange {
    pub count: usize,
}

impl fmt::Display for GenerationsOutOfRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "num_generations must be between 1 and {MAX_GENERATIONS}, got {}",
            self.count
        )
    }
}

impl std::error::Error for GenerationsOutOfRange {}
