//! The model panel: loading (with progress), ready (which backend, threads, worker or page) or
//! failed (why, with Retry); and the backend menu.

use sonosam_model::backend::BackendKind;
use yew::prelude::*;

use super::{AppContext, ModelState, Msg, Setting};

#[function_component]
pub fn ModelPanel() -> Html {
    let app = use_context::<AppContext>().expect("AppContext");
    let backend = app.settings.backend;
    let state = match &*app.model {
        ModelState::Loading(what, fraction) => html! {
            <div class="engine loading" id="engine-status" data-state="loading">
                <span>{ what.clone() }</span>
                <progress max="1" value={ fraction.map(|v| v.to_string()) } />
            </div>
        },
        ModelState::Failed(why) | ModelState::Stopped(why) => {
            let what = if matches!(*app.model, ModelState::Failed(_)) { "The model could not be loaded: " } else { "The model stopped: " };
            html! {
                <div class="engine failed" id="engine-status" data-state="failed" role="alert">
                    <strong>{ what }</strong>{ why.clone() }
                    <button onclick={ app.send.reform(move |_| Msg::Set(Setting::Backend(backend))) }>{ "Retry" }</button>
                </div>
            }
        }
        ModelState::Ready(model) => {
            let (threads, single) = model.threads();
            let device = match (model.kind(), threads) {
                (BackendKind::Wgpu, _) => "WebGPU".to_string(),
                (_, 1) => "CPU (wasm SIMD, 1 thread)".to_string(),
                (_, n) => format!("CPU (wasm SIMD, {n} threads)"),
            };
            let place = if model.in_worker() { ", in a Web Worker" } else { ", in the page" };
            html! {
                <div class="engine ready" id="engine-status" data-state="ready" data-backend={ model.kind().to_string() }
                     data-worker={ model.in_worker().to_string() } data-threads={ threads.to_string() }>
                    { format!("{} on {device}{place}", model.manifest().model) }
                    if let (BackendKind::Cpu, Some(why)) = (model.kind(), single) {
                        <small class="threads-note">{ format!(" — single-threaded: {why}") }</small>
                    }
                </div>
            }
        }
    };
    let onchange = app.send.reform(|e: Event| {
        let v = e.target_unchecked_into::<web_sys::HtmlSelectElement>().value();
        Msg::Set(Setting::Backend(v.parse().ok()))
    });
    let option = |value: &'static str, kind: Option<BackendKind>, label: &'static str| {
        html! { <option {value} selected={ backend == kind }>{ label }</option> }
    };
    html! {
        <>
            { state }
            <label>{ "Backend " }
                <select id="backend" {onchange}>
                    { option("auto", None, "automatic") }
                    { option("wgpu", Some(BackendKind::Wgpu), "WebGPU") }
                    { option("cpu", Some(BackendKind::Cpu), "CPU") }
                </select>
            </label>
        </>
    }
}
