//! Parity with the original PyTorch LiteMedSAM (`../shared/golden`), on burn-flex (CPU) and on
//! burn-wgpu where an adapter exists. Tolerances are those of the model-core issue.

mod common;

use common::*;
use sonosam_model::burn::tensor::Device;
use sonosam_model::{
    Mask, Point, PointLabel, Predictor, Prompt, Segmentation, decode_image, preprocess, SamConfig,
};

fn read_busi(rel: &str) -> Vec<u8> {
    let path = shared().join("data/busi").join(rel);
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

fn manifest_case(case: &str) -> serde_json::Value {
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(golden_dir().join("manifest.json")).unwrap()).unwrap();
    m["cases"][case].clone()
}

fn points(g: &Golden) -> Vec<Point> {
    let p = g.f32("points");
    g.i64("point_labels")
        .iter()
        .enumerate()
        .map(|(i, &l)| Point {
            x: p[2 * i],
            y: p[2 * i + 1],
            label: if l == 1 { PointLabel::Positive } else { PointLabel::Negative },
        })
        .collect()
}

fn box256(g: &Golden) -> [f32; 4] {
    g.f32("box256").try_into().unwrap()
}

/// The prompt of each golden decoding kind, in the 256 frame.
fn golden_prompt(g: &Golden, kind: &str) -> Prompt {
    let pts = points(g);
    match kind {
        "box" | "box.multi" | "box_mask" => Prompt::from_box(box256(g)),
        "points.multi" => Prompt {
            points: pts,
            bbox: None,
        },
        "box_point" => Prompt {
            points: vec![pts[0]],
            bbox: Some(box256(g)),
        },
        _ => unreachable!(),
    }
}

#[test]
fn image_decoding_and_preprocessing_match_reference() {
    let config = SamConfig::lite_medsam();
    for case in CASES {
        let g = golden(case);
        let info = manifest_case(case);
        let img = decode_image(&read_busi(info["image"].as_str().unwrap())).unwrap();
        assert_eq!(img.as_raw(), &g.u8("image_rgb_u8"), "{case}: decoded RGB pixels");
        let input = preprocess(&img, &config);
        let geo = input.geometry;
        assert_eq!(
            [geo.orig_h as i64, geo.orig_w as i64, geo.new_h as i64, geo.new_w as i64],
            [g.i64("orig_hw")[0], g.i64("orig_hw")[1], g.i64("new_hw")[0], g.i64("new_hw")[1]],
            "{case}: geometry"
        );
        assert_close(&format!("{case} input"), &input.data, &g.f32("input"), 0.01, 1e-3);
        let b: [f32; 4] = g.f32("box").try_into().unwrap();
        assert_close(
            &format!("{case} box256"),
            &geo.box_to_frame(b).unwrap(),
            &box256(&g),
            1e-4,
            1e-4,
        );
    }
}

fn prompt_encoder_parity(device: &Device, name: &str) {
    let dec = load_decoder(device);
    let pe = golden("prompt_encoder");
    // The fixture's `image_pe` holds the encoding in [1, 64, 64, 256] (HWC) element order
    // although its header says [1, 256, 64, 64]; the decoder goldens, computed with the real
    // CHW tensor, confirm our layout. Compare element order HWC.
    assert_close(
        &format!("{name} dense PE"),
        &read(dec.prompt_encoder.dense_pe().permute([0, 2, 3, 1])),
        &pe.f32("image_pe"),
        1e-4,
        1e-5,
    );
    assert_close(
        &format!("{name} no-mask embedding"),
        &read(dec.prompt_encoder.embed_dense(None, 1).narrow(2, 0, 1).narrow(3, 0, 1)),
        &pe.f32("no_mask_embed"),
        0.0,
        0.0,
    );
    for case in CASES {
        let g = golden(case);
        for (kind, key) in [("box", "box.sparse"), ("points.multi", "points.sparse"), ("box_point", "box_point.sparse")] {
            let sparse = dec
                .prompt_encoder
                .embed_sparse(&[golden_prompt(&g, kind)], device)
                .unwrap();
            assert_eq!(sparse.dims().to_vec(), g.shape(key), "{case} {key} shape");
            assert_close(&format!("{name} {case} {key}"), &read(sparse), &g.f32(key), 1e-4, 1e-5);
        }
        let mask_in = g.tensor::<4>("box.low_res_logits", device);
        let dense = dec.prompt_encoder.embed_dense(Some(mask_in), 1);
        assert_close(
            &format!("{name} {case} box_mask.dense"),
            &read(dense),
            &g.f32("box_mask.dense"),
            1e-3,
            1e-5,
        );
    }
}

fn decoder_parity(device: &Device, name: &str, logit_tol: f32, iou_tol: f32) {
    let dec = load_decoder(device);
    for case in CASES {
        let g = golden(case);
        let embedding = g.tensor::<4>("embedding", device);
        // Prompts without a mask also go through the prepared image (decode_prepared): the
        // same tolerances against the reference.
        let prepared = dec.prepare(embedding.clone()).unwrap();
        let kinds = ["box", "box.multi", "points.multi", "box_point", "box_mask"];
        let runs = kinds.iter().map(|k| (*k, false)).chain(kinds.iter().filter(|k| **k != "box_mask").map(|k| (*k, true)));
        for (kind, via_prepared) in runs {
            let multimask = kind.ends_with(".multi");
            let prompt = golden_prompt(&g, kind);
            let out = if via_prepared {
                dec.decode_prepared(&prepared, &[prompt], multimask).unwrap()
            } else {
                let mask_in = (kind == "box_mask").then(|| g.tensor::<4>("box.low_res_logits", device));
                dec.decode(embedding.clone(), &[prompt], mask_in, multimask).unwrap()
            };
            let name = &if via_prepared { format!("{name} prepared") } else { name.to_string() };
            let logits_key = format!("{kind}.low_res_logits");
            assert_eq!(out.low_res_logits.dims().to_vec(), g.shape(&logits_key));
            assert_close(
                &format!("{name} {case} {logits_key}"),
                &read(out.low_res_logits),
                &g.f32(&logits_key),
                logit_tol,
                logit_tol,
            );
            assert_close(
                &format!("{name} {case} {kind}.iou"),
                &read(out.iou),
                &g.f32(&format!("{kind}.iou")),
                iou_tol,
                iou_tol,
            );
        }
    }
}

/// Encoder intermediates and embedding vs the reference; returns the embeddings.
fn encoder_parity(
    sam: &sonosam_model::Sam,
    name: &str,
    cases: &[&str],
) -> Vec<sonosam_model::burn::tensor::Tensor<4>> {
    let device = &sam.device;
    let mut embeddings = Vec::new();
    for &case in cases {
        let g = golden(case);
        let trace = sam.encoder.forward_trace(g.tensor::<4>("input", device));
        // Intermediates: a looser bound, they are checked to locate a divergence.
        assert_close(
            &format!("{name} {case} sub.patch_embed"),
            &every_97th(&read(trace.patch_embed)),
            &g.f32("sub.patch_embed"),
            1e-3,
            1e-5,
        );
        for (i, layer) in trace.layers.into_iter().enumerate() {
            assert_close(
                &format!("{name} {case} sub.layers.{i}"),
                &every_97th(&read(layer)),
                &g.f32(&format!("sub.layers.{i}")),
                5e-3,
                1e-4,
            );
        }
        assert_close(
            &format!("{name} {case} embedding"),
            &read(trace.embedding.clone()),
            &g.f32("embedding"),
            5e-4,
            2e-5,
        );
        embeddings.push(trace.embedding);
    }
    embeddings
}

/// Whole pipeline from the PNG file, through the predictor: decode, preprocess, encode, box
/// prompt in image pixels, decode, post-process; the mask must equal the reference mask on
/// ≥ 99.9 % of pixels.
fn end_to_end(device: &Device, name: &str, cases: &[&str]) {
    let sam = load_sam_reference(device);
    let mut predictor = Predictor::with_decoder(&sam.decoder);
    for &case in cases {
        let g = golden(case);
        let info = manifest_case(case);
        let img = decode_image(&read_busi(info["image"].as_str().unwrap())).unwrap();
        let gt = Mask::from_image_bytes(&read_busi(info["box_from"].as_str().unwrap())).unwrap();
        let [x0, y0, x1, y1] = gt.bbox().unwrap();
        predictor.set_image(&sam.encoder, &img, &sam.config).unwrap();
        let seg = predictor
            .predict(&Prompt::from_box([x0 as f32, y0 as f32, x1 as f32, y1 as f32]), None, false)
            .unwrap();
        let reference = golden_mask(&g, "box.mask");
        let agreement = seg.masks[0].agreement(&reference).unwrap();
        let dice = seg.masks[0].dice(&gt).unwrap();
        let want_dice = info["dice_box_mask_vs_first_mask"].as_f64().unwrap();
        eprintln!("{name} {case}: mask agreement {:.5}, Dice vs GT {dice:.4} (reference {want_dice:.4}), IoU pred {:.4}", agreement, seg.iou[0]);
        assert!(agreement >= 0.999, "{case}: only {agreement} of pixels agree");
        assert!((dice - want_dice).abs() < 0.005, "{case}: Dice {dice} vs reference {want_dice}");
        assert!((f64::from(seg.iou[0]) - info["iou_pred_box"].as_f64().unwrap()).abs() < 1e-3);
    }
}

/// The default model (with TinyViT's learned attention biases, as trained) on the
/// model-core acceptance case: `benign (93).png` with the tight box of its first mask must
/// reach Dice ≥ 0.89 against that mask (the zero-bias reference gives 0.892).
#[test]
fn cpu_default_model_segments_benign_93() {
    let device = device("cpu").unwrap();
    let sam = load_sam(&device);
    let img = decode_image(&read_busi("benign/benign (93).png")).unwrap();
    let gt = Mask::from_image_bytes(&read_busi("benign/benign (93)_mask.png")).unwrap();
    let [x0, y0, x1, y1] = gt.bbox().unwrap();
    let mut predictor = Predictor::with_decoder(&sam.decoder);
    predictor.set_image(&sam.encoder, &img, &sam.config).unwrap();
    let seg = predictor
        .predict(&Prompt::from_box([x0 as f32, y0 as f32, x1 as f32, y1 as f32]), None, false)
        .unwrap();
    let dice = seg.masks[0].dice(&gt).unwrap();
    eprintln!("default model, benign 93: Dice {dice:.4}, predicted IoU {:.4}", seg.iou[0]);
    assert!(dice >= 0.89, "Dice {dice}");
}

#[test]
fn cpu_prompt_encoder() {
    prompt_encoder_parity(&device("cpu").unwrap(), "cpu");
}

#[test]
fn cpu_decoder() {
    decoder_parity(&device("cpu").unwrap(), "cpu", 5e-3, 1e-3);
}

#[test]
fn cpu_encoder() {
    encoder_parity(&load_sam_reference(&device("cpu").unwrap()), "cpu", &CASES);
}

#[test]
fn cpu_end_to_end() {
    end_to_end(&device("cpu").unwrap(), "cpu", &CASES);
}

#[test]
fn wgpu_prompt_encoder() {
    if let Some(d) = device("wgpu") {
        prompt_encoder_parity(&d, "wgpu");
    }
}

#[test]
fn wgpu_decoder() {
    if let Some(d) = device("wgpu") {
        decoder_parity(&d, "wgpu", 5e-3, 1e-3);
    }
}

/// The encoder is ~75 GFLOP and the software Vulkan driver of CI machines (lavapipe) runs it in
/// about two minutes, so on wgpu one golden image goes through the whole model: encoder
/// parity on the reference input, then the box prompt, post-processing and the final mask.
/// Pre- and post-processing are backend-independent Rust, covered on every case above.
#[test]
fn wgpu_encoder_and_mask() {
    let Some(device) = device("wgpu") else { return };
    let case = CASES[0];
    let sam = load_sam_reference(&device);
    let embedding = encoder_parity(&sam, "wgpu", &[case]).remove(0);
    let g = golden(case);
    let out = sam
        .decoder
        .decode(embedding, &[golden_prompt(&g, "box")], None, false)
        .unwrap();
    let orig = g.i64("orig_hw");
    let geometry = sonosam_model::Geometry::new(orig[0] as usize, orig[1] as usize, 256);
    let seg = Segmentation::from_outputs(&read(out.low_res_logits), &read(out.iou), 256, &geometry);
    let reference = golden_mask(&g, "box.mask");
    let agreement = seg.masks[0].agreement(&reference).unwrap();
    eprintln!("wgpu {case}: mask agreement {agreement:.5}");
    assert!(agreement >= 0.999, "{case}: only {agreement} of pixels agree");
}
