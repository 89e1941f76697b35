//! PNG charts of a [`Timeline`] for people: throughput, latency over time, a latency
//! histogram and CPU per process, 1000×500 each, with titles, axis labels with units, a
//! legend beside the plot and fault markers drawn as labelled vertical lines.
//!
//! Text is drawn with DejaVu Sans (Debian package `fonts-dejavu-core`, installed by
//! `scripts/setup.sh`), registered with plotters at run time: the charts need no system font
//! configuration, and a missing font is a clear error.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use anyhow::{Context, Result, anyhow};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::timeline::{Histogram, Mark, Timeline};

/// Where the regular font is read from.
pub const FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf";
/// Where the bold font is read from (optional: bold falls back to regular).
pub const BOLD_FONT_PATH: &str = "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf";

/// Size of every chart (pixels).
pub const SIZE: (u32, u32) = (1000, 500);
const LEGEND_WIDTH: u32 = 190;
const FONT: &str = "sans-serif";

/// Colours that stay apart on white (Tableau 10).
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];
const MARK_COLOR: RGBColor = RGBColor(200, 0, 0);

/// Registers DejaVu Sans as plotters' `sans-serif` (once per process).
pub fn register_fonts() -> Result<()> {
    static DONE: OnceLock<std::result::Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        let load = |path: &str| -> std::result::Result<&'static [u8], String> {
            std::fs::read(path)
                .map(|b| &*Box::leak(b.into_boxed_slice()))
                .map_err(|e| {
                    format!(
                        "charts need the font {path} ({e}): install the Debian package \
                         fonts-dejavu-core (scripts/setup.sh does)"
                    )
                })
        };
        let regular = load(FONT_PATH)?;
        plotters::style::register_font(FONT, FontStyle::Normal, regular)
            .map_err(|_| format!("{FONT_PATH} is not a usable TrueType font"))?;
        if let Ok(bold) = load(BOLD_FONT_PATH) {
            let _ = plotters::style::register_font(FONT, FontStyle::Bold, bold);
        }
        Ok(())
    })
    .clone()
    .map_err(|e| anyhow!(e))
}

/// Writes `throughput.png`, `latency.png`, `latency-histogram.png` and `resources.png` into
/// `out_dir` (created if needed); `title` heads every chart. Returns the files written.
pub fn render(timeline: &Timeline, out_dir: &Path, title: &str) -> Result<Vec<PathBuf>> {
    register_fonts()?;
    std::fs::create_dir_all(out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let x_max = timeline
        .samples
        .last()
        .map_or(1.0, |s| s.t_s)
        .max(timeline.marks.iter().map(|m| m.t_s).fold(1.0, f64::max))
        * 1.03;
    let mut out = Vec::new();

    let series = |f: &dyn Fn(&crate::timeline::Sample) -> Option<f64>| -> Vec<(f64, f64)> {
        timeline
            .samples
            .iter()
            .filter_map(|s| f(s).map(|v| (s.t_s, v)))
            .collect()
    };

    let path = out_dir.join("throughput.png");
    time_chart(
        &path,
        &format!("{title}: throughput"),
        "frames / s",
        x_max,
        &[
            Line::new("frames in", PALETTE[0], series(&|s| Some(s.frames_per_s))),
            Line::new(
                "detections out",
                PALETTE[1],
                series(&|s| Some(s.detections_per_s)),
            ),
        ],
        &timeline.marks,
    )?;
    out.push(path);

    let path = out_dir.join("latency.png");
    time_chart(
        &path,
        &format!("{title}: end-to-end latency"),
        "latency (ms)",
        x_max,
        &[
            Line::new("p50", PALETTE[0], series(&|s| s.latency_p50_ms)),
            Line::new("p99", PALETTE[3], series(&|s| s.latency_p99_ms)),
            Line::new("p99 delivered", PALETTE[7], series(&|s| s.delivered_p99_ms)).dashed(),
        ],
        &timeline.marks,
    )?;
    out.push(path);

    let path = out_dir.join("latency-histogram.png");
    histogram_chart(
        &path,
        &format!("{title}: end-to-end latency distribution"),
        &timeline.latency_histogram(40),
        timeline.latency().p50,
        timeline.latency().p99,
    )?;
    out.push(path);

    let path = out_dir.join("resources.png");
    let mut names: Vec<&String> = timeline
        .samples
        .iter()
        .flat_map(|s| s.processes.keys())
        .collect();
    names.sort();
    names.dedup();
    let mut lines: Vec<Line> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            Line::new(
                name,
                PALETTE[i % PALETTE.len()],
                series(&|s| s.processes.get(*name).map(|p| p.cpu_pct)),
            )
        })
        .collect();
    // The sum of the stack's processes (the machine's own busy share, other users included,
    // is in the samples and the report, not here: it would flatten the per-process lines).
    lines.push(Line::new(
        "all of the stack",
        BLACK,
        series(&|s| {
            (!s.processes.is_empty()).then(|| s.processes.values().map(|p| p.cpu_pct).sum())
        }),
    ));
    time_chart(
        &path,
        &format!("{title}: CPU per process"),
        "CPU (% of one core)",
        x_max,
        &lines,
        &timeline.marks,
    )?;
    out.push(path);
    Ok(out)
}

struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
    dashed: bool,
}

impl Line {
    fn new(label: &str, color: RGBColor, points: Vec<(f64, f64)>) -> Self {
        Self {
            label: label.to_string(),
            color,
            points,
            dashed: false,
        }
    }

    fn dashed(mut self) -> Self {
        self.dashed = true;
        self
    }
}

fn err(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow!("drawing a chart: {e}")
}

/// Splits the canvas into the plot (left) and the legend panel (right), with the title on top.
fn canvas<'b>(
    root: &DrawingArea<BitMapBackend<'b>, Shift>,
    title: &str,
) -> Result<(
    DrawingArea<BitMapBackend<'b>, Shift>,
    DrawingArea<BitMapBackend<'b>, Shift>,
)> {
    root.fill(&WHITE).map_err(err)?;
    let body = root
        .titled(title, (FONT, 22).into_font().style(FontStyle::Bold))
        .map_err(err)?;
    let (plot, legend) = body.split_horizontally(SIZE.0 - LEGEND_WIDTH);
    Ok((plot, legend))
}

/// Draws legend entries (a short line or bar, then the label) from the top of `area`.
fn legend(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    entries: &[(String, RGBColor, LegendKind)],
) -> Result<()> {
    let style = (FONT, 14).into_font().color(&BLACK);
    let mut y = 40;
    for (label, color, kind) in entries {
        match kind {
            LegendKind::Line => {
                area.draw(&PathElement::new(
                    vec![(8, y), (34, y)],
                    color.stroke_width(3),
                ))
                .map_err(err)?;
            }
            LegendKind::Dashed => {
                for x in [8, 20, 32] {
                    area.draw(&PathElement::new(
                        vec![(x, y), (x + 6, y)],
                        color.stroke_width(2),
                    ))
                    .map_err(err)?;
                }
            }
            LegendKind::Bar => {
                area.draw(&Rectangle::new([(10, y - 6), (32, y + 6)], color.filled()))
                    .map_err(err)?;
            }
            LegendKind::None => {}
        }
        let text = if label.chars().count() > 22 {
            format!("{}…", label.chars().take(21).collect::<String>())
        } else {
            label.clone()
        };
        area.draw(&Text::new(text, (42, y - 8), style.clone()))
            .map_err(err)?;
        y += 22;
    }
    Ok(())
}

enum LegendKind {
    Line,
    Dashed,
    Bar,
    None,
}

fn time_chart(
    path: &Path,
    title: &str,
    y_desc: &str,
    x_max: f64,
    lines: &[Line],
    marks: &[Mark],
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let (plot, legend_area) = canvas(&root, title)?;
    let y_top = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|p| p.1))
        .fold(0.0, f64::max);
    let y_max = if y_top > 0.0 { y_top * 1.15 } else { 1.0 };
    let mut chart = axes(
        &plot,
        (x_max, y_max),
        ("time since the recording started (s)", y_desc),
        y_max,
    )?;
    for l in lines {
        if l.points.is_empty() {
            continue;
        }
        if l.dashed {
            chart
                .draw_series(DashedLineSeries::new(
                    l.points.iter().copied(),
                    6,
                    4,
                    l.color.stroke_width(2),
                ))
                .map_err(err)?;
        } else {
            chart
                .draw_series(LineSeries::new(
                    l.points.iter().copied(),
                    l.color.stroke_width(2),
                ))
                .map_err(err)?;
        }
    }
    draw_marks(&mut chart, marks, y_max)?;
    let mut entries: Vec<(String, RGBColor, LegendKind)> = lines
        .iter()
        .map(|l| {
            let kind = if l.dashed {
                LegendKind::Dashed
            } else {
                LegendKind::Line
            };
            (l.label.clone(), l.color, kind)
        })
        .collect();
    if !marks.is_empty() {
        entries.push(("fault / event".into(), MARK_COLOR, LegendKind::Dashed));
    }
    legend(&legend_area, &entries)?;
    root.present().map_err(err)?;
    Ok(())
}

/// Tick labels without useless decimals: whole numbers on ranges of 10 and more.
fn axis_format(range: f64) -> impl Fn(&f64) -> String {
    move |v: &f64| {
        if range >= 10.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        }
    }
}

type TimeChart<'a, 'b> = ChartContext<
    'a,
    BitMapBackend<'b>,
    Cartesian2d<plotters::coord::types::RangedCoordf64, plotters::coord::types::RangedCoordf64>,
>;

/// Vertical dashed lines with their labels, staggered so neighbours do not overlap.
/// The chart both kinds share: `[0, x_max] × [0, y_max]` on `plot` with described, light
/// meshed axes; y labels are formatted for a range up to `y_label_range`.
fn axes<'a, 'b>(
    plot: &'a DrawingArea<BitMapBackend<'b>, Shift>,
    (x_max, y_max): (f64, f64),
    (x_desc, y_desc): (&str, &str),
    y_label_range: f64,
) -> Result<TimeChart<'a, 'b>> {
    let mut chart = ChartBuilder::on(plot)
        .margin(10)
        .x_label_area_size(45)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..x_max, 0.0..y_max)
        .map_err(err)?;
    let x_fmt = axis_format(x_max);
    let y_fmt = axis_format(y_label_range);
    chart
        .configure_mesh()
        .x_desc(x_desc)
        .y_desc(y_desc)
        .axis_desc_style((FONT, 16))
        .label_style((FONT, 14))
        .x_label_formatter(&x_fmt)
        .y_label_formatter(&y_fmt)
        .max_light_lines(2)
        .light_line_style(RGBColor(242, 242, 242))
        .draw()
        .map_err(err)?;
    Ok(chart)
}

fn draw_marks(chart: &mut TimeChart<'_, '_>, marks: &[Mark], y_max: f64) -> Result<()> {
    let x_max = chart.x_range().end;
    let right = (FONT, 13).into_font().color(&MARK_COLOR);
    let left = right.pos(Pos::new(HPos::Right, VPos::Top));
    for (i, m) in marks.iter().enumerate() {
        // Labels run right of their line, except near the right edge, where they run left.
        let (style, text) = if m.t_s > x_max * 0.75 {
            (&left, format!("{} ", m.label))
        } else {
            (&right, format!(" {}", m.label))
        };
        chart
            .draw_series(DashedLineSeries::new(
                [(m.t_s, 0.0), (m.t_s, y_max)],
                5,
                4,
                MARK_COLOR.stroke_width(2),
            ))
            .map_err(err)?;
        let y = y_max * (0.98 - 0.06 * (i % 4) as f64);
        chart
            .plotting_area()
            .draw(&Text::new(text, (m.t_s, y), style.clone()))
            .map_err(err)?;
    }
    Ok(())
}

fn histogram_chart(
    path: &Path,
    title: &str,
    h: &Histogram,
    p50: Option<f64>,
    p99: Option<f64>,
) -> Result<()> {
    let root = BitMapBackend::new(path, SIZE).into_drawing_area();
    let (plot, legend_area) = canvas(&root, title)?;
    let x_end = (h.counts.len().max(1) as f64) * h.width_ms;
    let x_max = x_end + 2.0 * h.width_ms;
    let y_max = (h.counts.iter().copied().max().unwrap_or(0).max(1) as f64) * 1.15;
    let mut chart = axes(
        &plot,
        (x_max, y_max),
        ("end-to-end latency (ms)", "detection records"),
        y_max.max(10.0),
    )?;
    chart
        .draw_series(h.counts.iter().enumerate().map(|(i, &c)| {
            let x0 = i as f64 * h.width_ms;
            Rectangle::new(
                [(x0, 0.0), (x0 + h.width_ms * 0.92, c as f64)],
                PALETTE[0].filled(),
            )
        }))
        .map_err(err)?;
    let mut marks = Vec::new();
    if let Some(p) = p50 {
        marks.push(Mark {
            t_s: p,
            label: format!("p50 {p:.0} ms"),
        });
    }
    if let Some(p) = p99 {
        marks.push(Mark {
            t_s: p,
            label: format!("p99 {p:.0} ms"),
        });
    }
    draw_marks(&mut chart, &marks, y_max)?;
    let total: u64 = h.counts.iter().sum::<u64>() + h.overflow;
    let fmt_w = if h.width_ms >= 1.0 {
        format!("{:.0}", h.width_ms)
    } else {
        format!("{}", h.width_ms)
    };
    let entries = vec![
        (
            format!("records per {fmt_w} ms"),
            PALETTE[0],
            LegendKind::Bar,
        ),
        ("percentiles".into(), MARK_COLOR, LegendKind::Dashed),
        (format!("{total} ok records"), BLACK, LegendKind::None),
        (
            format!("{} above {:.0} ms", h.overflow, x_end),
            BLACK,
            LegendKind::None,
        ),
    ];
    legend(&legend_area, &entries)?;
    root.present().map_err(err)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timeline::{ProcessSample, Sample};

    #[test]
    fn renders_four_pngs() {
        if !Path::new(FONT_PATH).exists() {
            eprintln!("skipping: {FONT_PATH} missing");
            return;
        }
        let mut t = Timeline::default();
        for i in 1..=30 {
            let mut s = Sample {
                t_s: f64::from(i),
                window_s: 1.0,
                frames_per_s: 20.0,
                detections_per_s: if i == 12 { 0.0 } else { 20.0 },
                latency_p50_ms: Some(40.0 + f64::from(i % 5)),
                latency_p99_ms: Some(90.0),
                delivered_p99_ms: Some(150.0),
                machine_cpu_pct: Some(60.0),
                ..Sample::default()
            };
            s.processes.insert(
                "worker-0".into(),
                ProcessSample {
                    cpu_pct: 50.0,
                    rss_mb: 300.0,
                },
            );
            t.samples.push(s);
        }
        t.marks.push(Mark {
            t_s: 11.5,
            label: "kill worker-0".into(),
        });
        t.latencies_ms = (0..600).map(|i| 30.0 + (i % 70) as f32).collect();
        let dir = tempfile::tempdir().unwrap();
        let files = render(&t, dir.path(), "unit test").unwrap();
        assert_eq!(files.len(), 4);
        for f in files {
            let bytes = std::fs::read(&f).unwrap();
            assert!(bytes.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", f.display());
            assert!(
                bytes.len() > 5_000,
                "{} is {} bytes",
                f.display(),
                bytes.len()
            );
        }
    }
}
