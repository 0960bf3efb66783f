//! Data loading: MNIST in IDX files, raw or gzip-compressed, and shuffled mini-batches.
//!
//! - [`read_idx_images`] and [`read_idx_labels`] read IDX files of unsigned bytes, checking the
//!   magic number, the dimensions and the exact length against the header. A file whose first two
//!   bytes are gzip's magic (`1f 8b`) is decompressed on the way, whatever its name.
//! - [`load_mnist`] reads the four MNIST files from a directory into a [`Mnist`] of two
//!   [`Dataset`]s: pixels scaled to `[0, 1]` as `f32`, labels as `usize` class indices.
//! - [`Batches`] deals a data set out in mini-batches, in an order drawn from a seeded generator,
//!   copying each batch into buffers it keeps, so a training loop allocates nothing per batch.
//!
//! Nothing here panics on bad input: a missing, truncated, over-long or damaged file, a wrong magic
//! number, mismatched counts or a label out of range is a [`DataError`] that names the file and the
//! problem.
//!
//! ```no_run
//! use chainrule_runtime::data::{Batches, load_mnist};
//!
//! let mnist = load_mnist("shared/data/mnist")?;
//! let mut batches = Batches::new(&mnist.train, 100, 42)?;
//! for _epoch in 0..3 {
//!     while let Some((x, t)) = batches.next_batch() {
//!         // net.gradient(x, t)?; optimizer.step(&mut net);
//!         assert_eq!((x.nrows(), t.len()), (100, 100));
//!     }
//! }
//! # Ok::<(), chainrule_runtime::DataError>(())
//! ```

use std::fs::File;
use std::io::{self, BufReader, Read, Seek};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;
use ndarray::{Array2, ArrayView2, s};
use rand::rngs::Xoshiro256PlusPlus;
use rand::seq::SliceRandom;
use rand::{RngExt, SeedableRng};

pub use crate::error::{DataError, IdxKind};

/// The side of an MNIST image in pixels: images are 28×28.
pub const MNIST_SIDE: usize = 28;
/// Pixels per MNIST image, the width of a [`Dataset`] loaded by [`load_mnist`]: 784.
pub const MNIST_PIXELS: usize = MNIST_SIDE * MNIST_SIDE;
/// The number of MNIST classes, the digits 0 to 9.
pub const MNIST_CLASSES: usize = 10;

/// The standard names of the four MNIST files, without `.gz`: training images, training labels,
/// test images, test labels.
pub const MNIST_FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

/// The most a reader reserves up front for a gzip-compressed file's contents, whose size is known
/// only once it is decompressed: 64 MiB, more than MNIST's largest file (47 MB). Beyond it the
/// buffer grows with the data actually there, so a header that claims a huge count cannot make the
/// reader allocate memory the file does not fill.
const MAX_RESERVE: u64 = 64 << 20;

/// The contents of an IDX image file: `count` images of `rows`×`cols` pixels, one byte each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxImages {
    /// The number of images.
    pub count: usize,
    /// Rows per image.
    pub rows: usize,
    /// Columns per image.
    pub cols: usize,
    /// `count·rows·cols` pixels: row by row, image after image; 0 is background, 255 full ink.
    pub pixels: Vec<u8>,
}

/// Reads an IDX image file (magic number 2051), raw or gzip-compressed.
///
/// Errs, naming the file, if it is missing or unreadable, does not decompress, has another magic
/// number, gives images no rows or columns, or is shorter or longer than its header says.
pub fn read_idx_images(path: impl AsRef<Path>) -> Result<IdxImages, DataError> {
    let idx = read_idx(path.as_ref(), IdxKind::Images)?;
    Ok(IdxImages {
        count: idx.count as usize,
        rows: idx.rows as usize,
        cols: idx.cols as usize,
        pixels: idx.body,
    })
}

/// Reads an IDX label file (magic number 2049), raw or gzip-compressed: one byte per label.
///
/// Errs, naming the file, if it is missing or unreadable, does not decompress, has another magic
/// number, or is shorter or longer than its header says. Labels are not range-checked here (IDX
/// allows any byte); [`Dataset::from_mnist_files`] checks them against MNIST's ten classes.
pub fn read_idx_labels(path: impl AsRef<Path>) -> Result<Vec<u8>, DataError> {
    Ok(read_idx(path.as_ref(), IdxKind::Labels)?.body)
}

/// A checked IDX file: its header fields and its data.
struct Idx {
    count: u32,
    rows: u32,
    cols: u32,
    body: Vec<u8>,
}

/// An open IDX file, decompressing if it is gzip.
struct Source {
    reader: Box<dyn Read>,
    compressed: bool,
    /// The size on disk, a bound for how much to reserve for a raw file.
    file_len: u64,
}

impl Source {
    fn open(path: &Path) -> Result<Source, DataError> {
        let io_err = |source: io::Error| DataError::Io {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(|source| match source.kind() {
            io::ErrorKind::NotFound => DataError::NotFound {
                path: path.to_owned(),
            },
            _ => io_err(source),
        })?;
        let file_len = file.metadata().map_err(io_err)?.len();
        let mut magic = [0u8; 2];
        let got = read_full(&mut file, &mut magic).map_err(io_err)?;
        file.rewind().map_err(io_err)?;
        let compressed = got == 2 && magic == [0x1f, 0x8b];
        let reader: Box<dyn Read> = if compressed {
            Box::new(MultiGzDecoder::new(BufReader::new(file)))
        } else {
            Box::new(BufReader::new(file))
        };
        Ok(Source {
            reader,
            compressed,
            file_len,
        })
    }
}

/// Reads and checks one IDX file of `kind`.
fn read_idx(path: &Path, kind: IdxKind) -> Result<Idx, DataError> {
    let mut src = Source::open(path)?;
    let compressed = src.compressed;
    // Read errors inside a gzip stream mean bad compressed data far more often than a failing disk.
    let read_err = |source: io::Error| {
        if compressed {
            DataError::Gzip {
                path: path.to_owned(),
                source,
            }
        } else {
            DataError::Io {
                path: path.to_owned(),
                source,
            }
        }
    };

    let need = kind.header_len();
    let mut header = [0u8; 16];
    let got = read_full(&mut src.reader, &mut header[..need]).map_err(read_err)?;
    // The magic number first: for a file of another kind or format, that is the useful message.
    if got >= 4 {
        let found = be_u32(&header, 0);
        if found != kind.magic() {
            return Err(DataError::BadMagic {
                path: path.to_owned(),
                kind,
                found,
            });
        }
    }
    if got < need {
        return Err(DataError::ShortHeader {
            path: path.to_owned(),
            kind,
            len: got as u64,
            need,
            compressed,
        });
    }
    let count = be_u32(&header, 4);
    let (rows, cols) = match kind {
        IdxKind::Images => (be_u32(&header, 8), be_u32(&header, 12)),
        IdxKind::Labels => (1, 1),
    };
    if rows == 0 || cols == 0 {
        return Err(DataError::BadDimensions {
            path: path.to_owned(),
            rows,
            cols,
        });
    }
    let too_large = || DataError::TooLarge {
        path: path.to_owned(),
        kind,
        count,
        rows,
        cols,
    };
    let body_len = u64::from(count)
        .checked_mul(u64::from(rows))
        .and_then(|n| n.checked_mul(u64::from(cols)))
        .ok_or_else(too_large)?;
    let expected = body_len + need as u64;
    let body_cap = usize::try_from(body_len).map_err(|_| too_large())?;

    // Reserve no more than the file can hold: what is on disk for a raw file, a fixed bound for a
    // compressed one; read one byte past the end to tell an over-long file.
    let bound = if compressed {
        MAX_RESERVE
    } else {
        src.file_len
    };
    let reserve = usize::try_from(body_len.min(bound)).unwrap_or(0);
    let mut body = Vec::with_capacity(reserve);
    (&mut src.reader)
        .take(body_len + 1)
        .read_to_end(&mut body)
        .map_err(read_err)?;
    let actual_body = body.len() as u64;
    if actual_body < body_len {
        return Err(DataError::Truncated {
            path: path.to_owned(),
            kind,
            count,
            expected,
            actual: need as u64 + actual_body,
            compressed,
        });
    }
    if actual_body > body_len {
        // Count the rest without keeping it, to say how long the file really is.
        let rest = io::copy(&mut src.reader, &mut io::sink()).map_err(read_err)?;
        return Err(DataError::TooLong {
            path: path.to_owned(),
            kind,
            count,
            expected,
            actual: need as u64 + actual_body + rest,
            compressed,
        });
    }
    debug_assert_eq!(body.len(), body_cap);
    Ok(Idx {
        count,
        rows,
        cols,
        body,
    })
}

/// Reads until `buf` is full or the input ends; returns how many bytes were read.
fn read_full(reader: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The big-endian `u32` at `at` in the 16-byte header buffer (`at` is at most 12).
fn be_u32(header: &[u8; 16], at: usize) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&header[at..at + 4]);
    u32::from_be_bytes(word)
}

/// Labelled samples: one image per row of `images`, each with a class index in `labels`.
///
/// The two always have the same length; a data set loaded from MNIST has 784 columns (28×28
/// pixels, row by row) scaled from bytes to `[0, 1]`, and labels 0 to 9.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Array2<f32>,
    labels: Vec<usize>,
}

impl Dataset {
    /// A data set from images (one sample per row) and their labels; errs unless there is exactly
    /// one label per row.
    pub fn new(images: Array2<f32>, labels: Vec<usize>) -> Result<Dataset, DataError> {
        if images.nrows() != labels.len() {
            return Err(DataError::LabelCount {
                images: images.nrows(),
                labels: labels.len(),
            });
        }
        Ok(Dataset { images, labels })
    }

    /// Reads an MNIST image file and its label file (each raw or gzip-compressed) into a data set.
    ///
    /// Errs, naming the file, for anything [`read_idx_images`] or [`read_idx_labels`] rejects, for
    /// images that are not 28×28, for a label above 9, and when the counts of images and labels
    /// differ.
    pub fn from_mnist_files(
        images: impl AsRef<Path>,
        labels: impl AsRef<Path>,
    ) -> Result<Dataset, DataError> {
        let (images_path, labels_path) = (images.as_ref(), labels.as_ref());
        let images = read_idx_images(images_path)?;
        if (images.rows, images.cols) != (MNIST_SIDE, MNIST_SIDE) {
            return Err(DataError::NotMnistSize {
                path: images_path.to_owned(),
                rows: images.rows as u32,
                cols: images.cols as u32,
            });
        }
        let labels = read_idx_labels(labels_path)?;
        if images.count != labels.len() {
            return Err(DataError::CountMismatch {
                images_path: images_path.to_owned(),
                images: images.count,
                labels_path: labels_path.to_owned(),
                labels: labels.len(),
            });
        }
        if let Some(index) = labels.iter().position(|&l| usize::from(l) >= MNIST_CLASSES) {
            return Err(DataError::LabelOutOfRange {
                path: labels_path.to_owned(),
                index,
                label: labels[index],
            });
        }
        let pixels: Vec<f32> = images
            .pixels
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect();
        let images = Array2::from_shape_vec((images.count, MNIST_PIXELS), pixels)
            .expect("the reader checked count·rows·cols against the data");
        Dataset::new(images, labels.into_iter().map(usize::from).collect())
    }

    /// The number of samples.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether there are no samples.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Features per sample: the number of columns of the images (784 for MNIST).
    pub fn features(&self) -> usize {
        self.images.ncols()
    }

    /// The images, one sample per row: what a network's `forward` or `accuracy` takes.
    pub fn images(&self) -> ArrayView2<'_, f32> {
        self.images.view()
    }

    /// The labels, one class index per sample: what a classifier's loss or `accuracy` takes.
    pub fn labels(&self) -> &[usize] {
        &self.labels
    }

    /// How many samples have each label: entry `c` counts label `c`, for `c` up to the largest
    /// label (empty for an empty data set).
    pub fn label_counts(&self) -> Vec<usize> {
        let classes = self.labels.iter().max().map_or(0, |&m| m + 1);
        let mut counts = vec![0; classes];
        for &l in &self.labels {
            counts[l] += 1;
        }
        counts
    }

    /// The first `n` samples (all of them if there are fewer), for quick runs.
    pub fn take(&self, n: usize) -> Dataset {
        let n = n.min(self.len());
        Dataset {
            images: self.images.slice(s![..n, ..]).to_owned(),
            labels: self.labels[..n].to_vec(),
        }
    }

    /// The samples at `indices`, in that order (repeats allowed); errs if an index is out of range.
    pub fn subset(&self, indices: &[usize]) -> Result<Dataset, DataError> {
        if let Some(&index) = indices.iter().find(|&&i| i >= self.len()) {
            return Err(DataError::IndexOutOfRange {
                index,
                len: self.len(),
            });
        }
        let mut images = Array2::zeros((indices.len(), self.features()));
        for (mut row, &i) in images.rows_mut().into_iter().zip(indices) {
            row.assign(&self.images.row(i));
        }
        let labels = indices.iter().map(|&i| self.labels[i]).collect();
        Ok(Dataset { images, labels })
    }

    /// Shuffled mini-batches of this data set: [`Batches::new`].
    pub fn batches(&self, batch_size: usize, seed: u64) -> Result<Batches<'_>, DataError> {
        Batches::new(self, batch_size, seed)
    }

    /// The images and labels, to use without the data set.
    pub fn into_parts(self) -> (Array2<f32>, Vec<usize>) {
        (self.images, self.labels)
    }
}

/// MNIST: 60,000 training samples and 10,000 test samples.
#[derive(Debug, Clone, PartialEq)]
pub struct Mnist {
    /// The training set (`train-*` files).
    pub train: Dataset,
    /// The test set (`t10k-*` files).
    pub test: Dataset,
}

/// Loads MNIST from the four standard files in `dir`; see [`mnist_file`] for the names accepted.
///
/// Errs, naming the file and the problem, if a file is missing or fails any of the checks of
/// [`Dataset::from_mnist_files`].
pub fn load_mnist(dir: impl AsRef<Path>) -> Result<Mnist, DataError> {
    let dir = dir.as_ref();
    let [train_images, train_labels, test_images, test_labels] =
        MNIST_FILES.map(|name| mnist_file(dir, name));
    Ok(Mnist {
        train: Dataset::from_mnist_files(train_images?, train_labels?)?,
        test: Dataset::from_mnist_files(test_images?, test_labels?)?,
    })
}

/// Finds the MNIST file called `name` (one of [`MNIST_FILES`]) in `dir`, raw or compressed.
///
/// Tries, in this order: `name`, `name.gz`, then the same with the original files' inner names,
/// which have a dot before `idx` (`train-images.idx3-ubyte`, what `gunzip -N` restores). The first
/// that exists wins, so an uncompressed copy, quicker to read, is preferred to the `.gz` beside it.
/// Errs, listing every name tried, if none exists.
pub fn mnist_file(dir: impl AsRef<Path>, name: &str) -> Result<PathBuf, DataError> {
    let dir = dir.as_ref();
    let dotted = name.replacen("-idx", ".idx", 1);
    let mut candidates = vec![name.to_owned(), format!("{name}.gz")];
    if dotted != name {
        candidates.push(dotted.clone());
        candidates.push(format!("{dotted}.gz"));
    }
    for candidate in &candidates {
        let path = dir.join(candidate);
        if path.is_file() {
            return Ok(path);
        }
    }
    Err(DataError::MissingFile {
        dir: dir.to_owned(),
        what: mnist_what(name),
        tried: candidates.join(", "),
    })
}

/// What a standard MNIST file holds, in words.
fn mnist_what(name: &str) -> &'static str {
    match name {
        "train-images-idx3-ubyte" => "training-image",
        "train-labels-idx1-ubyte" => "training-label",
        "t10k-images-idx3-ubyte" => "test-image",
        "t10k-labels-idx1-ubyte" => "test-label",
        _ => "data",
    }
}

/// How [`Batches`] picks the samples of each mini-batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sampling {
    /// Every epoch visits each sample exactly once, in a fresh random order (the permutation is
    /// reshuffled at the start of each epoch). The last batch of an epoch holds the remainder and
    /// is smaller when the batch size does not divide the number of samples. The default.
    #[default]
    Shuffle,
    /// As [`Sampling::Shuffle`], but the last, partial batch of an epoch is dropped, so every
    /// batch has the same number of rows (the network then never resizes its buffers). The
    /// samples dropped differ from epoch to epoch.
    ShuffleDropLast,
    /// The book's way (`np.random.choice(train_size, batch_size)`): each batch is drawn
    /// independently and uniformly with replacement, so a sample can appear twice in a batch or
    /// not at all in an epoch. An epoch is `max(n / batch_size, 1)` batches, the book's
    /// `iter_per_epoch`.
    WithReplacement,
}

/// Mini-batches of a [`Dataset`], in an order drawn from a seeded xoshiro256++ generator.
///
/// [`next_batch`](Batches::next_batch) copies each batch into buffers the `Batches` owns and lends
/// them out, so after construction it allocates nothing. It returns `None` once at the end of each
/// epoch; the call after that starts the next epoch with a new order. The same data set size,
/// batch size, [`Sampling`] and seed give the same batches, bit for bit, on every platform (rand's
/// shuffle and range sampling are portable; a new major version of rand may change them).
///
/// ```
/// use chainrule_runtime::data::{Batches, Dataset};
/// use ndarray::Array2;
///
/// let data = Dataset::new(Array2::zeros((10, 4)), (0..10).map(|i| i % 3).collect())?;
/// let mut batches = Batches::new(&data, 4, 7)?;
/// let mut sizes = Vec::new();
/// while let Some((x, t)) = batches.next_batch() {
///     assert_eq!(x.nrows(), t.len());
///     sizes.push(t.len());
/// }
/// assert_eq!(sizes, [4, 4, 2]);
/// assert_eq!(batches.epochs_done(), 1);
/// # Ok::<(), chainrule_runtime::DataError>(())
/// ```
#[derive(Debug, Clone)]
pub struct Batches<'d> {
    data: &'d Dataset,
    sampling: Sampling,
    batch_size: usize,
    rng: Xoshiro256PlusPlus,
    /// The epoch's permutation of the sample indices (the shuffling modes).
    order: Vec<usize>,
    /// The sample indices of the current batch.
    indices: Vec<usize>,
    x: Array2<f32>,
    t: Vec<usize>,
    /// Batches given out in the current epoch.
    batch: usize,
    in_epoch: bool,
    epochs_done: usize,
}

impl<'d> Batches<'d> {
    /// Batches of `batch_size` samples of `data`, reshuffled every epoch ([`Sampling::Shuffle`]),
    /// from a generator seeded by `seed`.
    ///
    /// Errs if `batch_size` is 0 or `data` is empty. A batch size above the number of samples
    /// gives one batch of all of them per epoch.
    pub fn new(data: &'d Dataset, batch_size: usize, seed: u64) -> Result<Self, DataError> {
        Batches::with_sampling(data, batch_size, seed, Sampling::Shuffle)
    }

    /// Batches drawn as `sampling` says; errs as [`Batches::new`] does, and for
    /// [`Sampling::ShuffleDropLast`] if `batch_size` exceeds the number of samples (no batch would
    /// be full).
    pub fn with_sampling(
        data: &'d Dataset,
        batch_size: usize,
        seed: u64,
        sampling: Sampling,
    ) -> Result<Self, DataError> {
        if batch_size == 0 {
            return Err(DataError::ZeroBatchSize);
        }
        let n = data.len();
        if n == 0 {
            return Err(DataError::EmptyDataset);
        }
        let (order, rows) = match sampling {
            Sampling::Shuffle => ((0..n).collect(), batch_size.min(n)),
            Sampling::ShuffleDropLast => {
                if batch_size > n {
                    return Err(DataError::NoFullBatch { batch_size, len: n });
                }
                ((0..n).collect(), batch_size)
            }
            Sampling::WithReplacement => (Vec::new(), batch_size),
        };
        Ok(Batches {
            data,
            sampling,
            batch_size,
            rng: Xoshiro256PlusPlus::seed_from_u64(seed),
            order,
            indices: Vec::with_capacity(rows),
            x: Array2::zeros((rows, data.features())),
            t: Vec::with_capacity(rows),
            batch: 0,
            in_epoch: false,
            epochs_done: 0,
        })
    }

    /// The next mini-batch of the epoch, as images (one sample per row) and their labels, or
    /// `None` at the end of the epoch; the call after a `None` starts a new epoch.
    ///
    /// The batch lives in buffers owned by `self` and stays valid until the next call. Every
    /// batch has `batch_size` rows except, with [`Sampling::Shuffle`], the last of an epoch.
    pub fn next_batch(&mut self) -> Option<(ArrayView2<'_, f32>, &[usize])> {
        if !self.in_epoch {
            self.in_epoch = true;
            self.batch = 0;
            if self.sampling != Sampling::WithReplacement {
                self.order.shuffle(&mut self.rng);
            }
        }
        if self.batch == self.batches_per_epoch() {
            self.in_epoch = false;
            self.epochs_done += 1;
            return None;
        }
        let n = self.data.len();
        self.indices.clear();
        match self.sampling {
            Sampling::Shuffle | Sampling::ShuffleDropLast => {
                let start = self.batch * self.batch_size;
                let end = (start + self.batch_size).min(n);
                self.indices.extend_from_slice(&self.order[start..end]);
            }
            Sampling::WithReplacement => {
                for _ in 0..self.batch_size {
                    self.indices.push(self.rng.random_range(0..n));
                }
            }
        }
        self.batch += 1;

        self.t.clear();
        for (mut row, &i) in self.x.rows_mut().into_iter().zip(&self.indices) {
            row.assign(&self.data.images.row(i));
            self.t.push(self.data.labels[i]);
        }
        let rows = self.indices.len();
        Some((self.x.slice(s![..rows, ..]), &self.t))
    }

    /// The sample indices (rows of the data set) of the batch last returned.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// Batches per epoch: `ceil(n / batch_size)` for [`Sampling::Shuffle`], `n / batch_size` for
    /// [`Sampling::ShuffleDropLast`], `max(n / batch_size, 1)` for [`Sampling::WithReplacement`].
    pub fn batches_per_epoch(&self) -> usize {
        let n = self.data.len();
        match self.sampling {
            Sampling::Shuffle => n.div_ceil(self.batch_size),
            Sampling::ShuffleDropLast => n / self.batch_size,
            Sampling::WithReplacement => (n / self.batch_size).max(1),
        }
    }

    /// Epochs finished so far: how many times [`next_batch`](Batches::next_batch) returned `None`.
    pub fn epochs_done(&self) -> usize {
        self.epochs_done
    }

    /// The batch size asked for.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How samples are picked.
    pub fn sampling(&self) -> Sampling {
        self.sampling
    }

    /// The data set the batches come from.
    pub fn dataset(&self) -> &'d Dataset {
        self.data
    }
}
