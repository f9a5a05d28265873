//! The browser benchmark behind `scripts/bench-web.sh`: the engine's decoder and encoder on
//! the inputs of the onnxruntime-web yardstick (`../shared/bench/onnxruntime-web`), timed in
//! the page that `www/bench.html` opens.
//!
//! Inputs, identical to the yardstick's: a mulberry32 stream seeded with 12345; the decoder
//! gets the embedding `[1, 256, 64, 64]` of values `2u − 1` and the box `[40, 40, 180, 160]` in
//! the 256 frame, the encoder the image `[1, 3, 256, 256]` of values `u`. The decoder is timed
//! per prompt as the app runs it (prompt → frame → decoder against the prepared image →
//! logits read back); the once-per-image preparation is timed separately.

use std::rc::Rc;

use serde::Serialize;
use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::{Geometry, ModelInput};
use sonosam_model::Prompt;
use wasm_bindgen::prelude::*;

use crate::engine::Engine;
use crate::protocol::{Progress, WeightSource};
use crate::perf::now_ms as now;

/// The yardstick's generator (`mulberry32` as in its bench page).
struct Mulberry32(u32);

impl Mulberry32 {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x6D2B_79F5);
        let a = self.0;
        let mut t = (a ^ (a >> 15)).wrapping_mul(1 | a);
        t = t.wrapping_add((t ^ (t >> 7)).wrapping_mul(61 | t)) ^ t;
        f64::from(t ^ (t >> 14)) / 4_294_967_296.0
    }
}

/// What one benchmark run reports (the driver computes the statistics).
#[derive(Serialize)]
struct Report {
    part: String,
    threads_effective: usize,
    warmup_ms: Vec<f64>,
    times_ms: Vec<f64>,
    /// Decoder: the once-per-image preparation, timed on its own.
    prepare_ms: Option<f64>,
    /// Decoder: predicted IoU and Σ|logits|; encoder: Σ|embedding| (checked against the
    /// yardstick's reference outputs by the driver).
    iou: Option<f32>,
    abs_sum: f64,
}

/// Time `part` on the CPU backend: `warmup` untimed runs, then `runs`. Parts: `decoder` (one
/// mask, as the yardstick), `decoder3` (the three multimask candidates), `encoder`.
#[wasm_bindgen]
pub async fn sonosam_bench(part: String, warmup: u32, runs: u32) -> Result<JsValue, JsValue> {
    let err = |e: String| JsValue::from_str(&e);
    let (kind, device, _) = Engine::init_backend(BackendKind::Cpu).await;
    let progress: Progress = Rc::new(|_, _| {});
    let engine = Engine::load(WeightSource::Url("weights".into()), kind, device, progress.clone())
        .await
        .map_err(err)?;
    let mut rng = Mulberry32(12345);
    let mut report = Report {
        part: part.clone(),
        threads_effective: crate::engine::cpu_threads(),
        warmup_ms: Vec::new(),
        times_ms: Vec::new(),
        prepare_ms: None,
        iou: None,
        abs_sum: 0.0,
    };
    let timed = |i: u32, ms: f64, report: &mut Report| {
        if i < warmup { report.warmup_ms.push(ms) } else { report.times_ms.push(ms) }
    };
    // A square image of the model's frame (no padding), as the yardstick's seeded inputs.
    let config = &engine.manifest.config;
    let frame = config.img_size();
    let geometry = Geometry::new(frame, frame, frame);
    let embedding_len = config.decoder.embed_dim * config.decoder.embedding_size.pow(2);
    match part.as_str() {
        "decoder" | "decoder3" => {
            let multimask = part == "decoder3";
            let embedding: Vec<f32> = (0..embedding_len).map(|_| (rng.next() * 2.0 - 1.0) as f32).collect();
            engine.set_current("bench", &embedding, geometry).map_err(err)?;
            let prompt = Prompt::from_box([40.0, 40.0, 180.0, 160.0]);
            let t = now();
            engine.prepare_current().map_err(err)?;
            report.prepare_ms = Some(now() - t);
            for i in 0..warmup + runs {
                let t = now();
                let (logits, iou) = engine.decode(&geometry, &prompt, None, multimask).await.map_err(err)?;
                timed(i, now() - t, &mut report);
                report.iou = iou.first().copied();
                report.abs_sum = logits.iter().map(|v| f64::from(v.abs())).sum();
            }
        }
        "encoder" => {
            let data: Vec<f32> = (0..3 * frame * frame).map(|_| rng.next() as f32).collect();
            let input = ModelInput { data, geometry };
            for i in 0..warmup + runs {
                let t = now();
                let embedding = engine.encode_raw(&input, &progress).await.map_err(err)?;
                timed(i, now() - t, &mut report);
                report.abs_sum = embedding.iter().map(|v| f64::from(v.abs())).sum();
            }
        }
        other => return Err(err(format!("unknown part {other} (decoder, decoder3, encoder)"))),
    }
    serde_wasm_bindgen::to_value(&report).map_err(|e| err(e.to_string()))
}
