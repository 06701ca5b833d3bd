//! Progress of long transfers and jobs, on stderr.
//!
//! Invariants: a bar is drawn only when stderr is a terminal and the output is for people
//! (`--output table`); otherwise every method is a no-op, so stdout stays clean for scripts and
//! logs stay free of control sequences. Nothing here is printed to stdout.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::output::Output;

/// The bar once a total is known; the spinner before.
const BAR: &str =
    "{msg} [{bar:30.cyan/blue}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec}";
const SPINNER: &str = "{spinner} {msg} {decimal_bytes} {decimal_bytes_per_sec}";

pub struct Progress {
    bar: Option<ProgressBar>,
}

/// Whether progress may be drawn at all for this output mode.
pub fn enabled(output: Output) -> bool {
    output == Output::Table && std::io::stderr().is_terminal()
}

impl Progress {
    /// A bar over `total` bytes (a spinner with a byte count when the total is unknown, 0).
    /// A byte counter on stderr (a bar once the total is known), in the tables' units (MB,
    /// decimal), with no time estimate: a restore's phases run at very different speeds.
    pub fn bytes(output: Output, total: u64, message: &str) -> Self {
        if !enabled(output) {
            return Progress { bar: None };
        }
        let bar = ProgressBar::with_draw_target(
            (total > 0).then_some(total),
            ProgressDrawTarget::stderr(),
        );
        let template = if total > 0 { BAR } else { SPINNER };
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style.progress_chars("=> "));
        }
        bar.set_message(message.to_string());
        bar.enable_steady_tick(Duration::from_millis(200));
        Progress { bar: Some(bar) }
    }

    pub fn inc(&self, n: u64) {
        if let Some(b) = &self.bar {
            b.inc(n);
        }
    }

    pub fn set(&self, done: u64) {
        if let Some(b) = &self.bar {
            b.set_position(done);
        }
    }

    /// Sets the total when it becomes known (0: leave as it is).
    pub fn set_total(&self, total: u64) {
        if let Some(b) = &self.bar {
            if total > 0 && b.length() != Some(total) {
                b.set_length(total);
                if let Ok(style) = ProgressStyle::with_template(BAR) {
                    b.set_style(style.progress_chars("=> "));
                }
            }
        }
    }

    pub fn message(&self, text: &str) {
        if let Some(b) = &self.bar {
            b.set_message(text.to_string());
        }
    }

    /// Removes the bar from the terminal.
    pub fn finish(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.finish();
    }
}
