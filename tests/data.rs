//! The data layer: IDX reading and its errors, the data-directory search, the bundled
//! Fashion-MNIST subset, synthetic data, epoch order and batching.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use sparsec::data::idx::{self, write_u8_idx};
use sparsec::data::{
    epoch_order, fashion_mnist_candidates, fill_batch, load, load_idx_dir, pick_dir, synthetic,
    Candidate, DataError, DataSource, IdxKind, Origin, BUNDLED_SUBSET,
};
use sparsec_ir::spec::DataSpec;

/// A fresh directory under the system temp dir, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "sparsec-data-{}-{}-{name}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn bundled() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(BUNDLED_SUBSET)
}

/// Writes a small MNIST-layout directory: `n_train`/`n_test` images of `rows × cols`, labels
/// `i % classes`; the training files gzip-compressed, the test files raw.
fn write_dir(dir: &Path, n_train: u32, n_test: u32, rows: u32, cols: u32, classes: u8) {
    for (prefix, n, gz) in [("train", n_train, true), ("t10k", n_test, false)] {
        let pixels: Vec<u8> = (0..n * rows * cols).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..n).map(|i| (i % u32::from(classes)) as u8).collect();
        let ext = if gz { ".gz" } else { "" };
        write_u8_idx(
            &dir.join(format!("{prefix}-images-idx3-ubyte{ext}")),
            &[n, rows, cols],
            &pixels,
            gz,
        )
        .unwrap();
        write_u8_idx(
            &dir.join(format!("{prefix}-labels-idx1-ubyte{ext}")),
            &[n],
            &labels,
            gz,
        )
        .unwrap();
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

fn header(magic: u32, dims: &[u32]) -> Vec<u8> {
    let mut h = magic.to_be_bytes().to_vec();
    for d in dims {
        h.extend_from_slice(&d.to_be_bytes());
    }
    h
}

fn images_err(dir: &TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let e = idx::read_images(&path).expect_err("should fail");
    let msg = e.to_string();
    assert!(msg.contains(path.to_str().unwrap()), "no path in: {msg}");
    msg
}

fn labels_err(dir: &TempDir, name: &str, bytes: &[u8]) -> String {
    let path = dir.join(name);
    std::fs::write(&path, bytes).unwrap();
    let msg = idx::read_labels(&path)
        .expect_err("should fail")
        .to_string();
    assert!(msg.contains(path.to_str().unwrap()), "no path in: {msg}");
    msg
}

// ---------------------------------------------------------------------------------------------
// IDX reading

#[test]
fn idx_round_trip_raw_and_gzip() {
    let dir = TempDir::new("roundtrip");
    let pixels: Vec<u8> = (0..3 * 4 * 5).map(|i| (i * 13 % 256) as u8).collect();
    for gz in [false, true] {
        let img = dir.join(&format!("img-{gz}"));
        let lab = dir.join(&format!("lab-{gz}"));
        write_u8_idx(&img, &[3, 4, 5], &pixels, gz).unwrap();
        write_u8_idx(&lab, &[3], &[9, 0, 4], gz).unwrap();
        let raw = std::fs::read(&img).unwrap();
        assert_eq!(raw.starts_with(&[0x1f, 0x8b]), gz);
        let images = idx::read_images(&img).unwrap();
        assert_eq!((images.count, images.rows, images.cols), (3, 4, 5));
        assert_eq!(images.pixels, pixels);
        assert_eq!(idx::read_labels(&lab).unwrap(), vec![9, 0, 4]);
    }
}

#[test]
fn idx_split_accepts_plain_and_gz_names() {
    let dir = TempDir::new("split");
    write_dir(dir.path(), 6, 4, 2, 3, 3);
    assert!(idx::missing_files(dir.path()).is_empty());
    let (images, labels) = idx::read_split(dir.path(), "train", 3).unwrap();
    assert_eq!(images.count, 6);
    assert_eq!(labels, vec![0, 1, 2, 0, 1, 2]);
    let (images, labels) = idx::read_split(dir.path(), "t10k", 3).unwrap();
    assert_eq!(images.count, 4);
    assert_eq!(labels, vec![0, 1, 2, 0]);
}

#[test]
fn idx_empty_and_garbage_files() {
    let dir = TempDir::new("garbage");
    let m = images_err(&dir, "empty", b"");
    assert!(m.contains("not an IDX file"), "{m}");
    let m = images_err(&dir, "short", &[0, 0]);
    assert!(m.contains("not an IDX file"), "{m}");
    let m = images_err(&dir, "text", b"hello, this is not an IDX file at all");
    assert!(
        m.contains("bad magic number") && m.contains("not an IDX file"),
        "{m}"
    );
    // An empty gzip stream and a gzip file cut short.
    let m = images_err(&dir, "empty.gz", &gzip(b""));
    assert!(m.contains("not an IDX file"), "{m}");
    let full = gzip(&[header(0x803, &[1, 2, 2]), vec![1, 2, 3, 4]].concat());
    let m = images_err(&dir, "cut.gz", &full[..full.len() / 2]);
    assert!(m.contains("decompress") || m.contains("truncated"), "{m}");
    // Valid gzip magic, then garbage.
    let m = images_err(
        &dir,
        "corrupt.gz",
        &[0x1f, 0x8b, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11],
    );
    assert!(m.contains("decompress"), "{m}");
    // A good gzip member followed by garbage.
    let mut bad = full.clone();
    bad.extend_from_slice(b"garbage!garbage!");
    let m = images_err(&dir, "after.gz", &bad);
    assert!(m.contains("decompress"), "{m}");
}

#[test]
fn idx_wrong_magic_type_and_dimensions() {
    let dir = TempDir::new("magic");
    // A labels file read as images, and the other way round.
    let m = images_err(&dir, "labels", &[header(0x801, &[2]), vec![0, 1]].concat());
    assert!(
        m.contains("0x00000801") && m.contains("0x00000803") && m.contains("labels file"),
        "{m}"
    );
    let m = labels_err(
        &dir,
        "images",
        &[header(0x803, &[1, 1, 2]), vec![0, 1]].concat(),
    );
    assert!(m.contains("images file"), "{m}");
    // f32 elements.
    let m = images_err(
        &dir,
        "float",
        &[header(0x0D03, &[1, 1, 1]), vec![0; 4]].concat(),
    );
    assert!(m.contains("element type 0x0d"), "{m}");
    // A zero dimension.
    let m = images_err(&dir, "zero", &header(0x803, &[0, 28, 28]));
    assert!(m.contains("dimension 0 is 0"), "{m}");
    // Header cut inside the dimensions.
    let m = images_err(&dir, "header", &header(0x803, &[5, 28]));
    assert!(
        m.contains("truncated") && m.contains("needs 16 bytes") && m.contains("has 12"),
        "{m}"
    );
}

#[test]
fn idx_truncated_and_trailing_payload() {
    let dir = TempDir::new("trunc");
    let good = [header(0x803, &[2, 3, 3]), vec![7; 18]].concat(); // 16 + 18 = 34 bytes
    let m = images_err(&dir, "trunc", &good[..30]);
    assert!(
        m.contains("truncated images file") && m.contains("34 bytes") && m.contains("has 30"),
        "{m}"
    );
    let m = images_err(&dir, "trunc.gz", &gzip(&good[..30]));
    assert!(
        m.contains("34 bytes decompressed") && m.contains("has 30"),
        "{m}"
    );
    let m = images_err(&dir, "trail", &[good.clone(), vec![0; 5]].concat());
    assert!(
        m.contains("trailing data") && m.contains("34 bytes") && m.contains("has 39"),
        "{m}"
    );
    let m = images_err(
        &dir,
        "trail.gz",
        &gzip(&[good.clone(), vec![0; 5]].concat()),
    );
    assert!(m.contains("trailing data") && m.contains("has 39"), "{m}");
    let labels = [header(0x801, &[4]), vec![1, 2, 3]].concat();
    let m = labels_err(&dir, "labels", &labels);
    assert!(
        m.contains("truncated labels file") && m.contains("12 bytes") && m.contains("has 11"),
        "{m}"
    );
}

#[test]
fn idx_hostile_header_is_rejected_before_allocating() {
    let dir = TempDir::new("huge");
    // 4e9 images of 65535 × 65535: ~1.7e19 bytes claimed by a 20-byte file; and 4e9 × 28 × 28
    // (3e12 bytes), raw and gzip. Each must fail at once, without trying to allocate.
    let start = std::time::Instant::now();
    let huge = [header(0x803, &[u32::MAX, 65535, 65535]), vec![0; 4]].concat();
    let m = images_err(&dir, "overflow", &huge);
    assert!(m.contains("truncated") || m.contains("overflow"), "{m}");
    let big = [header(0x803, &[4_000_000_000, 28, 28]), vec![0; 100]].concat();
    let m = images_err(&dir, "big", &big);
    assert!(
        m.contains("3136000000016 bytes") && m.contains("has 116"),
        "{m}"
    );
    let m = images_err(&dir, "big.gz", &gzip(&big));
    assert!(
        m.contains("more than a") && m.contains("gzip file can hold"),
        "{m}"
    );
    let m = labels_err(&dir, "labels", &header(0x801, &[u32::MAX]));
    assert!(m.contains("4294967303 bytes") && m.contains("has 8"), "{m}");
    assert!(start.elapsed().as_secs_f64() < 2.0);
}

#[test]
fn idx_never_panics_on_mutated_files() {
    // Every prefix of a valid file, and single-byte corruptions of it, raw and gzip: each read
    // either succeeds (only the untouched file) or returns an error; none panics.
    let dir = TempDir::new("fuzz");
    let good = [header(0x803, &[2, 2, 3]), (0..12).collect::<Vec<u8>>()].concat();
    let path = dir.join("f");
    let mut seed = 0x1234_5678_u64;
    for gz in [false, true] {
        let bytes = if gz { gzip(&good) } else { good.clone() };
        for len in 0..bytes.len() {
            std::fs::write(&path, &bytes[..len]).unwrap();
            assert!(idx::read_images(&path).is_err());
            assert!(idx::read_labels(&path).is_err());
        }
        for _ in 0..200 {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let mut b = bytes.clone();
            let at = (seed >> 33) as usize % b.len();
            b[at] ^= 1 + (seed >> 20) as u8 % 255;
            std::fs::write(&path, &b).unwrap();
            let _ = idx::read_images(&path);
            let _ = idx::read_labels(&path);
        }
    }
}

#[test]
fn idx_count_mismatch_and_label_range() {
    let dir = TempDir::new("mismatch");
    write_u8_idx(
        &dir.join("train-images-idx3-ubyte"),
        &[3, 1, 1],
        &[0, 1, 2],
        false,
    )
    .unwrap();
    write_u8_idx(&dir.join("train-labels-idx1-ubyte"), &[2], &[0, 1], false).unwrap();
    let m = idx::read_split(dir.path(), "train", 10)
        .unwrap_err()
        .to_string();
    assert!(
        m.contains("holds 3 images") && m.contains("holds 2 labels"),
        "{m}"
    );
    assert!(
        m.contains("train-images-idx3-ubyte") && m.contains("train-labels-idx1-ubyte"),
        "{m}"
    );
    write_u8_idx(
        &dir.join("train-labels-idx1-ubyte"),
        &[3],
        &[0, 10, 1],
        false,
    )
    .unwrap();
    let e = idx::read_split(dir.path(), "train", 10).unwrap_err();
    assert!(matches!(
        e,
        DataError::LabelOutOfRange {
            index: 1,
            label: 10,
            classes: 10,
            ..
        }
    ));
    let m = e.to_string();
    assert!(
        m.contains("label 10 of sample 1") && m.contains("10 classes"),
        "{m}"
    );
    assert!(idx::read_split(dir.path(), "train", 11).is_ok());
}

// ---------------------------------------------------------------------------------------------
// Loading and the search order

#[test]
fn load_idx_dir_scales_and_reshapes() {
    let dir = TempDir::new("load");
    write_dir(dir.path(), 6, 4, 2, 3, 3);
    let spec = DataSpec::Idx {
        dir: dir.path().to_str().unwrap().to_string(),
    };
    for shape in [vec![6], vec![1, 2, 3], vec![2, 3]] {
        let s = load(&spec, None, &shape, 3).unwrap();
        assert_eq!(
            s.source,
            DataSource::Idx {
                dir: dir.path().to_path_buf()
            }
        );
        assert_eq!(s.train.len(), 6);
        assert_eq!(s.test.len(), 4);
        assert_eq!(s.train.sample_shape, shape);
        assert_eq!(s.train.classes, 3);
        assert_eq!(
            s.train.sample(1),
            &[
                42.0 / 255.0,
                49.0 / 255.0,
                56.0 / 255.0,
                63.0 / 255.0,
                70.0 / 255.0,
                77.0 / 255.0
            ]
        );
        assert_eq!(s.train.labels, vec![0, 1, 2, 0, 1, 2]);
        assert!(
            s.description.contains("6 train, 4 test"),
            "{}",
            s.description
        );
    }
    // Wrong number of elements, and the right number in the wrong arrangement: 2×3 images are
    // not what a 3×2 or a 6×1 input reads.
    for shape in [vec![1, 28, 28], vec![3, 2], vec![1, 6, 1], vec![2, 1, 3]] {
        let m = load(&spec, None, &shape, 3).unwrap_err().to_string();
        assert!(
            m.contains("images are 2×3") && m.contains(&format!("{shape:?}")),
            "{m}"
        );
    }
    // Train and test images must have the same dimensions, even for a flat input.
    let mixed = TempDir::new("load-mixed");
    write_dir(mixed.path(), 4, 2, 2, 3, 3);
    let test_images = mixed.path().join("t10k-images-idx3-ubyte");
    let other = TempDir::new("load-mixed-other");
    write_dir(other.path(), 4, 2, 3, 2, 3);
    std::fs::copy(other.path().join("t10k-images-idx3-ubyte"), &test_images).unwrap();
    let mixed_spec = DataSpec::Idx {
        dir: mixed.path().to_str().unwrap().to_string(),
    };
    let m = load(&mixed_spec, None, &[6], 3).unwrap_err().to_string();
    assert!(
        m.contains("training images are 2×3, the test images 3×2"),
        "{m}"
    );
    // Labels not below the model's classes.
    let m = load(&spec, None, &[6], 2).unwrap_err().to_string();
    assert!(m.contains("label 2") && m.contains("2 classes"), "{m}");
    // --data overrides the model file's directory.
    let other = TempDir::new("load-other");
    write_dir(other.path(), 3, 3, 2, 3, 3);
    let s = load(&spec, Some(other.path()), &[6], 3).unwrap();
    assert_eq!(s.train.len(), 3);
    let fm = DataSpec::FashionMnist {
        dir: Some(dir.path().to_str().unwrap().to_string()),
    };
    let s = load(&fm, Some(other.path()), &[6], 3).unwrap();
    assert_eq!(
        s.source,
        DataSource::FashionMnist {
            dir: other.path().to_path_buf(),
            bundled: false
        }
    );
    let s = load(&fm, None, &[6], 3).unwrap();
    assert_eq!(
        s.source,
        DataSource::FashionMnist {
            dir: dir.path().to_path_buf(),
            bundled: false
        }
    );
}

#[test]
fn explicit_directories_without_files_are_errors() {
    let empty = TempDir::new("empty");
    let missing = empty.join("no-such-dir");
    // A model-file dir that does not exist / lacks the files: an error, not the fallback.
    for spec in [
        DataSpec::FashionMnist {
            dir: Some(missing.to_str().unwrap().into()),
        },
        DataSpec::Idx {
            dir: missing.to_str().unwrap().into(),
        },
    ] {
        let e = load(&spec, None, &[784], 10).unwrap_err();
        assert!(matches!(
            e,
            DataError::MissingFiles {
                origin: Origin::ModelFile,
                exists: false,
                ..
            }
        ));
        let m = e.to_string();
        assert!(
            m.contains("does not exist")
                && m.contains("the model file")
                && m.contains("no-such-dir"),
            "{m}"
        );
    }
    // --data naming a directory with only some of the files.
    write_u8_idx(&empty.join("train-labels-idx1-ubyte.gz"), &[1], &[0], true).unwrap();
    let spec = DataSpec::FashionMnist { dir: None };
    let m = load(&spec, Some(empty.path()), &[784], 10)
        .unwrap_err()
        .to_string();
    let lacks = "(from --data) lacks train-images-idx3-ubyte, t10k-images-idx3-ubyte, \
                 t10k-labels-idx1-ubyte";
    assert!(m.contains(lacks), "{m}");
    assert!(!m.contains("lacks train-labels"), "{m}");
}

fn cand(dir: &Path, origin: Origin) -> Candidate {
    Candidate {
        dir: dir.to_path_buf(),
        origin,
    }
}

#[test]
fn search_order_with_injected_candidates() {
    let a = TempDir::new("cand-a");
    let b = TempDir::new("cand-b");
    let none = TempDir::new("cand-none");
    write_dir(a.path(), 2, 2, 1, 1, 1);
    write_dir(b.path(), 2, 2, 1, 1, 1);
    let defaults = [
        cand(none.path(), Origin::System),
        cand(&bundled(), Origin::Bundled),
    ];

    // Who wins: --data, then the model file's dir, then $SPARSEC_DATA, then the defaults.
    let c = fashion_mnist_candidates(Some(a.path()), Some(b.path()), Some(none.path()), &defaults);
    assert_eq!(c[0], cand(a.path(), Origin::Cli));
    assert_eq!(c.len(), 3);
    let c = fashion_mnist_candidates(None, Some(b.path()), Some(a.path()), &defaults);
    assert_eq!(c[0], cand(b.path(), Origin::ModelFile));
    let c = fashion_mnist_candidates(None, None, Some(a.path()), &defaults);
    assert_eq!(c[0], cand(a.path(), Origin::Env));
    let c = fashion_mnist_candidates(None, None, None, &defaults);
    assert_eq!(c, defaults.to_vec());

    // The first candidate with the files is used; a non-explicit one without them is skipped.
    let sys_a = [
        cand(a.path(), Origin::System),
        cand(&bundled(), Origin::Bundled),
    ];
    assert_eq!(pick_dir(&sys_a).unwrap().dir, a.path());
    assert_eq!(pick_dir(&defaults).unwrap().origin, Origin::Bundled);
    let env_b = fashion_mnist_candidates(None, None, Some(b.path()), &sys_a);
    assert_eq!(pick_dir(&env_b).unwrap(), &cand(b.path(), Origin::Env));
    // An explicit one without them stops the search.
    for origin in [Origin::Cli, Origin::Env, Origin::ModelFile] {
        let c = [cand(none.path(), origin), cand(a.path(), Origin::System)];
        let e = pick_dir(&c).unwrap_err();
        assert!(
            matches!(e, DataError::MissingFiles { exists: true, .. }),
            "{e}"
        );
        assert!(e.to_string().contains(&format!("(from {origin})")), "{e}");
    }
    // Nothing anywhere.
    let c = [
        cand(none.path(), Origin::System),
        cand(&none.join("x"), Origin::Bundled),
    ];
    let m = pick_dir(&c).unwrap_err().to_string();
    assert!(
        m.starts_with("no Fashion-MNIST data found; looked in"),
        "{m}"
    );
    assert!(
        m.contains("(the system data set)")
            && m.contains("(the bundled subset)")
            && m.contains("--data DIR"),
        "{m}"
    );
}

#[test]
fn bundled_subset_loads_balanced() {
    let none = TempDir::new("bundled");
    let c = [
        cand(&none.join("missing"), Origin::System),
        cand(&bundled(), Origin::Bundled),
    ];
    let s = load_idx_dir(&c, IdxKind::FashionMnist, &[1, 28, 28], 10).unwrap();
    assert_eq!(
        s.source,
        DataSource::FashionMnist {
            dir: bundled(),
            bundled: true
        }
    );
    assert!(
        s.description
            .starts_with("data: bundled Fashion-MNIST subset ("),
        "{}",
        s.description
    );
    assert!(
        s.description.contains("6000 train, 1000 test") && s.description.contains("--data DIR"),
        "{}",
        s.description
    );
    assert_eq!((s.train.len(), s.test.len()), (6000, 1000));
    assert_eq!(s.train.images.len(), 6000 * 784);
    assert_eq!(s.train.class_counts(), vec![600; 10]);
    assert_eq!(s.test.class_counts(), vec![100; 10]);
    for d in [&s.train, &s.test] {
        assert!(d.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
        assert!(d.images.contains(&1.0) && d.images.contains(&0.0));
    }
    // The first training image of the official set is an ankle boot (class 9).
    assert_eq!(s.train.labels[0], 9);
}

// ---------------------------------------------------------------------------------------------
// Synthetic data

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn synthetic_is_deterministic_balanced_and_learnable() {
    let spec = DataSpec::Synthetic {
        train_samples: 500,
        test_samples: 200,
        seed: 7,
    };
    let a = load(&spec, None, &[1, 4, 4], 5).unwrap();
    let b = load(&spec, None, &[1, 4, 4], 5).unwrap();
    assert_eq!(a.source, DataSource::Synthetic);
    assert!(
        a.description
            .starts_with("data: synthetic (seed 7: 500 train, 200 test"),
        "{}",
        a.description
    );
    assert_eq!(bits(&a.train.images), bits(&b.train.images));
    assert_eq!(a.train.labels, b.train.labels);
    assert_eq!(bits(&a.test.images), bits(&b.test.images));
    let c = synthetic(500, 200, 8, &[1, 4, 4], 5).unwrap();
    assert_ne!(bits(&a.train.images), bits(&c.train.images));
    assert_ne!(a.train.labels, c.train.labels);

    assert_eq!(a.train.sample_shape, vec![1, 4, 4]);
    assert_eq!(a.train.images.len(), 500 * 16);
    assert_eq!(a.train.class_counts(), vec![100; 5]);
    assert_eq!(a.test.class_counts(), vec![40; 5]);
    assert_ne!(
        a.train.labels[..10],
        [0, 1, 2, 3, 4, 0, 1, 2, 3, 4],
        "labels are shuffled"
    );
    assert!(a.train.images.iter().all(|&x| (0.0..=1.0).contains(&x)));
    // Train and test are different draws.
    assert_ne!(bits(a.train.sample(0)), bits(a.test.sample(0)));

    // Nearest class mean (from train) classifies the test set well.
    let big = synthetic(1000, 500, 3, &[64], 10).unwrap();
    let n = 64;
    let mut means = vec![0f32; 10 * n];
    for i in 0..big.train.len() {
        let l = big.train.labels[i] as usize;
        for (m, x) in means[l * n..(l + 1) * n]
            .iter_mut()
            .zip(big.train.sample(i))
        {
            *m += x / 100.0;
        }
    }
    let correct = (0..big.test.len())
        .filter(|&i| {
            let x = big.test.sample(i);
            let dist = |c: usize| -> f32 {
                means[c * n..(c + 1) * n]
                    .iter()
                    .zip(x)
                    .map(|(m, v)| (m - v) * (m - v))
                    .sum()
            };
            let best = (0..10)
                .min_by(|&p, &q| dist(p).total_cmp(&dist(q)))
                .unwrap();
            best as i32 == big.test.labels[i]
        })
        .count();
    assert!(
        correct * 10 >= big.test.len() * 9,
        "nearest mean got {correct}/500"
    );
}

#[test]
fn synthetic_bad_requests() {
    let spec = DataSpec::Synthetic {
        train_samples: 10,
        test_samples: 10,
        seed: 0,
    };
    assert!(load(&spec, None, &[4], 0)
        .unwrap_err()
        .to_string()
        .contains("0 classes"));
    assert!(load(&spec, None, &[0, 4], 3)
        .unwrap_err()
        .to_string()
        .contains("no elements"));
    let huge = DataSpec::Synthetic {
        train_samples: 1_000_000_000_000,
        test_samples: 1,
        seed: 0,
    };
    // Refused before it is made: by the machine's memory or, past that, the size limit.
    let m = load(&huge, None, &[784], 10).unwrap_err().to_string();
    assert!(m.contains("needs about") || m.contains("too large"), "{m}");
}

// ---------------------------------------------------------------------------------------------
// Order and batches

#[test]
fn epoch_order_is_a_deterministic_permutation() {
    for n in [0usize, 1, 2, 7, 1000] {
        for epoch in 0..3 {
            let o = epoch_order(n, 42, epoch, true);
            let mut sorted = o.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..n as u32).collect::<Vec<_>>());
            assert_eq!(o, epoch_order(n, 42, epoch, true));
            assert_eq!(
                epoch_order(n, 42, epoch, false),
                (0..n as u32).collect::<Vec<_>>()
            );
        }
    }
    let e0 = epoch_order(1000, 42, 0, true);
    assert_ne!(e0, (0..1000).collect::<Vec<u32>>());
    assert_ne!(e0, epoch_order(1000, 42, 1, true));
    assert_ne!(e0, epoch_order(1000, 43, 0, true));
}

#[test]
fn fill_batch_walks_an_epoch() {
    let s = synthetic(10, 1, 1, &[3], 2).unwrap();
    let order = epoch_order(s.train.len(), 5, 0, true);
    let batch = 4;
    let mut images = vec![0f32; batch * 3];
    let mut labels = vec![0i32; batch];
    let mut seen = Vec::new();
    let mut start = 0;
    loop {
        let got = fill_batch(&s.train, &order, start, batch, &mut images, &mut labels);
        if got == 0 {
            break;
        }
        for k in 0..got {
            let i = order[start + k] as usize;
            assert_eq!(&images[k * 3..k * 3 + 3], s.train.sample(i));
            assert_eq!(labels[k], s.train.labels[i]);
            seen.push(i);
        }
        start += got;
        if got < batch {
            assert_eq!(got, 2, "10 = 4 + 4 + 2");
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, (0..10).collect::<Vec<_>>());
}
