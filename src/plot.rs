//! PNG plots of evaluation results given as plain series ([`PlotData`]; `eval` builds them from its
//! results, so this module imports nothing above it): test accuracy against token retention and
//! against measured examples/s at batch 1, one line per mode family, dense as a marked point plus
//! a horizontal reference line.
//!
//! Drawing needs no system fonts: plotters renders text with `ab_glyph` from the DejaVu Sans font
//! embedded by the `dejavu` crate (registered once as `sans-serif`), into an in-memory RGB buffer
//! that the `image` crate encodes as PNG (see `docs/STACK.md`).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::prelude::*;
use plotters::style::FontStyle;

/// One operating point to plot.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotPoint {
    /// Mode family (`dense`, `abt`, ...): one line per family.
    pub family: String,
    /// `Some(base)`: this family repeats family `base` with an int8 teacher (`eval
    /// --int8-rows`): drawn in `base`'s colour, dashed, with hollow markers.
    pub int8_of: Option<String>,
    /// Token retention (section 5), 0..1.
    pub retention: f64,
    /// Measured examples/s at batch 1.
    pub examples_per_s_b1: f64,
    /// The task's primary metric on test, 0..1.
    pub test_metric: f64,
}

/// What [`plot_results`] draws.
#[derive(Debug, Clone, PartialEq)]
pub struct PlotData {
    pub points: Vec<PlotPoint>,
    /// Dense's test metric (0..1), the reference line when no `dense` point is given; NaN = none.
    pub dense_test_metric: f64,
    /// The metric's name (`accuracy`, `matthews_corr`, ...), for the axis.
    pub metric: String,
}

/// The share of the throughput plot's width kept free of data on the right for the legend.
const LEGEND_BAND: f64 = 0.28;

/// Image width in pixels.
pub const WIDTH: u32 = 1000;
/// Image height in pixels.
pub const HEIGHT: u32 = 650;

/// File names written by [`plot_results`], in the order returned.
pub const FILE_NAMES: [&str; 2] = ["accuracy_vs_retention.png", "accuracy_vs_throughput_b1.png"];

const FONT: &str = "sans-serif";

/// Why a plot could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlotError {
    #[error("nothing to plot: the results have no point with finite values")]
    NoPoints,
    #[error("could not register the embedded DejaVu Sans font with plotters")]
    Font,
    #[error("drawing failed: {0}")]
    Draw(String),
    #[error("encoding PNG failed: {0}")]
    Encode(#[from] image::ImageError),
    #[error("I/O error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn draw_err<E: std::fmt::Display>(e: E) -> PlotError {
    PlotError::Draw(e.to_string())
}

/// Register the embedded font as `sans-serif` (once per process).
pub(crate) fn ensure_font() -> Result<(), PlotError> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| plotters::style::register_font(FONT, FontStyle::Normal, dejavu::sans::regular()).is_ok());
    if ok {
        Ok(())
    } else {
        Err(PlotError::Font)
    }
}

/// Which measurement goes on the x axis.
#[derive(Clone, Copy, PartialEq)]
enum XAxis {
    Retention,
    ThroughputB1,
}

impl XAxis {
    fn value(self, p: &PlotPoint) -> f64 {
        match self {
            XAxis::Retention => p.retention * 100.0,
            XAxis::ThroughputB1 => p.examples_per_s_b1,
        }
    }
    fn desc(self) -> &'static str {
        match self {
            XAxis::Retention => "token retention (%)",
            XAxis::ThroughputB1 => "examples/s (batch 1)",
        }
    }
    fn subtitle(self) -> &'static str {
        match self {
            XAxis::Retention => "accuracy vs retention",
            XAxis::ThroughputB1 => "accuracy vs throughput (batch 1)",
        }
    }
    fn legend_position(self) -> SeriesLabelPosition {
        // Accuracy falls as retention falls (left): the lower right holds only dense's column.
        // Against throughput the slow oracle sits low on the left and the fast settings low on
        // the right, so no lower corner is free: the x range gets an empty band on the right
        // ([`LEGEND_BAND`]) and the legend goes there, as tall as it needs.
        match self {
            XAxis::Retention => SeriesLabelPosition::LowerRight,
            XAxis::ThroughputB1 => SeriesLabelPosition::UpperRight,
        }
    }
}

fn family_color(family: &str, index: usize) -> RGBColor {
    match family {
        "dense" => RGBColor(0, 0, 0),
        "abt" => RGBColor(31, 119, 180),
        "abt-actual" => RGBColor(214, 39, 40),
        "topk" => RGBColor(44, 160, 44),
        _ => {
            let extra =
                [RGBColor(255, 127, 14), RGBColor(148, 103, 189), RGBColor(140, 86, 75), RGBColor(227, 119, 194), RGBColor(23, 190, 207)];
            extra[index % extra.len()]
        }
    }
}

/// One family's points as (x, accuracy %) sorted by x, skipping non-finite values.
struct Series {
    family: String,
    int8_of: Option<String>,
    points: Vec<(f64, f64)>,
}

fn collect_series(r: &PlotData, axis: XAxis) -> Vec<Series> {
    let mut out: Vec<Series> = Vec::new();
    for p in &r.points {
        let (x, y) = (axis.value(p), p.test_metric * 100.0);
        if !x.is_finite() || !y.is_finite() {
            continue;
        }
        match out.iter_mut().find(|s| s.family == p.family) {
            Some(s) => s.points.push((x, y)),
            None => out.push(Series { family: p.family.clone(), int8_of: p.int8_of.clone(), points: vec![(x, y)] }),
        }
    }
    for s in &mut out {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.total_cmp(&b.1)));
    }
    out
}

/// `lo..hi` padded by `frac` of the span (or by a fixed amount when the span is zero).
fn padded(lo: f64, hi: f64, frac: f64, min_pad: f64) -> (f64, f64) {
    let pad = ((hi - lo) * frac).max(min_pad);
    (lo - pad, hi + pad)
}

/// Draw one chart into an RGB buffer of `WIDTH x HEIGHT`.
fn render(r: &PlotData, axis: XAxis, title: &str) -> Result<Vec<u8>, PlotError> {
    let series = collect_series(r, axis);
    let all: Vec<(f64, f64)> = series.iter().flat_map(|s| s.points.iter().copied()).collect();
    if all.is_empty() {
        return Err(PlotError::NoPoints);
    }
    // Dense reference: the dense family's point, else the recorded dense accuracy.
    let dense_point = series.iter().find(|s| s.family == "dense").and_then(|s| s.points.first().copied());
    let dense_acc = dense_point
        .map(|p| p.1)
        .or_else(|| Some(r.dense_test_metric * 100.0).filter(|a| a.is_finite() && r.points.iter().any(|p| p.family == "dense")));

    let (mut x_lo, mut x_hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.0), hi.max(p.0)));
    let (mut y_lo, mut y_hi) = all.iter().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| (lo.min(p.1), hi.max(p.1)));
    if let Some(a) = dense_acc {
        y_lo = y_lo.min(a);
        y_hi = y_hi.max(a);
    }
    match axis {
        XAxis::Retention => {
            (x_lo, x_hi) = padded(x_lo, x_hi, 0.05, 2.0);
            x_lo = x_lo.max(0.0);
            x_hi = x_hi.min(105.0);
        }
        XAxis::ThroughputB1 => {
            (x_lo, x_hi) = padded(x_lo, x_hi, 0.08, (x_hi.abs() * 0.05).max(1e-3));
            x_lo = x_lo.max(0.0);
            x_hi += (x_hi - x_lo) * LEGEND_BAND / (1.0 - LEGEND_BAND);
        }
    }
    // Extra room below for the retention plot's legend (the throughput plot's is on the right).
    let span = (y_hi - y_lo).max(1.0);
    let below = if axis == XAxis::Retention { 0.35 } else { 0.08 };
    (y_lo, y_hi) = (y_lo - below * span, y_hi + 0.08 * span);
    y_lo = y_lo.max(0.0);
    y_hi = y_hi.min(100.0).max(y_lo + 1.0);

    let mut buf = vec![0u8; (WIDTH * HEIGHT * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buf, (WIDTH, HEIGHT)).into_drawing_area();
        root.fill(&WHITE).map_err(draw_err)?;
        let caption = if title.is_empty() { axis.subtitle().to_string() } else { format!("{title}: {}", axis.subtitle()) };
        let mut chart = ChartBuilder::on(&root)
            .caption(caption, (FONT, 26))
            .margin(18)
            .x_label_area_size(55)
            .y_label_area_size(70)
            .build_cartesian_2d(x_lo..x_hi, y_lo..y_hi)
            .map_err(draw_err)?;
        chart
            .configure_mesh()
            .x_desc(axis.desc())
            .y_desc(format!("test {} (%)", r.metric.replace('_', " ")))
            .axis_desc_style((FONT, 20))
            .label_style((FONT, 15))
            .light_line_style(RGBColor(235, 235, 235))
            .bold_line_style(RGBColor(205, 205, 205))
            .draw()
            .map_err(draw_err)?;

        if let Some(a) = dense_acc {
            let grey = RGBColor(90, 90, 90);
            chart
                .draw_series(DashedLineSeries::new(vec![(x_lo, a), (x_hi, a)], 8, 6, grey.stroke_width(1)))
                .map_err(draw_err)?
                .label(format!("dense {} ({a:.2}%)", r.metric.replace('_', " ")))
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 8, y), (x + 12, y), (x + 20, y)], grey.stroke_width(1)));
        }

        // an int8 family (`abt int8`, from `eval --int8-rows`) takes its fp32 family's colour,
        // dashed with hollow markers
        let mut colors: Vec<(String, RGBColor)> = Vec::new();
        let mut color_of = |family: &str| -> RGBColor {
            if let Some((_, c)) = colors.iter().find(|(f, _)| f == family) {
                return *c;
            }
            let extra = colors.iter().filter(|(f, _)| !matches!(f.as_str(), "dense" | "abt" | "abt-actual" | "topk")).count();
            let c = family_color(family, extra);
            colors.push((family.to_string(), c));
            c
        };
        for s in &series {
            let (base, int8) = match &s.int8_of {
                Some(b) => (b.as_str(), true),
                None => (s.family.as_str(), false),
            };
            let color = color_of(base);
            let marker = if int8 { color.stroke_width(2) } else { color.filled() };
            if base == "dense" && !int8 {
                chart
                    .draw_series(s.points.iter().map(|&p| TriangleMarker::new(p, 9, marker)))
                    .map_err(draw_err)?
                    .label(s.family.clone())
                    .legend(move |(x, y)| TriangleMarker::new((x + 10, y), 7, marker));
                continue;
            }
            if base == "dense" {
                // (a triangle marker is drawn filled whatever its style: a large hollow circle)
                chart
                    .draw_series(s.points.iter().map(|&p| Circle::new(p, 8, marker)))
                    .map_err(draw_err)?
                    .label(s.family.clone())
                    .legend(move |(x, y)| Circle::new((x + 10, y), 6, marker));
                continue;
            }
            let style = color.stroke_width(2);
            if int8 {
                chart.draw_series(DashedLineSeries::new(s.points.clone(), 7, 5, style)).map_err(draw_err)?.label(s.family.clone()).legend(
                    move |(x, y)| {
                        EmptyElement::at((x, y))
                            + PathElement::new(vec![(0, 0), (7, 0)], style)
                            + PathElement::new(vec![(12, 0), (20, 0)], style)
                            + Circle::new((10, 0), 4, marker)
                    },
                );
            } else {
                chart
                    .draw_series(LineSeries::new(s.points.clone(), style))
                    .map_err(draw_err)?
                    .label(s.family.clone())
                    .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
            }
            chart.draw_series(s.points.iter().map(|&p| Circle::new(p, 4, marker))).map_err(draw_err)?;
        }

        chart
            .configure_series_labels()
            .position(axis.legend_position())
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK)
            .label_font((FONT, 16))
            .margin(12)
            .draw()
            .map_err(draw_err)?;
        root.present().map_err(draw_err)?;
    }
    Ok(buf)
}

/// Write `bytes` to `path` via a temporary file in the same directory and a rename.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), PlotError> {
    crate::model::checkpoint::write_atomic_io(path, bytes).map_err(|(path, source)| PlotError::Io { path, source })
}

fn encode_png(rgb: Vec<u8>) -> Result<Vec<u8>, PlotError> {
    let img = image::RgbImage::from_raw(WIDTH, HEIGHT, rgb).ok_or_else(|| PlotError::Draw("RGB buffer has the wrong size".into()))?;
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png)?;
    Ok(out.into_inner())
}

/// Render `metric vs retention` and `metric vs examples/s (batch 1)` PNGs (one line per mode
/// family, points sorted by x, dense as a single marked point / horizontal reference line) into
/// `out_dir`; returns the written paths.
///
/// The files are [`FILE_NAMES`] (`accuracy_vs_retention.png`, `accuracy_vs_throughput_b1.png`),
/// each [`WIDTH`] x [`HEIGHT`] RGB, written atomically. `title` prefixes each chart's caption
/// (e.g. the data set name); it may be empty. Points with non-finite values are skipped.
pub fn plot_results(r: &PlotData, out_dir: &Path, title: &str) -> Result<Vec<PathBuf>, PlotError> {
    ensure_font()?;
    std::fs::create_dir_all(out_dir).map_err(|source| PlotError::Io { path: out_dir.to_path_buf(), source })?;
    let mut written = Vec::new();
    for (axis, name) in [XAxis::Retention, XAxis::ThroughputB1].into_iter().zip(FILE_NAMES) {
        let png = encode_png(render(r, axis, title)?)?;
        let path = out_dir.join(name);
        write_atomic(&path, &png)?;
        written.push(path);
    }
    Ok(written)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(family: &str, acc: f64, retention: f64, b1: f64) -> PlotPoint {
        PlotPoint { family: family.into(), int8_of: None, retention, examples_per_s_b1: b1, test_metric: acc }
    }

    fn synthetic() -> PlotData {
        let mut points = vec![point("dense", 0.912, 1.0, 40.0)];
        // deliberately unsorted within families
        for &(acc, ret, b1) in &[(0.905, 0.52, 61.0), (0.84, 0.18, 120.0), (0.89, 0.34, 85.0)] {
            points.push(point("abt", acc, ret, b1));
            points.push(point("abt-actual", acc + 0.004, ret - 0.02, b1 * 1.1));
            points.push(point("topk", acc - 0.03, ret, b1 * 1.2));
            // an int8 row of abt (dashed, hollow markers, abt's colour)
            points.push(PlotPoint { int8_of: Some("abt".into()), ..point("abt int8", acc - 0.002, ret, b1 * 2.0) });
        }
        PlotData { points, dense_test_metric: 0.912, metric: "accuracy".into() }
    }

    #[test]
    fn plot_writes_decodable_non_flat_pngs() {
        let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        let dir = std::env::temp_dir().join(format!("sttabt-plot-test-{}-{stamp}", std::process::id()));
        let paths = plot_results(&synthetic(), &dir, "synthetic").unwrap();
        assert_eq!(paths.len(), 2);
        for (path, name) in paths.iter().zip(FILE_NAMES) {
            assert_eq!(path, &dir.join(name));
            assert!(path.is_file(), "{} missing", path.display());
            let img = image::open(path).unwrap().to_rgb8();
            assert_eq!(img.dimensions(), (WIDTH, HEIGHT));
            let first = *img.get_pixel(0, 0);
            assert!(img.pixels().any(|p| *p != first), "{} is a single flat colour", path.display());
            // the family colours are drawn (abt blue, abt-actual red, topk green) and text is dark
            for c in [[31u8, 119, 180], [214, 39, 40], [44, 160, 44]] {
                assert!(img.pixels().any(|p| p.0 == c), "{}: colour {c:?} absent", path.display());
            }
        }
        // no temp files left behind
        let leftovers: Vec<_> =
            std::fs::read_dir(&dir).unwrap().filter_map(|e| e.ok()).filter(|e| e.file_name().to_string_lossy().ends_with(".tmp")).collect();
        assert!(leftovers.is_empty());
        if std::env::var_os("STTABT_KEEP_PLOTS").is_none() {
            std::fs::remove_dir_all(&dir).unwrap();
        } else {
            eprintln!("plots kept in {}", dir.display());
        }
    }

    #[test]
    fn plot_rejects_empty_results() {
        let r = PlotData { points: vec![], dense_test_metric: f64::NAN, metric: "accuracy".into() };
        let dir = std::env::temp_dir().join(format!("sttabt-plot-empty-{}", std::process::id()));
        assert!(matches!(plot_results(&r, &dir, ""), Err(PlotError::NoPoints)));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
