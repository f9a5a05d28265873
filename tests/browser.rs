//! Browser tests (wasm-bindgen-test in headless Chromium) of the single-threaded build: the
//! model's parity with the PyTorch reference on WebGPU and on the CPU backend compiled to wasm
//! (`parity_web`, shared with `browser_threads.rs`), and the app's components.
//!
//! Run with `cargo test --target wasm32-unknown-unknown --test browser` (see scripts/test.sh).
#![cfg(target_arch = "wasm32")]

use sonosam_model::backend::BackendKind;
use sonosam_model::golden::Golden;
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::StoreDType;
use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

mod parity_web;

use parity_web::{DECODER_F32, GOLDEN, MANIFEST, decoder_parity, encoder_parity, log, now as js_sys_now};

#[wasm_bindgen_test]
async fn decoder_matches_reference_on_webgpu() {
    decoder_parity(BackendKind::Wgpu).await;
}

#[wasm_bindgen_test]
async fn decoder_matches_reference_on_cpu() {
    decoder_parity(BackendKind::Cpu).await;
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

static DECODER_I8: &[u8] = include_bytes!("../weights/litemedsam.decoder.i8.safetensors");
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
    use sonosam_web::engine::embedding_cache_key;
    use sonosam_web::protocol::WeightSource;

    let manifest: WeightsManifest = serde_json::from_str(MANIFEST).unwrap();
    let g = Golden::from_bytes(GOLDEN, "benign_93").unwrap();
    // What an earlier visit leaves in the browser cache: this image's embedding.
    let key = embedding_cache_key(&manifest, &sha256_hex(SAMPLE_PNG));
    let emb: Vec<u8> = g.f32("embedding").iter().flat_map(|v| v.to_le_bytes()).collect();
    sonosam_web::storage::cache_put(&key, &emb).await.unwrap();

    let doc = web_sys::window().unwrap().document().unwrap();
    let root = doc.create_element("div").unwrap();
    doc.body().unwrap().append_child(&root).unwrap();
    let decoder_file = manifest.file(Component::Decoder, StoreDType::I8).unwrap().file.clone();
    let files = HashMap::from([(decoder_file, DECODER_I8.to_vec())]);
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

/// A worker script that cannot load is a clear error (the app then runs the model in the
/// page), not a hang.
#[wasm_bindgen_test]
async fn a_missing_worker_script_is_an_error() {
    let r = sonosam_web::client::Client::start("/no-such-worker.js").await;
    let e = r.err().expect("a worker without a script cannot start");
    web_sys::console::log_1(&format!("worker: {e}").into());
    assert!(e.contains("worker"), "{e}");
}

/// The DICOM reader compiled to wasm, in the browser, on the same files and with the same
/// checks as its native tests (`crates/sonosam-dicom/tests/checks`): every frame against
/// pydicom's decoding, the regions as the tags say (and not used where they do not fit), bad
/// files refused. The data is embedded from `target/test-data/dicom`
/// (scripts/dicom-test-data.sh, which scripts/test.sh runs first).
#[path = "../crates/sonosam-dicom/tests/checks/mod.rs"]
mod dicom_checks;

mod dicom_web {
    use super::dicom_checks as checks;
    use wasm_bindgen_test::*;

    macro_rules! files {
        ($($name:literal),* $(,)?) => {
            fn read(name: &str) -> Vec<u8> {
                match name {
                    $($name => include_bytes!(concat!("../target/test-data/dicom/", $name)).to_vec(),)*
                    other => panic!("{other} is not embedded in the browser test"),
                }
            }
        };
    }

    files!(
        "reference.json", "examples_ybr_color.dcm", "examples_ybr_color.dcm.rgb", "examples_palette.dcm",
        "examples_palette.dcm.rgb", "examples_rgb_color.dcm", "examples_rgb_color.dcm.rgb", "us_calibrated.dcm",
        "us_calibrated.dcm.rgb", "us_deflated.dcm", "us_deflated.dcm.rgb", "JPEG2000.dcm", "MR_truncated.dcm",
        "truncated_cine.dcm", "more_pixels_declared.dcm", "absurd_frames.dcm", "absurd_size.dcm", "deflate_bomb.dcm",
        "jpeg_420_restarts.dcm", "jpeg_420_restarts.dcm.rgb", "jpeg_mono.dcm", "jpeg_mono.dcm.rgb", "ybr_native.dcm",
        "ybr_native.dcm.rgb", "jpeg_damaged.dcm",
    );

    #[wasm_bindgen_test]
    fn dicom_frames_match_pydicom_in_the_browser() {
        for name in [
            "examples_ybr_color.dcm",
            "examples_palette.dcm",
            "examples_rgb_color.dcm",
            "us_calibrated.dcm",
            "us_deflated.dcm",
            "jpeg_420_restarts.dcm",
            "jpeg_mono.dcm",
            "ybr_native.dcm",
        ] {
            checks::frames_match(&read, name);
        }
    }

    #[wasm_bindgen_test]
    fn dicom_regions_and_bad_files_in_the_browser() {
        checks::regions_match(&read);
        checks::bad_files_refused(&read);
    }
}
