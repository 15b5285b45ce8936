//! `sparsec plot RUN_DIR...`: training curves of one run or several on one figure, read from
//! each run's `metrics.jsonl`.
//!
//! Four panels: train (solid) and test (dashed) loss against epochs; the same for accuracy; the
//! learning rate; and, for the first run, its layers over time: their widths when a method
//! reshaped them (`reconfigure` lines), else Dropback's tracked weights, else the fraction of
//! each weight that is zero. Runs are told apart by colour, named by their directories.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::FontStyle;
use serde_json::Value;

/// Where a font for the figure's text is looked for, in order (`--font` goes first).
const FONTS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
];

/// One run's curves.
struct Run {
    name: String,
    /// Per epoch: (epoch, train loss, test loss, train accuracy, test accuracy, lr).
    epochs: Vec<[f64; 6]>,
    /// Per layer, its values over epochs, and what they are.
    layers: BTreeMap<String, Vec<(f64, f64)>>,
    layers_are: &'static str,
}

fn num(v: &Value, key: &str) -> f64 {
    v.get(key).and_then(Value::as_f64).unwrap_or(f64::NAN)
}

fn read_run(dir: &Path) -> Result<Run, String> {
    let path = dir.join("metrics.jsonl");
    let text = std::fs::read_to_string(&path).map_err(|e| {
        format!(
            "`{}` is not a run directory: cannot read {}: {e}",
            dir.display(),
            path.display()
        )
    })?;
    let lines: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect();
    let kind = |v: &Value, k: &str| v.get("kind").and_then(Value::as_str) == Some(k);
    let epoch_lines: Vec<&Value> = lines.iter().filter(|v| kind(v, "epoch")).collect();
    if epoch_lines.is_empty() {
        return Err(format!(
            "`{}` has no finished epoch in metrics.jsonl yet: nothing to plot",
            dir.display()
        ));
    }
    let epochs = epoch_lines
        .iter()
        .map(|v| {
            [
                num(v, "epoch"),
                num(v, "train_loss"),
                num(v, "test_loss"),
                100.0 * num(v, "train_accuracy"),
                100.0 * num(v, "test_accuracy"),
                num(v, "lr"),
            ]
        })
        .collect();

    // Widths: each weight's output dimension after each reconfiguration.
    let mut widths: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    for v in lines.iter().filter(|v| kind(v, "reconfigure")) {
        let at = num(v, "epoch");
        if let Some(shapes) = v.get("shapes").and_then(Value::as_object) {
            for (name, shape) in shapes {
                let Some(layer) = name.strip_suffix(".weight") else {
                    continue;
                };
                if let Some(width) = shape.get(0).and_then(Value::as_f64) {
                    widths
                        .entry(layer.to_owned())
                        .or_default()
                        .push((at, width));
                }
            }
        }
    }
    // ADMM's phase changes recompile without changing a shape: those are no reshapes.
    let reshaped = widths.values().any(|w| w.iter().any(|&(_, x)| x != w[0].1));
    let mut layers: BTreeMap<String, Vec<(f64, f64)>> = BTreeMap::new();
    let layers_are = if reshaped {
        layers = widths;
        "units (width) after each reshape"
    } else if epoch_lines[0].get("tracked").is_some() {
        for v in &epoch_lines {
            if let Some(per) = v.pointer("/tracked/layers").and_then(Value::as_object) {
                for (layer, n) in per {
                    let n = n.as_f64().unwrap_or(f64::NAN);
                    layers
                        .entry(layer.clone())
                        .or_default()
                        .push((num(v, "epoch"), n));
                }
            }
        }
        "tracked weights (Dropback)"
    } else {
        for v in &epoch_lines {
            if let Some(per) = v.get("sparsity").and_then(Value::as_object) {
                for (name, zeros) in per {
                    if let Some(layer) = name.strip_suffix(".weight") {
                        layers
                            .entry(layer.to_owned())
                            .or_default()
                            .push((num(v, "epoch"), 100.0 * zeros.as_f64().unwrap_or(f64::NAN)));
                    }
                }
            }
        }
        "zero weights, %"
    };
    let name = dir.file_name().map_or_else(
        || dir.display().to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    Ok(Run {
        name,
        epochs,
        layers,
        layers_are,
    })
}

fn register_font(font: Option<&Path>) -> Result<(), String> {
    let candidates: Vec<PathBuf> = font
        .map(Path::to_path_buf)
        .into_iter()
        .chain(FONTS.iter().map(PathBuf::from))
        .collect();
    let Some((path, bytes)) = candidates
        .iter()
        .find_map(|p| std::fs::read(p).ok().map(|b| (p, b)))
    else {
        return Err(match font {
            Some(f) => format!("cannot read the font `{}`", f.display()),
            None => "no font for the figure's text: install fonts-dejavu-core (Debian, Ubuntu) \
                     or give --font FILE.ttf"
                .into(),
        });
    };
    // plotters keeps registered fonts for the whole process; this one is read once.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("`{}` is not a usable TrueType font", path.display()))
}

const PALETTE: [RGBColor; 8] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
    RGBColor(140, 86, 75),
    RGBColor(127, 127, 127),
];

type Panel<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// One line of a panel.
struct Curve {
    label: String,
    colour: RGBColor,
    /// Dashed lines (test curves) share their solid twin's legend entry.
    dashed: bool,
    points: Vec<(f64, f64)>,
}

/// The range of `values` (finite ones), padded a little; `(0, 1)` when there are none.
fn range(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (lo, hi) = values
        .filter(|v| v.is_finite())
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    if !lo.is_finite() {
        return (0.0, 1.0);
    }
    // A flat series gets a visible band around it, not a range of rounding noise.
    let pad = if hi - lo > 1e-9 * hi.abs().max(1.0) {
        (hi - lo) * 0.05
    } else {
        (hi.abs() * 0.1).max(1.0)
    };
    (lo - pad, hi + pad)
}

/// An axis label: short, whatever the magnitude (`0.01`, `2.5e-4`, `1200`).
fn label(y: f64) -> String {
    let a = y.abs();
    if a == 0.0 || (1e-2..1e5).contains(&a) {
        let text = format!("{y:.3}");
        text.trim_end_matches('0').trim_end_matches('.').to_owned()
    } else {
        format!("{y:.1e}")
    }
}

/// One panel of curves against epochs: each series is (label, colour, dashed, points).
fn curves(
    area: &Panel<'_>,
    title: &str,
    y_desc: &str,
    series: &[Curve],
    log_y: bool,
) -> Result<(), Box<dyn std::error::Error>> {
    let all = || series.iter().flat_map(|s| s.points.iter());
    let (x_lo, x_hi) = range(all().map(|p| p.0));
    let (y_lo, y_hi) = range(all().map(|p| p.1));
    let mut chart = ChartBuilder::on(area);
    chart
        .caption(title, ("sans-serif", 18))
        .margin(12)
        .x_label_area_size(36)
        .y_label_area_size(64);
    macro_rules! finish {
        ($chart:expr) => {{
            let mut chart = $chart;
            chart
                .configure_mesh()
                .x_desc("epoch")
                .y_desc(y_desc)
                .x_label_formatter(&|x| format!("{x:.0}"))
                .y_label_formatter(&|y| label(*y))
                .light_line_style(BLACK.mix(0.05))
                .label_style(("sans-serif", 13))
                .draw()?;
            for curve in series {
                let style = curve.colour.stroke_width(2);
                let pts: Vec<(f64, f64)> = curve
                    .points
                    .iter()
                    .copied()
                    .filter(|p| p.1.is_finite())
                    .collect();
                if curve.dashed {
                    chart.draw_series(DashedLineSeries::new(pts, 6, 4, style))?;
                } else {
                    let colour = curve.colour;
                    chart
                        .draw_series(LineSeries::new(pts, style))?
                        .label(curve.label.clone())
                        .legend(move |(x, y)| {
                            PathElement::new([(x, y), (x + 18, y)], colour.stroke_width(2))
                        });
                }
            }
            if series.iter().any(|s| !s.dashed) {
                chart
                    .configure_series_labels()
                    .background_style(WHITE.mix(0.85))
                    .border_style(BLACK.mix(0.4))
                    .label_font(("sans-serif", 12))
                    .position(SeriesLabelPosition::UpperRight)
                    .draw()?;
            }
        }};
    }
    if log_y {
        let lo = all()
            .map(|p| p.1)
            .filter(|v| *v > 0.0)
            .fold(f64::INFINITY, f64::min);
        let lo = if lo.is_finite() { lo / 2.0 } else { 1e-4 };
        let hi = (y_hi.max(lo * 4.0)) * 2.0;
        finish!(chart.build_cartesian_2d(x_lo..x_hi, (lo..hi).log_scale())?);
    } else {
        finish!(chart.build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)?);
    }
    Ok(())
}

fn draw(runs: &[Run], png: &Path) -> Result<(), Box<dyn std::error::Error>> {
    let root = BitMapBackend::new(png, (1280, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let panels = root.split_evenly((2, 2));
    let colour = |i: usize| PALETTE[i % PALETTE.len()];
    let pick = |i: usize, col: usize, dashed: bool| Curve {
        label: runs[i].name.clone(),
        colour: colour(i),
        dashed,
        points: runs[i].epochs.iter().map(|e| (e[0], e[col])).collect(),
    };
    let mut loss = Vec::new();
    let mut accuracy = Vec::new();
    let mut lr = Vec::new();
    for i in 0..runs.len() {
        loss.push(pick(i, 1, false));
        loss.push(pick(i, 2, true));
        accuracy.push(pick(i, 3, false));
        accuracy.push(pick(i, 4, true));
        lr.push(pick(i, 5, false));
    }
    curves(
        &panels[0],
        "loss (solid: train, dashed: test)",
        "loss",
        &loss,
        false,
    )?;
    curves(
        &panels[1],
        "accuracy (solid: train, dashed: test)",
        "accuracy, %",
        &accuracy,
        false,
    )?;
    curves(&panels[2], "learning rate", "lr (log scale)", &lr, true)?;
    let first = &runs[0];
    let layers: Vec<_> = first
        .layers
        .iter()
        .enumerate()
        .map(|(i, (name, points))| Curve {
            label: name.clone(),
            colour: colour(i),
            dashed: false,
            points: points.clone(),
        })
        .collect();
    curves(
        &panels[3],
        &format!("{}: {}", first.name, first.layers_are),
        first.layers_are,
        &layers,
        false,
    )?;
    root.present()?;
    Ok(())
}

/// Draw the runs in `dirs` into `out` (default: the first run's `plot.png`); returns what was
/// written.
pub fn plot(dirs: &[PathBuf], out: Option<&Path>, font: Option<&Path>) -> Result<String, String> {
    let Some(first) = dirs.first() else {
        return Err("give at least one run directory".into());
    };
    let out = match out {
        Some(path) => path.to_path_buf(),
        None if dirs.len() == 1 => first.join("plot.png"),
        None => {
            return Err("several runs go on one figure: say where with --out FILE.png".to_owned())
        }
    };
    if out.extension().is_none_or(|e| e != "png") {
        return Err(format!(
            "`{}`: the figure is a PNG file (.png)",
            out.display()
        ));
    }
    let runs = dirs
        .iter()
        .map(|d| read_run(d))
        .collect::<Result<Vec<_>, _>>()?;
    register_font(font)?;
    draw(&runs, &out).map_err(|e| format!("cannot draw `{}`: {e}", out.display()))?;
    Ok(format!("wrote {}\n", out.display()))
}
