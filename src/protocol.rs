//! What the page (the UI module) and the engine (the model's module, in a Web Worker or, as a
//! fallback, in the page) share: the messages between them, the progress callback, where the
//! weights come from, and the automatic choice of backend.
//!
//! The app ships as separate wasm modules (README, "First visit"): the UI (`sonosam-web`:
//! Yew, the DICOM reader, measurements; no model), and the engine built twice
//! (`engine/sonosam-engine`: single-threaded, CPU + WebGPU; `mt/sonosam-engine`: wasm threads,
//! CPU). They talk only through these messages: `{id, msg, bytes}`, `msg` a [`Request`] or
//! [`Reply`] (through serde-wasm-bindgen), `bytes` an optional transferred `Uint8Array` for
//! bulk data (pixels, files, logits), so that nothing large goes through a JS array of numbers.

use std::collections::HashMap;
use std::rc::Rc;

use js_sys::{Array, Object, Reflect, Uint8Array};
use serde::{Deserialize, Serialize};
use sonosam_model::Prompt;
use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::Geometry;
use wasm_bindgen::JsCast;
use wasm_bindgen::JsValue;

/// Progress of a long step, for the UI: what, and the fraction done (`None`: unknown).
pub type Progress = Rc<dyn Fn(String, Option<f64>)>;

/// Where weight files come from: the server (cached in the browser), or bytes already in
/// memory (tests, embedding the app; only where the engine runs in the UI's own module).
#[derive(Clone)]
pub enum WeightSource {
    /// Base URL of the weights folder (e.g. `weights`).
    Url(String),
    /// Manifest JSON and files by name.
    Bytes {
        manifest: String,
        files: Rc<HashMap<String, Vec<u8>>>,
    },
}

/// What the page asks of the engine. Bulk inputs travel in the envelope's `bytes`.
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

/// What the engine answers. Bulk outputs travel in the envelope's `bytes`.
#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Reply {
    /// Sent first, once the engine listens: how many threads the CPU backend computes with,
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
    /// The engine hit an internal error and cannot go on.
    Fatal { message: String },
}

/// `{id, msg, bytes?}` and the list of buffers to transfer.
pub fn envelope<T: Serialize>(id: u32, msg: &T, bytes: Option<&[u8]>) -> Result<(Object, Array), String> {
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

/// An envelope's id, message and bytes.
pub fn open_envelope<T: for<'de> Deserialize<'de>>(v: &JsValue) -> Result<(u32, T, Option<Vec<u8>>), String> {
    let id = Reflect::get(v, &"id".into()).ok().and_then(|i| i.as_f64()).ok_or("a message without id")? as u32;
    let msg = Reflect::get(v, &"msg".into()).map_err(|e| format!("{e:?}"))?;
    let msg = serde_wasm_bindgen::from_value(msg).map_err(|e| format!("a malformed message: {e}"))?;
    let bytes = Reflect::get(v, &"bytes".into())
        .ok()
        .filter(|b| b.is_instance_of::<Uint8Array>())
        .map(|b| Uint8Array::new(&b).to_vec());
    Ok((id, msg, bytes))
}

/// f32 values as little-endian bytes (cache entries, messages).
pub fn to_le_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Little-endian bytes back to f32 values.
pub fn from_le_bytes(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// A JavaScript error as text.
pub fn js_string(e: &JsValue) -> String {
    e.as_string()
        .or_else(|| Reflect::get(e, &"message".into()).ok().and_then(|m| m.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// Whether this code runs in a dedicated worker (no `window`).
pub fn in_worker() -> bool {
    js_sys::global().is_instance_of::<web_sys::DedicatedWorkerGlobalScope>()
}

/// The backend to try when the user asked for none: WebGPU when the browser gives a hardware
/// adapter; the CPU when it has none or only a software one (SwiftShader is ≈ 80× slower than
/// the wasm CPU backend). The second value says why the CPU was chosen. Asked of the browser
/// only (no model code): the page decides with it which engine module to start.
pub async fn auto_backend() -> (BackendKind, Option<String>) {
    // `navigator` of the page or of the worker this runs in.
    let navigator = Reflect::get(&js_sys::global(), &"navigator".into()).unwrap_or_default();
    let gpu = Reflect::get(&navigator, &"gpu".into()).unwrap_or_default();
    if gpu.is_undefined() || gpu.is_null() {
        return (BackendKind::Cpu, Some("this browser has no WebGPU: running on the CPU (slower)".into()));
    }
    let request = Reflect::get(&gpu, &"requestAdapter".into())
        .ok()
        .and_then(|f| f.dyn_into::<js_sys::Function>().ok())
        .and_then(|f| f.call0(&gpu).ok())
        .and_then(|p| p.dyn_into::<js_sys::Promise>().ok());
    let Some(request) = request else { return (BackendKind::Wgpu, None) };
    let adapter = wasm_bindgen_futures::JsFuture::from(request).await.unwrap_or_default();
    if adapter.is_undefined() || adapter.is_null() {
        return (BackendKind::Cpu, Some("WebGPU gives no adapter here: running on the CPU (slower)".into()));
    }
    let info = Reflect::get(&adapter, &"info".into()).unwrap_or_default();
    let field = |k: &str| Reflect::get(&info, &k.into()).ok().and_then(|v| v.as_string()).unwrap_or_default();
    let fallback = Reflect::get(&info, &"isFallbackAdapter".into()).map(|v| v.is_truthy()).unwrap_or(false)
        || Reflect::get(&adapter, &"isFallbackAdapter".into()).map(|v| v.is_truthy()).unwrap_or(false);
    let name = format!("{} {} {}", field("vendor"), field("architecture"), field("description")).to_lowercase();
    if fallback || name.contains("swiftshader") || name.contains("llvmpipe") || name.contains("lavapipe") {
        return (
            BackendKind::Cpu,
            Some("WebGPU runs on a software adapter here (slower than the CPU backend): running on the CPU; choose WebGPU in the menu to use it anyway".into()),
        );
    }
    (BackendKind::Wgpu, None)
}
