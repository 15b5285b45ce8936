//! `dropback-plot`: the figure of docs/results/dropback.md, test accuracy against compression,
//! drawn with plotters from the report's data file (bench/dropback_report.py writes it).
//!
//!     cargo run --release -p sparsec-plot -- docs/results/dropback.json docs/results/dropback.png
//!
//! Each configuration is one point: the mean test accuracy over its seeds with a bar from the
//! lowest to the highest seed; plain Dropback ratios are joined by a line, the `freeze_after` and
//! `decay_init` variants stand alone, and the dense baseline's mean is a horizontal line. When the
//! data file has a peer's runs (`peer_runs`), they are drawn the same way in green, shifted a
//! little to the right so that the two implementations' bars do not overlap. Text needs a TrueType
//! font: `--font PATH` (default DejaVu Sans, as Debian installs it).

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::process::ExitCode;

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};
use serde_json::Value;

mod cli;

/// One configuration's points over its seeds.
#[derive(Debug)]
struct Config {
    compression: f64,
    accuracies: Vec<f64>,
    variant: bool,
    dense: bool,
}

impl Config {
    fn mean(&self) -> f64 {
        self.accuracies.iter().sum::<f64>() / self.accuracies.len() as f64
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

/// The configurations of the data file's `key` list of runs (`runs`: sparsec's, `peer_runs`: a
/// peer's).
fn configs(data: &Value, key: &str) -> Result<BTreeMap<String, Config>, String> {
    let runs = data
        .get(key)
        .and_then(Value::as_array)
        .ok_or(format!("the data file has no `{key}` list"))?;
    let mut out: BTreeMap<String, Config> = BTreeMap::new();
    for r in runs {
        let field = |k: &str| r.get(k).ok_or_else(|| format!("a run without `{k}`"));
        let name = field("name")?.as_str().ok_or("a run name is not text")?;
        let accuracy = field("test_accuracy")?
            .as_f64()
            .ok_or("a test accuracy is not a number")?;
        let compression = field("compression")?
            .as_f64()
            .ok_or("a compression is not a number")?;
        let dense = field("mode")?.as_str() == Some("dense");
        let variant = !r.get("freeze_after").is_none_or(Value::is_null)
            || !r.get("decay_init").is_none_or(Value::is_null);
        let c = out.entry(name.to_owned()).or_insert(Config {
            compression,
            accuracies: Vec::new(),
            variant,
            dense,
        });
        c.accuracies.push(accuracy * 100.0);
    }
    if out.is_empty() {
        return Err("the data file has no runs".into());
    }
    Ok(out)
}

/// Plain Dropback configurations (no variant), by compression.
fn plain(configs: &BTreeMap<String, Config>) -> Vec<&Config> {
    let mut v: Vec<&Config> = configs
        .values()
        .filter(|c| !c.dense && !c.variant)
        .collect();
    v.sort_by(|a, b| a.compression.total_cmp(&b.compression));
    v
}

/// A peer's name and configurations, drawn beside sparsec's.
type Peer<'a> = (&'a str, &'a BTreeMap<String, Config>);

/// How far right a peer's points sit (a factor on the log axis).
const PEER_SHIFT: f64 = 1.08;

fn draw(
    configs: &BTreeMap<String, Config>,
    peer: Option<Peer>,
    png: &str,
) -> Result<(), Box<dyn std::error::Error>> {
    let plain = plain(configs);
    let dense = configs.values().find(|c| c.dense).map(Config::mean);
    let everything = || {
        configs
            .values()
            .chain(peer.iter().flat_map(|(_, p)| p.values()))
    };
    let lo = everything().map(Config::low).fold(f64::INFINITY, f64::min);
    let hi = everything()
        .map(Config::high)
        .fold(f64::NEG_INFINITY, f64::max);
    let x_max = everything().map(|c| c.compression).fold(1.0, f64::max) * 1.5;
    let root = BitMapBackend::new(png, (960, 600)).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Dropback on Fashion-MNIST (LeNet-300-100): accuracy against compression",
            ("sans-serif", 22),
        )
        .margin(18)
        .x_label_area_size(50)
        .y_label_area_size(60)
        .build_cartesian_2d((0.9f64..x_max).log_scale(), (lo - 0.5)..(hi + 0.5))?;
    chart
        .configure_mesh()
        .x_desc("compression: N / weights kept (log scale)")
        .y_desc("test accuracy, % (mean; bar: seed range)")
        .x_labels(30)
        .x_label_formatter(&cli::compression_label)
        .light_line_style(BLACK.mix(0.04))
        .label_style(("sans-serif", 15))
        .draw()?;
    if let Some(d) = dense {
        chart
            .draw_series(LineSeries::new(
                [(0.9, d), (x_max, d)],
                BLACK.mix(0.6).stroke_width(1),
            ))?
            .label(format!("sparsec dense baseline ({d:.2} %)"))
            .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK.mix(0.6)));
    }
    chart
        .draw_series(LineSeries::new(
            plain.iter().map(|c| (c.compression, c.mean())),
            BLUE.stroke_width(2),
        ))?
        .label("sparsec Dropback (plain SGD)")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLUE.stroke_width(2)));
    for (colour, set) in [
        (BLUE, plain.clone()),
        (
            RED,
            configs.values().filter(|c| c.variant).collect::<Vec<_>>(),
        ),
    ] {
        chart.draw_series(set.iter().map(|c| {
            ErrorBar::new_vertical(
                c.compression,
                c.low(),
                c.mean(),
                c.high(),
                colour.filled(),
                8,
            )
        }))?;
        chart.draw_series(
            set.iter()
                .map(|c| Circle::new((c.compression, c.mean()), 4, colour.filled())),
        )?;
    }
    if let Some((name, peer)) = peer {
        draw_peer(&mut chart, name, peer, x_max)?;
    }
    // Variants are named on their left: a peer's points sit on the right.
    for (name, c) in configs.iter().filter(|(_, c)| c.variant) {
        chart.draw_series(std::iter::once(Text::new(
            name.trim_start_matches("dropback-").to_owned(),
            (c.compression / 1.03, c.mean()),
            ("sans-serif", 14)
                .into_font()
                .color(&RED)
                .pos(Pos::new(HPos::Right, VPos::Center)),
        )))?;
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

type Chart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<
        plotters::coord::combinators::LogCoord<f64>,
        plotters::coord::types::RangedCoordf64,
    >,
>;

/// A peer's configurations in green: dense line dashed, plain ratios joined, variants as
/// triangles; every point shifted right by [`PEER_SHIFT`].
fn draw_peer(
    chart: &mut Chart,
    name: &str,
    peer: &BTreeMap<String, Config>,
    x_max: f64,
) -> Result<(), Box<dyn std::error::Error>> {
    let green = RGBColor(0, 140, 70);
    if let Some(d) = peer.values().find(|c| c.dense).map(Config::mean) {
        chart
            .draw_series(DashedLineSeries::new(
                [(0.9, d), (x_max, d)],
                6,
                4,
                green.mix(0.8).stroke_width(1),
            ))?
            .label(format!("{name} dense baseline ({d:.2} %)"))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.mix(0.8)));
    }
    let plain = plain(peer);
    chart
        .draw_series(LineSeries::new(
            plain.iter().map(|c| (c.compression * PEER_SHIFT, c.mean())),
            green.stroke_width(2),
        ))?
        .label(format!("{name} Dropback, same settings (triangles)"))
        .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], green.stroke_width(2)));
    let shown: Vec<&Config> = peer.values().filter(|c| !c.dense).collect();
    chart.draw_series(shown.iter().map(|c| {
        ErrorBar::new_vertical(
            c.compression * PEER_SHIFT,
            c.low(),
            c.mean(),
            c.high(),
            green.filled(),
            8,
        )
    }))?;
    chart.draw_series(shown.iter().map(|c| {
        TriangleMarker::new(
            (c.compression * PEER_SHIFT, c.mean()),
            if c.variant { 8 } else { 7 },
            if c.variant {
                RED.filled()
            } else {
                green.filled()
            },
        )
    }))?;
    Ok(())
}

/// The figure from the report's data: ours and, when the data file has them, a peer's runs.
fn figure(data: &Value, png: &str) -> Result<(), String> {
    let ours = configs(data, "runs")?;
    // A peer's runs are optional: older data files and sweeps without `--peer` have none.
    let peer_name = data.get("peer").and_then(Value::as_str).unwrap_or("peer");
    let peer = match data.get("peer_runs").and_then(Value::as_array) {
        Some(runs) if !runs.is_empty() => Some(configs(data, "peer_runs")?),
        _ => None,
    };
    draw(&ours, peer.as_ref().map(|p| (peer_name, p)), png)
        .map_err(|e| format!("cannot draw {png}: {e}"))
}

fn main() -> ExitCode {
    cli::main("dropback-plot", figure)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_group_into_configurations_with_their_seed_range() {
        let data: Value = serde_json::from_str(
            r#"{"runs": [
                {"name": "dense", "mode": "dense", "test_accuracy": 0.88, "compression": 1.0},
                {"name": "dropback-x25", "mode": "dropback", "test_accuracy": 0.86, "compression": 25.0},
                {"name": "dropback-x25", "mode": "dropback", "test_accuracy": 0.85, "compression": 25.0},
                {"name": "dropback-x25-freeze5", "mode": "dropback", "freeze_after": 5,
                 "test_accuracy": 0.84, "compression": 25.0}
            ]}"#,
        )
        .unwrap();
        let c = configs(&data, "runs").unwrap();
        assert_eq!(c.len(), 3);
        let x25 = &c["dropback-x25"];
        assert!((x25.mean() - 85.5).abs() < 1e-9);
        assert!((x25.low() - 85.0).abs() < 1e-9 && (x25.high() - 86.0).abs() < 1e-9);
        assert!(!x25.variant && !x25.dense);
        assert!(c["dropback-x25-freeze5"].variant);
        assert!(c["dense"].dense);
    }

    #[test]
    fn a_malformed_data_file_is_an_error() {
        let no_runs: Value = serde_json::from_str(r#"{"params_total": 3}"#).unwrap();
        assert!(configs(&no_runs, "runs").unwrap_err().contains("runs"));
        let no_accuracy: Value =
            serde_json::from_str(r#"{"runs": [{"name": "a", "mode": "dense", "compression": 1}]}"#)
                .unwrap();
        assert!(configs(&no_accuracy, "runs")
            .unwrap_err()
            .contains("test_accuracy"));
        assert!(cli::run("dropback-plot", &["only-one.json".into()], figure)
            .unwrap_err()
            .contains("usage"));
        assert!(cli::run("dropback-plot", &["--bogus".into()], figure)
            .unwrap_err()
            .contains("unknown option"));
    }
}
