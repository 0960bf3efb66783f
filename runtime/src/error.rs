use std::path::PathBuf;

use crate::precision::WeightPrecision;

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
    /// `backward_from` was called before any forward pass that keeps what it needs (`infer`,
    /// `predict` and `accuracy` keep nothing).
    #[error(
        "{network} has no forward pass to backpropagate: call forward or loss first (infer, \
         predict, accuracy and eval_loss keep nothing for a backward pass)"
    )]
    BackwardBeforeForward { network: &'static str },
    /// The gradient handed to `backward_from` does not match the output.
    #[error(
        "the gradient for {network}'s output must be {expected:?} (batch × outputs), but it is {actual:?}"
    )]
    OutputGradShape {
        network: &'static str,
        expected: (usize, usize),
        actual: (usize, usize),
    },
    /// An input that has no gradient.
    #[error(
        "{network} keeps no gradient for an input named {name:?}; inputs with a gradient: {known}"
    )]
    NoInputGrad {
        network: &'static str,
        name: String,
        known: String,
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
    /// A sample's scores hold a NaN, so it has no class.
    #[error(
        "{network}'s scores for sample {row} hold NaN, so it has no class: its input, or a \
         parameter, is not a number (see check_finite)"
    )]
    NanScores { network: &'static str, row: usize },
    /// A parameter holds a value that is not finite: training has diverged.
    #[error(
        "{network}'s {param} holds {value} (element {index}): training has diverged; a smaller \
         learning rate usually helps"
    )]
    NonFinite {
        network: &'static str,
        param: &'static str,
        index: usize,
        value: String,
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
    /// One-sample passes were asked to read the weights in a precision that the network cannot
    /// (see [`Network::set_one_sample_weights`](crate::Network::set_one_sample_weights)).
    #[error("{network} cannot read its weights in {precision}: {reason}")]
    UnsupportedPrecision {
        network: &'static str,
        precision: WeightPrecision,
        reason: &'static str,
    },
    /// An optimiser name that [`Optim::from_name`](crate::optim::Optim::from_name) does not know.
    #[error("there is no optimiser named {name:?}; choose one of: {known}")]
    UnknownOptimizer { name: String, known: String },
    /// A learning-rate [`Schedule`](crate::Schedule) was given a value that makes no schedule.
    #[error("{schedule} schedule: {parameter} must be {requirement}, not {value}")]
    InvalidSchedule {
        schedule: &'static str,
        parameter: &'static str,
        requirement: &'static str,
        value: String,
    },
}

/// `Result` with chainrule's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Which kind of IDX file is being read: it decides the magic number and the header's length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxKind {
    /// Images: magic number 2051 (`0x00000803`), then the count, rows and columns (16 bytes).
    Images,
    /// Labels: magic number 2049 (`0x00000801`), then the count (8 bytes).
    Labels,
}

impl IdxKind {
    /// The magic number this kind of file starts with.
    pub const fn magic(self) -> u32 {
        match self {
            IdxKind::Images => 2051,
            IdxKind::Labels => 2049,
        }
    }

    /// The length of the header in bytes: the magic number and the dimensions, 4 bytes each.
    pub const fn header_len(self) -> usize {
        match self {
            IdxKind::Images => 16,
            IdxKind::Labels => 8,
        }
    }

    /// What one item of the file is called: `"image"` or `"label"`.
    pub const fn item(self) -> &'static str {
        match self {
            IdxKind::Images => "image",
            IdxKind::Labels => "label",
        }
    }
}

impl std::fmt::Display for IdxKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.item())
    }
}

/// What can go wrong when loading a data set: every case names the file and says what is wrong
/// with it, and what to do where there is something to do.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// The file does not exist.
    #[error("{path} does not exist")]
    NotFound { path: PathBuf },
    /// None of the names an MNIST file may have exists in the directory.
    #[error(
        "no MNIST {what} file in {dir}: looked for {tried}; put the four MNIST files there \
         (gzip-compressed or not)"
    )]
    MissingFile {
        dir: PathBuf,
        what: &'static str,
        tried: String,
    },
    /// The file exists but could not be read (permissions, a directory, an I/O error).
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file starts like gzip but does not decompress: it is damaged or cut short.
    #[error(
        "{path} is gzip-compressed but does not decompress ({source}): the file is damaged or \
         cut short; get a fresh copy"
    )]
    Gzip {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file ends before its header does.
    #[error(
        "{path} is too short to be an IDX {kind} file: it has {len} bytes{}, but the header alone \
         takes {need}: the file is cut short, or not an IDX file",
        if *compressed { " after decompression" } else { "" }
    )]
    ShortHeader {
        path: PathBuf,
        kind: IdxKind,
        len: u64,
        need: usize,
        compressed: bool,
    },
    /// The file does not start with the magic number of its kind.
    #[error(
        "{path} is not an IDX {kind} file: it starts with the number {found} (0x{found:08x}) where \
         an IDX {kind} file has the magic number {expected} (0x{expected:08x}){hint}",
        expected = kind.magic(),
        hint = magic_hint(*kind, *found)
    )]
    BadMagic {
        path: PathBuf,
        kind: IdxKind,
        found: u32,
    },
    /// The header gives an image zero rows or zero columns.
    #[error(
        "{path} says its images have {rows}×{cols} pixels; an image needs at least one row and one \
         column, so the header is corrupt"
    )]
    BadDimensions { path: PathBuf, rows: u32, cols: u32 },
    /// The images are not MNIST's 28×28.
    #[error(
        "{path} holds {rows}×{cols} images, but MNIST images are 28×28: is this the right file?"
    )]
    NotMnistSize { path: PathBuf, rows: u32, cols: u32 },
    /// The header claims more data than this machine can address.
    #[error(
        "{path} claims {count} {kind}s{}, more bytes than this machine can address: the header is \
         corrupt",
        dims_note(*kind, *rows, *cols)
    )]
    TooLarge {
        path: PathBuf,
        kind: IdxKind,
        count: u32,
        rows: u32,
        cols: u32,
    },
    /// The file ends before the data its header promises.
    #[error(
        "{path} is truncated: its header promises {count} {kind}s, {expected} bytes in all, but it \
         has only {actual} bytes{}; the file is incomplete (or the count in its header is \
         wrong): get a fresh copy",
        if *compressed { " after decompression" } else { "" }
    )]
    Truncated {
        path: PathBuf,
        kind: IdxKind,
        count: u32,
        expected: u64,
        actual: u64,
        compressed: bool,
    },
    /// The file goes on after the data its header promises.
    #[error(
        "{path} is longer than its header says: {count} {kind}s make {expected} bytes, but it has \
         {actual}{}; either the count in its header or the file is wrong",
        if *compressed { " after decompression" } else { "" }
    )]
    TooLong {
        path: PathBuf,
        kind: IdxKind,
        count: u32,
        expected: u64,
        actual: u64,
        compressed: bool,
    },
    /// An image file and its label file disagree on the number of samples.
    #[error(
        "{images_path} has {images} images but {labels_path} has {labels} labels; they must come \
         in matching pairs (one label per image): are both from the same set?"
    )]
    CountMismatch {
        images_path: PathBuf,
        images: usize,
        labels_path: PathBuf,
        labels: usize,
    },
    /// A label is not a digit 0 to 9.
    #[error(
        "{path}: label {index} is {label}, but MNIST labels are the digits 0 to 9: the file is \
         corrupt or not an MNIST label file"
    )]
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
    },
    /// A data set was given a different number of image rows and labels.
    #[error(
        "a data set needs one label per image, but there are {images} images and {labels} labels"
    )]
    LabelCount { images: usize, labels: usize },
    /// A sample index past the end of the data set.
    #[error("sample index {index} is out of range: the data set has {len} samples")]
    IndexOutOfRange { index: usize, len: usize },
    /// Mini-batches of no samples were asked for.
    #[error("the batch size must be at least 1")]
    ZeroBatchSize,
    /// Mini-batches were asked for from a data set with no samples.
    #[error("cannot draw mini-batches from an empty data set")]
    EmptyDataset,
    /// Only full batches were asked for, but the data set is smaller than one batch.
    #[error(
        "a batch size of {batch_size} leaves no full batch in a data set of {len} samples; use a \
         batch size of at most {len}, or keep the last, partial batch"
    )]
    NoFullBatch { batch_size: usize, len: usize },
}

/// A hint for a wrong magic number that looks like a known mistake.
fn magic_hint(kind: IdxKind, found: u32) -> &'static str {
    let other = match kind {
        IdxKind::Images => IdxKind::Labels,
        IdxKind::Labels => IdxKind::Images,
    };
    if found == other.magic() {
        match other {
            IdxKind::Labels => "; it is an IDX label file: are the image and label files swapped?",
            IdxKind::Images => "; it is an IDX image file: are the image and label files swapped?",
        }
    } else if found.swap_bytes() == kind.magic() {
        "; its header is little-endian, but IDX headers are big-endian: the file was written wrongly"
    } else if found >> 8 == 0x08 {
        "; it is an IDX file of unsigned bytes, but with another number of dimensions"
    } else {
        "; the file is of another format, or damaged"
    }
}

/// `" of R×C pixels"` for images, nothing for labels.
fn dims_note(kind: IdxKind, rows: u32, cols: u32) -> String {
    match kind {
        IdxKind::Images => format!(" of {rows}×{cols} pixels"),
        IdxKind::Labels => String::new(),
    }
}
