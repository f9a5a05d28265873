//! sonosam in the browser: a Yew app that runs Segment Anything (LiteMedSAM) on WebGPU, or on
//! the CPU with wasm SIMD, entirely client-side.
//!
//! - [`state`]: the document model (lesions, prompts, undo/redo, exports), the pointer gesture,
//!   decode sequencing and the hover preview — plain Rust, also unit-tested natively;
//! - `engine`: weights (download, verification, cache) and inference;
//! - `model` / `worker`: the engine in a Web Worker (or in the page), behind one async API;
//! - `storage`: fetch with progress and the Cache API;
//! - `app`: the UI, one component per concern (see its module table); `draw`: canvas layers
//!   and strokes;
//! - `perf`: named stages on the browser's performance timeline;
//! - `bench`: the browser benchmark (`scripts/bench-web.sh`, `www/bench.html`).

pub mod state;

#[cfg(target_arch = "wasm32")]
pub mod app;
#[cfg(target_arch = "wasm32")]
pub mod bench;
#[cfg(target_arch = "wasm32")]
pub mod draw;
#[cfg(target_arch = "wasm32")]
pub mod engine;
#[cfg(target_arch = "wasm32")]
pub mod model;
#[cfg(target_arch = "wasm32")]
pub mod perf;
#[cfg(target_arch = "wasm32")]
pub mod storage;
#[cfg(target_arch = "wasm32")]
pub mod worker;

/// Start the app in `<body>`, reading options from the page URL (`?backend=cpu|wgpu`,
/// `?worker=0` to run the model in the page, `?threads=0` for the single-threaded build). In the model's Web Worker (`www/worker.js` loads
/// this same module) serve the page's requests instead.
#[cfg(target_arch = "wasm32")]
pub fn start() {
    if worker::in_worker() {
        return; // www/worker.js calls `sonosam_worker` when the module is ready
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
        weights: engine::WeightSource::Url("weights".into()),
        samples_url: "samples".into(),
        backend,
        worker,
    };
    yew::Renderer::<app::App>::with_props(props).render();
}

/// The model's Web Worker: serve the page's requests. Called by `www/worker.js` once this
/// module — and in the threaded build its thread pool — is ready; `single_thread_reason` says
/// why the single-threaded build runs, when it does.
#[cfg(target_arch = "wasm32")]
#[wasm_bindgen::prelude::wasm_bindgen]
pub fn sonosam_worker(single_thread_reason: Option<String>) {
    worker::serve(single_thread_reason);
}

/// `initThreadPool(n)` for the threaded build (wasm-bindgen-rayon): `www/worker.js` starts
/// the pool of Web Workers before the model runs.
#[cfg(all(target_arch = "wasm32", feature = "threads"))]
pub use wasm_bindgen_rayon::init_thread_pool;
