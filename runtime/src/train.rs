//! Helpers for training loops over classification data.

use ndarray::s;

use crate::data::Dataset;
use crate::error::Result;
use crate::network::Trainable;
use crate::target::Target;

/// A network's mean loss and accuracy over a data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Evaluation {
    /// The mean loss per sample.
    pub loss: f64,
    /// The fraction of samples classified correctly.
    pub accuracy: f64,
}

/// Evaluates `net` on all of `data`, `chunk` samples at a time (one evaluation pass per chunk,
/// [`Trainable::eval_loss`]: running statistics, no dropout, nothing kept).
///
/// A chunk equal to the training batch size keeps the network's buffers at that size, so nothing
/// is reallocated between training and evaluation.
pub fn evaluate<N>(net: &mut N, data: &Dataset, chunk: usize) -> Result<Evaluation>
where
    N: for<'t> Trainable<Elem = f32, Targets<'t> = &'t [usize]>,
{
    let chunk = chunk.max(1);
    let mut loss = 0.0;
    let mut correct = 0;
    let mut start = 0;
    while start < data.len() {
        let end = (start + chunk).min(data.len());
        let x = data.images().slice_move(s![start..end, ..]);
        let t = &data.labels()[start..end];
        loss += f64::from(net.eval_loss(x, t)?) * (end - start) as f64;
        correct += Target::<f32>::correct(&t, net.output());
        start = end;
    }
    let n = data.len().max(1) as f64;
    Ok(Evaluation {
        loss: loss / n,
        accuracy: correct as f64 / n,
    })
}
