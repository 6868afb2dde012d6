//! The progress bar of every long loop (data generation, training, pair sets), in one style.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar over `len` items: message, bar, count, rate and time left.
pub fn bar(len: u64) -> ProgressBar {
    ProgressBar::new(len).with_style(
        ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} {per_sec} eta {eta}")
            .expect("a valid template")
            .progress_chars("=> "),
    )
}
