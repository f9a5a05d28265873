//! The engine's side of the page ↔ engine messages: the model, answering the page's requests
//! so that encoding (seconds on the CPU backend) and decoding never block the page.
//!
//! It runs in the engine module (`engine/sonosam-engine.js`, or the threaded
//! `mt/sonosam-engine.js`), normally in a dedicated Web Worker (`www/worker.js` loads the module
//! and calls `sonosam_worker`), or — where the page cannot start a worker — in the page itself,
//! on one end of a `MessageChannel` (`sonosam_serve_port`). Either way the page talks to it
//! through [`Client`](crate::client::Client) with the messages of [`protocol`](crate::protocol).

use std::cell::RefCell;
use std::rc::Rc;

use js_sys::Array;
use wasm_bindgen::prelude::*;
use wasm_bindgen::JsCast;
use web_sys::{DedicatedWorkerGlobalScope, MessageEvent, MessagePort};

use crate::engine::{Engine, cpu_threads};
use crate::perf::Stage;
use crate::protocol::{
    Progress, Reply, Request, WeightSource, auto_backend, envelope, from_le_bytes, open_envelope, to_le_bytes,
};

/// Where requests come from and replies go.
#[derive(Clone)]
enum Endpoint {
    /// The dedicated worker's own scope.
    Worker(DedicatedWorkerGlobalScope),
    /// One end of a `MessageChannel` whose other end the page holds.
    Port(MessagePort),
}

impl Endpoint {
    fn post(&self, message: &JsValue, transfer: &Array) -> Result<(), JsValue> {
        match self {
            Endpoint::Worker(s) => s.post_message_with_transfer(message, transfer),
            Endpoint::Port(p) => p.post_message_with_transferable(message, transfer),
        }
    }

    fn listen(&self, handler: Option<&js_sys::Function>) {
        match self {
            Endpoint::Worker(s) => s.set_onmessage(handler),
            Endpoint::Port(p) => p.set_onmessage(handler),
        }
    }
}

thread_local! {
    static ENGINE: RefCell<Option<Rc<Engine>>> = const { RefCell::new(None) };
    static ENDPOINT: RefCell<Option<Endpoint>> = const { RefCell::new(None) };
}

fn post(id: u32, reply: &Reply, bytes: Option<&[u8]>) {
    let Some(endpoint) = ENDPOINT.with(|e| e.borrow().clone()) else { return };
    match envelope(id, reply, bytes) {
        Ok((obj, transfer)) => {
            if let Err(e) = endpoint.post(&obj, &transfer) {
                web_sys::console::error_2(&"sonosam engine: cannot answer".into(), &e);
            }
        }
        Err(e) => web_sys::console::error_1(&format!("sonosam engine: {e}").into()),
    }
}

/// Run the engine in this dedicated worker: answer the page's requests until it terminates
/// us. `www/worker.js` calls this (through `sonosam_worker`) once the module — and in the
/// threaded build its thread pool — is ready; `single_thread_reason` says why it chose the
/// single-threaded build.
pub fn serve(single_thread_reason: Option<String>) {
    start(Endpoint::Worker(js_sys::global().unchecked_into()), single_thread_reason);
}

/// Run the engine in the page, answering on `port` (the page holds the channel's other end).
pub fn serve_port(port: MessagePort, single_thread_reason: Option<String>) {
    start(Endpoint::Port(port), single_thread_reason);
}

fn start(endpoint: Endpoint, single_thread_reason: Option<String>) {
    // A panic ends the engine: the page hears it (its calls fail, the model panel says why).
    std::panic::set_hook(Box::new(|info| {
        let message = format!("the model stopped on an internal error: {info}");
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
                Err(e) => web_sys::console::error_1(&format!("sonosam engine: {e}").into()),
            }
        });
    });
    endpoint.listen(Some(on_message.as_ref().unchecked_ref()));
    on_message.forget();
    ENDPOINT.with(|e| *e.borrow_mut() = Some(endpoint));
    post(0, &Reply::Hello { threads: cpu_threads(), single_thread_reason }, None);
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
                None => auto_backend().await,
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
