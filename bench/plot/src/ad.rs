//! `ad-plot`: the figure of docs/results/activation_density.md, drawn with plotters from the
//! report's data file (bench/activation_density_report.py writes it).
//!
//!     cargo run --release -p sparsec-plot --bin ad-plot -- \
//!         docs/results/activation_density.json docs/results/activation_density.png
//!
//! One row per model. Left: the summed width of the resized layers over the epochs, one line per
//! resize schedule (seed 1; log scale). Right: test accuracy after each epoch, the mean over
//! seeds of each schedule and of the dense baseline (black). sparsec's runs only; the PyTorch
//! peer's numbers are in the tables.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use plotters::prelude::*;
use serde_json::Value;

#[path = "cli.rs"]
mod cli;

/// One schedule of one model: its width steps (seed 1) and its mean accuracy per epoch.
#[derive(Default)]
struct Series {
    widths: Vec<(f64, f64)>,
    accuracy: Vec<Vec<f64>>,
}

fn sum(v: &Value) -> f64 {
    v.as_object()
        .map_or(0.0, |m| m.values().filter_map(Value::as_f64).sum())
}

fn series(data: &Value) -> Result<BTreeMap<String, BTreeMap<String, Series>>, String> {
    let runs = data["runs"].as_array().ok_or("no `runs` list")?;
    let mut out: BTreeMap<String, BTreeMap<String, Series>> = BTreeMap::new();
    for r in runs.iter().filter(|r| r["implementation"] == "sparsec") {
        let model = r["model"].as_str().ok_or("a run without `model`")?;
        let name = r["name"].as_str().ok_or("a run without `name`")?;
        let s = out
            .entry(model.to_owned())
            .or_default()
            .entry(name.to_owned())
            .or_default();
        let acc: Vec<f64> = r["test_accuracy_by_epoch"]
            .as_array()
            .ok_or("a run without `test_accuracy_by_epoch`")?
            .iter()
            .filter_map(Value::as_f64)
            .map(|a| 100.0 * a)
            .collect();
        if r["seed"] == 1 && r["mode"] != "dense" {
            let mut w = sum(&r["original_widths"]);
            let mut steps = vec![(0.0, w)];
            for e in r["widths_by_epoch"].as_array().into_iter().flatten() {
                let epoch = e["epoch"].as_f64().unwrap_or(0.0);
                steps.push((epoch, w));
                w = sum(&e["widths"]);
                steps.push((epoch, w));
            }
            steps.push((acc.len() as f64, w));
            s.widths = steps;
        }
        s.accuracy.push(acc);
    }
    Ok(out)
}

fn mean_by_epoch(runs: &[Vec<f64>]) -> Vec<(f64, f64)> {
    let epochs = runs.iter().map(Vec::len).min().unwrap_or(0);
    (0..epochs)
        .map(|e| {
            let m = runs.iter().map(|r| r[e]).sum::<f64>() / runs.len() as f64;
            ((e + 1) as f64, m)
        })
        .collect()
}

fn draw(
    data: &BTreeMap<String, BTreeMap<String, Series>>,
    png: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let rows = data.len().max(1);
    let root = BitMapBackend::new(png, (1200, 420 * rows as u32)).into_drawing_area();
    root.fill(&WHITE)?;
    let palette = [BLUE, RED, GREEN, MAGENTA, CYAN, RGBColor(230, 140, 0)];
    for ((model, configs), row) in data.iter().zip(root.split_evenly((rows, 1))) {
        let (left, right) = row.split_horizontally(600);
        let epochs = configs
            .values()
            .flat_map(|s| s.accuracy.iter().map(Vec::len))
            .max()
            .unwrap_or(1) as f64;
        let w_max = configs
            .values()
            .flat_map(|s| s.widths.iter().map(|p| p.1))
            .fold(1.0, f64::max);
        let w_min = configs
            .values()
            .flat_map(|s| s.widths.iter().map(|p| p.1))
            .fold(w_max, f64::min);
        let mut chart = ChartBuilder::on(&left)
            .caption(
                format!("{model}: width of the resized layers"),
                ("sans-serif", 18),
            )
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(0f64..epochs, (w_min * 0.8..w_max * 1.2).log_scale())?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("units + channels (seed 1)")
            .y_labels(16)
            .y_label_formatter(&|y| format!("{y:.0}"))
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 13))
            .light_line_style(BLACK.mix(0.04))
            .draw()?;
        let mut colour = palette.iter().cycle();
        let mut colours = BTreeMap::new();
        for (name, s) in configs.iter().filter(|(n, _)| *n != "dense") {
            let c = *colour.next().expect("a cycle");
            colours.insert(name.clone(), c);
            chart
                .draw_series(LineSeries::new(s.widths.clone(), c.stroke_width(2)))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerLeft)
            .label_font(("sans-serif", 13))
            .draw()?;

        let all: Vec<f64> = configs
            .values()
            .flat_map(|s| mean_by_epoch(&s.accuracy).into_iter().map(|p| p.1))
            .collect();
        let lo = all.iter().copied().fold(f64::INFINITY, f64::min);
        let hi = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let mut chart = ChartBuilder::on(&right)
            .caption(format!("{model}: test accuracy"), ("sans-serif", 18))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(55)
            .build_cartesian_2d(1f64..epochs, (lo - 0.5)..(hi + 0.5))?;
        chart
            .configure_mesh()
            .x_desc("epoch")
            .y_desc("test accuracy, % (mean over seeds)")
            .x_label_formatter(&|x| format!("{x:.0}"))
            .label_style(("sans-serif", 13))
            .light_line_style(BLACK.mix(0.04))
            .draw()?;
        for (name, s) in configs {
            let c = colours.get(name).copied().unwrap_or(BLACK);
            chart
                .draw_series(LineSeries::new(
                    mean_by_epoch(&s.accuracy),
                    c.stroke_width(2),
                ))?
                .label(name.clone())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 18, y)], c.stroke_width(2)));
        }
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .position(SeriesLabelPosition::LowerRight)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}

fn figure(data: &Value, png: &str) -> Result<(), String> {
    let data = series(data)?;
    draw(&data, png).map_err(|e| format!("cannot draw {png}: {e}"))
}

fn main() -> ExitCode {
    cli::main("ad-plot", figure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn widths_step_down_at_each_resize_and_accuracy_averages_over_seeds() {
        let data: Value = serde_json::from_str(
            r#"{"runs": [
              {"implementation": "sparsec", "model": "m", "name": "ad", "mode": "activation_density",
               "seed": 1, "test_accuracy_by_epoch": [0.5, 0.6, 0.7],
               "original_widths": {"a": 10, "b": 6},
               "widths_by_epoch": [{"epoch": 1, "widths": {"a": 4, "b": 2}}]},
              {"implementation": "sparsec", "model": "m", "name": "ad", "mode": "activation_density",
               "seed": 2, "test_accuracy_by_epoch": [0.7, 0.8, 0.9], "widths_by_epoch": []},
              {"implementation": "torch", "model": "m", "name": "ad", "seed": 1}
            ]}"#,
        )
        .unwrap();
        let s = series(&data).unwrap();
        let ad = &s["m"]["ad"];
        assert_eq!(
            ad.widths,
            vec![(0.0, 16.0), (1.0, 16.0), (1.0, 6.0), (3.0, 6.0)]
        );
        let mean = mean_by_epoch(&ad.accuracy);
        assert!((mean[0].1 - 60.0).abs() < 1e-9 && (mean[2].1 - 80.0).abs() < 1e-9);
    }
}
