//! The page's side of the page ↔ engine messages: [`Client`] offers the engine's operations as
//! async calls. The engine runs in a dedicated Web Worker started from `www/worker.js` (which
//! loads the threaded or the single-threaded engine module), or, where the page cannot start
//! one, in the page itself: the engine module imported here and served on a `MessageChannel`
//! ([`Client::in_page`]). The same messages either way (see [`protocol`](crate::protocol)).

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Promise, Reflect};
use sonosam_model::Prompt;
use sonosam_model::backend::BackendKind;
use sonosam_model::manifest::WeightsManifest;
use sonosam_model::preprocess::Geometry;
use wasm_bindgen::JsCast;
use wasm_bindgen::prelude::*;
use wasm_bindgen_futures::JsFuture;
use web_sys::{MessageChannel, MessageEvent, MessagePort, Worker, WorkerOptions, WorkerType};

use crate::protocol::{Progress, Reply, Request, envelope, from_le_bytes, js_string, open_envelope, to_le_bytes};

/// Where the engine runs, seen from the page.
enum Peer {
    /// A dedicated worker.
    Worker(Worker),
    /// The engine module in the page, on the other end of this port.
    Port(MessagePort),
}

impl Peer {
    fn post(&self, message: &JsValue, transfer: &Array) -> Result<(), JsValue> {
        match self {
            Peer::Worker(w) => w.post_message_with_transfer(message, transfer),
            Peer::Port(p) => p.post_message_with_transferable(message, transfer),
        }
    }

    fn listen(&self, handler: &js_sys::Function) {
        match self {
            Peer::Worker(w) => w.set_onmessage(Some(handler)),
            Peer::Port(p) => p.set_onmessage(Some(handler)),
        }
    }

    fn close(&self) {
        match self {
            Peer::Worker(w) => w.terminate(),
            Peer::Port(p) => p.close(),
        }
    }
}


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
    peer: Peer,
    next_id: Cell<u32>,
    shared: Rc<Shared>,
    /// Threads the worker computes with, and why one when so (from its hello).
    threads: Cell<usize>,
    single_thread_reason: RefCell<Option<String>>,
    _on_message: Closure<dyn FnMut(MessageEvent)>,
    _on_error: Option<Closure<dyn FnMut(web_sys::Event)>>,
}

impl Drop for Client {
    fn drop(&mut self) {
        self.shared.closing.set(true);
        self.peer.close();
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
        let mut client = Client::connect(Peer::Worker(worker));
        let on_error = {
            let shared = client.shared.clone();
            Closure::<dyn FnMut(web_sys::Event)>::new(move |e: web_sys::Event| {
                let detail = Reflect::get(&e, &"message".into()).ok().and_then(|m| m.as_string()).unwrap_or_default();
                shared.die(format!("the model worker failed{}", if detail.is_empty() { String::new() } else { format!(": {detail}") }));
            })
        };
        if let Peer::Worker(w) = &client.peer {
            w.set_onerror(Some(on_error.as_ref().unchecked_ref()));
        }
        client._on_error = Some(on_error);
        let hello = client.register(0, None);
        client.hello(hello).await?;
        // The worker took its life lock before it said hello.
        watch_lock(&name, client.shared.clone());
        Ok(client)
    }

    /// Run the engine in the page (where no worker can start): import the engine module at
    /// `module_url` (`engine/sonosam-engine.js`), serve it on a `MessageChannel` and wait until
    /// it listens. The page pauses while it computes; `reason` says why it runs here.
    pub async fn in_page(module_url: &str, reason: &str) -> Result<Client, String> {
        let fail = |what: &str, e: JsValue| format!("cannot run the model in the page ({what}: {})", js_string(&e));
        let import = js_sys::Function::new_with_args("url", "return import(url)");
        let module = import.call1(&JsValue::NULL, &module_url.into()).map_err(|e| fail("import", e))?;
        let module = JsFuture::from(Promise::from(module)).await.map_err(|e| fail(module_url, e))?;
        let export = |name: &str| {
            Reflect::get(&module, &name.into())
                .ok()
                .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
                .ok_or_else(|| format!("{module_url} has no `{name}`"))
        };
        let init = export("default")?.call0(&JsValue::NULL).map_err(|e| fail("init", e))?;
        JsFuture::from(Promise::from(init)).await.map_err(|e| fail("init", e))?;
        let channel = MessageChannel::new().map_err(|e| fail("MessageChannel", e))?;
        let client = Client::connect(Peer::Port(channel.port1()));
        let hello = client.register(0, None);
        export("sonosam_serve_port")?
            .call2(&JsValue::NULL, &channel.port2(), &reason.into())
            .map_err(|e| fail("start", e))?;
        client.hello(hello).await?;
        Ok(client)
    }

    /// A client of `peer`, listening to its answers.
    fn connect(peer: Peer) -> Client {
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
        peer.listen(on_message.as_ref().unchecked_ref());
        Client {
            peer,
            next_id: Cell::new(1),
            shared,
            threads: Cell::new(1),
            single_thread_reason: RefCell::new(None),
            _on_message: on_message,
            _on_error: None,
        }
    }

    /// Wait for the engine's hello (id 0, registered as `hello` before it could come): it
    /// comes once its wasm runs; errors resolve it too, and so does silence (an engine that
    /// never starts).
    async fn hello(&self, hello: Promise) -> Result<(), String> {
        let shared = self.shared.clone();
        let _timeout = gloo::timers::callback::Timeout::new(HELLO_TIMEOUT_MS, move || {
            if shared.pending.borrow().contains_key(&0) {
                fail_all(&shared.pending, "the model worker did not start in time");
            }
        });
        match self.await_reply(hello).await? {
            (Reply::Hello { threads, single_thread_reason }, _) => {
                self.threads.set(threads);
                *self.single_thread_reason.borrow_mut() = single_thread_reason;
                Ok(())
            }
            (other, _) => Err(format!("the model worker said {other:?} instead of hello")),
        }
    }

    /// Whether the engine runs in a Web Worker (else in the page).
    pub fn in_worker(&self) -> bool {
        matches!(self.peer, Peer::Worker(_))
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
        if let Err(e) = self.peer.post(&obj, &transfer) {
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
