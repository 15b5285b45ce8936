//! `sparsec plot`: a PNG of a run's curves where asked (or beside the run), and clear refusals.

mod run_dir;

use run_dir::{fresh_dir, ok, sparsec};

const TINY: &str = "tests/train/tiny_momentum.net";

fn is_png(path: &std::path::Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.len() > 10_000 && b.starts_with(b"\x89PNG\r\n\x1a\n"))
}

#[test]
fn plots_one_run_beside_it_and_several_where_asked() {
    let a = fresh_dir("plot-a");
    let b = fresh_dir("plot-b");
    ok(&sparsec(&["train", TINY, "--out", a.to_str().unwrap()]));
    ok(&sparsec(&[
        "train",
        TINY,
        "--out",
        b.to_str().unwrap(),
        "--set",
        "lr=0.02",
    ]));
    let out = ok(&sparsec(&["plot", a.to_str().unwrap()]));
    assert!(out.contains("plot.png"), "{out}");
    assert!(is_png(&a.join("plot.png")));

    // Several runs need --out: they have no one directory to go beside.
    let out = sparsec(&["plot", a.to_str().unwrap(), b.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--out"));
    let both = fresh_dir("plot-both");
    std::fs::create_dir_all(&both).unwrap();
    let png = both.join("compare.png");
    ok(&sparsec(&[
        "plot",
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        "--out",
        png.to_str().unwrap(),
    ]));
    assert!(is_png(&png));

    // Not a run, not a PNG, a run with no finished epoch: refused, nothing written.
    let empty = fresh_dir("plot-empty");
    std::fs::create_dir_all(&empty).unwrap();
    let out = sparsec(&["plot", empty.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a run directory"));
    let out = sparsec(&[
        "plot",
        a.to_str().unwrap(),
        "--out",
        both.join("x.svg").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let started = fresh_dir("plot-started");
    ok(&sparsec(&[
        "train",
        TINY,
        "--out",
        started.to_str().unwrap(),
        "--set",
        "max_steps=3",
    ]));
    let out = sparsec(&["plot", started.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no finished epoch"));
    assert!(!started.join("plot.png").exists());
}
