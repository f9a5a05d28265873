//! Progress bars, in one style for every command.

use indicatif::{ProgressBar, ProgressStyle};

fn bar(len: usize, template: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(template).expect("a valid template").progress_chars("=> ");
    ProgressBar::new(len as u64).with_style(style)
}

/// A bar over `len` items (`images`, `instances`), labelled `what`.
pub fn items(len: usize, unit: &str, what: &str) -> ProgressBar {
    let b = bar(len, &format!("{{msg:>10}} [{{bar:30}}] {{pos}}/{{len}} {unit}, {{elapsed}} elapsed, ETA {{eta}}"));
    b.set_message(what.to_string());
    b
}

/// A bar over the `len` steps of training epoch `epoch` of `epochs`; its message is the loss.
pub fn epoch(len: usize, epoch: usize, epochs: usize) -> ProgressBar {
    let b = bar(len, "epoch {prefix} [{bar:30}] {pos}/{len} steps, loss {msg}, {elapsed}, ETA {eta}");
    b.set_prefix(format!("{epoch}/{epochs}"));
    b
}
