//! The model's parity with the PyTorch reference in the browser, shared by the tests of the
//! single-threaded build (`browser.rs`) and of the threaded one (`browser_threads.rs`).
#![allow(dead_code)]

use sonosam_model::backend::{BackendKind, init_device_async};
use sonosam_model::golden::{Golden, diff};
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::segmentation::read_f32_async;
use sonosam_model::{Point, PointLabel, Prompt, SamDecoder, StoreDType};

pub static MANIFEST: &str = include_str!("../../weights/litemedsam.json");
pub static DECODER_F32: &[u8] = include_bytes!("../../weights/litemedsam.decoder.f32.safetensors");
pub static GOLDEN: &[u8] = include_bytes!("../../../shared/golden/benign_93.safetensors");

pub fn log(s: &str) {
    web_sys::console::log_1(&s.into());
}

pub async fn decoder_parity(kind: BackendKind) {
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
    // Prompts without a mask also go through the prepared image, as the app decodes them.
    let prepared = decoder.prepare(embedding.clone()).unwrap();
    let runs = cases.iter().map(|c| (c, false)).chain(cases.iter().filter(|c| !c.3).map(|c| (c, true)));
    for ((key, prompt, multimask, with_mask), via_prepared) in runs {
        let (key, multimask) = (*key, *multimask);
        let out = if via_prepared {
            decoder.decode_prepared(&prepared, std::slice::from_ref(prompt), multimask).unwrap()
        } else {
            let mask = with_mask.then(|| g.tensor::<4>("box.low_res_logits", &device));
            decoder.decode(embedding.clone(), std::slice::from_ref(prompt), mask, multimask).unwrap()
        };
        let kind = if via_prepared { format!("{kind} prepared") } else { kind.to_string() };
        let logits = read_f32_async(out.low_res_logits).await.unwrap();
        let iou = read_f32_async(out.iou).await.unwrap();
        let (lmax, lmean) = diff(&logits, &g.f32(&format!("{key}.low_res_logits")));
        let (imax, _) = diff(&iou, &g.f32(&format!("{key}.iou")));
        log(&format!("{kind} {key}: logits max |Δ| {lmax:.3e} mean {lmean:.3e}, IoU max |Δ| {imax:.3e}"));
        assert!(lmax <= 2e-2, "{kind} {key}: low-res logits max |Δ| {lmax}");
        assert!(imax <= 5e-3, "{kind} {key}: IoU max |Δ| {imax}");
    }
}

pub static ENCODER_F32: &[u8] = include_bytes!("../../weights/litemedsam.image_encoder.f32.safetensors");

/// The image encoder (75 GFLOP) in the browser: parity of the embedding with the reference
/// (reference-compat configuration, see the README), on WebGPU and on the wasm CPU backend.
pub async fn encoder_parity(kind: BackendKind) {
    let device = init_device_async(kind).await.expect("backend");
    let manifest: WeightsManifest = serde_json::from_str(MANIFEST).unwrap();
    let weights = manifest
        .load_component(Component::ImageEncoder, StoreDType::F32, ENCODER_F32)
        .unwrap();
    let config = manifest.config.clone().reference_compat();
    let encoder = sonosam_model::sam::ImageEncoder::load(&weights, &config.encoder, &device).unwrap();
    let g = Golden::from_bytes(GOLDEN, "benign_93").unwrap();
    let start = now();
    let embedding = encoder.forward(g.tensor::<4>("input", &device));
    let got = read_f32_async(embedding).await.unwrap();
    let (max, mean) = diff(&got, &g.f32("embedding"));
    log(&format!(
        "{kind} encoder: embedding max |Δ| {max:.3e} mean {mean:.3e} in {:.1} s",
        (now() - start) / 1e3
    ));
    assert!(max <= 5e-3 && mean <= 1e-4, "{kind} embedding: max {max}, mean {mean}");
}

/// The page's or the worker's clock (ms).
pub fn now() -> f64 {
    use wasm_bindgen::JsCast;
    js_sys::Reflect::get(&js_sys::global(), &"performance".into())
        .ok()
        .and_then(|p| p.dyn_into::<web_sys::Performance>().ok())
        .map_or(0.0, |p| p.now())
}

