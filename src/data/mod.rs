//! Data sets: Fashion-MNIST and other MNIST-layout IDX directories, and seeded synthetic data;
//! the search order for the data directory; epoch order and batching.
//!
//! Search order for `data: fashion_mnist` without a directory (docs/design.md, "Training runtime
//! and command line"): `--data DIR`, then `$SPARSEC_DATA`, then
//! `/usr/share/datasets/fashion-mnist`, then the subset bundled in the repository
//! (`data/fashion-mnist-subset`), which is said in one line. A directory named explicitly
//! (`--data`, `$SPARSEC_DATA`, `dir:` in the model file) that lacks the files is an error, never a
//! silent fallback.

pub mod idx;
pub mod order;
pub mod rng;

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use sparsec_ir::spec::DataSpec;

pub use order::{epoch_order, fill_batch};

/// Where the system-wide Fashion-MNIST lives (Debian/Ubuntu package `dataset-fashion-mnist`).
pub const SYSTEM_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";
/// The environment variable naming a data directory.
pub const DATA_ENV: &str = "SPARSEC_DATA";
/// The bundled subset, relative to the repository root.
pub const BUNDLED_SUBSET: &str = "data/fashion-mnist-subset";

/// Synthetic sets larger than this many floats are refused (16 GiB).
const MAX_SYNTHETIC_FLOATS: u64 = 1 << 32;
/// Amplitude of the synthetic noise: triangular in `[-NOISE, NOISE]` around the class prototype.
const SYNTHETIC_NOISE: f32 = 0.5;

/// A set of labelled samples, all of one shape.
#[derive(Clone, Debug, PartialEq)]
pub struct Dataset {
    /// `len() × sample_len()` floats, row-major; IDX pixels are scaled to [0, 1] as `x / 255`.
    pub images: Vec<f32>,
    /// One label per sample, each in `0..classes`.
    pub labels: Vec<i32>,
    /// The shape of one sample: the model's input shape (IDX images are reshaped to it).
    pub sample_shape: Vec<usize>,
    pub classes: usize,
}

impl Dataset {
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Floats per sample (the product of `sample_shape`).
    pub fn sample_len(&self) -> usize {
        self.sample_shape.iter().product()
    }

    /// Sample `i`'s floats. Panics if `i >= len()`.
    pub fn sample(&self, i: usize) -> &[f32] {
        let n = self.sample_len();
        &self.images[i * n..(i + 1) * n]
    }

    /// How many samples each class has.
    pub fn class_counts(&self) -> Vec<usize> {
        let mut counts = vec![0; self.classes];
        for &l in &self.labels {
            counts[l as usize] += 1;
        }
        counts
    }
}

/// The training and test sets of a run.
#[derive(Clone, Debug, PartialEq)]
pub struct Splits {
    pub train: Dataset,
    pub test: Dataset,
    /// One line for the user, e.g. `data: Fashion-MNIST from /usr/share/datasets/fashion-mnist
    /// (60000 train, 10000 test)`.
    pub description: String,
    pub source: DataSource,
}

/// Where the data of a run came from (recorded in the run's summary).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DataSource {
    /// Fashion-MNIST from `dir`; `bundled` when it is the small subset shipped in the repository.
    FashionMnist {
        dir: PathBuf,
        bundled: bool,
    },
    Idx {
        dir: PathBuf,
    },
    Synthetic,
}

/// Who named a candidate data directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// `--data DIR` on the command line.
    Cli,
    /// `$SPARSEC_DATA`.
    Env,
    /// `dir:` in the model file.
    ModelFile,
    /// The system-wide install, `/usr/share/datasets/fashion-mnist`.
    System,
    /// The subset bundled in the repository.
    Bundled,
}

impl Origin {
    /// Explicitly named directories must hold the files; the others are only looked at.
    pub fn is_explicit(self) -> bool {
        matches!(self, Origin::Cli | Origin::Env | Origin::ModelFile)
    }
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Origin::Cli => "--data",
            Origin::Env => "$SPARSEC_DATA",
            Origin::ModelFile => "the model file",
            Origin::System => "the system data set",
            Origin::Bundled => "the bundled subset",
        })
    }
}

/// A directory to look for data in, and who named it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub dir: PathBuf,
    pub origin: Origin,
}

/// Everything that can go wrong while finding or reading data. Never a panic.
#[derive(Debug)]
pub enum DataError {
    Io {
        path: PathBuf,
        action: &'static str,
        source: io::Error,
    },
    /// The file is not a valid IDX file of the expected kind.
    Format { path: PathBuf, message: String },
    /// The file ends before the header says it should.
    Truncated {
        path: PathBuf,
        expected: u64,
        actual: u64,
        /// Byte counts are of the decompressed stream (the file is gzip).
        decompressed: bool,
        what: &'static str,
    },
    /// The file goes on after the payload the header announces.
    TrailingData {
        path: PathBuf,
        expected: u64,
        actual: u64,
        decompressed: bool,
    },
    CountMismatch {
        images: PathBuf,
        images_count: usize,
        labels: PathBuf,
        labels_count: usize,
    },
    LabelOutOfRange {
        path: PathBuf,
        index: usize,
        label: u8,
        classes: usize,
    },
    /// The images do not fit the model's input shape.
    ShapeMismatch {
        path: PathBuf,
        image_shape: Vec<usize>,
        input_shape: Vec<usize>,
    },
    /// An explicitly named directory lacks some of the four files.
    MissingFiles {
        dir: PathBuf,
        origin: Origin,
        missing: Vec<String>,
        exists: bool,
    },
    /// The search order found no data anywhere.
    NotFound { tried: Vec<Candidate> },
    /// A bad request (zero classes, an empty or huge synthetic set, ...).
    Invalid { message: String },
}

fn bytes_word(decompressed: bool) -> &'static str {
    if decompressed {
        "bytes decompressed"
    } else {
        "bytes"
    }
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::Io {
                path,
                action,
                source,
            } => write!(f, "{}: {action}: {source}", path.display()),
            DataError::Format { path, message } => write!(f, "{}: {message}", path.display()),
            DataError::Truncated {
                path,
                expected,
                actual,
                decompressed,
                what,
            } => write!(
                f,
                "{}: truncated {what} file: the header needs {expected} {w}, the file has {actual}",
                path.display(),
                w = bytes_word(*decompressed)
            ),
            DataError::TrailingData {
                path,
                expected,
                actual,
                decompressed,
            } => write!(
                f,
                "{}: trailing data: the header accounts for {expected} {w}, the file has {actual}",
                path.display(),
                w = bytes_word(*decompressed)
            ),
            DataError::CountMismatch {
                images,
                images_count,
                labels,
                labels_count,
            } => write!(
                f,
                "{} holds {images_count} images but {} holds {labels_count} labels",
                images.display(),
                labels.display()
            ),
            DataError::LabelOutOfRange {
                path,
                index,
                label,
                classes,
            } => write!(
                f,
                "{}: label {label} of sample {index} is not below the model's {classes} classes",
                path.display()
            ),
            DataError::ShapeMismatch {
                path,
                image_shape,
                input_shape,
            } => write!(
                f,
                "{}: images are {}×{} but the model's input is {input_shape:?} (it reads \
                 single-channel images of its last two dimensions, or a flat vector of all \
                 their values)",
                path.display(),
                image_shape[0],
                image_shape[1],
            ),
            DataError::MissingFiles {
                dir,
                origin,
                missing,
                exists,
            } => {
                if *exists {
                    write!(
                        f,
                        "data directory {} (from {origin}) lacks {} (each may also end in .gz)",
                        dir.display(),
                        missing.join(", ")
                    )
                } else if dir.is_file() {
                    write!(
                        f,
                        "{} (from {origin}) is a file; give the directory that holds the four \
                         IDX files ({})",
                        dir.display(),
                        missing.join(", ")
                    )
                } else {
                    write!(
                        f,
                        "data directory {} (from {origin}) does not exist",
                        dir.display()
                    )
                }
            }
            DataError::NotFound { tried } => {
                write!(f, "no Fashion-MNIST data found; looked in")?;
                for (i, c) in tried.iter().enumerate() {
                    let sep = if i == 0 { " " } else { ", " };
                    write!(f, "{sep}{} ({})", c.dir.display(), c.origin)?;
                }
                write!(
                    f,
                    ". Install dataset-fashion-mnist, set ${DATA_ENV} or pass --data DIR"
                )
            }
            DataError::Invalid { message } => f.write_str(message),
        }
    }
}

impl std::error::Error for DataError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            DataError::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// Loads the training and test sets that `spec` names, for a model whose input has shape
/// `input_shape` and which predicts `classes` classes. `cli_dir` is `--data DIR`; it overrides any
/// directory of the model file (and, given with `synthetic` data, replaces it by that IDX
/// directory). Relative directories are relative to the current directory.
pub fn load(
    spec: &DataSpec,
    cli_dir: Option<&Path>,
    input_shape: &[usize],
    classes: usize,
) -> Result<Splits, DataError> {
    check_model(input_shape, classes)?;
    match spec {
        DataSpec::Synthetic {
            train_samples,
            test_samples,
            seed,
        } => match cli_dir {
            Some(dir) => load_idx_dir(
                &[explicit(dir, Origin::Cli)],
                IdxKind::Idx,
                input_shape,
                classes,
            ),
            None => {
                let values = (train_samples.saturating_add(*test_samples))
                    .saturating_mul(input_shape.iter().product::<usize>() as u64);
                crate::resources::check_fits(
                    "the synthetic data",
                    &[("images", values.saturating_mul(4))],
                    "Ask for fewer `train_samples` or `test_samples`.",
                )
                .map_err(|message| DataError::Invalid { message })?;
                synthetic(*train_samples, *test_samples, *seed, input_shape, classes)
            }
        },
        DataSpec::Idx { dir } => {
            let c = match cli_dir {
                Some(cli) => explicit(cli, Origin::Cli),
                None => explicit(Path::new(dir), Origin::ModelFile),
            };
            load_idx_dir(&[c], IdxKind::Idx, input_shape, classes)
        }
        DataSpec::FashionMnist { dir } => {
            let env = std::env::var_os(DATA_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from);
            let candidates = fashion_mnist_candidates(
                cli_dir,
                dir.as_deref().map(Path::new),
                env.as_deref(),
                &default_candidates(),
            );
            load_idx_dir(&candidates, IdxKind::FashionMnist, input_shape, classes)
        }
    }
}

fn check_model(input_shape: &[usize], classes: usize) -> Result<(), DataError> {
    if classes == 0 {
        return Err(DataError::Invalid {
            message: "the model has 0 classes".into(),
        });
    }
    if input_shape.contains(&0) {
        return Err(DataError::Invalid {
            message: format!("the model's input shape {input_shape:?} has no elements"),
        });
    }
    Ok(())
}

fn explicit(dir: &Path, origin: Origin) -> Candidate {
    Candidate {
        dir: dir.to_path_buf(),
        origin,
    }
}

/// The system directory and the bundled subset: next to the source tree (`CARGO_MANIFEST_DIR`)
/// and next to the executable (`<exe>/../../data/...`, so `target/release/sparsec` finds it).
pub fn default_candidates() -> Vec<Candidate> {
    let mut out = vec![Candidate {
        dir: PathBuf::from(SYSTEM_FASHION_MNIST),
        origin: Origin::System,
    }];
    let mut bundled = vec![Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_SUBSET)];
    // `<repo>/target/<profile>/sparsec` → `<repo>`; parents rather than `..` keep the path clean.
    if let Some(root) = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.ancestors().nth(3).map(Path::to_path_buf))
    {
        let near_exe = root.join(BUNDLED_SUBSET);
        if !bundled.contains(&near_exe) {
            bundled.push(near_exe);
        }
    }
    out.extend(bundled.into_iter().map(|dir| Candidate {
        dir,
        origin: Origin::Bundled,
    }));
    out
}

/// The candidates for `fashion_mnist`, best first: `--data`, else the model file's `dir:`, else
/// `$SPARSEC_DATA`, then `defaults` (see [`default_candidates`]). An explicit directory is the
/// only candidate before the defaults: [`pick_dir`] never looks past it.
pub fn fashion_mnist_candidates(
    cli_dir: Option<&Path>,
    model_dir: Option<&Path>,
    env_dir: Option<&Path>,
    defaults: &[Candidate],
) -> Vec<Candidate> {
    let mut out = Vec::new();
    if let Some(d) = cli_dir {
        out.push(explicit(d, Origin::Cli));
    } else if let Some(d) = model_dir {
        out.push(explicit(d, Origin::ModelFile));
    } else if let Some(d) = env_dir {
        out.push(explicit(d, Origin::Env));
    }
    out.extend_from_slice(defaults);
    out
}

/// The first candidate that holds the four IDX files. An explicit candidate (`--data`,
/// `$SPARSEC_DATA`, the model file) that lacks them is an error rather than a reason to go on.
pub fn pick_dir(candidates: &[Candidate]) -> Result<&Candidate, DataError> {
    for c in candidates {
        let missing = idx::missing_files(&c.dir);
        if missing.is_empty() {
            return Ok(c);
        }
        if c.origin.is_explicit() {
            return Err(DataError::MissingFiles {
                dir: c.dir.clone(),
                origin: c.origin,
                missing: missing.into_iter().map(String::from).collect(),
                exists: c.dir.is_dir(),
            });
        }
    }
    Err(DataError::NotFound {
        tried: candidates.to_vec(),
    })
}

/// What an IDX directory is said to hold (it changes only the description and the source).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdxKind {
    FashionMnist,
    Idx,
}

/// Loads the MNIST-layout IDX files of the first usable candidate (see [`pick_dir`]): what
/// [`load`] does once it has made its candidates; public so that the search can be tested with
/// injected candidates.
pub fn load_idx_dir(
    candidates: &[Candidate],
    kind: IdxKind,
    input_shape: &[usize],
    classes: usize,
) -> Result<Splits, DataError> {
    check_model(input_shape, classes)?;
    let chosen = pick_dir(candidates)?;
    let dir = &chosen.dir;
    let (train, train_dims) = load_split(dir, "train", input_shape, classes)?;
    let (test, test_dims) = load_split(dir, "t10k", input_shape, classes)?;
    if train_dims != test_dims {
        return Err(DataError::Invalid {
            message: format!(
                "{}: the training images are {}×{}, the test images {}×{}: they are not one \
                 data set",
                dir.display(),
                train_dims[0],
                train_dims[1],
                test_dims[0],
                test_dims[1]
            ),
        });
    }
    let shown = display_dir(dir);
    let counts = format!("{} train, {} test", train.len(), test.len());
    let (description, source) = match (kind, chosen.origin) {
        (IdxKind::FashionMnist, Origin::Bundled) => (
            format!(
                "data: bundled Fashion-MNIST subset ({shown}: {counts}) — install \
                 dataset-fashion-mnist or pass --data DIR for the full set"
            ),
            DataSource::FashionMnist {
                dir: dir.clone(),
                bundled: true,
            },
        ),
        (IdxKind::FashionMnist, origin) => (
            format!(
                "data: Fashion-MNIST from {shown} ({counts}{})",
                match origin {
                    Origin::Env => ", via $SPARSEC_DATA",
                    _ => "",
                }
            ),
            DataSource::FashionMnist {
                dir: dir.clone(),
                bundled: false,
            },
        ),
        (IdxKind::Idx, _) => (
            format!("data: IDX files from {shown} ({counts})"),
            DataSource::Idx { dir: dir.clone() },
        ),
    };
    Ok(Splits {
        train,
        test,
        description,
        source,
    })
}

/// Reads one split and converts it to a [`Dataset`] of the model's input shape.
fn load_split(
    dir: &Path,
    prefix: &str,
    input_shape: &[usize],
    classes: usize,
) -> Result<(Dataset, [usize; 2]), DataError> {
    let (images, labels) = idx::read_split(dir, prefix, classes)?;
    if !image_fits_input([images.rows, images.cols], input_shape) {
        let name = format!("{prefix}-images-idx3-ubyte");
        return Err(DataError::ShapeMismatch {
            path: idx::find_file(dir, &name).unwrap_or_else(|| dir.join(name)),
            image_shape: vec![images.rows, images.cols],
            input_shape: input_shape.to_vec(),
        });
    }
    let dims = [images.rows, images.cols];
    let set = Dataset {
        images: images
            .pixels
            .iter()
            .map(|&p| f32::from(p) / 255.0)
            .collect(),
        labels: labels.iter().map(|&l| i32::from(l)).collect(),
        sample_shape: input_shape.to_vec(),
        classes,
    };
    Ok((set, dims))
}

/// Whether `rows × cols` images are what a model with this input shape reads: the same two
/// spatial dimensions under any number of leading 1s (`[1, 28, 28]`, `[28, 28]`), or one flat
/// vector of all their values (`[784]`). Counting values alone would let 16×49 images feed a
/// 28×28 model.
pub(crate) fn image_fits_input(image: [usize; 2], input_shape: &[usize]) -> bool {
    let first_real = input_shape
        .iter()
        .position(|&d| d != 1)
        .unwrap_or(input_shape.len());
    match &input_shape[first_real..] {
        [flat] => *flat == image[0] * image[1],
        [rows, cols] => [*rows, *cols] == image,
        [] => image == [1, 1],
        _ => false,
    }
}

/// `dir` relative to the current directory when it lies below it, else as it is.
fn display_dir(dir: &Path) -> String {
    if dir.is_absolute() {
        if let Ok(cwd) = std::env::current_dir() {
            if let Ok(rel) = dir.strip_prefix(&cwd) {
                if !rel.as_os_str().is_empty() {
                    return rel.display().to_string();
                }
            }
        }
    }
    dir.display().to_string()
}

/// A seeded synthetic classification set, deterministic in `seed`: each class has a fixed random
/// prototype in [0, 1]^input_shape; a sample is its class's prototype plus triangular noise in
/// [-0.5, 0.5], clamped to [0, 1]. Labels are balanced (`i % classes`, then shuffled). Prototypes,
/// the training set and the test set come from three separate streams of the seed, so the two
/// sets are disjoint draws from one distribution. Learnable: the nearest class mean separates it.
pub fn synthetic(
    train_samples: u64,
    test_samples: u64,
    seed: u64,
    input_shape: &[usize],
    classes: usize,
) -> Result<Splits, DataError> {
    if classes == 0 {
        return Err(DataError::Invalid {
            message: "synthetic data needs at least one class".into(),
        });
    }
    if train_samples == 0 || test_samples == 0 {
        return Err(DataError::Invalid {
            message: format!(
                "synthetic data needs at least one training and one test sample \
                 (got {train_samples} and {test_samples})"
            ),
        });
    }
    let sample_len = input_shape
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64))
        .unwrap_or(u64::MAX);
    let total = train_samples
        .checked_add(test_samples)
        .and_then(|n| n.checked_mul(sample_len))
        .unwrap_or(u64::MAX);
    let too_large = total > MAX_SYNTHETIC_FLOATS
        || (classes as u64).saturating_mul(sample_len) > MAX_SYNTHETIC_FLOATS
        || train_samples > u64::from(u32::MAX)
        || test_samples > u64::from(u32::MAX);
    if too_large || sample_len == 0 {
        return Err(DataError::Invalid {
            message: format!(
                "synthetic data of {train_samples} + {test_samples} samples of shape \
                 {input_shape:?} is {}",
                if sample_len == 0 {
                    "empty"
                } else {
                    "too large"
                }
            ),
        });
    }
    let sample_len = sample_len as usize;
    let mut proto_rng = rng::SplitMix64::stream(seed, 0);
    let prototypes: Vec<f32> = (0..classes * sample_len)
        .map(|_| proto_rng.next_f32())
        .collect();
    let make = |n: u64, stream: u64| {
        let n = n as usize;
        let mut r = rng::SplitMix64::stream(seed, stream);
        let mut labels: Vec<i32> = (0..n).map(|i| (i % classes) as i32).collect();
        r.shuffle(&mut labels);
        let mut images = Vec::with_capacity(n * sample_len);
        for &label in &labels {
            let proto = &prototypes[label as usize * sample_len..][..sample_len];
            images.extend(proto.iter().map(|&p| {
                let noise = (r.next_f32() + r.next_f32() - 1.0) * SYNTHETIC_NOISE;
                (p + noise).clamp(0.0, 1.0)
            }));
        }
        Dataset {
            images,
            labels,
            sample_shape: input_shape.to_vec(),
            classes,
        }
    };
    let train = make(train_samples, 1);
    let test = make(test_samples, 2);
    Ok(Splits {
        description: format!(
            "data: synthetic (seed {seed}: {} train, {} test, shape {input_shape:?}, {classes} \
             classes)",
            train.len(),
            test.len()
        ),
        train,
        test,
        source: DataSource::Synthetic,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn explicit_origins() {
        assert!(Origin::Cli.is_explicit());
        assert!(Origin::Env.is_explicit());
        assert!(Origin::ModelFile.is_explicit());
        assert!(!Origin::System.is_explicit());
        assert!(!Origin::Bundled.is_explicit());
    }

    #[test]
    fn bundled_subset_is_among_the_defaults() {
        let d = default_candidates();
        assert_eq!(d[0].origin, Origin::System);
        assert!(d[1..].iter().all(|c| c.origin == Origin::Bundled));
        assert!(d[1].dir.ends_with(BUNDLED_SUBSET));
        assert!(idx::missing_files(&d[1].dir).is_empty());
    }

    #[test]
    fn synthetic_rejects_bad_requests() {
        assert!(synthetic(0, 1, 0, &[4], 2).is_err());
        assert!(synthetic(1, 1, 0, &[4], 0).is_err());
        let e = synthetic(1 << 40, 1, 0, &[784], 10)
            .unwrap_err()
            .to_string();
        assert!(e.contains("too large"), "{e}");
    }
}
