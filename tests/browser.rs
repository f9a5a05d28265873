//! Browser tests (wasm-bindgen-test in headless Chromium): the prompt encoder and mask decoder
//! on a golden LiteMedSAM embedding, on WebGPU and on the CPU backend compiled to wasm, must
//! match the PyTorch reference's low-res logits.
//!
//! Run with `cargo test --target wasm32-unknown-unknown --test browser` (see scripts/test.sh).
#![cfg(target_arch = "wasm32")]

use sonosam_model::backend::{BackendKind, init_device_async};
use sonosam_model::golden::{Golden, diff};
use sonosam_model::sam::{Component, WeightsManifest};
use sonosam_model::segmentation::read_f32_async;
use sonosam_model::{Point, PointLabel, Prompt, SamDecoder, StoreDType};
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

static MANIFEST: &str = include_str!("../weights/litemedsam.json");
static DECODER_F32: &[u8] = include_bytes!("../weights/litemedsam.decoder.f32.safetensors");
static GOLDEN: &[u8] = include_bytes!("../../shared/golden/benign_93.safetensors");

fn log(s: &str) {
    web_sys::console::log_1(&s.into());
}

async fn decoder_parity(kind: BackendKind) {
    let device = init_device_async(kind).await.expect("backend");
    let manifest: WeightsManifest = serde_json::from_str(MANIFEST).unwrap();
    let weights = manifest
        .load_component(Component::Decoder, StoreDType::F32, DECODER_F32)
        .unwrap();
    let decoder = SamDecoder::load(&manifest.config, &weights, &device).unwrap();
    let g = Golden::from_bytes(GOLDEN, "benign_93").unwrap();
    let embedding = g.tensor::<4>("embedding", &device);
    let b: [f32; 4] = g.f32("box256").try_into().unwrap();
    let p = g.f32("points");
    let positive = Point { x: p[0], y: p[1], label: PointLabel::Positive };
    let negative = Point { x: p[2], y: p[3], label: PointLabel::Negative };
    let cases = [
        ("box", Prompt::from_box(b), false, false),
        ("box.multi", Prompt::from_box(b), true, false),
        ("points.multi", Prompt { points: vec![positive, negative], bbox: None }, true, false),
        ("box_point", Prompt { points: vec![positive], bbox: Some(b) }, false, false),
        ("box_mask", Prompt::from_box(b), false, true),
    ];
    for (key, prompt, multimask, with_mask) in cases {
        let mask = with_mask.then(|| g.tensor::<4>("box.low_res_logits", &device));
        let out = decoder.decode(embedding.clone(), &[prompt], mask, multimask).unwrap();
        let logits = read_f32_async(out.low_res_logits).await.unwrap();
        let iou = read_f32_async(out.iou).await.unwrap();
        let (lmax, lmean) = diff(&logits, &g.f32(&format!("{key}.low_res_logits")));
        let (imax, _) = diff(&iou, &g.f32(&format!("{key}.iou")));
        log(&format!("{kind} {key}: logits max |Δ| {lmax:.3e} mean {lmean:.3e}, IoU max |Δ| {imax:.3e}"));
        assert!(lmax <= 2e-2, "{kind} {key}: low-res logits max |Δ| {lmax}");
        assert!(imax <= 5e-3, "{kind} {key}: IoU max |Δ| {imax}");
    }
}

#[wasm_bindgen_test]
async fn decoder_matches_reference_on_webgpu() {
    decoder_parity(BackendKind::Wgpu).await;
}

#[wasm_bindgen_test]
async fn decoder_matches_reference_on_cpu() {
    decoder_parity(BackendKind::Cpu).await;
}

static ENCODER_F32: &[u8] = include_bytes!("../weights/litemedsam.image_encoder.f32.safetensors");

/// The image encoder (75 GFLOP) in the browser: parity of the embedding with the reference
/// (reference-compat configuration, see the README), on WebGPU and on the wasm CPU backend.
async fn encoder_parity(kind: BackendKind) {
    let device = init_device_async(kind).await.expect("backend");
    let manifest: WeightsManifest = serde_json::from_str(MANIFEST).unwrap();
    let weights = manifest
        .load_component(Component::ImageEncoder, StoreDType::F32, ENCODER_F32)
        .unwrap();
    let config = manifest.config.clone().reference_compat();
    let encoder = sonosam_model::sam::ImageEncoder::load(&weights, &config.encoder, &device).unwrap();
    let g = Golden::from_bytes(GOLDEN, "benign_93").unwrap();
    let start = js_sys_now();
    let embedding = encoder.forward(g.tensor::<4>("input", &device));
    let got = read_f32_async(embedding).await.unwrap();
    let (max, mean) = diff(&got, &g.f32("embedding"));
    log(&format!(
        "{kind} encoder: embedding max |Δ| {max:.3e} mean {mean:.3e} in {:.1} s",
        (js_sys_now() - start) / 1e3
    ));
    assert!(max <= 5e-3 && mean <= 1e-4, "{kind} embedding: max {max}, mean {mean}");
}

fn js_sys_now() -> f64 {
    web_sys::window()
        .and_then(|w| w.performance())
        .map(|p| p.now())
        .unwrap_or(0.0)
}

#[wasm_bindgen_test]
#[ignore = "slow: > 5 min on SwiftShader with 2 cores; scripts/test.sh runs it with SONOSAM_SLOW_BROWSER_TESTS=1"]
async fn encoder_matches_reference_on_webgpu() {
    encoder_parity(BackendKind::Wgpu).await;
}

#[wasm_bindgen_test]
async fn encoder_matches_reference_on_cpu() {
    encoder_parity(BackendKind::Cpu).await;
}

// --- component test: the app itself -------------------------------------------------------

static DECODER_F16: &[u8] = include_bytes!("../weights/litemedsam.decoder.f16.safetensors");
static SAMPLE_PNG: &[u8] = include_bytes!("../www/samples/benign_93.png");

async fn sleep_ms(ms: u32) {
    gloo::timers::future::TimeoutFuture::new(ms).await;
}

/// Poll a JavaScript expression until it is truthy (or fail after `secs`).
async fn wait_js(what: &str, expr: &str, secs: f64) -> wasm_bindgen::JsValue {
    let f = js_sys::Function::new_no_args(&format!("return ({expr});"));
    let start = js_sys_now();
    loop {
        let v = f.call0(&wasm_bindgen::JsValue::NULL).unwrap();
        if v.is_truthy() {
            log(&format!("app: {what} after {:.1} s", (js_sys_now() - start) / 1e3));
            return v;
        }
        let err = js_sys::Function::new_no_args("const e = document.querySelector('#error, #fatal'); return e ? e.textContent : null;")
            .call0(&wasm_bindgen::JsValue::NULL)
            .unwrap();
        assert!(err.is_null(), "the app reports an error while waiting for {what}: {err:?}");
        assert!(js_sys_now() - start < secs * 1e3, "timed out waiting for {what}");
        sleep_ms(100).await;
    }
}

/// The app renders, loads the model (CPU backend, weights handed in as bytes), opens a dropped
/// image whose embedding a previous visit cached, and turns a simulated box drag into the
/// reference mask; the mask PNG export holds the same mask.
#[wasm_bindgen_test]
async fn app_segments_a_dropped_image_with_a_box_drag() {
    use std::collections::HashMap;
    use std::rc::Rc;
    use sonosam_model::weights::sha256_hex;
    use sonosam_web::app::{App, AppProps};
    use sonosam_web::engine::{WeightSource, embedding_cache_key};

    let manifest: WeightsManifest = serde_json::from_str(MANIFEST).unwrap();
    let g = Golden::from_bytes(GOLDEN, "benign_93").unwrap();
    // What an earlier visit leaves in the browser cache: this image's embedding.
    let key = embedding_cache_key(&manifest, &sha256_hex(SAMPLE_PNG));
    let emb: Vec<u8> = g.f32("embedding").iter().flat_map(|v| v.to_le_bytes()).collect();
    sonosam_web::storage::cache_put(&key, &emb).await.unwrap();

    let doc = web_sys::window().unwrap().document().unwrap();
    let root = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&root).unwrap();
    let decoder_file = manifest.file(Component::Decoder, StoreDType::F16).unwrap().file.clone();
    let files = HashMap::from([(decoder_file, DECODER_F16.to_vec())]);
    let props = AppProps {
        weights: WeightSource::Bytes { manifest: MANIFEST.to_string(), files: Rc::new(files) },
        samples_url: "no-samples-here".into(),
        backend: Some(BackendKind::Cpu),
        // In the page: the test harness serves no worker script.
        worker: None,
    };
    yew::Renderer::<App>::with_root_and_props(root, props).render();
    wait_js("the app to render", "document.querySelector('.app header h1')", 10.0).await;
    wait_js("the model", "document.querySelector('#engine-status[data-state=ready]')", 60.0).await;

    // Drop the image file on the page, as a user would.
    let drop = js_sys::Function::new_with_args(
        "bytes",
        "const dt = new DataTransfer(); \
         dt.items.add(new File([bytes], 'benign_93.png', { type: 'image/png' })); \
         document.querySelector('.app').dispatchEvent(new DragEvent('drop', { dataTransfer: dt, bubbles: true, cancelable: true }));",
    );
    drop.call1(&wasm_bindgen::JsValue::NULL, &js_sys::Uint8Array::from(SAMPLE_PNG)).unwrap();
    wait_js("the cached embedding", "/from the browser cache/.test(document.getElementById('status').textContent)", 30.0).await;

    // The reference box (model frame) in image pixels, dragged with pointer events.
    let b: [f32; 4] = g.f32("box256").try_into().unwrap();
    let img = image::load_from_memory(SAMPLE_PNG).unwrap();
    let scale = img.width().max(img.height()) as f32 / 256.0;
    let drag = js_sys::Function::new_with_args(
        "x0, y0, x1, y1",
        "const c = document.getElementById('image-canvas'); const r = c.getBoundingClientRect(); \
         const sx = r.width / c.width, sy = r.height / c.height; \
         const at = (x, y) => ({ clientX: r.left + x * sx, clientY: r.top + y * sy, pointerId: 1, button: 0, bubbles: true }); \
         c.dispatchEvent(new PointerEvent('pointerdown', at(x0, y0))); \
         c.dispatchEvent(new PointerEvent('pointermove', at((x0 + x1) / 2, (y0 + y1) / 2))); \
         c.dispatchEvent(new PointerEvent('pointermove', at(x1, y1))); \
         c.dispatchEvent(new PointerEvent('pointerup', at(x1, y1)));",
    );
    let args = js_sys::Array::of4(
        &(b[0] * scale).into(),
        &(b[1] * scale).into(),
        &(b[2] * scale).into(),
        &(b[3] * scale).into(),
    );
    drag.apply(&wasm_bindgen::JsValue::NULL, &args).unwrap();
    wait_js("the mask", "document.querySelector('.object[data-area]')", 60.0).await;
    wait_js("the measurements", "/long axis/.test(document.querySelector('.object .measure').textContent)", 5.0).await;
    wait_js("the latency", "/decoder \\d+ ms/.test(document.getElementById('latency').textContent)", 5.0).await;

    // Export the mask and read the download back.
    js_sys::Function::new_no_args("document.getElementById('export-mask-button').click();")
        .call0(&wasm_bindgen::JsValue::NULL)
        .unwrap();
    let href = wait_js("the export", "document.getElementById('export-mask') && document.getElementById('export-mask').href", 10.0).await;
    let resp = wasm_bindgen_futures::JsFuture::from(web_sys::window().unwrap().fetch_with_str(&href.as_string().unwrap()))
        .await
        .unwrap();
    let buf = wasm_bindgen_futures::JsFuture::from(web_sys::Response::from(resp).array_buffer().unwrap()).await.unwrap();
    let exported = sonosam_model::Mask::from_image_bytes(&js_sys::Uint8Array::new(&buf).to_vec()).unwrap();
    let shape = g.shape("box.mask");
    let reference = sonosam_model::Mask { width: shape[1], height: shape[0], data: g.u8("box.mask") };
    let agreement = exported.agreement(&reference).unwrap();
    let dice = exported.dice(&reference).unwrap();
    log(&format!("app: exported mask vs reference: {:.4} % of pixels agree, Dice {dice:.5}", agreement * 100.0));
    assert!(dice >= 0.99 && agreement >= 0.999, "Dice {dice}, agreement {agreement}");

    // The COCO export: downloaded, and announced to the hosting page as an event.
    js_sys::Function::new_no_args(
        "window.__coco = null; window.addEventListener('sonosam-export', (e) => { window.__coco = e.detail; }); \
         document.getElementById('export-coco-button').click();",
    )
    .call0(&wasm_bindgen::JsValue::NULL)
    .unwrap();
    let area = wait_js("the COCO export", "window.__coco && window.__coco.annotations[0].area", 10.0).await;
    assert_eq!(area.as_f64().unwrap() as usize, exported.area());
    wait_js("the COCO download", "document.getElementById('export-coco') && document.getElementById('export-coco').href", 5.0).await;

    // Undo removes the box and its mask; redo brings them back.
    js_sys::Function::new_no_args("document.getElementById('undo').click();").call0(&wasm_bindgen::JsValue::NULL).unwrap();
    wait_js("undo", "!document.querySelector('.object[data-area]')", 5.0).await;
    js_sys::Function::new_no_args("document.getElementById('redo').click();").call0(&wasm_bindgen::JsValue::NULL).unwrap();
    wait_js("redo", "document.querySelector('.object[data-area]')", 5.0).await;

    // A fine-tuned decoder file (here the f32 export of the same weights) replaces the base
    // decoder, the lesion is decoded again and keeps (about) its mask; "base" switches back.
    let area_before = wait_js("the area", "document.querySelector('.object[data-area]').dataset.area", 1.0).await;
    let choose = js_sys::Function::new_with_args(
        "bytes",
        "const dt = new DataTransfer(); \
         dt.items.add(new File([bytes], 'decoder.f32.safetensors')); \
         const input = document.getElementById('decoder-file'); input.files = dt.files; \
         input.dispatchEvent(new Event('change', { bubbles: true }));",
    );
    choose.call1(&wasm_bindgen::JsValue::NULL, &js_sys::Uint8Array::from(DECODER_F32)).unwrap();
    wait_js("the fine-tuned decoder", "document.getElementById('decoder-name').textContent === 'decoder.f32.safetensors'", 30.0).await;
    let area_after = wait_js("the re-decoded mask", "document.querySelector('.object[data-area]').dataset.area", 30.0).await;
    let (a, b) = (area_before.as_string().unwrap(), area_after.as_string().unwrap());
    let (a, b): (f64, f64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!((a - b).abs() / a < 0.01, "f16 and f32 decoders disagree: {a} vs {b} px");
    js_sys::Function::new_no_args("document.getElementById('decoder-base').click();").call0(&wasm_bindgen::JsValue::NULL).unwrap();
    wait_js("the base decoder", "document.getElementById('decoder-name').textContent === 'base'", 10.0).await;
}

// --- benchmark (run on request) ----------------------------------------------------------

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Latency in the browser after a warm-up run: the image encoder on the wasm CPU backend (median
/// of 3; SwiftShader's WebGPU needs minutes for it) and prompt encoder + mask decoder on the CPU
/// and on WebGPU (median of 10). Needs WASM_BINDGEN_TEST_TIMEOUT=900 like the other tests.
/// `cargo test --target wasm32-unknown-unknown --test browser -- --include-ignored bench`
#[wasm_bindgen_test]
#[ignore = "benchmark: run with --include-ignored bench"]
async fn bench_encoder_and_decoder() {
    let manifest: WeightsManifest = serde_json::from_str(MANIFEST).unwrap();
    let g = Golden::from_bytes(GOLDEN, "benign_93").unwrap();
    let b: [f32; 4] = g.f32("box256").try_into().unwrap();
    for kind in [BackendKind::Cpu, BackendKind::Wgpu] {
        let device = init_device_async(kind).await.expect("backend");
        let dec_w = manifest.load_component(Component::Decoder, StoreDType::F32, DECODER_F32).unwrap();
        let decoder = SamDecoder::load(&manifest.config, &dec_w, &device).unwrap();
        if kind == BackendKind::Cpu {
            let enc_w = manifest.load_component(Component::ImageEncoder, StoreDType::F32, ENCODER_F32).unwrap();
            let encoder = sonosam_model::sam::ImageEncoder::load(&enc_w, &manifest.config.encoder, &device).unwrap();
            let mut times = Vec::new();
            for i in 0..=3 {
                sleep_ms(50).await; // let the test runner poll the page between runs
                let t = js_sys_now();
                read_f32_async(encoder.forward(g.tensor::<4>("input", &device))).await.unwrap();
                if i > 0 {
                    times.push(js_sys_now() - t);
                }
            }
            log(&format!("bench {kind}: image encoder median {:.0} ms of 3", median(times)));
        }
        let embedding = g.tensor::<4>("embedding", &device);
        for multimask in [false, true] {
            let mut times = Vec::new();
            for i in 0..=10 {
                let t = js_sys_now();
                let out = decoder.decode(embedding.clone(), &[Prompt::from_box(b)], None, multimask).unwrap();
                read_f32_async(out.low_res_logits).await.unwrap();
                if i > 0 {
                    times.push(js_sys_now() - t);
                }
            }
            log(&format!(
                "bench {kind}: decoder ({} mask{}) median {:.1} ms of 10",
                if multimask { 3 } else { 1 },
                if multimask { "s" } else { "" },
                median(times)
            ));
        }
    }
}

/// A worker script that cannot load is a clear error (the app then runs the model in the
/// page), not a hang.
#[wasm_bindgen_test]
async fn a_missing_worker_script_is_an_error() {
    let r = sonosam_web::worker::Client::start("/no-such-worker.js").await;
    let e = r.err().expect("a worker without a script cannot start");
    web_sys::console::log_1(&format!("worker: {e}").into());
    assert!(e.contains("worker"), "{e}");
}
