//! `--plot FILE.svg`: Redis commands/s over time for every Redis-backed run (from the
//! `INFO commandstats` samples), and each store's touch and batch latency percentiles.
//!
//! plotters with its SVG backend alone: text is left to the SVG viewer's fonts, so no font
//! files are needed.

use std::path::Path;

use liveness_store::Backend;
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::commandstats::SAMPLE_EVERY;
use crate::report::{fmt_duration, fmt_micros, thousands};
use crate::summary::{Report, RunSummary};

const WIDTH: u32 = 1100;
const PANEL_HEIGHT: u32 = 420;
const TITLE_HEIGHT: u32 = 40;
const FONT: &str = "sans-serif";
/// The bars of a latency panel.
const BARS: [&str; 4] = ["touch p50", "touch p99", "batch p50", "batch p99"];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;

/// Draws `report` into the SVG file at `path`.
pub(crate) fn draw(path: &Path, report: &Report) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    if report.runs.is_empty() {
        return Err(failed(&"no run finished"));
    }
    let with_commands = report.runs.iter().any(has_commands);
    let panels = if with_commands { 2 } else { 1 };
    let height = TITLE_HEIGHT + PANEL_HEIGHT * panels;
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    draw_all(&root, report, with_commands).map_err(|e| failed(&e))?;
    root.present().map_err(|e| failed(&e))
}

type DrawResult = Result<(), Box<dyn std::error::Error>>;

fn draw_all(root: &Area<'_>, report: &Report, with_commands: bool) -> DrawResult {
    root.fill(&WHITE)?;
    let settings = &report.settings;
    let stores: Vec<&str> = report.runs.iter().map(|r| r.store).collect();
    let title = format!(
        "liveness-sim: {}, {} runtimes, beat {} ms, ttl {} ms, {} s per store",
        stores.join(" vs "),
        thousands(settings.runtimes as u64),
        settings.beat_ms,
        settings.ttl_ms,
        settings.duration_s
    );
    let (title_area, body) = root.split_vertically(TITLE_HEIGHT);
    title_area.draw(&Text::new(
        title,
        (20, 12),
        (FONT, 20).into_font().color(&BLACK),
    ))?;
    let latency_area = if with_commands {
        let (commands, latency) = body.split_vertically(PANEL_HEIGHT);
        commands_panel(&commands, report)?;
        latency
    } else {
        body
    };
    latency_panels(&latency_area, report)
}

fn has_commands(run: &RunSummary) -> bool {
    run.redis.as_ref().is_some_and(|r| !r.rate.is_empty())
}

/// A colour per store, the same in every panel.
fn color(run: &RunSummary) -> RGBColor {
    match run.backend.as_str() {
        b if b == Backend::Redis.name() => RGBColor(214, 39, 40),
        b if b == Backend::Layered.name() => RGBColor(31, 119, 180),
        b if b == Backend::Memory.name() => RGBColor(44, 160, 44),
        _ => RGBColor(127, 127, 127),
    }
}

fn commands_panel(area: &Area<'_>, report: &Report) -> DrawResult {
    let runs: Vec<&RunSummary> = report.runs.iter().filter(|r| has_commands(r)).collect();
    let points = |run: &RunSummary| {
        run.redis
            .as_ref()
            .map(|r| r.rate.clone())
            .unwrap_or_default()
    };
    let max_t = runs
        .iter()
        .flat_map(|r| points(r))
        .map(|p| p.t_s)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let max_rate = runs
        .iter()
        .flat_map(|r| points(r))
        .map(|p| p.commands_per_s)
        .fold(0.0_f64, f64::max)
        .max(1.0);
    let mut chart = ChartBuilder::on(area)
        .caption(
            format!(
                "Redis commands/s (INFO commandstats every {}: SET + MGET + GET)",
                fmt_duration(SAMPLE_EVERY)
            ),
            (FONT, 17),
        )
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(80)
        .build_cartesian_2d(0.0..max_t * 1.02, 0.0..max_rate * 1.15)?;
    chart
        .configure_mesh()
        .x_desc("seconds since the store's run began")
        .y_desc("commands/s")
        .y_label_formatter(&|v| thousands(v.round() as u64))
        .draw()?;
    for run in runs {
        let color = color(run);
        chart
            .draw_series(LineSeries::new(
                points(run).into_iter().map(|p| (p.t_s, p.commands_per_s)),
                color.stroke_width(2),
            ))?
            .label(run.store)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 24, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperRight)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .label_font((FONT, 14))
        .draw()?;
    Ok(())
}

/// The bars' values of one run, in µs: touch p50, touch p99, batch p50, batch p99.
fn latencies(run: &RunSummary) -> [Option<u64>; 4] {
    let touch = run.touch.latency;
    let batch = run.batch.latency;
    [
        touch.map(|l| l.p50_us),
        touch.map(|l| l.p99_us),
        batch.map(|l| l.p50_us),
        batch.map(|l| l.p99_us),
    ]
}

/// One bar chart per store, side by side, on one logarithmic latency axis so that they
/// compare at a glance.
fn latency_panels(area: &Area<'_>, report: &Report) -> DrawResult {
    let values: Vec<u64> = report
        .runs
        .iter()
        .flat_map(latencies)
        .flatten()
        .map(|us| us.max(1))
        .collect();
    // Whole decades, so that the axis is labelled at 100 µs, 1 ms, 10 ms...
    let decade_below = |us: u64| 10_f64.powf((us as f64).log10().floor());
    let low = decade_below(values.iter().copied().min().unwrap_or(1));
    let highest = values.iter().copied().max().unwrap_or(1_000);
    // Room above the tallest bar for its label.
    let high = decade_below(highest.saturating_mul(3) / 2) * 10.0;
    let panels = area.split_evenly((1, report.runs.len()));
    for (panel, run) in panels.iter().zip(&report.runs) {
        latency_panel(panel, run, low, high)?;
    }
    Ok(())
}

fn latency_panel(area: &Area<'_>, run: &RunSummary, low: f64, high: f64) -> DrawResult {
    let mut chart = ChartBuilder::on(area)
        .caption(format!("{}: latency per call", run.store), (FONT, 17))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..3).into_segmented(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("latency (log scale)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => BARS
                .get(usize::try_from(*i).unwrap_or(usize::MAX))
                .copied()
                .unwrap_or("")
                .to_owned(),
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|v| fmt_micros(v.round() as u64))
        .draw()?;
    let color = color(run);
    let bars = latencies(run);
    let end = |i: i32| {
        if i >= 3 {
            SegmentValue::Last
        } else {
            SegmentValue::Exact(i + 1)
        }
    };
    chart.draw_series((0..4).zip(bars).filter_map(|(i, us)| {
        let us = us?.max(1) as f64;
        // p50 lighter, p99 solid.
        let style = if i % 2 == 0 {
            color.mix(0.5).filled()
        } else {
            color.filled()
        };
        let mut bar = Rectangle::new([(SegmentValue::Exact(i), low), (end(i), us)], style);
        bar.set_margin(0, 0, 18, 18);
        Some(bar)
    }))?;
    let label_style =
        TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    chart.draw_series((0..4).zip(bars).filter_map(|(i, us)| {
        let us = us?;
        Some(Text::new(
            fmt_micros(us),
            (SegmentValue::CenterOf(i), (us.max(1) as f64) * 1.08),
            label_style.clone(),
        ))
    }))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::summary::tests::{compare_report, memory_report};

    fn svg_of(report: &Report) -> String {
        let dir = std::env::temp_dir().join(format!("liveness-sim-plot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(format!("{}.svg", report.runs.len()));
        draw(&path, report).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        svg
    }

    #[test]
    fn a_comparison_plots_commands_and_both_stores_latencies() {
        let svg = svg_of(&compare_report());
        assert!(svg.starts_with("<svg"), "{}", &svg[..80.min(svg.len())]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Redis commands/s"));
        assert!(svg.contains("RedisStore: latency per call"));
        assert!(svg.contains("LayeredStore: latency per call"));
        assert!(svg.contains("touch p99") && svg.contains("batch p50"));
    }

    #[test]
    fn a_memory_run_plots_latency_alone() {
        let svg = svg_of(&memory_report());
        assert!(svg.contains("MemoryStore: latency per call"));
        assert!(!svg.contains("Redis commands/s"));
    }

    #[test]
    fn a_report_without_runs_is_an_error() {
        let mut report = memory_report();
        report.runs.clear();
        let error = draw(Path::new("/nonexistent/never.svg"), &report).unwrap_err();
        assert!(error.contains("no run"), "{error}");
    }
}
