//! PNG plots of a report (`--plot-dir`, `--plot-from`): the publish-to-receive latency
//! histogram (`latency.png`) and the server's RSS and CPU over time (`rss.png`).
//!
//! Drawn with `plotters` built without its default `ttf` feature, which finds system
//! fonts through font-kit and so links fontconfig and freetype, C libraries a machine
//! running the bench may lack. Its `ab_glyph` feature rasterises text in pure Rust, but
//! only with font bytes the program registers itself: `font` reads a TrueType/OpenType
//! file named by `HUBBUB_PLOT_FONT`, else the first of a few usual system paths. With no
//! font at all the plots are still drawn (bars, lines, grid, frame) without any text, and
//! a warning says so: asking plotters for text in an unregistered font is an error.

use std::error::Error;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::{FontStyle, register_font};

use crate::error::BenchError;
use crate::hist::{LatencyBucket, bucket_bounds, fmt_us};
use crate::report::{Report, ServerStats};

pub const LATENCY_FILE: &str = "latency.png";
pub const RSS_FILE: &str = "rss.png";
/// Width and height in pixels.
pub const LATENCY_SIZE: (u32, u32) = (1000, 600);
pub const RSS_SIZE: (u32, u32) = (1200, 800);
/// A TrueType/OpenType file to draw the plots' text with, tried before `FONT_PATHS`.
pub const FONT_ENV: &str = "HUBBUB_PLOT_FONT";
/// Where common distributions (and macOS, Windows) keep a plain sans-serif font.
const FONT_PATHS: &[&str] = &[
    "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu/DejaVuSans.ttf",
    "/usr/share/fonts/TTF/DejaVuSans.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans.ttf",
    "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/liberation2/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation-sans/LiberationSans-Regular.ttf",
    "/usr/share/fonts/liberation/LiberationSans-Regular.ttf",
    "/usr/share/fonts/truetype/freefont/FreeSans.ttf",
    "/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf",
    "/usr/share/fonts/noto/NotoSans-Regular.ttf",
    "/System/Library/Fonts/Supplemental/Arial.ttf",
    "/Library/Fonts/Arial.ttf",
    "C:\\Windows\\Fonts\\arial.ttf",
];
/// The name the font is registered under with plotters.
const FAMILY: &str = "hubbub-plot";

const BAR: RGBColor = RGBColor(70, 110, 190);
/// One line per server process, in `--server-pid` order; the sum is black.
const LINES: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];
/// p50, p99, p99.9, max.
const MARKS: [RGBColor; 4] = [
    RGBColor(44, 160, 44),
    RGBColor(255, 127, 14),
    RGBColor(214, 39, 40),
    RGBColor(0, 0, 0),
];

type Drawn = Result<(), Box<dyn Error + Send + Sync>>;

/// What `render` did.
#[derive(Debug, Default)]
pub struct Plotted {
    pub written: Vec<PathBuf>,
    /// The plots not drawn, and why.
    pub skipped: Vec<String>,
}

/// The outcome of the font search, once per process (a font is registered for good).
#[derive(Debug)]
struct FontPick {
    path: Option<PathBuf>,
    warnings: Vec<String>,
}

fn font() -> &'static FontPick {
    static PICK: OnceLock<FontPick> = OnceLock::new();
    PICK.get_or_init(|| {
        let mut warnings = Vec::new();
        if let Some(path) = std::env::var_os(FONT_ENV).filter(|v| !v.is_empty()) {
            let path = PathBuf::from(path);
            match load_font(&path) {
                Ok(()) => {
                    return FontPick {
                        path: Some(path),
                        warnings,
                    };
                }
                Err(e) => warnings.push(format!("{FONT_ENV}={}: {e}", path.display())),
            }
        }
        for path in FONT_PATHS.iter().map(PathBuf::from) {
            if load_font(&path).is_ok() {
                return FontPick {
                    path: Some(path),
                    warnings,
                };
            }
        }
        warnings.push(format!(
            "no font found (set {FONT_ENV} to a .ttf file, or install fonts-dejavu-core): \
             the plots have no text"
        ));
        FontPick {
            path: None,
            warnings,
        }
    })
}

/// Reads and registers the font at `path` as `FAMILY`.
fn load_font(path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    // TrueType, Apple TrueType, OpenType (CFF) and collections; checked before the
    // bytes are leaked, so a wrong file costs nothing.
    let magic = bytes.get(..4).unwrap_or_default();
    if ![&[0, 1, 0, 0][..], b"true", b"OTTO", b"ttcf"].contains(&magic) {
        return Err("not a TrueType/OpenType font".into());
    }
    // plotters keeps registered fonts for the life of the process, as `&'static`.
    let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
    register_font(FAMILY, FontStyle::Normal, bytes)
        .map_err(|_| "not a usable TrueType/OpenType font".to_owned())
}

/// Draws the plots of `report` into `dir` (created if missing), finding a font first;
/// prints the paths written (stdout), and warnings and skipped plots (stderr).
pub fn write_and_tell(report: &Report, dir: &Path) -> Result<Plotted, BenchError> {
    let font = font();
    for w in &font.warnings {
        eprintln!("hubbub bench: warning: {w}");
    }
    let plotted = render(report, dir, font.path.is_some())?;
    for path in &plotted.written {
        println!("  plot         {}", path.display());
    }
    for why in &plotted.skipped {
        eprintln!("hubbub bench: {why}");
    }
    Ok(plotted)
}

/// `--plot-from`: reads a saved `--json-out` report and draws its plots into `dir`.
pub fn from_file(report: &Path, dir: &Path) -> Result<Report, BenchError> {
    let bytes = std::fs::read(report).map_err(|source| BenchError::Input {
        path: report.to_owned(),
        source,
    })?;
    let parsed: Report =
        serde_json::from_slice(&bytes).map_err(|source| BenchError::BadReport {
            path: report.to_owned(),
            source,
        })?;
    write_and_tell(&parsed, dir)?;
    Ok(parsed)
}

/// Draws whichever plots `report` has the data for into `dir`; `text` says whether a
/// font is registered (without one, no text at all is drawn).
pub(crate) fn render(report: &Report, dir: &Path, text: bool) -> Result<Plotted, BenchError> {
    std::fs::create_dir_all(dir).map_err(|source| BenchError::Output {
        path: dir.to_owned(),
        source,
    })?;
    let mut out = Plotted::default();

    match report.latency_histogram.as_deref() {
        None => out.skipped.push(format!(
            "no {LATENCY_FILE}: the report has no latency histogram (written by an older bench)"
        )),
        Some([]) => out
            .skipped
            .push(format!("no {LATENCY_FILE}: no delivery was measured")),
        Some(buckets) => {
            let path = dir.join(LATENCY_FILE);
            write_png(&path, LATENCY_SIZE, |root| {
                draw_latency(root, report, buckets, text)
            })?;
            out.written.push(path);
        }
    }

    match &report.server {
        Some(server) if !server.samples.is_empty() => {
            let path = dir.join(RSS_FILE);
            write_png(&path, RSS_SIZE, |root| {
                draw_server(root, report, server, text)
            })?;
            out.written.push(path);
        }
        Some(_) => out
            .skipped
            .push(format!("no {RSS_FILE}: the report has no server samples")),
        None => out.skipped.push(format!(
            "no {RSS_FILE}: no server was sampled (run with --server-pid)"
        )),
    }
    Ok(out)
}

/// Draws one PNG file; on failure removes what was written of it.
fn write_png(
    path: &Path,
    size: (u32, u32),
    draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Drawn,
) -> Result<(), BenchError> {
    let drawn = {
        let root = BitMapBackend::new(path, size).into_drawing_area();
        draw(&root).and_then(|()| Ok(root.present()?))
        // Dropping the backend saves whatever it has unless `present` did.
    };
    drawn.map_err(|e| {
        let _ = std::fs::remove_file(path);
        BenchError::Plot {
            path: path.to_owned(),
            reason: e.to_string(),
        }
    })
}

fn font_of(size: u32) -> TextStyle<'static> {
    (FAMILY, size).into_font().into()
}

/// The lower edge of the bucket ending at `le_us` (microseconds).
fn lower_edge(le_us: u64) -> f64 {
    let bounds = bucket_bounds();
    match bounds.binary_search(&le_us) {
        Ok(i) if i > 0 => bounds[i - 1] as f64,
        // The first bucket, or a bound from some other bucketing: one step of 20 a decade.
        _ => le_us as f64 / 10f64.powf(1.0 / 20.0),
    }
}

/// A short line on what was measured, for the titles.
fn scenario(report: &Report) -> String {
    let p = &report.plan;
    let mut s = format!(
        "{} subscribers, {} topic(s), {:.0} publishes/s offered",
        p.subscribers, p.topics, p.rate
    );
    if p.churn > 0.0 {
        s.push_str(&format!(", churn {}/s", p.churn));
    }
    s
}

fn draw_latency<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    buckets: &[LatencyBucket],
    text: bool,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let l = &report.latency;
    let marks: Vec<(&str, u64)> = [
        ("p50", l.p50_us),
        ("p99", l.p99_us),
        ("p99.9", l.p999_us),
        ("max", l.max_us),
    ]
    .into_iter()
    .filter(|&(_, v)| v > 0)
    .collect();
    let lo = buckets
        .iter()
        .map(|b| lower_edge(b.le_us))
        .chain(marks.iter().map(|&(_, v)| v as f64))
        .fold(f64::INFINITY, f64::min);
    let hi = buckets
        .iter()
        .map(|b| b.le_us as f64)
        .chain(marks.iter().map(|&(_, v)| v as f64))
        .fold(1.0, f64::max);
    let x = (lo.min(hi) / 1.5).max(0.5)..hi * 1.5;
    let top = buckets.iter().map(|b| b.count).max().unwrap_or(1) as f64;
    let y = 0.5..top * 2.0;

    let mut builder = ChartBuilder::on(root);
    builder.margin(20);
    if text {
        builder
            .caption(
                format!(
                    "Publish-to-receive latency: {} deliveries in {:.0} s ({})",
                    l.count,
                    report.window_s,
                    scenario(report)
                ),
                font_of(18),
            )
            .x_label_area_size(50)
            .y_label_area_size(80);
    }
    let mut chart = builder.build_cartesian_2d(x.clone().log_scale(), y.clone().log_scale())?;
    let x_fmt = |v: &f64| fmt_us(v.round() as u64);
    let y_fmt = |v: &f64| format!("{v:.0}");
    let mut mesh = chart.configure_mesh();
    mesh.light_line_style(WHITE);
    if text {
        mesh.x_desc("latency (log scale)")
            .y_desc("deliveries (log scale)")
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(font_of(14))
            .axis_desc_style(font_of(15));
    }
    mesh.draw()?;

    chart.draw_series(buckets.iter().map(|b| {
        Rectangle::new(
            [
                (lower_edge(b.le_us), y.start),
                (b.le_us as f64, b.count as f64),
            ],
            BAR.filled(),
        )
    }))?;
    for (&(name, v), color) in marks.iter().zip(MARKS) {
        let series = chart.draw_series(LineSeries::new(
            [(v as f64, y.start), (v as f64, y.end)],
            color.stroke_width(2),
        ))?;
        if text {
            series
                .label(format!("{name} {}", fmt_us(v)))
                .legend(move |(x, y)| {
                    PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2))
                });
        }
    }
    legend_or_frame(&mut chart, text, SeriesLabelPosition::UpperRight, x, y)
}

/// A line to draw: its legend label, colour and points.
struct Line {
    label: String,
    color: RGBColor,
    points: Vec<(f64, f64)>,
}

const MIB: f64 = 1024.0 * 1024.0;

/// CPU use in % of one core between consecutive `(t_s, cpu_s)` samples, at the later one.
fn cpu_percent(samples: &[(f64, f64)]) -> Vec<(f64, f64)> {
    samples
        .windows(2)
        .filter_map(|w| {
            let (dt, dc) = (w[1].0 - w[0].0, w[1].1 - w[0].1);
            let pct = dc / dt * 100.0;
            (dt > 0.0 && pct.is_finite() && pct >= 0.0).then_some((w[1].0, pct))
        })
        .collect()
}

/// RSS (MiB) and CPU (%) lines: one per process when the samples have them (several
/// `--server-pid`s), plus their sum; otherwise the sum alone.
fn server_lines(server: &ServerStats) -> (Vec<Line>, Vec<Line>) {
    let samples = &server.samples;
    let mut rss = Vec::new();
    let mut cpu = Vec::new();
    let per_pid = server.pids.len() > 1 && samples.iter().any(|s| !s.per_pid.is_empty());
    if per_pid {
        for (i, (&pid, color)) in server.pids.iter().zip(LINES.iter().cycle()).enumerate() {
            let each: Vec<(f64, u64, f64)> = samples
                .iter()
                .filter_map(|s| s.per_pid.get(i).map(|p| (s.t_s, p.rss_bytes, p.cpu_s)))
                .collect();
            let label = format!("pid {pid}");
            rss.push(Line {
                label: label.clone(),
                color: *color,
                points: each.iter().map(|&(t, b, _)| (t, b as f64 / MIB)).collect(),
            });
            let times: Vec<_> = each.iter().map(|&(t, _, c)| (t, c)).collect();
            cpu.push(Line {
                label,
                color: *color,
                points: cpu_percent(&times),
            });
        }
    }
    let label = match &server.pids[..] {
        [pid] => format!("pid {pid}"),
        _ if per_pid => "sum".to_owned(),
        pids => format!(
            "sum of pids {}",
            pids.iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let color = if per_pid { BLACK } else { LINES[0] };
    rss.push(Line {
        label: label.clone(),
        color,
        points: samples
            .iter()
            .map(|s| (s.t_s, s.rss_bytes as f64 / MIB))
            .collect(),
    });
    let times: Vec<_> = samples.iter().map(|s| (s.t_s, s.cpu_s)).collect();
    cpu.push(Line {
        label,
        color,
        points: cpu_percent(&times),
    });
    cpu.retain(|l| !l.points.is_empty());
    (rss, cpu)
}

fn draw_server<DB: DrawingBackend>(
    root: &DrawingArea<DB, Shift>,
    report: &Report,
    server: &ServerStats,
    text: bool,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    root.fill(&WHITE)?;
    let (rss, cpu) = server_lines(server);
    let t_end = server
        .samples
        .iter()
        .map(|s| s.t_s)
        .fold(0.0, f64::max)
        .max(1.0);
    let (rss_area, cpu_area) = if cpu.is_empty() {
        (root.clone(), None)
    } else {
        let h = root.dim_in_pixel().1;
        let (a, b) = root.split_vertically(h * 3 / 5);
        (a, Some(b))
    };

    let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
    for (_, v) in rss.iter().flat_map(|l| &l.points) {
        (min, max) = (min.min(*v), max.max(*v));
    }
    if !min.is_finite() {
        (min, max) = (0.0, 1.0);
    }
    // Zoomed to the data (growth over a soak is what to look for), padded by 5%.
    let pad = (max - min).max(1.0) * 0.05;
    let title = format!(
        "Server RSS, pid{} {} ({})",
        if server.pids.len() > 1 { "s" } else { "" },
        server
            .pids
            .iter()
            .map(u32::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        scenario(report)
    );
    line_panel(
        &rss_area,
        &title,
        "RSS (MiB)",
        0.0..t_end,
        (min - pad).max(0.0)..max + pad,
        &rss,
        text,
    )?;
    if let Some(area) = cpu_area {
        let top = cpu
            .iter()
            .flat_map(|l| &l.points)
            .map(|&(_, v)| v)
            .fold(0.0, f64::max);
        line_panel(
            &area,
            "Server CPU",
            "CPU (% of one core)",
            0.0..t_end,
            0.0..(top * 1.1).max(10.0),
            &cpu,
            text,
        )?;
    }
    Ok(())
}

fn line_panel<DB: DrawingBackend>(
    area: &DrawingArea<DB, Shift>,
    title: &str,
    y_desc: &str,
    x: Range<f64>,
    y: Range<f64>,
    lines: &[Line],
    text: bool,
) -> Drawn
where
    DB::ErrorType: 'static,
{
    let mut builder = ChartBuilder::on(area);
    builder.margin(15);
    if text {
        builder
            .caption(title, font_of(18))
            .x_label_area_size(45)
            .y_label_area_size(70);
    }
    let mut chart = builder.build_cartesian_2d(x.clone(), y.clone())?;
    // Whole numbers unless the axis spans less than 10 units.
    let decimals = |r: &Range<f64>| usize::from(r.end - r.start < 10.0);
    let (xd, yd) = (decimals(&x), decimals(&y));
    let x_fmt = move |v: &f64| format!("{v:.xd$}");
    let y_fmt = move |v: &f64| format!("{v:.yd$}");
    let mut mesh = chart.configure_mesh();
    if text {
        mesh.x_desc("seconds since the bench started")
            .y_desc(y_desc)
            .x_label_formatter(&x_fmt)
            .y_label_formatter(&y_fmt)
            .label_style(font_of(14))
            .axis_desc_style(font_of(15));
    }
    mesh.draw()?;
    for line in lines {
        let style = line.color.stroke_width(2);
        // A lone sample would draw no line: mark every point while there are few.
        let dots = if line.points.len() < 30 { 3 } else { 0 };
        let series = chart
            .draw_series(LineSeries::new(line.points.iter().copied(), style).point_size(dots))?;
        if text {
            series
                .label(line.label.as_str())
                .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], style));
        }
    }
    legend_or_frame(&mut chart, text, SeriesLabelPosition::UpperLeft, x, y)
}

/// The legend when there is a font to write it with; else the plotting area's
/// outline, standing in for the axes (they live in the label areas, which need a
/// font), so a plot without text still shows where its axes end.
fn legend_or_frame<'a, DB: DrawingBackend + 'a, X, Y>(
    chart: &mut ChartContext<'a, DB, Cartesian2d<X, Y>>,
    text: bool,
    position: SeriesLabelPosition,
    x: Range<X::ValueType>,
    y: Range<Y::ValueType>,
) -> Drawn
where
    DB::ErrorType: 'static,
    X: plotters::coord::ranged1d::Ranged,
    Y: plotters::coord::ranged1d::Ranged,
{
    if text {
        chart
            .configure_series_labels()
            .position(position)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(font_of(14))
            .draw()?;
    } else {
        chart.draw_series(std::iter::once(Rectangle::new(
            [(x.start, y.start), (x.end, y.end)],
            BLACK.stroke_width(1),
        )))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::hist::LatencyHist;

    /// A fresh, empty directory for one test.
    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("hubbub-bench-plot-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    /// A parent report as `--json-out` writes it: `pids` sampled every second for
    /// `seconds`, growing by 1 MiB/s each; with `histogram`, latency buckets.
    fn report_json(pids: &[u32], seconds: u32, histogram: bool) -> serde_json::Value {
        let samples: Vec<_> = (0..=seconds)
            .map(|t| {
                let each: Vec<_> = (0..pids.len())
                    .map(|i| {
                        json!({
                            "rss_bytes": (50 + 10 * i as u64 + u64::from(t)) << 20,
                            "cpu_s": f64::from(t) * 0.1 * (i + 1) as f64,
                        })
                    })
                    .collect();
                let mut s = json!({
                    "t_s": f64::from(t) + 0.5,
                    "rss_bytes": each.iter().map(|e| e["rss_bytes"].as_u64().unwrap()).sum::<u64>(),
                    "cpu_s": each.iter().map(|e| e["cpu_s"].as_f64().unwrap()).sum::<f64>(),
                });
                if pids.len() > 1 {
                    s["per_pid"] = json!(each);
                }
                s
            })
            .collect();
        let mut hist = LatencyHist::default();
        for i in 1..=20_000u64 {
            hist.record(150 + (i * 7919) % 2_000 + if i % 100 == 0 { 40_000 } else { 0 });
        }
        let latency = hist.summary();
        let mut r = json!({
            "role": "parent",
            "plan": {
                "target": "hubbub", "sub_url": "http://127.0.0.1:8080/h",
                "pub_url": "http://127.0.0.1:8080/h", "subscribers": 1000, "topics": 1,
                "publishers": 4, "rate": 100.0, "payload_bytes": 64, "warmup_s": 2.0,
                "duration_s": 10.0, "drain_s": 2.0, "connect_rate": 5000.0, "churn": 5.0,
                "processes": 1, "source_ips": 1
            },
            "started_unix_ms": 1,
            "window_s": 10.0,
            "connect": {
                "requested": 1000, "connected": 1000, "connected_at_end": 1000,
                "never_connected": 0, "errors": {}, "seconds": 1.0
            },
            "publish": {
                "offered_rate": 100.0, "ok_in_window": 1000, "achieved_rate": 100.0,
                "attempted_total": 1400, "ok_total": 1400, "errors": {}, "missed_schedule": 0,
                "rtt": latency
            },
            "delivery": {
                "in_window": 20000, "per_second": 2000.0, "expected_per_second": 2000.0,
                "total": 28000, "lost": 0, "duplicated": 0, "reordered": 0, "foreign": 0,
                "disconnects": {}, "churned": 0
            },
            "latency": latency,
            "server": {
                "pids": pids, "rss_before_bytes": 1, "rss_connected_bytes": 2,
                "rss_end_bytes": 3, "rss_peak_bytes": 4, "rss_per_subscriber_bytes": null,
                "cpu_window_s": 1.0, "cpu_window_percent": 10.0, "cpu_total_s": 2.0,
                "samples": samples
            },
            "client": {"processes": 1, "cpu_parent_s": 0.1, "cpu_workers_s": 0.2},
            "problems": []
        });
        if histogram {
            r["latency_histogram"] = json!(hist.buckets());
        }
        r
    }

    fn report(pids: &[u32], seconds: u32, histogram: bool) -> Report {
        serde_json::from_value(report_json(pids, seconds, histogram)).unwrap()
    }

    /// Checks the PNG signature, the IHDR size, the IEND trailer and a non-trivial size.
    fn assert_png(path: &Path, (w, h): (u32, u32)) -> usize {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x89PNG\r\n\x1a\n", "{}", path.display());
        assert_eq!(&bytes[8..16], b"\0\0\0\x0dIHDR");
        let be = |i: usize| u32::from_be_bytes(bytes[i..i + 4].try_into().unwrap());
        assert_eq!((be(16), be(20)), (w, h), "{}", path.display());
        assert!(bytes.ends_with(b"IEND\xae\x42\x60\x82"));
        assert!(
            bytes.len() > 4_000,
            "{}: {} bytes",
            path.display(),
            bytes.len()
        );
        bytes.len()
    }

    /// Draws into memory and counts the pixels of each colour asked about.
    fn pixels_of(
        size: (u32, u32),
        draw: impl FnOnce(&DrawingArea<BitMapBackend<'_>, Shift>) -> Drawn,
        colors: &[RGBColor],
    ) -> Vec<usize> {
        let mut buf = vec![0u8; (size.0 * size.1 * 3) as usize];
        {
            let root = BitMapBackend::with_buffer(&mut buf, size).into_drawing_area();
            draw(&root).unwrap();
            root.present().unwrap();
        }
        colors
            .iter()
            .map(|c| {
                buf.chunks_exact(3)
                    .filter(|p| p == &[c.0, c.1, c.2])
                    .count()
            })
            .collect()
    }

    #[test]
    fn writes_both_plots_as_pngs_with_and_without_text() {
        let r = report(&[101, 202, 303], 60, true);
        let text = font().path.is_some();
        let dir = temp_dir("both");
        let plotted = render(&r, &dir.join("nested"), text).unwrap();
        let latency = dir.join("nested").join(LATENCY_FILE);
        let rss = dir.join("nested").join(RSS_FILE);
        assert_eq!(plotted.written, [latency.clone(), rss.clone()]);
        assert!(plotted.skipped.is_empty(), "{:?}", plotted.skipped);
        let with = (
            assert_png(&latency, LATENCY_SIZE),
            assert_png(&rss, RSS_SIZE),
        );

        let plain = render(&r, &dir.join("plain"), false).unwrap();
        assert_eq!(plain.written.len(), 2);
        let without = (
            assert_png(&plain.written[0], LATENCY_SIZE),
            assert_png(&plain.written[1], RSS_SIZE),
        );
        if text {
            // Titles, tick labels and legends add detail to compress.
            assert!(with.0 > without.0 + 1_000, "{with:?} vs {without:?}");
            assert!(with.1 > without.1 + 1_000, "{with:?} vs {without:?}");
        } else {
            eprintln!("no font on this machine: only the text-less plots were checked");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn plots_draw_the_data() {
        let r = report(&[101, 202, 303], 60, true);
        for text in [false, font().path.is_some()] {
            let buckets = r.latency_histogram.as_deref().unwrap();
            // Two clusters of bars (about 150 µs - 2 ms, and 40 ms) and four markers.
            let [bar, p50, max] = pixels_of(
                LATENCY_SIZE,
                |root| draw_latency(root, &r, buckets, text),
                &[BAR, MARKS[0], MARKS[3]],
            )[..] else {
                unreachable!()
            };
            assert!(bar > 20_000, "bars: {bar} px");
            assert!(p50 > 300 && max > 300, "markers: {p50}, {max} px");

            // One line per process (RSS and CPU panels), none for a fourth colour.
            let server = r.server.as_ref().unwrap();
            let counts = pixels_of(
                RSS_SIZE,
                |root| draw_server(root, &r, server, text),
                &LINES[..4],
            );
            assert!(counts[..3].iter().all(|&n| n > 1_000), "{counts:?}");
            assert_eq!(counts[3], 0, "{counts:?}");
        }

        // A single process, or an old report without per-process samples: one line.
        for pids in [&[7][..], &[7, 8]] {
            let mut r = report(pids, 10, true);
            let server = r.server.as_mut().unwrap();
            server.samples.iter_mut().for_each(|s| s.per_pid.clear());
            let (rss, cpu) = server_lines(server);
            assert_eq!((rss.len(), cpu.len()), (1, 1));
            assert_eq!(rss[0].points.len(), 11);
            // 0.1 s of CPU per second per process: 10% for pid 7, 30% for 7 + 8.
            let want = 10.0 * (pids.len() * (pids.len() + 1) / 2) as f64;
            assert!(cpu[0].points.iter().all(|&(_, p)| (p - want).abs() < 1e-6));
            let counts = pixels_of(
                RSS_SIZE,
                |root| draw_server(root, &r, r.server.as_ref().unwrap(), false),
                &LINES[..2],
            );
            assert!(counts[0] > 1_000 && counts[1] == 0, "{counts:?}");
        }
    }

    #[test]
    fn report_without_histogram_gets_only_the_rss_plot() {
        let mut old = report_json(&[42], 5, false);
        // A report from before per-process samples and histograms existed.
        assert!(old.get("latency_histogram").is_none());
        old["server"].as_object_mut().unwrap().remove("per_pid");
        let dir = temp_dir("old");
        let file = dir.join("old.json");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(&file, serde_json::to_vec(&old).unwrap()).unwrap();
        let out = dir.join("plots");

        let r = from_file(&file, &out).unwrap();
        assert_eq!(r.latency.count, 20_000);
        assert!(!out.join(LATENCY_FILE).exists());
        assert_png(&out.join(RSS_FILE), RSS_SIZE);

        let plotted = render(&r, &out, false).unwrap();
        assert_eq!(plotted.written, [out.join(RSS_FILE)]);
        assert_eq!(plotted.skipped.len(), 1);
        assert!(plotted.skipped[0].contains("no latency histogram"));

        // No server sampled and no delivery: nothing to draw, and it says why.
        let mut r = report(&[1], 1, true);
        r.server = None;
        r.latency_histogram = Some(Vec::new());
        let plotted = render(&r, &dir.join("none"), false).unwrap();
        assert!(plotted.written.is_empty());
        assert!(plotted.skipped[0].contains("no delivery"));
        assert!(plotted.skipped[1].contains("--server-pid"));
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_input_is_an_error() {
        let dir = temp_dir("bad");
        std::fs::create_dir_all(&dir).unwrap();
        let missing = from_file(&dir.join("missing.json"), &dir);
        assert!(
            matches!(missing, Err(BenchError::Input { .. })),
            "{missing:?}"
        );
        std::fs::write(dir.join("bad.json"), b"{\"role\": \"parent\"}").unwrap();
        let bad = from_file(&dir.join("bad.json"), &dir);
        assert!(matches!(bad, Err(BenchError::BadReport { .. })), "{bad:?}");
        // The plot directory is a file.
        let r = report(&[1], 3, true);
        let blocked = render(&r, &dir.join("bad.json"), false);
        assert!(
            matches!(blocked, Err(BenchError::Output { .. })),
            "{blocked:?}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn lower_edges_follow_the_bucket_bounds() {
        assert_eq!(lower_edge(1_100), 1_000.0);
        assert_eq!(lower_edge(10), 9.0);
        assert!((lower_edge(1) - 0.891).abs() < 0.001);
        assert!((lower_edge(1_234) - 1_099.8).abs() < 0.1);
    }
}
