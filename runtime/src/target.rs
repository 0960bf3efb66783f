use ndarray::{ArrayView1, ArrayView2};

use crate::element::Element;
use crate::error::{Error, Result};

/// What a loss compares the network's output with: class indices (`&[usize]`, for
/// `softmax_cross_entropy`) or target values (`ArrayView2`, for `mse`).
pub trait Target<T: Element>: Copy {
    /// Checks that there is one target per sample and that each fits the network's `outputs`.
    fn check(&self, network: &'static str, samples: usize, outputs: usize) -> Result<()>;

    /// How many rows of `scores` pick the target's class (for values: the column of the largest
    /// target, as the book's `accuracy` does for one-hot targets).
    fn correct(&self, scores: ArrayView2<T>) -> usize;
}

impl<T: Element> Target<T> for &[usize] {
    fn check(&self, network: &'static str, samples: usize, outputs: usize) -> Result<()> {
        if self.len() != samples {
            return Err(Error::TargetCount {
                samples,
                targets: self.len(),
            });
        }
        match self.iter().position(|&class| class >= outputs) {
            Some(row) => Err(Error::ClassOutOfRange {
                network,
                row,
                class: self[row],
                classes: outputs,
            }),
            None => Ok(()),
        }
    }

    fn correct(&self, scores: ArrayView2<T>) -> usize {
        scores
            .rows()
            .into_iter()
            .zip(self.iter())
            // A row holding a NaN picks no class.
            .filter(|(row, class)| {
                argmax(*row) == **class && !row.iter().any(|v| num_traits::Float::is_nan(*v))
            })
            .count()
    }
}

impl<T: Element> Target<T> for ArrayView2<'_, T> {
    fn check(&self, network: &'static str, samples: usize, outputs: usize) -> Result<()> {
        if self.nrows() != samples {
            return Err(Error::TargetCount {
                samples,
                targets: self.nrows(),
            });
        }
        if self.ncols() != outputs {
            return Err(Error::TargetWidth {
                network,
                expected: outputs,
                actual: self.ncols(),
            });
        }
        Ok(())
    }

    fn correct(&self, scores: ArrayView2<T>) -> usize {
        scores
            .rows()
            .into_iter()
            .zip(self.rows())
            .filter(|(y, t)| {
                argmax(*y) == argmax(*t) && !y.iter().any(|v| num_traits::Float::is_nan(*v))
            })
            .count()
    }
}

/// The column of the largest value in each row (the first one on ties).
pub fn argmax_rows<T: Element>(y: ArrayView2<T>) -> Vec<usize> {
    y.rows().into_iter().map(argmax).collect()
}

/// The column of the largest value in `row` (the first one on ties).
pub(crate) fn argmax<T: Element>(row: ArrayView1<T>) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}
