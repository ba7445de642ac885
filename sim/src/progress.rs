//! The progress bar: one per run, on stderr, only when stderr is a terminal and not `--quiet`,
//! so that piped or JSON output stays clean.

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::report::thousands;
use crate::run::Sim;

/// How often the bar moves.
const TICK: Duration = Duration::from_millis(100);

/// A bar for a run of `duration` of the store `label`; hidden when it should not show.
pub(crate) fn bar(quiet: bool, label: &str, duration: Duration) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let length = u64::try_from(duration.as_millis()).unwrap_or(u64::MAX);
    let bar = ProgressBar::with_draw_target(Some(length), ProgressDrawTarget::stderr());
    let style = ProgressStyle::with_template("{prefix:>12} [{wide_bar}] {msg}")
        .map(|style| style.progress_chars("=> "))
        .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_prefix(label.to_owned());
    bar
}

/// Moves `bar` with the run's clock and counters until the run is over, then clears it.
pub(crate) async fn follow(bar: ProgressBar, sim: Arc<Sim>) {
    if bar.is_hidden() {
        return;
    }
    let total = Duration::from_nanos(sim.end_ns);
    loop {
        let now = Duration::from_nanos(sim.now_ns().min(sim.end_ns));
        bar.set_position(u64::try_from(now.as_millis()).unwrap_or(u64::MAX));
        let (beats, false_dead) = {
            let run = sim.run.lock();
            (run.touch.items, run.false_dead)
        };
        bar.set_message(format!(
            "{:.1}/{:.0} s  {} beats  {} false dead",
            now.as_secs_f64(),
            total.as_secs_f64(),
            thousands(beats),
            thousands(false_dead),
        ));
        if sim.over() {
            break;
        }
        tokio::time::sleep(TICK).await;
    }
    bar.finish_and_clear();
}
