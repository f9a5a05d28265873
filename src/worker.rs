//! The model in a dedicated Web Worker, so that encoding (seconds on the CPU backend) and
//! decoding never block the page.
//!
//! The worker runs the same wasm module as the page (`www/worker.js` imports the app's own
//! `sonosam-web.js`; its `main` sees no `window` and calls [`serve`]) with an [`Engine`] inside.
//! The page talks to it through [`Client`], which offers the engine's operations as async
//! calls. Messages are `{id, msg, bytes}`: `msg` a [`Request`] or [`Reply`] (through
//! serde-wasm-bindgen), `bytes` an optional transferred `Uint8Array` for bulk data (pixels,
//! files, logits), so that nothing large goes through a JS array of numbers.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Object, Promise, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::Geometry;
use sonosam_model::manifest::WeightsManifest;
use sonosam_model::Prompt;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use wasm_bindgen_futures::JsFuture;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, Worker, WorkerOptions, WorkerType};

use crate::engine::{Engine, Progress, WeightSource, from_le_bytes, to_le_bytes};
use crate::perf::Stage;

/// What the page asks of the worker. Bulk inputs travel in the envelope's `bytes`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Start a backend (`None`: automatic) and load the model from `weights` (absolute URL).
    Init { backend: Option<BackendKind>, weights: String },
    /// Embed an RGB image (`bytes`: `width × height × 3`).
    Embed { width: u32, height: u32, sha256: String },
    /// Embedding from a companion server (`bytes`: the image file).
    EmbedRemote { server: String, server_encoder: String, sha256: String },
    /// Use a fine-tuned decoder (`bytes`: its safetensors file).
    UseDecoder { name: String },
    UseBaseDecoder,
    /// Decode against the current embedding (`bytes`: optional low-res mask prompt, f32 LE).
    Decode { geometry: Geometry, prompt: Prompt, multimask: bool },
}

/// What the worker answers. Bulk outputs travel in the envelope's `bytes`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Sent first, once the worker listens: how many threads the CPU backend computes with,
    /// and why only one when that is so.
    Hello { threads: usize, single_thread_reason: Option<String> },
    /// Progress of a request (any number, before its answer).
    Progress { what: String, fraction: Option<f64> },
    /// The model is loaded (`manifest`: the model description as JSON).
    Ready { backend: BackendKind, manifest: String, notice: Option<String> },
    Embedded { cached: bool },
    Done,
    /// Decoder output (`bytes`: low-res logits `[M, lr, lr]`, f32 LE).
    Decoded { iou: Vec<f32> },
    Error { message: String },
    /// The worker hit an internal error and cannot go on.
    Fatal { message: String },
}

/// `{id, msg, bytes?}` and the list of buffers to transfer.
fn envelope<T: Serialize>(id: u32, msg: &T, bytes: Option<&[u8]>) -> Result<(Object, Array), String> {
    let obj = Object::new();
    let set = |k: &str, v: &JsValue| Reflect::set(&obj, &k.into(), v).map(|_| ());
    let msg = serde_wasm_bindgen::to_value(msg).map_err(|e| e.to_string())?;
    let transfer = Array::new();
    set("id", &JsValue::from(id)).map_err(|e| format!("{e:?}"))?;
    set("msg", &msg).map_err(|e| format!("{e:?}"))?;
    if let Some(b) = bytes {
        let array = Uint8Array::from(b);
        transfer.push(&array.buffer());
        set("bytes", &array).map_err(|e| format!("{e:?}"))?;
    }
    Ok((obj, transfer))
}

fn open_envelope<T: for<'de> Deserialize<'de>>(v: &JsValue) -> Result<(u32, T, Option<Vec<u8>>), String> {
    let id = Reflect::get(v, &"id".into()).ok().and_then(|i| i.as_f64()).ok_or("a message without id")? as u32;
    let msg = Reflect::get(v, &"msg".into()).map_err(|e| format!("{e:?}"))?;
    let msg = serde_wasm_bindgen::from_value(msg).map_err(|e| format!("a malformed message: {e}"))?;
    let bytes = Reflect::get(v, &"bytes".into())
        .ok()
        .filter(|b| b.is_instance_of::<Uint8Array>())
        .map(|b| Uint8Array::new(&b).to_vec());
    Ok((id, msg, bytes))
}

// ---------------------------------------------------------------------------------------------
// The worker side.

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
}

fn scope() -> DedicatedWorkerGlobalScope {
    js_sys::global().unchecked_into()
}

/// Whether this code runs in a dedicated worker (no `window`).
pub fn in_worker() -> bool {
    js_sys::global().is_instance_of::<DedicatedWorkerGlobalScope>()
}

fn post(id: u32, reply: &Reply, bytes: Option<&[u8]>) {
    match envelope(id, reply, bytes) {
        Ok((obj, transfer)) => {
            if let Err(e) = scope().post_message_with_transfer(&obj, &transfer) {
                web_sys::console::error_2(&"sonosam worker: cannot answer".into(), &e);
            }
        }
        Err(e) => web_sys::console::error_1(&format!("sonosam worker: {e}").into()),
    }
}

/// Run the worker: answer the page's requests until it terminates us. `www/worker.js` calls
/// this (through `sonosam_worker`) once the module — and in the threaded build its thread
/// pool — is ready; `single_thread_reason` says why it chose the single-threaded build.
pub fn serve(single_thread_reason: Option<String>) {
    std::panic::set_hook(Box::new(|info| {
        let message = format!("the model worker stopped on an internal error: {info}");
        web_sys::console::error_1(&message.clone().into());
        post(0, &Reply::Fatal { message }, None);
    }));
    let on_message = Closure::<dyn FnMut(MessageEvent)>::new(|e: MessageEvent| {
        let data = e.data();
        wasm_bindgen_futures::spawn_local(async move {
            match open_envelope::<Request>(&data) {
                Ok((id, request, bytes)) => {
                    let (reply, out) = match handle(id, request, bytes).await {
                        Ok(r) => r,
                        Err(message) => (Reply::Error { message }, None),
                    };
                    post(id, &reply, out.as_deref());
                }
                Err(e) => web_sys::console::error_1(&format!("sonosam worker: {e}").into()),
            }
        });
    });
    scope().set_onmessage(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    let threads = crate::engine::cpu_threads();
    post(0, &Reply::Hello { threads, single_thread_reason }, None);
}

fn engine() -> Result<Rc<Engine>, String> {
    ENGINE.with(|e| e.borrow().clone()).ok_or_else(|| "the model is not loaded yet".to_string())
}

async fn handle(id: u32, request: Request, bytes: Option<Vec<u8>>) -> Result<(Reply, Option<Vec<u8>>), String> {
    let progress: Progress = Rc::new(move |what, fraction| post(id, &Reply::Progress { what, fraction }, None));
    match request {
        Request::Init { backend, weights } => {
            let (wanted, why) = match backend {
                Some(k) => (k, None),
                None => Engine::auto_backend().await,
            };
            let (kind, device, notice) = Engine::init_backend(wanted).await;
            let engine = Engine::load(WeightSource::Url(weights), kind, device, progress).await?;
            let manifest = serde_json::to_string(&engine.manifest).map_err(|e| e.to_string())?;
            ENGINE.with(|e| *e.borrow_mut() = Some(Rc::new(engine)));
            Ok((Reply::Ready { backend: kind, manifest, notice: notice.or(why) }, None))
        }
        Request::Embed { width, height, sha256 } => {
            let pixels = bytes.ok_or("no pixels")?;
            let image = image::RgbImage::from_raw(width, height, pixels).ok_or("the pixels do not match the size")?;
            let e = engine()?.embed(&image, &sha256, &progress).await?;
            Ok((Reply::Embedded { cached: e.cached }, None))
        }
        Request::EmbedRemote { server, server_encoder, sha256 } => {
            let file = bytes.ok_or("no image file")?;
            let e = engine()?.embed_remote(&server, &server_encoder, &file, &sha256).await?;
            Ok((Reply::Embedded { cached: e.cached }, None))
        }
        Request::UseDecoder { name } => {
            engine()?.use_decoder(&name, &bytes.ok_or("no decoder file")?)?;
            Ok((Reply::Done, None))
        }
        Request::UseBaseDecoder => {
            engine()?.use_base_decoder();
            Ok((Reply::Done, None))
        }
        Request::Decode { geometry, prompt, multimask } => {
            let _stage = Stage::start("sonosam:worker-decode");
            let mask = bytes.map(|b| from_le_bytes(&b));
            let (logits, iou) = engine()?.decode(&geometry, &prompt, mask.as_deref(), multimask).await?;
            Ok((Reply::Decoded { iou }, Some(to_le_bytes(&logits))))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The page side.

struct Pending {
    resolve: js_sys::Function,
    progress: Option<Progress>,
}

/// How long the worker may take to fetch and compile its wasm before the page gives up on it.
const HELLO_TIMEOUT_MS: u32 = 120_000;

/// Told why, when the worker dies.
pub type FailureHook = Rc<dyn Fn(String)>;

/// What the client and the worker's event handlers share.
#[derive(Default)]
struct Shared {
    pending: RefCell<HashMap<u32, Pending>>,
    /// Set when the worker died: every later call fails with it.
    dead: RefCell<Option<String>>,
    /// Told once, when the worker dies.
    on_failure: RefCell<Option<FailureHook>>,
    /// The page ended the worker itself: nothing to report.
    closing: Cell<bool>,
}

impl Shared {
    /// The worker died: fail every call waiting for it and every later one, and say so.
    fn die(&self, message: String) {
        if self.closing.get() || self.dead.borrow().is_some() {
            return;
        }
        *self.dead.borrow_mut() = Some(message.clone());
        fail_all(&self.pending, &message);
        let on_failure = self.on_failure.borrow().clone();
        if let Some(f) = on_failure {
            f(message);
        }
    }
}

/// The page's handle on the model worker.
pub struct Client {
    worker: Worker,
    next_id: Cell<u32>,
    shared: Rc<Shared>,
    /// Threads the worker computes with, and why one when so (from its hello).
    threads: Cell<usize>,
    single_thread_reason: RefCell<Option<String>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Closure<dyn FnMut(web_sys::Event)>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.closing.set(true);
        self.worker.terminate();
    }
}

fn fail_all(pending: &RefCell<HashMap<u32, Pending>>, message: &str) {
    let all: Vec<Pending> = pending.borrow_mut().drain().map(|(_, p)| p).collect();
    for p in all {
        if let Ok((obj, _)) = envelope(0, &Reply::Error { message: message.to_string() }, None) {
            let _ = p.resolve.call1(&JsValue::NULL, &obj);
        }
    }
}

/// Learn of the worker's death however it comes. A worker that panics says so and one whose
/// script fails raises an error event, but one the browser ends (out of memory, killed) goes
/// silently: it holds a Web Lock named after itself for its whole life (`www/worker.js`), so
/// the page, asking for the same lock, is granted it exactly when the worker is gone.
fn watch_lock(name: &str, shared: Rc<Shared>) {
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
    let locks = Reflect::get(&navigator, &"locks".into()).unwrap_or_default();
    let Ok(request) = Reflect::get(&locks, &"request".into()).and_then(|f| f.dyn_into::<js_sys::Function>()) else {
        return; // no Web Locks here (an insecure origin): errors and panics are still heard
    };
    let granted = Closure::once_into_js(move |_lock: JsValue| {
        shared.die("the model worker stopped without a word (the browser ended it: out of memory?)".into());
    });
    if let Ok(promise) = request.call2(&locks, &name.into(), &granted).and_then(|p| p.dyn_into::<Promise>()) {
        let ignore = Closure::<dyn FnMut(JsValue)>::new(|_| {});
        let _ = promise.catch(&ignore);
        ignore.forget(); // one small closure per worker started
    }
}

impl Client {
    /// Start the worker script at `url` and wait until it listens.
    pub async fn start(url: &str) -> Result<Client, String> {
        // A name of its own: the worker's life lock is named after it.
        let name = format!("sonosam-model-{:016x}", (js_sys::Math::random() * 2f64.powi(53)) as u64);
        let options = WorkerOptions::new();
        options.set_type(WorkerType::Module);
        options.set_name(&name);
        let worker = Worker::new_with_options(url, &options)
            .map_err(|e| format!("cannot start a Web Worker: {}", js_string(&e)))?;
        let shared: Rc<Shared> = Rc::default();
        let on_message = {
            let shared = shared.clone();
            Closure::<dyn FnMut(MessageEvent)>::new(move |e: MessageEvent| {
                let data = e.data();
                let id = Reflect::get(&data, &"id".into()).ok().and_then(|v| v.as_f64()).unwrap_or(0.0) as u32;
                let msg = Reflect::get(&data, &"msg".into()).unwrap_or_default();
                let kind = Reflect::get(&msg, &"kind".into()).ok().and_then(|k| k.as_string()).unwrap_or_default();
                match kind.as_str() {
                    "progress" => {
                        let p = shared.pending.borrow().get(&id).and_then(|p| p.progress.clone());
                        if let (Some(p), Ok((_, Reply::Progress { what, fraction }, _))) =
                            (p, open_envelope::<Reply>(&data))
                        {
                            p(what, fraction);
                        }
                    }
                    "fatal" => {
                        let message = Reflect::get(&msg, &"message".into()).ok().and_then(|m| m.as_string())
                            .unwrap_or_else(|| "the model worker stopped".into());
                        shared.die(message);
                    }
                    _ => {
                        let p = shared.pending.borrow_mut().remove(&id);
                        if let Some(p) = p {
                            let _ = p.resolve.call1(&JsValue::NULL, &data);
                        }
                    }
                }
            })
        };
        let on_error = {
            let shared = shared.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
                let detail = Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_default();
                shared.die(format!("the model worker failed{}", if detail.is_empty() { String::new() } else { format!(": {detail}") }));
            })
        };
        worker.set_onmessage(Some(on_message.as_ref().unchecked_ref()));
        worker.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        let client = Client {
            worker,
            next_id: Cell::new(1),
            shared,
            threads: Cell::new(1),
            single_thread_reason: RefCell::new(None),
            _on_message: on_message,
            _on_error: on_error,
        };
        // The worker says hello (id 0) once its wasm is running; errors resolve it too, and so
        // does silence (a worker that never starts).
        let hello = client.register(0, None);
        let shared = client.shared.clone();
        let _timeout = gloo::timers::callback::Timeout::new(HELLO_TIMEOUT_MS, move || {
            if shared.pending.borrow().contains_key(&0) {
                fail_all(&shared.pending, "the model worker did not start in time");
            }
        });
        match client.await_reply(hello).await? {
            (Reply::Hello { threads, single_thread_reason }, _) => {
                client.threads.set(threads);
                *client.single_thread_reason.borrow_mut() = single_thread_reason;
                // The worker took its life lock before it said hello.
                watch_lock(&name, client.shared.clone());
                Ok(client)
            }
            (other, _) => Err(format!("the model worker said {other:?} instead of hello")),
        }
    }

    fn register(&self, id: u32, progress: Option<Progress>) -> Promise {
        let pending = &self.shared.pending;
        Promise::new(&mut |resolve, _reject| {
            pending.borrow_mut().insert(id, Pending { resolve, progress: progress.clone() });
        })
    }

    async fn await_reply(&self, promise: Promise) -> Result<(Reply, Option<Vec<u8>>), String> {
        let v = JsFuture::from(promise).await.map_err(|e| js_string(&e))?;
        match open_envelope::<Reply>(&v)? {
            (_, Reply::Error { message } | Reply::Fatal { message }, _) => Err(message),
            (_, reply, bytes) => Ok((reply, bytes)),
        }
    }

    /// Send `request` (with `bytes`) and wait for its answer, reporting progress.
    pub async fn call(
        &self,
        request: &Request,
        bytes: Option<&[u8]>,
        progress: Option<Progress>,
    ) -> Result<(Reply, Option<Vec<u8>>), String> {
        if let Some(why) = self.shared.dead.borrow().clone() {
            return Err(why);
        }
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1).max(1));
        let (obj, transfer) = envelope(id, request, bytes)?;
        let promise = self.register(id, progress);
        if let Err(e) = self.worker.post_message_with_transfer(&obj, &transfer) {
            self.shared.pending.borrow_mut().remove(&id);
            return Err(format!("cannot reach the model worker: {}", js_string(&e)));
        }
        self.await_reply(promise).await
    }

    /// Threads the worker's CPU backend computes with, and why only one when so.
    pub fn threads(&self) -> (usize, Option<String>) {
        (self.threads.get(), self.single_thread_reason.borrow().clone())
    }

    /// Call `f` with the reason when the worker dies (a panic, a lost GPU device, a failed
    /// script, the browser ending it), at once if it already has.
    pub fn on_failure(&self, f: FailureHook) {
        let dead = self.shared.dead.borrow().clone();
        match dead {
            Some(why) => f(why),
            None => *self.shared.on_failure.borrow_mut() = Some(f),
        }
    }

    /// Decode: the worker's logits and IoU.
    pub async fn decode(
        &self,
        geometry: &Geometry,
        prompt: &Prompt,
        mask_input: Option<&[f32]>,
        multimask: bool,
    ) -> Result<(Vec<f32>, Vec<f32>), String> {
        let request = Request::Decode { geometry: *geometry, prompt: prompt.clone(), multimask };
        let mask = mask_input.map(to_le_bytes);
        match self.call(&request, mask.as_deref(), None).await? {
            (Reply::Decoded { iou }, Some(bytes)) => Ok((from_le_bytes(&bytes), iou)),
            (other, _) => Err(format!("the model worker answered {other:?} to a decode")),
        }
    }

    /// Start the model in the worker: (backend, manifest, notice).
    pub async fn init(
        &self,
        backend: Option<BackendKind>,
        weights: &str,
        progress: Progress,
    ) -> Result<(BackendKind, WeightsManifest, Option<String>), String> {
        let request = Request::Init { backend, weights: weights.to_string() };
        match self.call(&request, None, Some(progress)).await? {
            (Reply::Ready { backend, manifest, notice }, _) => {
                let manifest = serde_json::from_str(&manifest).map_err(|e| e.to_string())?;
                Ok((backend, manifest, notice))
            }
            (other, _) => Err(format!("the model worker answered {other:?} to init")),
        }
    }
}

fn js_string(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}
