//! IDX files (the MNIST format): a big-endian header `[0, 0, type, ndim]`, `ndim` big-endian u32
//! dimensions, then the elements in row-major order. Only unsigned-byte files (type 0x08) are read:
//! images `[N, rows, cols]` (magic 0x0000_0803) and labels `[N]` (magic 0x0000_0801).
//!
//! Files may be raw or gzip-compressed; compression is detected by the gzip magic bytes, not by the
//! name. No file content makes the reader panic or allocate more than the file can really hold: the
//! header is checked against the file's size before the payload is read.

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use super::DataError;

/// Magic number of a u8 IDX file with 3 dimensions (images).
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of a u8 IDX file with 1 dimension (labels).
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The four files of an MNIST-layout directory (each may also carry a `.gz` suffix).
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";
pub const FILE_NAMES: [&str; 4] = [TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS];

const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];
/// Deflate cannot compress better than about 1032:1; a gzip file of `c` bytes therefore holds at
/// most `c * 1032` bytes plus a little. Used to reject absurd headers before reading anything.
const MAX_DEFLATE_RATIO: u64 = 1032;

/// An images file: `count` images of `rows × cols` bytes, row-major.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IdxImages {
    pub count: usize,
    pub rows: usize,
    pub cols: usize,
    pub pixels: Vec<u8>,
}

/// `dir/name` if it exists, else `dir/name.gz` if that exists (the plain name wins when both do).
pub fn find_file(dir: &Path, name: &str) -> Option<PathBuf> {
    let plain = dir.join(name);
    if plain.is_file() {
        return Some(plain);
    }
    let gz = dir.join(format!("{name}.gz"));
    gz.is_file().then_some(gz)
}

/// The names of [`FILE_NAMES`] that `dir` lacks (in either form).
pub fn missing_files(dir: &Path) -> Vec<&'static str> {
    FILE_NAMES
        .iter()
        .copied()
        .filter(|name| find_file(dir, name).is_none())
        .collect()
}

/// Reads an images file (magic 0x0000_0803).
pub fn read_images(path: &Path) -> Result<IdxImages, DataError> {
    let (dims, pixels) = read_u8_idx(path, 3, "images")?;
    Ok(IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    })
}

/// Reads a labels file (magic 0x0000_0801).
pub fn read_labels(path: &Path) -> Result<Vec<u8>, DataError> {
    Ok(read_u8_idx(path, 1, "labels")?.1)
}

/// Reads `dir/{prefix}-images-idx3-ubyte[.gz]` and `dir/{prefix}-labels-idx1-ubyte[.gz]` (`prefix`
/// is `train` or `t10k`), checking that the counts agree and every label is `< classes`.
pub fn read_split(
    dir: &Path,
    prefix: &str,
    classes: usize,
) -> Result<(IdxImages, Vec<u8>), DataError> {
    let locate = |name: String| {
        find_file(dir, &name).ok_or_else(|| DataError::Format {
            path: dir.to_path_buf(),
            message: format!("neither {name} nor {name}.gz exists here"),
        })
    };
    let images_path = locate(format!("{prefix}-images-idx3-ubyte"))?;
    let labels_path = locate(format!("{prefix}-labels-idx1-ubyte"))?;
    // Both headers first: counts that disagree are refused before a payload is read (a small
    // gzip file may claim gigabytes).
    let images = open_u8_idx(&images_path, 3, "images")?;
    let labels = open_u8_idx(&labels_path, 1, "labels")?;
    if images.count() != labels.count() {
        return Err(DataError::CountMismatch {
            images_count: usize::try_from(images.count()).unwrap_or(usize::MAX),
            labels_count: usize::try_from(labels.count()).unwrap_or(usize::MAX),
            images: images_path.clone(),
            labels: labels_path.clone(),
        });
    }
    let (_, labels) = labels.read_payload()?;
    check_labels(&labels_path, &labels, classes)?;
    let (dims, pixels) = images.read_payload()?;
    let images = IdxImages {
        count: dims[0],
        rows: dims[1],
        cols: dims[2],
        pixels,
    };
    Ok((images, labels))
}

/// Every label must be `< classes`.
pub fn check_labels(path: &Path, labels: &[u8], classes: usize) -> Result<(), DataError> {
    match labels.iter().position(|&l| usize::from(l) >= classes) {
        Some(index) => Err(DataError::LabelOutOfRange {
            path: path.to_path_buf(),
            index,
            label: labels[index],
            classes,
        }),
        None => Ok(()),
    }
}

/// Writes a u8 IDX file with the given dimensions (`data.len()` must be their product), raw or
/// gzip-compressed. Used by tests and tools; the reader accepts exactly what this writes.
pub fn write_u8_idx(path: &Path, dims: &[u32], data: &[u8], gzip: bool) -> io::Result<()> {
    let expected: u64 = dims.iter().map(|&d| u64::from(d)).product();
    if dims.len() > 255 || expected != data.len() as u64 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("IDX dims {dims:?} do not match {} data bytes", data.len()),
        ));
    }
    let mut bytes = Vec::with_capacity(4 + 4 * dims.len() + data.len());
    bytes.extend_from_slice(&[0, 0, 0x08, dims.len() as u8]);
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(data);
    let mut file = File::create(path)?;
    if gzip {
        let mut gz = flate2::GzBuilder::new()
            .mtime(0)
            .write(&mut file, flate2::Compression::default());
        gz.write_all(&bytes)?;
        gz.finish()?;
    } else {
        file.write_all(&bytes)?;
    }
    file.sync_all()
}

fn io_error<'a>(path: &'a Path, action: &'static str) -> impl FnOnce(io::Error) -> DataError + 'a {
    move |source| DataError::Io {
        path: path.to_path_buf(),
        action,
        source,
    }
}

fn format_error(path: &Path, message: String) -> DataError {
    DataError::Format {
        path: path.to_path_buf(),
        message,
    }
}

/// Reads as many bytes as possible into `buf` (stops early only at end of input).
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

/// A u8 IDX file whose header has been read and checked against what the file can hold; its
/// payload not read yet.
struct OpenIdx<'a> {
    path: &'a Path,
    what: &'static str,
    dims: Vec<u64>,
    payload: u64,
    header_len: usize,
    gzip: bool,
    reader: Box<dyn Read>,
}

/// Reads a u8 IDX file with `ndim` dimensions; returns the dimensions and the payload.
fn read_u8_idx(
    path: &Path,
    ndim: u8,
    what: &'static str,
) -> Result<(Vec<usize>, Vec<u8>), DataError> {
    open_u8_idx(path, ndim, what)?.read_payload()
}

/// Opens a u8 IDX file with `ndim` dimensions and checks its header, reading nothing more.
fn open_u8_idx<'a>(path: &'a Path, ndim: u8, what: &'static str) -> Result<OpenIdx<'a>, DataError> {
    let mut file = File::open(path).map_err(io_error(path, "cannot open"))?;
    let file_len = file
        .metadata()
        .map_err(io_error(path, "cannot read metadata of"))?
        .len();
    let mut magic = [0u8; 2];
    let got = read_full(&mut file, &mut magic).map_err(io_error(path, "cannot read"))?;
    let gzip = got == 2 && magic == GZIP_MAGIC;
    file.seek(SeekFrom::Start(0))
        .map_err(io_error(path, "cannot seek in"))?;
    let mut reader: Box<dyn Read> = if gzip {
        Box::new(MultiGzDecoder::new(BufReader::new(file)))
    } else {
        Box::new(BufReader::new(file))
    };
    let read_action = if gzip {
        "cannot decompress (corrupt gzip data?)"
    } else {
        "cannot read"
    };
    let what_bytes = if gzip { " (decompressed)" } else { "" };

    // Header: 4 magic bytes + 4 per dimension.
    let header_len = 4 + 4 * usize::from(ndim);
    let mut header = vec![0u8; header_len];
    let got = read_full(&mut reader, &mut header).map_err(io_error(path, read_action))?;
    if got < 4 {
        return Err(format_error(
            path,
            format!("not an IDX file: {got} bytes{what_bytes}, fewer than the 4-byte magic number"),
        ));
    }
    let magic = u32::from_be_bytes([header[0], header[1], header[2], header[3]]);
    let expected_magic = 0x0800 | u32::from(ndim);
    if magic != expected_magic {
        let detail = if header[0] != 0 || header[1] != 0 {
            "not an IDX file".to_string()
        } else if header[2] != 0x08 {
            format!(
                "element type {:#04x} is not supported (only unsigned bytes, 0x08)",
                header[2]
            )
        } else {
            format!(
                "{} dimensions where {what} have {ndim}{}",
                header[3],
                match header[3] {
                    1 => " (is this a labels file?)",
                    3 => " (is this an images file?)",
                    _ => "",
                }
            )
        };
        return Err(format_error(
            path,
            format!(
                "bad magic number {magic:#010x}, expected {expected_magic:#010x} for {what}: \
                 {detail}"
            ),
        ));
    }
    if got < header_len {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: header_len as u64,
            actual: got as u64,
            decompressed: gzip,
            what: "IDX header",
        });
    }
    let dims: Vec<u64> = header[4..]
        .chunks_exact(4)
        .map(|c| u64::from(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
        .collect();
    if let Some(i) = dims.iter().position(|&d| d == 0) {
        return Err(format_error(
            path,
            format!("dimension {i} is 0 (dims {dims:?}): the file holds no {what}"),
        ));
    }
    // Each dimension is < 2^32 and there are at most 3, but the product may still overflow u64.
    let payload = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .filter(|&p| p <= u64::MAX - header_len as u64)
        .ok_or_else(|| format_error(path, format!("dimensions {dims:?} overflow")))?;
    let expected_total = header_len as u64 + payload;

    // Check the claim against what the file can really hold before allocating anything.
    if gzip {
        let capacity = file_len
            .saturating_mul(MAX_DEFLATE_RATIO)
            .saturating_add(1024);
        if expected_total > capacity {
            return Err(format_error(
                path,
                format!(
                    "header claims dims {dims:?} ({expected_total} bytes decompressed), more \
                     than a {file_len}-byte gzip file can hold: truncated or corrupt"
                ),
            ));
        }
    } else if file_len < expected_total {
        return Err(DataError::Truncated {
            path: path.to_path_buf(),
            expected: expected_total,
            actual: file_len,
            decompressed: false,
            what,
        });
    } else if file_len > expected_total {
        return Err(DataError::TrailingData {
            path: path.to_path_buf(),
            expected: expected_total,
            actual: file_len,
            decompressed: false,
        });
    }
    Ok(OpenIdx {
        path,
        what,
        dims,
        payload,
        header_len,
        gzip,
        reader,
    })
}

impl OpenIdx<'_> {
    /// The first dimension (the count of images or labels).
    fn count(&self) -> u64 {
        self.dims[0]
    }

    /// Reads the payload: the dimensions and the bytes.
    fn read_payload(self) -> Result<(Vec<usize>, Vec<u8>), DataError> {
        let OpenIdx {
            path,
            what,
            dims,
            payload,
            header_len,
            gzip,
            mut reader,
        } = self;
        let expected_total = header_len as u64 + payload;
        let read_action = if gzip {
            "cannot decompress (corrupt gzip data?)"
        } else {
            "cannot read"
        };
        let payload_len = usize::try_from(payload).map_err(|_| {
            format_error(
                path,
                format!("dimensions {dims:?} too large for this machine"),
            )
        })?;

        let mut data = Vec::new();
        data.try_reserve_exact(payload_len).map_err(|_| {
            format_error(
                path,
                format!("cannot allocate {payload_len} bytes for dims {dims:?}"),
            )
        })?;
        (&mut reader)
            .take(payload)
            .read_to_end(&mut data)
            .map_err(io_error(path, read_action))?;
        if (data.len() as u64) < payload {
            return Err(DataError::Truncated {
                path: path.to_path_buf(),
                expected: expected_total,
                actual: header_len as u64 + data.len() as u64,
                decompressed: gzip,
                what,
            });
        }
        // Anything after the payload is an error; count it (without storing it) for the message.
        let extra = io::copy(&mut reader, &mut io::sink()).map_err(io_error(path, read_action))?;
        if extra > 0 {
            return Err(DataError::TrailingData {
                path: path.to_path_buf(),
                expected: expected_total,
                actual: expected_total + extra,
                decompressed: gzip,
            });
        }
        let dims = dims.into_iter().map(|d| d as usize).collect();
        Ok((dims, data))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("sparsec-idx-unit-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    /// A gzip images file whose header claims more images than the labels file has is refused
    /// on the headers alone: its (truncated) payload is never read.
    #[test]
    fn counts_are_compared_before_any_payload_is_read() {
        let dir = temp("counts-first");
        let labels = dir.join("train-labels-idx1-ubyte");
        write_u8_idx(&labels, &[3], &[0, 1, 2], false).unwrap();
        let mut raw = vec![0, 0, 8, 3];
        for d in [20_000u32, 1, 1] {
            raw.extend_from_slice(&d.to_be_bytes());
        }
        raw.extend_from_slice(&[7; 5]);
        let mut gz = flate2::GzBuilder::new().mtime(0).write(
            File::create(dir.join("train-images-idx3-ubyte.gz")).unwrap(),
            flate2::Compression::default(),
        );
        gz.write_all(&raw).unwrap();
        gz.finish().unwrap();
        match read_split(&dir, "train", 10) {
            Err(DataError::CountMismatch {
                images_count: 20_000,
                labels_count: 3,
                ..
            }) => {}
            other => panic!("expected a count mismatch, got {other:?}"),
        }
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn gzip_detected_by_magic_not_name() {
        let dir = temp("magic");
        // A gzip file without .gz and a raw file with .gz: both read correctly.
        let a = dir.join("labels-a");
        let b = dir.join("labels-b.gz");
        write_u8_idx(&a, &[3], &[0, 1, 2], true).unwrap();
        write_u8_idx(&b, &[3], &[2, 1, 0], false).unwrap();
        assert_eq!(read_labels(&a).unwrap(), vec![0, 1, 2]);
        assert_eq!(read_labels(&b).unwrap(), vec![2, 1, 0]);
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn find_file_prefers_plain_then_gz() {
        let dir = temp("find");
        assert_eq!(find_file(&dir, "x"), None);
        std::fs::write(dir.join("x.gz"), b"").unwrap();
        assert_eq!(find_file(&dir, "x"), Some(dir.join("x.gz")));
        std::fs::write(dir.join("x"), b"").unwrap();
        assert_eq!(find_file(&dir, "x"), Some(dir.join("x")));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
