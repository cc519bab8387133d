//! PNG charts of the end-to-end runs, one set per line size:
//!
//! - `throughput-<N>B.png`: delivered against offered lines/s (log–log),
//!   with the y = x line a lossless collector follows;
//! - `loss-<N>B.png`: loss % against offered lines/s;
//! - `cpu-<N>B.png`: CPU seconds per million delivered lines against
//!   offered lines/s, the collector's own and what collecting added to the
//!   whole host.
//!
//! Series are one per collector source × container count: the colour is
//! the source (shades for container counts), the marker the container
//! count. Text is drawn with DejaVu Sans, read at run time from
//! [`FONT_PATH`] (plotters is built without a system font library).

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::anyhow;
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, ValueFormatter};
use plotters::prelude::*;
use plotters::style::full_palette;

use crate::analysis::{self, Config, DOCKER, EBPF, MAX_LOSS_PCT, NONE};
use crate::format;
use crate::results::RunResult;

/// The TrueType font the charts are drawn with (Debian: fonts-dejavu-core).
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
const FONT: &str = "sans-serif";

/// Registers [`FONT_PATH`] with plotters, once per process, as the
/// `sans-serif`, `serif` and `monospace` families.
pub fn register_font() -> anyhow::Result<()> {
    static REGISTERED: OnceLock<Result<(), String>> = OnceLock::new();
    REGISTERED
        .get_or_init(|| {
            let bytes = std::fs::read(FONT_PATH).map_err(|e| {
                format!(
                    "cannot read the charts' font {FONT_PATH}: {e} \
                     (install the Debian package fonts-dejavu-core)"
                )
            })?;
            // plotters keeps fonts for the life of the process.
            let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
            for family in [FONT, "serif", "monospace"] {
                plotters::style::register_font(family, FontStyle::Normal, bytes)
                    .map_err(|_| format!("{FONT_PATH} is not a usable TrueType font"))?;
            }
            Ok(())
        })
        .clone()
        .map_err(|e| anyhow!(e))
}

/// What a chart shows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChartKind {
    /// Delivered against offered lines/s.
    Throughput,
    /// Loss % against offered lines/s.
    Loss,
    /// CPU per million delivered lines against offered lines/s.
    CpuPerLine,
}

/// A chart written by [`write_charts`].
#[derive(Clone, Debug, PartialEq)]
pub struct Chart {
    pub kind: ChartKind,
    /// The line size it is about, bytes.
    pub line_bytes: u32,
    /// Its title, for the markdown's alt text.
    pub title: String,
    /// The PNG file.
    pub path: PathBuf,
}

/// Writes the charts of every line size with collector runs into `dir`
/// (created if needed). A chart without any data point is not written.
pub fn write_charts(runs: &[RunResult], dir: &Path) -> anyhow::Result<Vec<Chart>> {
    register_font()?;
    std::fs::create_dir_all(dir).map_err(|e| anyhow!("cannot create {}: {e}", dir.display()))?;
    let mut charts = Vec::new();
    for line_bytes in analysis::line_sizes(runs) {
        let of_size: Vec<RunResult> = runs
            .iter()
            .filter(|r| r.line_bytes == line_bytes)
            .cloned()
            .collect();
        for kind in [
            ChartKind::Throughput,
            ChartKind::Loss,
            ChartKind::CpuPerLine,
        ] {
            let name = match kind {
                ChartKind::Throughput => "throughput",
                ChartKind::Loss => "loss",
                ChartKind::CpuPerLine => "cpu",
            };
            let path = dir.join(format!("{name}-{line_bytes}B.png"));
            let title = match kind {
                ChartKind::Throughput => throughput_chart(&of_size, line_bytes, &path),
                ChartKind::Loss => loss_chart(&of_size, line_bytes, &path),
                ChartKind::CpuPerLine => cpu_chart(&of_size, line_bytes, &path),
            }
            .map_err(|e| anyhow!("cannot draw {}: {e:#}", path.display()))?;
            if let Some(title) = title {
                charts.push(Chart {
                    kind,
                    line_bytes,
                    title,
                    path,
                });
            }
        }
    }
    Ok(charts)
}

/// The name a source goes by in legends.
pub fn source_label(source: &str) -> String {
    match source {
        EBPF => "eBPF".to_owned(),
        DOCKER => "Docker API".to_owned(),
        NONE => "no collector".to_owned(),
        other => other.to_owned(),
    }
}

/// The marker of a series: one per container count.
#[derive(Clone, Copy, Debug)]
enum Marker {
    Circle,
    Triangle,
    Square,
}

impl Marker {
    fn nth(i: usize) -> Marker {
        [Marker::Circle, Marker::Triangle, Marker::Square][i % 3]
    }
}

/// A source's colour, darker for the `shade`-th container count.
fn colour(source: &str, shade: usize) -> RGBColor {
    use full_palette::*;
    let shades = match source {
        EBPF => [BLUE_400, BLUE_700, BLUE_900],
        DOCKER => [DEEPORANGE_400, DEEPORANGE_700, DEEPORANGE_900],
        NONE => [GREY_400, GREY_600, GREY_800],
        _ => [GREEN_400, GREEN_700, GREEN_900],
    };
    shades[shade % 3]
}

/// The points of one source × container count.
struct Series {
    label: String,
    colour: RGBColor,
    marker: Marker,
    points: Vec<(f64, f64)>,
}

/// One series per collector source × container count of `runs` (all of a
/// line size), with `y` of each run against its offered rate; runs where
/// `y` is `None` (or not positive, on a log axis) are left out.
fn series(runs: &[RunResult], y: impl Fn(&RunResult) -> Option<f64>, log_y: bool) -> Vec<Series> {
    let mut containers: Vec<u32> = runs.iter().map(|r| r.containers).collect();
    containers.sort();
    containers.dedup();
    let line_bytes = runs.first().map_or(0, |r| r.line_bytes);
    let mut out = Vec::new();
    for source in analysis::collector_sources(runs) {
        for (i, &n) in containers.iter().enumerate() {
            let config = Config {
                line_bytes,
                containers: n,
            };
            let points: Vec<(f64, f64)> = analysis::runs_of(runs, &source, config)
                .into_iter()
                .filter_map(|r| Some((r.offered_lps, y(r)?)))
                .filter(|&(x, y)| x > 0.0 && y.is_finite() && (!log_y || y > 0.0))
                .collect();
            if points.is_empty() {
                continue;
            }
            let s = if n == 1 { "" } else { "s" };
            out.push(Series {
                label: format!("{}, {n} container{s}", source_label(&source)),
                colour: colour(&source, i),
                marker: Marker::nth(i),
                points,
            });
        }
    }
    out
}

/// 1, 2, 5 × 10^k within `lo..=hi` (or `lo` and `hi` themselves when
/// there is none).
fn log_ticks(lo: f64, hi: f64) -> Vec<f64> {
    let mut ticks = Vec::new();
    if !(lo > 0.0 && hi > lo && hi.is_finite()) {
        return ticks;
    }
    let mut decade = 10f64.powf(lo.log10().floor());
    while decade <= hi {
        for m in [1.0, 2.0, 5.0] {
            let t = decade * m;
            if t >= lo && t <= hi {
                ticks.push(t);
            }
        }
        decade *= 10.0;
    }
    if ticks.is_empty() {
        ticks = vec![lo, hi];
    }
    ticks
}

/// The y axis of a panel.
#[derive(Clone, Copy, Debug)]
enum YAxis {
    /// Logarithmic over `lo..hi`.
    Log(f64, f64),
    /// Linear over `0..hi`.
    Linear(f64),
}

/// A horizontal or diagonal reference line (dashed grey).
#[derive(Clone, Debug)]
enum Reference {
    /// y = x.
    Diagonal,
    /// y = the value.
    Horizontal(f64),
}

/// Everything one panel (a chart in a drawing area) shows.
struct Panel<'s> {
    title: String,
    x_desc: &'static str,
    y_desc: &'static str,
    series: &'s [Series],
    /// The x range (offered lines/s).
    x: (f64, f64),
    y: YAxis,
    reference: Option<Reference>,
    /// Said in the middle of the panel when there is no series.
    empty_note: &'static str,
}

/// Width of the legend column right of the plots, pixels.
const LEGEND_WIDTH: u32 = 290;
/// Style of the reference lines.
fn reference_style() -> ShapeStyle {
    BLACK.mix(0.45).stroke_width(2)
}

/// The range of the offered rates of `runs`, with a margin (log axis).
fn offered_range(runs: &[RunResult]) -> Option<(f64, f64)> {
    let rates = runs.iter().map(|r| r.offered_lps).filter(|&x| x > 0.0);
    let lo = rates.clone().reduce(f64::min)?;
    let hi = rates.reduce(f64::max)?;
    Some((lo / 1.3, hi * 1.3))
}

/// The range of the y values of `series`, widened by `factor` (log axis).
fn y_log_range<'a>(
    series: impl IntoIterator<Item = &'a Series>,
    factor: f64,
) -> Option<(f64, f64)> {
    let ys: Vec<f64> = series
        .into_iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .collect();
    let lo = ys.iter().copied().reduce(f64::min)?;
    let hi = ys.iter().copied().reduce(f64::max)?;
    Some((lo / factor, hi * factor))
}

fn throughput_chart(
    runs: &[RunResult],
    line_bytes: u32,
    path: &Path,
) -> anyhow::Result<Option<String>> {
    let series = series(runs, |r| r.delivered_lps, true);
    let (Some(x), Some((ylo, yhi))) = (offered_range(runs), y_log_range(&series, 1.3)) else {
        return Ok(None);
    };
    let title = format!("Delivered vs offered lines/s — {line_bytes} B lines");
    one_panel_chart(
        path,
        &Panel {
            title: title.clone(),
            x_desc: "offered lines/s (all containers)",
            y_desc: "delivered lines/s (distinct)",
            series: &series,
            x,
            y: YAxis::Log(ylo.min(x.0), yhi.max(x.1)),
            reference: Some(Reference::Diagonal),
            empty_note: "",
        },
        Some("delivered = offered"),
    )?;
    Ok(Some(title))
}

/// A chart of one panel with the legend to its right; `reference` names
/// the panel's reference line in the legend.
fn one_panel_chart(path: &Path, panel: &Panel, reference: Option<&str>) -> anyhow::Result<()> {
    let root = BitMapBackend::new(path, (1000 + LEGEND_WIDTH, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let (plot, legend) = root.split_horizontally(1000);
    draw_panel(&plot, panel)?;
    draw_legend(&legend, reference, panel.series)?;
    root.present()?;
    Ok(())
}

fn loss_chart(runs: &[RunResult], line_bytes: u32, path: &Path) -> anyhow::Result<Option<String>> {
    let series = series(runs, |r| r.loss_pct, false);
    let Some(x) = offered_range(runs) else {
        return Ok(None);
    };
    if series.is_empty() {
        return Ok(None);
    }
    let max = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let title = format!("Loss vs offered lines/s — {line_bytes} B lines");
    let limit = format!("{MAX_LOSS_PCT} % (most a held run loses)");
    one_panel_chart(
        path,
        &Panel {
            title: title.clone(),
            x_desc: "offered lines/s (all containers)",
            y_desc: "loss, % of lines written",
            series: &series,
            x,
            y: YAxis::Linear((max * 1.1).clamp(1.0, 105.0)),
            reference: Some(Reference::Horizontal(MAX_LOSS_PCT)),
            empty_note: "",
        },
        Some(&limit),
    )?;
    Ok(Some(title))
}

fn cpu_chart(runs: &[RunResult], line_bytes: u32, path: &Path) -> anyhow::Result<Option<String>> {
    let collector = series(runs, analysis::collector_cpu_per_mline, true);
    let added = series(runs, |r| analysis::added_cpu_per_mline(runs, r), true);
    let (Some(x), Some((ylo, yhi))) = (
        offered_range(runs),
        y_log_range(collector.iter().chain(&added), 1.5),
    ) else {
        return Ok(None);
    };
    // One y range for both panels, so that they compare at a glance.
    let y = YAxis::Log(ylo, yhi);

    let title = format!("CPU per million delivered lines — {line_bytes} B lines");
    let root = BitMapBackend::new(path, (1500 + LEGEND_WIDTH, 700)).into_drawing_area();
    root.fill(&WHITE)?;
    let body = root.titled(&title, (FONT, 28))?;
    let (plots, legend) = body.split_horizontally(1500);
    let specs = [
        (
            "The collector process",
            &collector,
            "no collector CPU figures",
        ),
        (
            "Added to the host (total − no-collector run)",
            &added,
            "no matching no-collector (none) runs",
        ),
    ];
    for (area, (name, series, empty_note)) in plots.split_evenly((1, 2)).iter().zip(specs) {
        draw_panel(
            area,
            &Panel {
                title: name.to_owned(),
                x_desc: "offered lines/s (all containers)",
                y_desc: "CPU s per million lines (= ms per 1,000)",
                series,
                x,
                y,
                reference: None,
                empty_note,
            },
        )?;
    }
    // Both panels have the same series (or fewer): one legend.
    let mut all: Vec<&Series> = Vec::new();
    for s in collector.iter().chain(&added) {
        if !all.iter().any(|a| a.label == s.label) {
            all.push(s);
        }
    }
    let all: Vec<Series> = all
        .into_iter()
        .map(|s| Series {
            label: s.label.clone(),
            colour: s.colour,
            marker: s.marker,
            points: Vec::new(),
        })
        .collect();
    draw_legend(&legend, None, &all)?;
    root.present()?;
    Ok(Some(title))
}

/// Draws `marker` centred on a pixel of `area`.
fn draw_marker(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    (x, y): (i32, i32),
    marker: Marker,
    fill: ShapeStyle,
) -> anyhow::Result<()> {
    match marker {
        Marker::Circle => area.draw(&Circle::new((x, y), 5, fill))?,
        Marker::Triangle => area.draw(&TriangleMarker::new((x, y), 7, fill))?,
        Marker::Square => area.draw(&Rectangle::new([(x - 5, y - 5), (x + 5, y + 5)], fill))?,
    }
    Ok(())
}

/// The legend, in its own column: the reference line (when there is one,
/// with its label) then every series.
fn draw_legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    reference: Option<&str>,
    series: &[Series],
) -> anyhow::Result<()> {
    let text = TextStyle::from((FONT, 17).into_font()).pos(plotters::style::text_anchor::Pos::new(
        plotters::style::text_anchor::HPos::Left,
        plotters::style::text_anchor::VPos::Center,
    ));
    let mut y = 90;
    if let Some(label) = reference {
        for x in [4, 20] {
            area.draw(&PathElement::new(
                vec![(x, y), (x + 10, y)],
                reference_style(),
            ))?;
        }
        area.draw(&Text::new(label.to_owned(), (44, y), text.clone()))?;
        y += 30;
    }
    for s in series {
        area.draw(&PathElement::new(
            vec![(4, y), (34, y)],
            s.colour.stroke_width(2),
        ))?;
        draw_marker(area, (19, y), s.marker, s.colour.filled())?;
        area.draw(&Text::new(s.label.clone(), (44, y), text.clone()))?;
        y += 30;
    }
    Ok(())
}

/// Draws `panel` on `area`, with a log x axis.
fn draw_panel(area: &DrawingArea<BitMapBackend<'_>, Shift>, panel: &Panel) -> anyhow::Result<()> {
    match panel.y {
        YAxis::Log(lo, hi) => {
            let ticks = log_ticks(lo, hi);
            draw_panel_with(area, panel, (lo..hi).log_scale().with_key_points(ticks))
        }
        YAxis::Linear(hi) => draw_panel_with(area, panel, 0.0..hi),
    }
}

fn draw_panel_with<Y>(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    panel: &Panel,
    y: Y,
) -> anyhow::Result<()>
where
    Y: AsRangedCoord<Value = f64>,
    Y::CoordDescType: ValueFormatter<f64>,
{
    let (x0, x1) = panel.x;
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 24))
        .margin(20)
        .x_label_area_size(55)
        .y_label_area_size(85)
        .build_cartesian_2d((x0..x1).log_scale().with_key_points(log_ticks(x0, x1)), y)?;
    let y_fmt = |v: &f64| match panel.y {
        YAxis::Log(..) => format::si(*v),
        YAxis::Linear(_) => format::trim_zeros(&format!("{v:.2}")),
    };
    chart
        .configure_mesh()
        .x_desc(panel.x_desc)
        .y_desc(panel.y_desc)
        .x_label_formatter(&|v| format::rate(*v))
        .y_label_formatter(&y_fmt)
        .label_style((FONT, 16))
        .axis_desc_style((FONT, 18))
        .light_line_style(WHITE.mix(0.0))
        .bold_line_style(BLACK.mix(0.12))
        .draw()?;

    let reference = match panel.reference {
        Some(Reference::Diagonal) => Some([(x0, x0), (x1, x1)]),
        Some(Reference::Horizontal(v)) => Some([(x0, v), (x1, v)]),
        None => None,
    };
    if let Some(line) = reference {
        chart.draw_series(DashedLineSeries::new(line, 10, 6, reference_style()))?;
    }

    for s in panel.series {
        let mut points = s.points.clone();
        points.sort_by(|a, b| a.0.total_cmp(&b.0));
        let fill = s.colour.filled();
        chart.draw_series(LineSeries::new(
            points.iter().copied(),
            s.colour.stroke_width(2),
        ))?;
        match s.marker {
            Marker::Circle => {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 5, fill)))?;
            }
            Marker::Triangle => {
                chart.draw_series(points.iter().map(|&p| TriangleMarker::new(p, 7, fill)))?;
            }
            Marker::Square => {
                chart.draw_series(
                    points
                        .iter()
                        .map(|&p| EmptyElement::at(p) + Rectangle::new([(-5, -5), (5, 5)], fill)),
                )?;
            }
        }
    }

    if panel.series.is_empty() {
        let (w, h) = area.dim_in_pixel();
        let grey = BLACK.mix(0.6);
        let style = TextStyle::from((FONT, 20).into_font()).color(&grey).pos(
            plotters::style::text_anchor::Pos::new(
                plotters::style::text_anchor::HPos::Center,
                plotters::style::text_anchor::VPos::Center,
            ),
        );
        area.draw(&Text::new(
            panel.empty_note,
            (w as i32 / 2, h as i32 / 2),
            style,
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_one_two_five() {
        assert_eq!(
            log_ticks(8_000.0, 250_000.0),
            vec![10e3, 20e3, 50e3, 100e3, 200e3]
        );
        assert_eq!(log_ticks(3.0, 4.0), vec![3.0, 4.0]);
        assert!(log_ticks(0.0, 4.0).is_empty());
    }
}
