//! sonosam in the browser: a Yew app that runs Segment Anything (LiteMedSAM) on WebGPU, or on
//! the CPU with wasm SIMD, entirely client-side.
//!
//! One crate, built as separate wasm modules by feature: the UI (`ui`: `sonosam-web`, what
//! the page loads, without the model) and the engines (`engine`: `engine/sonosam-engine`, the
//! CPU; with `webgpu` `engine-webgpu/`; with `threads` the threaded `mt/` — what the model's Web
//! Worker loads), so that a page downloads the model code once and only the backend it runs.
//! Default features build everything into one module (tests, `cargo check`).
//!
//! - [`state`]: the document model (lesions, prompts, undo/redo, exports), the pointer gesture,
//!   decode sequencing and the hover preview — plain Rust, also unit-tested natively;
//! - `protocol`: the page ↔ engine messages, shared by both modules;
//! - `engine` (engine): weights (download, verification, cache) and inference; `worker`
//!   (engine): the engine answering the page's messages;
//! - `client` / `model` (ui): the page's handle on the engine (in a Web Worker, or in the page),
//!   behind one async API;
//! - `storage`: fetch with progress and the Cache API;
//! - `app`: the UI, one component per concern (see its module table); `draw`: canvas layers
//!   and strokes;
//! - `perf`: named stages on the browser's performance timeline;
//! - `bench`: the browser benchmark (`scripts/bench-web.sh`, `www/bench.html`).

pub mod state;

#[cfg(all(target_arch = "wasm32", feature = "ui"))]
pub mod app;
#[cfg(all(target_arch = "wasm32", feature = "engine"))]
pub mod bench;
#[cfg(all(target_arch = "wasm32", feature = "ui"))]
pub mod client;
#[cfg(all(target_arch = "wasm32", feature = "ui"))]
pub mod draw;
#[cfg(all(target_arch = "wasm32", feature = "engine"))]
pub mod engine;
#[cfg(all(target_arch = "wasm32", feature = "ui"))]
pub mod model;
#[cfg(target_arch = "wasm32")]
pub mod perf;
#[cfg(target_arch = "wasm32")]
pub mod protocol;
#[cfg(target_arch = "wasm32")]
pub mod storage;
#[cfg(all(target_arch = "wasm32", feature = "engine"))]
pub mod worker;

/// Start the app in `<body>`, reading options from the page URL (`?backend=cpu|wgpu`,
/// `?worker=0` to run the model in the page, `?threads=0` for the single-threaded engine).
#[cfg(all(target_arch = "wasm32", feature = "ui"))]
pub fn start() {
    if protocol::in_worker() {
        return; // a module with the engine inside, started by a worker: it calls `sonosam_worker`
    }
    // A page that only uses the module's exports (www/bench.html) gets no app.
    let document = web_sys::window().and_then(|w| w.document());
    if document.and_then(|d| d.body()).is_some_and(|b| b.has_attribute("data-no-app")) {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let msg = format!("sonosam stopped on an internal error: {info}. Reload the page; if it \
                           happens again, choose the CPU backend.");
        web_sys::console::error_1(&msg.clone().into());
        if let Some(doc) = web_sys::window().and_then(|w| w.document()) {
            if let Ok(div) = doc.create_element("div") {
                div.set_id("fatal");
                div.set_class_name("error");
                div.set_text_content(Some(&msg));
                if let Some(body) = doc.body() {
                    let _ = body.prepend_with_node_1(&div);
                }
            }
        }
    }));
    let search = web_sys::window()
        .and_then(|w| w.location().search().ok())
        .unwrap_or_default();
    let param = |name: &str| {
        search
            .trim_start_matches('?')
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=').map(str::to_string))
    };
    let backend = param("backend").and_then(|v| v.parse().ok());
    let script = if param("threads").as_deref() == Some("0") { "worker.js?threads=0" } else { "worker.js" };
    let worker = (param("worker").as_deref() != Some("0")).then(|| script.into());
    let props = app::AppProps {
        weights: protocol::WeightSource::Url("weights".into()),
        samples_url: "samples".into(),
        backend,
        worker,
    };
    yew::Renderer::<app::App>::with_props(props).render();
}

/// The engine module started without the UI: nothing to do until `www/worker.js` (or the page)
/// calls one of the entry points below.
#[cfg(all(target_arch = "wasm32", not(feature = "ui")))]
pub fn start() {}

/// The model's Web Worker: serve the page's requests. Called by `www/worker.js` once this
/// module — and in the threaded build its thread pool — is ready; `single_thread_reason` says
/// why the single-threaded build runs, when it does.
#[cfg(all(target_arch = "wasm32", feature = "engine"))]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn sonosam_worker(single_thread_reason: Option<String>) {
    worker::serve(single_thread_reason);
}

/// The engine in the page (where no worker could start): serve the requests that come on
/// `port`, the page's `MessageChannel` (see `client::Client::in_page`).
#[cfg(all(target_arch = "wasm32", feature = "engine"))]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn sonosam_serve_port(port: web_sys::MessagePort, single_thread_reason: Option<String>) {
    worker::serve_port(port, single_thread_reason);
}

/// `initThreadPool(n)` for the threaded build (wasm-bindgen-rayon): `www/worker.js` starts
/// the pool of Web Workers before the model runs.
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
pub use wasm_bindgen_rayon::init_thread_pool;
