//! Network and browser storage: fetching with download progress, and the Cache API (weights
//! and image embeddings survive reloads and work offline). Without the Cache API (an insecure
//! origin, a private window) everything still works, uncached.

use js_sys::{Uint8Array, Reflect};
use wasm_bindgen::{JsCast, JsValue};
use wasm_bindgen_futures::JsFuture;
use web_sys::{Cache, ReadableStreamDefaultReader, Request, Response};

/// Name of the app's cache (bump to invalidate every entry).
pub const CACHE_NAME: &str = "sonosam-v1";

fn js_err(e: JsValue) -> String {
    e.as_string()
        .or_else(|| js_sys::JSON::stringify(&e).ok().and_then(|s| s.as_string()))
        .unwrap_or_else(|| format!("{e:?}"))
}

/// `fetch` of the page or of the worker this runs in.
fn fetch(request: &Request) -> Result<js_sys::Promise, String> {
    if let Some(window) = web_sys::window() {
        return Ok(window.fetch_with_request(request));
    }
    let scope: web_sys::WorkerGlobalScope = js_sys::global().dyn_into().map_err(|_| "no fetch here")?;
    Ok(scope.fetch_with_request(request))
}

/// The Cache API of the page or of the worker this runs in.
fn caches() -> Option<web_sys::CacheStorage> {
    match web_sys::window() {
        Some(window) => window.caches().ok(),
        None => js_sys::global().dyn_into::<web_sys::WorkerGlobalScope>().ok()?.caches().ok(),
    }
}

/// Open the app's cache, if the browser offers the Cache API here.
pub async fn open_cache() -> Option<Cache> {
    let caches = caches()?;
    let cache = JsFuture::from(caches.open(CACHE_NAME)).await.ok()?;
    cache.dyn_into::<Cache>().ok()
}

async fn response_bytes(resp: &Response) -> Result<Vec<u8>, String> {
    let buf = JsFuture::from(resp.array_buffer().map_err(js_err)?)
        .await
        .map_err(js_err)?;
    Ok(Uint8Array::new(&buf).to_vec())
}

/// Bytes stored under `key` (a URL or a synthetic path) in the app's cache.
pub async fn cache_get(key: &str) -> Option<Vec<u8>> {
    let cache = open_cache().await?;
    let hit = JsFuture::from(cache.match_with_str(key)).await.ok()?;
    if hit.is_undefined() || hit.is_null() {
        return None;
    }
    let resp: Response = hit.dyn_into().ok()?;
    response_bytes(&resp).await.ok()
}

/// Store `bytes` under `key`. Failures (quota, no Cache API) are reported, not fatal.
pub async fn cache_put(key: &str, bytes: &[u8]) -> Result<(), String> {
    let cache = open_cache().await.ok_or("the Cache API is not available here")?;
    let array = Uint8Array::from(bytes);
    let resp = Response::new_with_opt_buffer_source(Some(&array)).map_err(js_err)?;
    JsFuture::from(cache.put_with_str(key, &resp))
        .await
        .map_err(|e| format!("cannot store {key} in the browser cache: {}", js_err(e)))?;
    Ok(())
}

/// Remove `key` from the cache (a corrupt entry).
pub async fn cache_delete(key: &str) {
    if let Some(cache) = open_cache().await {
        let _ = JsFuture::from(cache.delete_with_str(key)).await;
    }
}

/// GET `url`, reporting `(received, total)` bytes as they arrive (`total` 0 when unknown).
pub async fn fetch_with_progress(
    url: &str,
    mut progress: impl FnMut(u64, u64),
) -> Result<Vec<u8>, String> {
    let request = Request::new_with_str(url).map_err(js_err)?;
    let resp = JsFuture::from(fetch(&request)?)
        .await
        .map_err(|e| format!("cannot reach the server for {url}: {}", js_err(e)))?;
    let resp: Response = resp.dyn_into().map_err(js_err)?;
    if !resp.ok() {
        return Err(format!("{url}: HTTP {} {}", resp.status(), resp.status_text()));
    }
    let total: u64 = resp
        .headers()
        .get("content-length")
        .ok()
        .flatten()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let Some(body) = resp.body() else {
        return response_bytes(&resp).await;
    };
    let reader: ReadableStreamDefaultReader = body
        .get_reader()
        .dyn_into()
        .map_err(|_| "the browser gave no stream reader".to_string())?;
    let mut out = Vec::with_capacity(total as usize);
    loop {
        let chunk = JsFuture::from(reader.read()).await.map_err(|e| {
            format!("the download of {url} was interrupted: {}", js_err(e))
        })?;
        let done = Reflect::get(&chunk, &"done".into())
            .map(|v| v.is_truthy())
            .unwrap_or(true);
        if done {
            break;
        }
        let value = Reflect::get(&chunk, &"value".into()).map_err(js_err)?;
        out.extend(Uint8Array::new(&value).to_vec());
        progress(out.len() as u64, total);
    }
    Ok(out)
}

/// GET `url` as text.
pub async fn fetch_text(url: &str) -> Result<String, String> {
    let bytes = fetch_with_progress(url, |_, _| {}).await?;
    String::from_utf8(bytes).map_err(|e| format!("{url}: not UTF-8 text: {e}"))
}

/// POST `body` to `url`; the answer's bytes, or the server's JSON error message.
pub async fn post_bytes(url: &str, body: &[u8]) -> Result<Vec<u8>, String> {
    let init = web_sys::RequestInit::new();
    init.set_method("POST");
    let array = Uint8Array::from(body);
    init.set_body(&array);
    let request = Request::new_with_str_and_init(url, &init).map_err(js_err)?;
    // The server takes image bytes only as image/* or octet-stream (no cross-site "simple" requests).
    request
        .headers()
        .set("Content-Type", "application/octet-stream")
        .map_err(js_err)?;
    let resp = JsFuture::from(fetch(&request)?)
        .await
        .map_err(|e| format!("the companion server is unreachable ({url}): {}", js_err(e)))?;
    let resp: Response = resp.dyn_into().map_err(js_err)?;
    let bytes = response_bytes(&resp).await?;
    if !resp.ok() {
        let msg = serde_json::from_slice::<serde_json::Value>(&bytes)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string))
            .unwrap_or_else(|| resp.status_text());
        return Err(format!("the companion server answered {}: {msg}", resp.status()));
    }
    Ok(bytes)
}
