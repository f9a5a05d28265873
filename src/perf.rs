//! Named stages on the performance timeline (`performance.mark` / `performance.measure`), in the
//! page and in the model's worker: they show in the browser profiler's "Timings" track and can
//! be read with `performance.getEntriesByName(…)`. Stages: `sonosam:update` and `sonosam:view`
//! (the app's message handling and rendering), `sonosam:draw` (the prompts' canvas, on each move of a
//! drag), `sonosam:compose` (the image and masks' canvas, when they change), `sonosam:decode`
//! (a prompt sent → the decoder's answer back), `sonosam:postprocess` (logits → masks at the
//! image size), `sonosam:worker-decode` (the decoder inside the worker).

use wasm_bindgen::JsCast;

fn performance() -> Option<web_sys::Performance> {
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
}

/// The page's or the worker's clock (ms).
pub fn now_ms() -> f64 {
    performance().map_or(0.0, |p| p.now())
}

/// A stage in progress: measured from [`Stage::start`] until it is dropped.
#[must_use = "a stage is measured when it is dropped"]
pub struct Stage(&'static str);

impl Stage {
    pub fn start(name: &'static str) -> Self {
        if let Some(p) = performance() {
            let _ = p.mark(name);
        }
        Stage(name)
    }
}

impl Drop for Stage {
    fn drop(&mut self) {
        if let Some(p) = performance() {
            let _ = p.measure_with_str(self.0, self.0);
            // Marks and measures accumulate until cleared: keep only the latest ones.
            p.clear_marks_with_mark_name(self.0);
            if p.get_entries_by_name_with_entry_type(self.0, "measure").length() > 100 {
                p.clear_measures_with_measure_name(self.0);
            }
        }
    }
}
