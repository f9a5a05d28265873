//! Guided first use: the three steps from an empty page to a measured lesion — open an image,
//! box the lesion, read and export the result — each ticked off as the user does it, with the
//! next one marked. Shown until the user closes it or finishes all three; the browser then
//! remembers (localStorage), so it is there the first time only. "Guide" in the shortcut list
//! brings it back.

use yew::prelude::*;

use super::{AppContext, Msg};

/// The localStorage key that says the guide was done or closed.
const DONE_KEY: &str = "sonosam-guide-done";

fn storage() -> Option<web_sys::Storage> {
    web_sys::window()?.local_storage().ok()?
}

/// Whether this browser has already been through the guide.
pub fn done_before() -> bool {
    storage().and_then(|s| s.get_item(DONE_KEY).ok().flatten()).is_some()
}

/// Remember (or forget, to show it again) that the guide was done.
pub fn remember(done: bool) {
    if let Some(s) = storage() {
        let _ = if done { s.set_item(DONE_KEY, "1") } else { s.remove_item(DONE_KEY) };
    }
}

#[derive(Properties, PartialEq)]
pub struct GuideProps {
    /// Whether the report has been opened (the last step).
    pub reported: bool,
}

/// The steps, each with whether it is done.
fn steps(app: &AppContext, reported: bool) -> [(&'static str, &'static str, bool); 3] {
    let segmented = app.doc.has_masks();
    [
        ("Open an ultrasound image", "drop a PNG, JPEG or DICOM file on the page, paste one, use Open, or pick a sample below", app.image.is_some()),
        ("Drag a box around the lesion", "or click on it; right-click or long-press marks what is not lesion; the outline and sizes appear at once", segmented),
        ("Check the outline, then export", "edit with more clicks or a new box; Report shows the measurements and descriptors to print or save", reported),
    ]
}

#[function_component]
pub fn Guide(props: &GuideProps) -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let steps = steps(&app, props.reported);
    let all_done = steps.iter().all(|s| s.2);
    use_effect_with(all_done, |&all_done| {
        if all_done {
            remember(true);
        }
    });
    let next = steps.iter().position(|s| !s.2);
    let close = app.send.reform(|_| Msg::Guide(false));
    html! {
        <section class="guide" id="guide" aria-labelledby="guide-title">
            <h2 id="guide-title">{ "Getting started" }</h2>
            <ol>
                { for steps.iter().enumerate().map(|(i, (what, how, done))| {
                    let state = if *done { "done" } else if Some(i) == next { "next" } else { "later" };
                    html! {
                        <li class={ state } data-step={ (i + 1).to_string() } aria-current={ (state == "next").then_some("step") }>
                            <strong>{ *what }</strong>{ if *done { " ✓ done" } else { "" } }
                            <span class="how">{ *how }</span>
                        </li>
                    }
                }) }
            </ol>
            <button id="guide-close" onclick={ close }>{ "Close the guide" }</button>
        </section>
    }
}
