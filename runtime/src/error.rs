/// What can go wrong when a network runs: every case names what was expected and what came.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The input batch has the wrong number of columns.
    #[error(
        "{network} takes {expected} input features per sample, but the input has {actual} columns"
    )]
    InputWidth {
        network: &'static str,
        expected: usize,
        actual: usize,
    },
    /// The input batch has no rows.
    #[error("{network} was given an empty batch (0 rows); give it at least one sample")]
    EmptyBatch { network: &'static str },
    /// The targets do not have one entry per sample.
    #[error("the input batch has {samples} samples, but there are {targets} targets")]
    TargetCount { samples: usize, targets: usize },
    /// Target values have the wrong number of columns.
    #[error(
        "{network} produces {expected} outputs per sample, but the targets have {actual} columns"
    )]
    TargetWidth {
        network: &'static str,
        expected: usize,
        actual: usize,
    },
    /// A class index is not below the number of classes.
    #[error("target {row} is class {class}, but {network} has {classes} classes (0 to {max})", max = classes - 1)]
    ClassOutOfRange {
        network: &'static str,
        row: usize,
        class: usize,
        classes: usize,
    },
    /// `backward` was called without a `loss` call on the current batch.
    #[error("backward needs a loss: call loss(x, targets) on the batch first")]
    BackwardBeforeLoss,
    /// A parameter name that the network does not have.
    #[error("{network} has no parameter named {name:?}; it has: {known}")]
    UnknownParam {
        network: &'static str,
        name: String,
        known: String,
    },
    /// A file could not be read or written.
    #[error("cannot {action} {path}: {message}", path = path.display())]
    Io {
        path: std::path::PathBuf,
        action: &'static str,
        message: String,
    },
    /// A checkpoint file is malformed or does not fit the network.
    #[error("checkpoint {path}: {problem}", path = path.display())]
    Checkpoint {
        path: std::path::PathBuf,
        problem: String,
    },
}

/// `Result` with chainrule's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
