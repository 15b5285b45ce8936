//! What the figure binaries share: `DATA.json OUT.png [--font TTF]` on the command line, the
//! data file read as JSON, and the font registered with plotters.

use std::process::ExitCode;

use plotters::style::FontStyle;
use serde_json::Value;

const DEFAULT_FONT: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";

/// Parse `args`, read the data file and register the font; then `draw(data, png)`.
pub fn run(
    name: &str,
    args: &[String],
    draw: impl FnOnce(&Value, &str) -> Result<(), String>,
) -> Result<(), String> {
    let mut font = DEFAULT_FONT.to_owned();
    let mut paths = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--font" => font = it.next().ok_or("--font needs a path")?.clone(),
            s if s.starts_with('-') => return Err(format!("unknown option `{s}`")),
            _ => paths.push(a.clone()),
        }
    }
    let [json, png] = paths.as_slice() else {
        return Err(format!("usage: {name} DATA.json OUT.png [--font TTF]"));
    };
    let text = std::fs::read_to_string(json).map_err(|e| format!("cannot read {json}: {e}"))?;
    let data: Value =
        serde_json::from_str(&text).map_err(|e| format!("{json} is not valid JSON: {e}"))?;
    let bytes = std::fs::read(&font).map_err(|e| {
        format!("cannot read the font {font}: {e} (install fonts-dejavu-core, or pass --font)")
    })?;
    // plotters keeps registered fonts for the whole process; this one is read once per run.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    plotters::style::register_font("sans-serif", FontStyle::Normal, bytes)
        .map_err(|_| format!("{font} is not a usable TrueType font"))?;
    draw(&data, png).map_err(|e| format!("{json}: {e}"))
}

/// A label of a log compression axis: of its 1, 2, ..., 9, 10, 20, ... marks only the 1-2-5
/// ones are named (`10×`), so that the labels do not run into each other.
#[allow(dead_code)] // not every figure has a compression axis
pub fn compression_label(x: &f64) -> String {
    let lead = x / 10f64.powf(x.log10().floor());
    if [1.0, 2.0, 5.0].iter().any(|m| (lead - m).abs() < 1e-6) {
        format!("{x:.0}×")
    } else {
        String::new()
    }
}

/// `main` of a figure binary: [`run`] with the process's arguments, errors on stderr.
pub fn main(name: &str, draw: impl FnOnce(&Value, &str) -> Result<(), String>) -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match run(name, &args, draw) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
