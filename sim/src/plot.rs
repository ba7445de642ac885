//! `--plot FILE.svg`: Redis commands/s over time for every run that Redis counted, and each
//! store's touch and batch latency percentiles, one bar chart per store on one log scale.
//!
//! plotters with its SVG backend alone: text is left to the SVG viewer's fonts, so no font
//! files are needed.

use std::path::Path;

use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use crate::redis_side::{Rate, SAMPLE_EVERY};
use crate::report::{Summary, fmt_duration, micros, thousands};
use crate::run::Run;
use crate::stores::Store;

const WIDTH: u32 = 1100;
const PANEL_HEIGHT: u32 = 420;
const TITLE_HEIGHT: u32 = 40;
const FONT: &str = "sans-serif";
/// The bars of a latency panel: p50 lighter, p99 solid.
const BARS: [&str; 4] = ["touch p50", "touch p99", "batch p50", "batch p99"];

type Area<'a> = DrawingArea<SVGBackend<'a>, Shift>;
type Drawn = Result<(), Box<dyn std::error::Error>>;

/// Draws `summary` into the SVG file at `path`.
pub(crate) fn draw(path: &Path, summary: &Summary) -> Result<(), String> {
    let failed = |e: &dyn std::fmt::Display| format!("cannot draw {}: {e}", path.display());
    if summary.runs.is_empty() {
        return Err(failed(&"no run finished"));
    }
    let counted = summary.runs.iter().any(|r| !rates(r).is_empty());
    let height = TITLE_HEIGHT + PANEL_HEIGHT * (1 + u32::from(counted));
    let root = SVGBackend::new(path, (WIDTH, height)).into_drawing_area();
    let drawn = draw_on(&root, summary, counted).and_then(|()| Ok(root.present()?));
    drawn.map_err(|e| failed(&e))
}

fn draw_on(root: &Area<'_>, summary: &Summary, counted: bool) -> Drawn {
    root.fill(&WHITE)?;
    let settings = &summary.settings;
    let stores: Vec<&str> = summary.runs.iter().map(|r| r.backend.type_name()).collect();
    let fleet = match settings.instances {
        1 => String::new(),
        k => format!(" ({k} instances, routing {})", settings.routing.name()),
    };
    let title = format!(
        "liveness-sim: {}{fleet}, {} runtimes, beat {} ms, ttl {} ms, {} s per store",
        stores.join(" vs "),
        thousands(settings.runtimes as u64),
        settings.beat_ms,
        settings.ttl_ms,
        settings.duration_secs
    );
    let body = root.titled(&title, (FONT, 20))?;
    if !counted {
        return latency_panels(&body, &summary.runs);
    }
    let (commands, latencies) = body.split_vertically(PANEL_HEIGHT);
    commands_panel(&commands, &summary.runs)?;
    latency_panels(&latencies, &summary.runs)
}

/// What Redis counted of `run` over time; nothing for a store without Redis.
fn rates(run: &Run) -> &[Rate] {
    run.redis.as_ref().map_or(&[], |r| &r.rate)
}

/// A colour per store, the same in every panel.
fn color(run: &Run) -> RGBColor {
    match run.backend {
        Store::Redis => RGBColor(214, 39, 40),
        Store::Layered => RGBColor(31, 119, 180),
        Store::Memory => RGBColor(44, 160, 44),
        Store::Noop => RGBColor(127, 127, 127),
    }
}

fn commands_panel(area: &Area<'_>, runs: &[Run]) -> Drawn {
    let points = || runs.iter().flat_map(rates);
    let max_t = points().map(|p| p.t_s).fold(1.0_f64, f64::max);
    let max_rate = points().map(|p| p.commands_per_s).fold(1.0_f64, f64::max);
    let caption = format!(
        "Redis commands/s (INFO commandstats every {}: SET + MGET + GET)",
        fmt_duration(SAMPLE_EVERY)
    );
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
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
    for run in runs.iter().filter(|r| !rates(r).is_empty()) {
        let line = color(run).stroke_width(2);
        let points = rates(run).iter().map(|p| (p.t_s, p.commands_per_s));
        chart
            .draw_series(LineSeries::new(points, line))?
            .label(run.backend.type_name())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 24, y)], line));
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

/// The bars of one run, in µs (at least 1, the log scale's floor), as in [`BARS`]; none where
/// it made no call.
fn bars(run: &Run) -> impl Iterator<Item = (i32, f64)> {
    let (touch, batch) = (
        run.touch.latency.percentiles(),
        run.batch.latency.percentiles(),
    );
    let values = [touch.map(|p| p.p50_us), touch.map(|p| p.p99_us)]
        .into_iter()
        .chain([batch.map(|p| p.p50_us), batch.map(|p| p.p99_us)]);
    (0..)
        .zip(values)
        .filter_map(|(i, us)| Some((i, us?.max(1.0))))
}

/// One bar chart per store, side by side, on one logarithmic latency axis so that they
/// compare at a glance.
fn latency_panels(area: &Area<'_>, runs: &[Run]) -> Drawn {
    let values = || runs.iter().flat_map(bars).map(|(_, us)| us);
    // Whole decades, so that the axis is labelled at 100 µs, 1 ms, 10 ms...
    let decade_below = |us: f64| 10_f64.powf(us.log10().floor());
    let low = decade_below(values().fold(f64::INFINITY, f64::min).min(1_000.0));
    // Room above the tallest bar for its label.
    let high = decade_below(values().fold(1.0, f64::max) * 1.5) * 10.0;
    for (panel, run) in area.split_evenly((1, runs.len())).iter().zip(runs) {
        latency_panel(panel, run, low, high)?;
    }
    Ok(())
}

fn latency_panel(area: &Area<'_>, run: &Run, low: f64, high: f64) -> Drawn {
    let caption = format!("{}: latency per call", run.backend.type_name());
    let mut chart = ChartBuilder::on(area)
        .caption(caption, (FONT, 17))
        .margin(15)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((0..3).into_segmented(), (low..high).log_scale())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("latency (log scale)")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => {
                let bar = usize::try_from(*i).ok().and_then(|i| BARS.get(i));
                bar.copied().unwrap_or_default().to_owned()
            }
            SegmentValue::Last => String::new(),
        })
        .y_label_formatter(&|us| micros(*us))
        .draw()?;
    let color = color(run);
    let label = TextStyle::from((FONT, 13).into_font()).pos(Pos::new(HPos::Center, VPos::Bottom));
    for (i, us) in bars(run) {
        let style = if i % 2 == 0 {
            color.mix(0.5).filled()
        } else {
            color.filled()
        };
        let end = if i >= 3 {
            SegmentValue::Last
        } else {
            SegmentValue::Exact(i + 1)
        };
        let mut bar = Rectangle::new([(SegmentValue::Exact(i), low), (end, us)], style);
        bar.set_margin(0, 0, 18, 18);
        chart.draw_series([bar])?;
        let at = (SegmentValue::CenterOf(i), us * 1.08);
        chart.draw_series([Text::new(micros(us), at, label.clone())])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::compared;

    fn svg_of(summary: &Summary, name: &str) -> String {
        let file = format!("liveness-sim-{}-{name}.svg", std::process::id());
        let path = std::env::temp_dir().join(file);
        draw(&path, summary).unwrap();
        let svg = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        svg
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn commands_are_plotted_when_redis_counted_them_and_latencies_always() {
        let mut summary = compared().await;
        let svg = svg_of(&summary, "compare");
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        assert!(svg.contains("Redis commands/s") && svg.contains("touch p99"));
        assert!(svg.contains("RedisStore: latency per call"));
        assert!(svg.contains("LayeredStore: latency per call"));
        for run in &mut summary.runs {
            run.redis = None;
        }
        let svg = svg_of(&summary, "latency");
        assert!(svg.contains("LayeredStore: latency per call"));
        assert!(!svg.contains("Redis commands/s"));
        summary.runs.clear();
        let error = draw(Path::new("/nonexistent/never.svg"), &summary).unwrap_err();
        assert!(error.contains("no run"), "{error}");
    }
}
