//! `admm-plot`: the figure of docs/results/admm.md, test accuracy against compression, drawn
//! with plotters from the report's data file (bench/admm_report.py writes its `series`).
//!
//!     cargo run --release -p sparsec-plot --bin admm-plot -- \
//!         docs/results/admm.json docs/results/admm.png
//!
//! Each progressive chain is a line through its stage ends, each one-shot run a lone point (a
//! square); a point is the mean over seeds with a bar from the lowest to the highest seed; the
//! dense baselines are horizontal lines. sparsec in blue (chains) and red (one-shot), the PyTorch
//! peer in green, shifted a little to the right.

#![forbid(unsafe_code)]

use std::process::ExitCode;

use plotters::prelude::*;
use serde_json::Value;

#[path = "cli.rs"]
mod cli;

/// One point: compression and the accuracies (%) of its seeds.
#[derive(Debug, Clone, PartialEq)]
struct Point {
    compression: f64,
    accuracies: Vec<f64>,
}

impl Point {
    fn mean(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len().max(1) as f64
    }
    fn low(&self) -> f64 {
        self.accuracies
            .iter()
            .copied()
            .fold(f64::INFINITY, f64::min)
    }
    fn high(&self) -> f64 {
        self.accuracies
            .iter()
            .copied()
            .fold(f64::NEG_INFINITY, f64::max)
    }
}

#[derive(Debug)]
struct Series {
    implementation: String,
    config: String,
    kind: String,
    points: Vec<Point>,
}

fn series(data: &Value) -> Result<Vec<Series>, String> {
    let list = data["series"]
        .as_array()
        .ok_or("the data file has no `series`")?;
    let mut out = Vec::new();
    for s in list {
        let text = |k: &str| {
            s[k].as_str()
                .map(str::to_owned)
                .ok_or_else(|| format!("a series without `{k}`"))
        };
        let mut points = Vec::new();
        for p in s["points"].as_array().ok_or("a series without `points`")? {
            let compression = p["compression"]
                .as_f64()
                .ok_or("a point without `compression`")?;
            let accuracies: Vec<f64> = p["accuracies"]
                .as_array()
                .ok_or("a point without `accuracies`")?
                .iter()
                .filter_map(Value::as_f64)
                .map(|a| 100.0 * a)
                .collect();
            if accuracies.is_empty() {
                return Err("a point without accuracies".into());
            }
            points.push(Point {
                compression,
                accuracies,
            });
        }
        out.push(Series {
            implementation: text("implementation")?,
            config: text("config")?,
            kind: text("kind")?,
            points,
        });
    }
    if out.is_empty() {
        return Err("the data file's `series` is empty".into());
    }
    Ok(out)
}

/// How far right the peer's points sit (a factor on the log axis).
const PEER_SHIFT: f64 = 1.06;

fn draw(all: &[Series], png: &str) -> Result<(), Box<dyn std::error::Error>> {
    let points = || all.iter().flat_map(|s| s.points.iter());
    let lo = points().map(Point::low).fold(f64::INFINITY, f64::min);
    let hi = points().map(Point::high).fold(f64::NEG_INFINITY, f64::max);
    let x_max = points().map(|p| p.compression).fold(1.0, f64::max) * 1.6;
    let root = BitMapBackend::new(png, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "ADMM on Fashion-MNIST (LeNet-5): accuracy against compression",
            ("sans-serif", 22),
        )
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((0.9f64..x_max).log_scale(), (lo - 0.5)..(hi + 0.5))?;
    chart
        .configure_mesh()
        .x_desc("compression of the pruned layers: weights / weights kept (log scale)")
        .y_desc("test accuracy, % (mean; bar: seed range)")
        .x_labels(30)
        .x_label_formatter(&cli::compression_label)
        .light_line_style(BLACK.mix(0.04))
        .label_style(("sans-serif", 15))
        .draw()?;
    let green = RGBColor(0, 140, 70);
    for s in all {
        let peer = s.implementation != "sparsec";
        let shift = if peer { PEER_SHIFT } else { 1.0 };
        let colour = match (peer, s.kind.as_str()) {
            (true, _) => green,
            (false, "oneshot") => RED,
            (false, "dense") => BLACK,
            _ => BLUE,
        };
        let who = &s.implementation;
        if s.kind == "dense" {
            let d = s.points[0].mean();
            let style = colour.mix(0.6).stroke_width(1);
            chart
                .draw_series(LineSeries::new([(0.9, d), (x_max, d)], style))?
                .label(format!("{who} dense baseline ({d:.2} %)"))
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
            continue;
        }
        let pts: Vec<(f64, f64)> = s
            .points
            .iter()
            .map(|p| (p.compression * shift, p.mean()))
            .collect();
        if s.kind == "progressive" {
            chart
                .draw_series(LineSeries::new(pts.clone(), colour.stroke_width(2)))?
                .label(format!("{who} {} (stage ends)", s.config))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], colour.stroke_width(2))
                });
        }
        chart.draw_series(s.points.iter().map(|p| {
            ErrorBar::new_vertical(
                p.compression * shift,
                p.low(),
                p.mean(),
                p.high(),
                colour.filled(),
                8,
            )
        }))?;
        if s.kind == "oneshot" {
            chart
                .draw_series(pts.iter().map(|&(x, y)| {
                    Rectangle::new(
                        [(x / 1.025, y - 0.12), (x * 1.025, y + 0.12)],
                        colour.filled(),
                    )
                }))?
                .label(format!("{who} {}", s.config))
                .legend(move |(x, y)| {
                    Rectangle::new([(x + 5, y - 4), (x + 13, y + 4)], colour.filled())
                });
        } else {
            chart.draw_series(pts.iter().map(|&p| Circle::new(p, 4, colour.filled())))?;
        }
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerLeft)
        .label_font(("sans-serif", 15))
        .draw()?;
    root.present()?;
    Ok(())
}

fn figure(data: &Value, png: &str) -> Result<(), String> {
    let all = series(data)?;
    draw(&all, png).map_err(|e| format!("cannot draw {png}: {e}"))
}

fn main() -> ExitCode {
    cli::main("admm-plot", figure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_read_their_points_in_percent() {
        let data: Value = serde_json::from_str(
            r#"{"series": [
                {"implementation": "sparsec", "config": "dense", "kind": "dense",
                 "points": [{"compression": 1.0, "accuracies": [0.91, 0.92]}]},
                {"implementation": "sparsec", "config": "prog-71", "kind": "progressive",
                 "points": [{"compression": 10.0, "accuracies": [0.9]},
                            {"compression": 71.0, "accuracies": [0.88, 0.9]}]}
            ]}"#,
        )
        .unwrap();
        let s = series(&data).unwrap();
        assert_eq!(s.len(), 2);
        assert!((s[0].points[0].mean() - 91.5).abs() < 1e-9);
        assert!((s[1].points[1].low() - 88.0).abs() < 1e-9);
        assert!(series(&serde_json::json!({"series": []})).is_err());
        let no_acc = serde_json::json!({"series": [{"implementation": "a", "config": "b",
            "kind": "oneshot", "points": [{"compression": 2.0, "accuracies": []}]}]});
        assert!(series(&no_acc).unwrap_err().contains("accuracies"));
    }
}
