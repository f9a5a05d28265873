//! What the app is doing and how fast: the status line (with the seconds a long step has
//! taken so far), the decoder's latency and the time from releasing a prompt to its mask on
//! the canvas; notices (a fallback taken) and errors.

use yew::prelude::*;

use super::Latency;
use crate::perf::now_ms;

#[derive(Properties, PartialEq)]
pub struct BannerProps {
    pub notice: Option<String>,
    pub error: Option<String>,
}

#[function_component]
pub fn Banners(props: &BannerProps) -> Html {
    html! {
        <>
            { props.notice.as_ref().map(|n| html! { <div class="notice" id="notice">{ n.clone() }</div> }) }
            { props.error.as_ref().map(|e| html! { <div class="error" id="error" role="alert">{ e.clone() }</div> }) }
        </>
    }
}

#[derive(Properties, PartialEq)]
pub struct StatusProps {
    pub status: String,
    /// When the current long step (an embedding) started, while it runs.
    pub busy_since: Option<f64>,
    pub latency: Latency,
}

#[function_component]
pub fn StatusPanel(props: &StatusProps) -> Html {
    // While a step runs, show its seconds: render again twice a second.
    let tick = use_force_update();
    use_effect_with(props.busy_since.is_some(), move |busy| {
        let interval = busy.then(|| gloo::timers::callback::Interval::new(500, move || tick.force_update()));
        move || drop(interval)
    });
    let busy = props.busy_since.map(|t| format!(" ({:.0} s)", (now_ms() - t) / 1e3)).unwrap_or_default();
    let l = &props.latency;
    html! {
        <>
            <div class="status" id="status" aria-live="polite">{ format!("{}{busy}", props.status) }</div>
            <div class="latency" id="latency" data-release-to-draw-ms={ l.release_to_draw_ms.map(|ms| format!("{ms:.1}")) }
                 data-release-draws={ l.draws.to_string() }>
                { l.decoder_ms.map(|ms| format!("decoder {ms:.0} ms")).unwrap_or_default() }
                { l.release_to_draw_ms.map(|ms| format!(" · release → mask {ms:.0} ms")).unwrap_or_default() }
            </div>
        </>
    }
}
