//! Fine-tuning with prompts as people give them: a batch mixing a box, a single click (three
//! masks, the best one trained), clicks with a mask prompt (a correction round) and a box with
//! a click; the IoU head's loss; and the interactive setup that makes the correction rounds.
//! Checked against the inference decoder and hand computation, on real BUSI embeddings
//! (`../shared/golden/train_step`: benign (93), malignant (12)).

mod common;

use common::*;
use sonosam_model::burn::tensor::{Device, Tensor, TensorData};
use sonosam_model::clicker::{first_click, next_click};
use sonosam_model::interactive::Session;
use sonosam_model::manifest::Component;
use sonosam_model::train::{Adam, AdamConfig, Batch, DecoderTrainer, LossKind, StepOutput};
use sonosam_model::{Geometry, Mask, Point, PointLabel, Predictor, Prompt, SamDecoder, StoreDType};

const LR: usize = 256;
const EMB: usize = 256 * 64 * 64;

struct Case {
    decoder: SamDecoder,
    embeddings: Vec<f32>,
    targets: Vec<f32>,
    boxes: Vec<f32>,
}

fn case() -> Case {
    let g = golden("train_step");
    Case { decoder: load_decoder(&Device::flex()), embeddings: g.f32("embeddings"), targets: g.f32("gt_low_res"), boxes: g.f32("boxes256") }
}

fn trainer() -> DecoderTrainer {
    let decoder = component(Component::Decoder, StoreDType::F32);
    DecoderTrainer::new(manifest().config, &decoder, &Device::flex(), Adam::new(AdamConfig::default())).unwrap()
}

impl Case {
    fn embedding(&self, i: usize) -> Tensor<4> {
        Tensor::from_data(TensorData::new(self.embeddings[i * EMB..(i + 1) * EMB].to_vec(), [1, 256, 64, 64]), &Device::flex())
    }

    fn target(&self, i: usize) -> &[f32] {
        &self.targets[i * LR * LR..(i + 1) * LR * LR]
    }

    fn frame_box(&self, i: usize) -> [f32; 4] {
        self.boxes[4 * i..4 * i + 4].try_into().unwrap()
    }

    /// The inference decoder's logits `[M, lr, lr]` and IoU `[M]` for one prompt.
    fn decode(&self, image: usize, prompt: &Prompt, mask: Option<&[f32]>) -> (Vec<f32>, Vec<f32>) {
        let mask = mask.map(|m| Tensor::from_data(TensorData::new(m.to_vec(), [1, 1, LR, LR]), &Device::flex()));
        let out = self.decoder.decode(self.embedding(image), std::slice::from_ref(prompt), mask, prompt.is_ambiguous()).unwrap();
        (read(out.low_res_logits), read(out.iou))
    }
}

/// The soft Dice loss of one mask's logits, by hand.
fn dice_loss(logits: &[f32], target: &[f32]) -> f64 {
    let (mut inter, mut sum) = (0f64, 0f64);
    for (&l, &t) in logits.iter().zip(target) {
        let p = 1.0 / (1.0 + (-f64::from(l)).exp());
        inter += p * f64::from(t);
        sum += p + f64::from(t);
    }
    1.0 - (2.0 * inter + 1e-5) / (sum + 1e-5)
}

/// IoU of `logits > 0` with the target, by hand.
fn real_iou(logits: &[f32], target: &[f32]) -> f64 {
    let (mut inter, mut union) = (0usize, 0usize);
    for (&l, &t) in logits.iter().zip(target) {
        let (p, t) = (l > 0.0, t > 0.5);
        inter += usize::from(p && t);
        union += usize::from(p || t);
    }
    inter as f64 / union.max(1) as f64
}

fn point(x: f32, y: f32, label: PointLabel) -> Point {
    Point { x, y, label }
}

/// Four samples, one of each kind: (image, prompt, mask prompt).
fn mixed(c: &Case) -> Vec<(usize, Prompt, Option<Vec<f32>>)> {
    // Click at the most interior point of malignant (12)'s target (the low-res frame is the
    // model frame for LiteMedSAM).
    let truth1 = Mask::from_fn(LR, LR, |i| c.target(1)[i] > 0.5);
    let click = first_click(&truth1).unwrap();
    // A correction round on benign (93): its box's answer as the mask prompt, a positive click
    // inside the lesion and a negative one outside.
    let previous = c.decode(0, &Prompt::from_box(c.frame_box(0)), None).0;
    let b = c.frame_box(0);
    let inside = point((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, PointLabel::Positive);
    let outside = point((b[0] - 10.0).max(1.0), (b[1] - 10.0).max(1.0), PointLabel::Negative);
    vec![
        (0, Prompt::from_box(c.frame_box(0)), None),
        (1, Prompt { points: vec![click], bbox: None }, None),
        (0, Prompt { points: vec![inside, outside], bbox: None }, Some(previous)),
        (1, Prompt { points: vec![click], bbox: Some(c.frame_box(1)) }, None),
    ]
}

fn batch(c: &Case, samples: &[(usize, Prompt, Option<Vec<f32>>)]) -> Batch {
    Batch {
        embeddings: samples.iter().flat_map(|s| c.embeddings[s.0 * EMB..(s.0 + 1) * EMB].iter().copied()).collect(),
        prompts: samples.iter().map(|s| s.1.clone()).collect(),
        mask_inputs: samples.iter().map(|s| s.2.clone()).collect(),
        targets: samples.iter().flat_map(|s| c.target(s.0).iter().copied()).collect(),
    }
}

fn assert_same_step(what: &str, a: &StepOutput, b: &StepOutput) {
    assert!((a.loss - b.loss).abs() <= 1e-6, "{what}: loss {} vs {}", a.loss, b.loss);
    assert_close(&format!("{what}: logits"), &a.logits, &b.logits, 1e-4, 1e-6);
    assert_eq!(a.grads.keys().collect::<Vec<_>>(), b.grads.keys().collect::<Vec<_>>(), "{what}");
    for (key, g) in &a.grads {
        let scale = g.iter().fold(1e-9f32, |m, v| m.max(v.abs()));
        let (max, _) = diff(&b.grads[key], g);
        assert!(max <= 1e-4 * scale, "{what}: {key} differs by {max} (max |g| {scale})");
    }
}

#[test]
fn a_mixed_batch_trains_each_sample_on_its_kept_mask() {
    let c = case();
    let samples = mixed(&c);
    let batch = batch(&c, &samples);
    let trainer = trainer();
    let out = trainer.loss_and_grads(&batch, LossKind::Dice).unwrap();
    assert_eq!(out.logits.len(), samples.len() * LR * LR, "one kept mask per sample");

    // By hand: each sample's Dice loss from the inference decoder's logits — for the single
    // click the smallest of its three masks' — averaged over the batch.
    let mut want = 0.0;
    let mut kept_click_mask = 0;
    for (k, (image, prompt, mask)) in samples.iter().enumerate() {
        let (logits, iou) = c.decode(*image, prompt, mask.as_deref());
        assert_eq!(iou.len(), if k == 1 { 3 } else { 1 }, "sample {k}: masks");
        let losses: Vec<f64> = logits.chunks_exact(LR * LR).map(|l| dice_loss(l, c.target(*image))).collect();
        let best = (0..losses.len()).min_by(|&a, &b| losses[a].total_cmp(&losses[b])).unwrap();
        eprintln!("sample {k}: Dice loss of its masks {losses:.4?}, kept {best}");
        want += losses[best] / samples.len() as f64;
        assert_close(&format!("sample {k}: kept logits"), &out.logits[k * LR * LR..(k + 1) * LR * LR], &logits[best * LR * LR..(best + 1) * LR * LR], 2e-3, 1e-4);
        if k == 1 {
            kept_click_mask = best;
        }
    }
    eprintln!("batch loss {} (by hand {want})", out.loss);
    assert!((f64::from(out.loss) - want).abs() <= 1e-4, "loss {} vs {want} by hand", out.loss);

    // The single click trains only its kept mask's hypernetwork (1 + index among the three);
    // the IoU head is not trained without its loss.
    for m in 1..4 {
        let moved = out.grads.iter().any(|(k, g)| k.contains(&format!("output_hypernetworks_mlps.{m}.")) && g.iter().any(|v| *v != 0.0));
        assert_eq!(moved, m == 1 + kept_click_mask, "hypernetwork {m}");
    }
    assert!(!out.grads.keys().any(|k| k.contains("iou_prediction_head")));

    // One part per sample on its own thread, or mixed kinds in one: the same step.
    let sharded = trainer.with_shards(4).loss_and_grads(&batch, LossKind::Dice).unwrap();
    assert_same_step("sharded", &sharded, &out);
}

#[test]
fn the_iou_loss_is_the_squared_error_to_the_real_iou_and_training_lowers_it() {
    let c = case();
    let samples = mixed(&c);
    let batch = batch(&c, &samples);
    let plain = trainer().loss_and_grads(&batch, LossKind::Dice).unwrap();
    let mut trainer = trainer().with_iou_loss(1.0);
    let with_iou = trainer.loss_and_grads(&batch, LossKind::Dice).unwrap();
    // By hand: per sample, the mean over its masks of (predicted − real IoU)², then the mean.
    let want = mse_of(&c, &samples);
    eprintln!("IoU loss {} (by hand {want})", with_iou.loss - plain.loss);
    assert!((f64::from(with_iou.loss - plain.loss) - want).abs() <= 1e-4, "IoU term {} vs {want}", with_iou.loss - plain.loss);
    assert!(with_iou.grads.keys().any(|k| k.contains("iou_prediction_head")), "the head is trained");
    // A few Adam steps on this batch bring the predicted IoU closer to the real one.
    for _ in 0..4 {
        trainer.step(&batch, LossKind::Dice, 1e-4).unwrap();
    }
    let after = SamDecoder::load(&manifest().config, &trainer.decoder_weights(), &Device::flex()).unwrap();
    let later = mse_of(&Case { decoder: after, ..c }, &samples);
    eprintln!("IoU squared error {want:.5} → {later:.5} after 4 steps");
    assert!(later < want, "{later} ≥ {want}");
}

/// Mean over samples of the mean over their masks of (predicted − real IoU)².
fn mse_of(c: &Case, samples: &[(usize, Prompt, Option<Vec<f32>>)]) -> f64 {
    let mut sum = 0.0;
    for (image, prompt, mask) in samples {
        let (logits, iou) = c.decode(*image, prompt, mask.as_deref());
        let errors: Vec<f64> = logits.chunks_exact(LR * LR).zip(&iou).map(|(l, &p)| (f64::from(p) - real_iou(l, c.target(*image))).powi(2)).collect();
        sum += errors.iter().sum::<f64>() / errors.len() as f64;
    }
    sum / samples.len() as f64
}

#[test]
fn a_correction_round_clicks_the_largest_error_and_feeds_the_logits_back() {
    let c = case();
    let hw = golden("benign_93").i64("orig_hw");
    let geometry = Geometry::new(hw[0] as usize, hw[1] as usize, 256);
    let bytes = std::fs::read(shared().join("data/busi/benign/benign (93)_mask.png")).unwrap();
    let truth = Mask::from_image_bytes(&bytes).unwrap();
    let mut predictor = Predictor::with_decoder(&c.decoder);
    predictor.set_embedding_data(c.embeddings[..EMB].to_vec(), geometry).unwrap();
    let start = Prompt::from_box(c.frame_box(0));

    let mut session = Session::new(&predictor, &truth, start.clone());
    let first = session.answer().unwrap();
    let (logits, iou) = c.decode(0, &start, None);
    // (The predictor decodes a prepared image: the same up to rounding.)
    assert_close("first answer = the box's logits", &first.logits, &logits, 1e-4, 1e-5);
    assert!((first.predicted_iou - iou[0]).abs() <= 1e-5);
    // The click goes to the centre of the largest error of the answer, at the image's size.
    let click = next_click(&truth, &first.mask).unwrap();
    let want = geometry.point_to_frame(click.x, click.y, click.label).unwrap();
    assert!(session.correct(first.clone()).unwrap());
    assert_eq!(session.prompt().points, vec![want]);
    assert_eq!(session.prompt().bbox, start.bbox, "the box stays");
    assert_eq!(session.mask_input(), Some(&first.logits[..]), "the answer's logits are the mask prompt");
    // The next answer is the decoder's for the box, the click and that mask prompt.
    let second = session.answer().unwrap();
    let (logits, _) = c.decode(0, session.prompt(), Some(&first.logits));
    assert_close("second answer", &second.logits, &logits, 1e-4, 1e-5);

    // An exact answer leaves nothing to click: the session says so and adds nothing.
    let mut exact = Session::new(&predictor, &first.mask, start.clone());
    let answer = exact.answer().unwrap();
    assert!(!exact.correct(answer).unwrap());
    assert_eq!(exact.into_parts(), (start, None));
}

#[test]
fn each_prompt_gets_its_kinds_calibration_bias() {
    let c = case();
    let mut weights = component(Component::Decoder, StoreDType::F32);
    weights.set_metadata("mask_logit_bias", "1.0");
    weights.set_metadata("mask_logit_bias_clicks", "-0.5");
    let calibrated = SamDecoder::load(&manifest().config, &weights, &Device::flex()).unwrap();
    assert_eq!((calibrated.mask_logit_bias, calibrated.click_mask_logit_bias), (1.0, -0.5));
    let b = c.frame_box(0);
    let click = point((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, PointLabel::Positive);
    let boxed = Prompt::from_box(b);
    let box_and_click = Prompt { points: vec![click], bbox: Some(b) };
    let two_clicks = Prompt { points: vec![click, point(b[0], b[1], PointLabel::Negative)], bbox: None };
    for (prompt, bias) in [(&boxed, 1.0f32), (&box_and_click, 1.0), (&two_clicks, -0.5)] {
        let plain = c.decode(0, prompt, None).0;
        let out = calibrated.decode(c.embedding(0), std::slice::from_ref(prompt), None, false).unwrap();
        let shifted: Vec<f32> = plain.iter().map(|v| v + bias).collect();
        assert_close(&format!("{prompt:?}: bias {bias}"), &read(out.low_res_logits), &shifted, 1e-4, 1e-6);
    }
    // A batch of both kinds (a box and one click: two tokens each): each row its own bias.
    let prompts = [boxed.clone(), Prompt { points: vec![click], bbox: None }];
    let rows = read(calibrated.decode(c.embedding(0), &prompts, None, false).unwrap().low_res_logits);
    let plain = read(c.decoder.decode(c.embedding(0), &prompts, None, false).unwrap().low_res_logits);
    let want: Vec<f32> = plain.iter().enumerate().map(|(i, v)| v + if i < LR * LR { 1.0 } else { -0.5 }).collect();
    assert_close("a batch of a box and a click", &rows, &want, 1e-4, 1e-6);
    // A file with only the box bias (older exports) applies it to clicks too.
    weights.remove_metadata("mask_logit_bias_clicks");
    let old = SamDecoder::load(&manifest().config, &weights, &Device::flex()).unwrap();
    assert_eq!(old.click_mask_logit_bias, 1.0);
}

#[test]
fn a_box_multimask_decoder_answers_a_box_with_the_best_of_its_three_masks() {
    let c = case();
    let mut weights = component(Component::Decoder, StoreDType::F32);
    weights.set_metadata("box_multimask", "true");
    let chooser = SamDecoder::load(&manifest().config, &weights, &Device::flex()).unwrap();
    assert!(chooser.box_multimask && !c.decoder.box_multimask);
    let b = c.frame_box(0);
    let boxed = Prompt::from_box(b);
    let click = Prompt { points: vec![point((b[0] + b[2]) / 2.0, (b[1] + b[3]) / 2.0, PointLabel::Positive)], bbox: None };
    // The plain decoder's three masks for the box, and its single mask for the click.
    let three = c.decoder.decode(c.embedding(0), std::slice::from_ref(&boxed), None, true).unwrap();
    let (three_logits, three_iou) = (read(three.low_res_logits), read(three.iou));
    let best = (0..3).max_by(|&a, &b| three_iou[a].total_cmp(&three_iou[b])).unwrap();
    eprintln!("predicted IoU of the box's three masks {three_iou:?}: mask {best}");
    let want = &three_logits[best * LR * LR..(best + 1) * LR * LR];
    let one = chooser.decode(c.embedding(0), std::slice::from_ref(&boxed), None, false).unwrap();
    assert_eq!(one.low_res_logits.dims(), [1, 1, LR, LR]);
    assert_close("the box's answer", &read(one.low_res_logits), want, 1e-5, 1e-6);
    assert_eq!(read(one.iou), vec![three_iou[best]]);
    // Asked for three masks, it gives the three.
    let asked = chooser.decode(c.embedding(0), std::slice::from_ref(&boxed), None, true).unwrap();
    assert_close("three masks when asked", &read(asked.low_res_logits), &three_logits, 1e-5, 1e-6);
    // The predictor's prepared path answers alike.
    let hw = golden("benign_93").i64("orig_hw");
    let mut predictor = Predictor::with_decoder(&chooser);
    predictor.set_embedding_data(c.embeddings[..EMB].to_vec(), Geometry::new(hw[0] as usize, hw[1] as usize, 256)).unwrap();
    let prepared = predictor.decode_frame(std::slice::from_ref(&boxed), None, false).unwrap();
    assert_close("prepared path", &read(prepared.low_res_logits), want, 1e-4, 1e-5);
    // A batch of a box and a click (two tokens each): the click keeps its single mask.
    let rows = chooser.decode(c.embedding(0), &[boxed.clone(), click.clone()], None, false).unwrap();
    let single_click = read(c.decoder.decode(c.embedding(0), std::slice::from_ref(&click), None, false).unwrap().low_res_logits);
    let rows = read(rows.low_res_logits);
    assert_close("batch row 0: the box's best", &rows[..LR * LR], want, 1e-4, 1e-5);
    assert_close("batch row 1: the click's mask", &rows[LR * LR..], &single_click, 1e-4, 1e-5);
    // A file that says something else is refused.
    weights.set_metadata("box_multimask", "yes");
    assert!(SamDecoder::load(&manifest().config, &weights, &Device::flex()).is_err());
}

#[test]
fn boxes_trained_as_ambiguous_train_the_mask_nearest_the_truth_and_say_so() {
    let c = case();
    let samples = vec![(0, Prompt::from_box(c.frame_box(0)), None), (1, Prompt::from_box(c.frame_box(1)), None)];
    let trainer = trainer().with_box_multimask(true).with_iou_loss(1.0);
    let out = trainer.loss_and_grads(&batch(&c, &samples), LossKind::Dice).unwrap();
    let mut kept = Vec::new();
    let mut want = 0.0;
    for (k, (image, prompt, _)) in samples.iter().enumerate() {
        let three = c.decoder.decode(c.embedding(*image), std::slice::from_ref(prompt), None, true).unwrap();
        let (logits, iou) = (read(three.low_res_logits), read(three.iou));
        let losses: Vec<f64> = logits.chunks_exact(LR * LR).map(|l| dice_loss(l, c.target(*image))).collect();
        let best = (0..3).min_by(|&a, &b| losses[a].total_cmp(&losses[b])).unwrap();
        eprintln!("box {k}: Dice loss of its three masks {losses:.4?}, kept {best}");
        assert_close(&format!("box {k}: kept logits"), &out.logits[k * LR * LR..(k + 1) * LR * LR], &logits[best * LR * LR..(best + 1) * LR * LR], 2e-3, 1e-4);
        // The IoU head's loss: over all three masks.
        let mse = logits.chunks_exact(LR * LR).zip(&iou).map(|(l, &p)| (f64::from(p) - real_iou(l, c.target(*image))).powi(2)).sum::<f64>() / 3.0;
        want += (losses[best] + mse) / 2.0;
        kept.push(best);
    }
    assert!((f64::from(out.loss) - want).abs() <= 1e-4, "loss {} vs {want} by hand", out.loss);
    // The single-mask token's hypernetwork is not trained for boxes; the kept ones are.
    for m in 0..4 {
        let moved = out.grads.iter().any(|(k, g)| k.contains(&format!("output_hypernetworks_mlps.{m}.")) && g.iter().any(|v| *v != 0.0));
        assert_eq!(moved, m > 0 && kept.contains(&(m - 1)), "hypernetwork {m}");
    }
    // The weights say how they were trained, and a decoder built from them answers so.
    assert_eq!(trainer.decoder_weights().metadata().get("box_multimask").map(String::as_str), Some("true"));
    assert!(three_mask_decoder(&trainer).box_multimask);
    let off = trainer.with_box_multimask(false);
    assert!(!off.decoder_weights().metadata().contains_key("box_multimask"));
}

/// The trainer's decoder, built as inference builds it.
fn three_mask_decoder(trainer: &DecoderTrainer) -> SamDecoder {
    SamDecoder::load(&manifest().config, &trainer.decoder_weights(), &Device::flex()).unwrap()
}

/// Keys of the prompt encoder's weights a batch of `mixed` prompts reaches: the four samples'
/// tokens (box corners, positive and negative clicks, the padding not-a-point), the no-mask
/// embedding of the three without a mask prompt and the convolutions that embed the fourth's.
fn reached_by_mixed(key: &str) -> bool {
    key.starts_with("prompt_encoder.") && !key.contains("pe_layer")
}

#[test]
fn the_prompt_encoder_trains_with_the_decoder_when_asked() {
    let c = case();
    let samples = mixed(&c);
    let batch = batch(&c, &samples);
    let frozen = trainer().loss_and_grads(&batch, LossKind::Dice).unwrap();
    let sharded = trainer().with_prompt_encoder_training(true).unwrap().with_shards(4).loss_and_grads(&batch, LossKind::Dice).unwrap();
    let mut trainer = trainer().with_prompt_encoder_training(true).unwrap();
    let out = trainer.loss_and_grads(&batch, LossKind::Dice).unwrap();

    // The same forward pass and the same decoder gradients: only more is trained.
    let decoder_part = StepOutput {
        loss: out.loss,
        grads: out.grads.iter().filter(|(k, _)| k.starts_with("mask_decoder.")).map(|(k, g)| (k.clone(), g.clone())).collect(),
        logits: out.logits.clone(),
    };
    assert_same_step("decoder with the prompt encoder trained", &decoder_part, &frozen);
    // Every learned part of the prompt encoder the batch reaches has a gradient; the fixed
    // random Fourier matrix has none.
    let encoder_keys: Vec<&String> = out.grads.keys().filter(|k| k.starts_with("prompt_encoder.")).collect();
    eprintln!("prompt encoder gradients: {encoder_keys:?}");
    let weights = trainer.decoder_weights();
    for key in weights.keys().filter(|k| reached_by_mixed(k)) {
        let g = out.grads.get(key).unwrap_or_else(|| panic!("no gradient for {key}"));
        assert!(g.iter().any(|v| *v != 0.0) && g.iter().all(|v| v.is_finite()), "{key}: {g:?}");
    }
    assert!(!out.grads.keys().any(|k| k.contains("pe_layer")));
    assert_same_step("sharded", &sharded, &out);

    // One step moves the embeddings, leaves the Fourier matrix, and inference built from the
    // trained file decodes with the trained embeddings.
    let gaussian = "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix";
    let positive = "prompt_encoder.point_embeddings.1.weight";
    trainer.step(&batch, LossKind::Dice, 1e-3).unwrap();
    let after = trainer.decoder_weights();
    assert_ne!(after.raw(positive).unwrap().data, weights.raw(positive).unwrap().data);
    assert_eq!(after.raw(gaussian).unwrap().data, weights.raw(gaussian).unwrap().data);
    let stepped = trainer.loss_and_grads(&batch, LossKind::Dice).unwrap();
    let decoder = three_mask_decoder(&trainer);
    let (image, prompt, mask) = &samples[2];
    let mask = mask.as_ref().map(|m| Tensor::from_data(TensorData::new(m.clone(), [1, 1, LR, LR]), &Device::flex()));
    let answer = read(decoder.decode(c.embedding(*image), std::slice::from_ref(prompt), mask, false).unwrap().low_res_logits);
    assert_close("the correction round, decoded by the trained file", &stepped.logits[2 * LR * LR..3 * LR * LR], &answer, 2e-3, 1e-4);

    // Frozen again: the trained values stay, and only the decoder is trained.
    let off = trainer.with_prompt_encoder_training(false).unwrap();
    assert_eq!(off.decoder_weights().raw(positive).unwrap().data, after.raw(positive).unwrap().data);
    let frozen_again = off.loss_and_grads(&batch, LossKind::Dice).unwrap();
    assert!(frozen_again.grads.keys().all(|k| k.starts_with("mask_decoder.")));
    assert!((frozen_again.loss - stepped.loss).abs() <= 1e-6);
}

#[test]
fn a_click_embeddings_gradient_matches_finite_differences() {
    // In f64: the loss along the gradient of the positive-click embedding changes at the
    // rate of the gradient's norm.
    let c = case();
    let samples = vec![mixed(&c).swap_remove(1)];
    let batch = batch(&c, &samples);
    let key = "prompt_encoder.point_embeddings.1.weight";
    let mut trainer = trainer().with_prompt_encoder_training(true).unwrap().with_precision(Some(sonosam_model::burn::tensor::FloatDType::F64));
    let out = trainer.loss_and_grads(&batch, LossKind::Dice).unwrap();
    let g: Vec<f64> = out.grads[key].iter().map(|&v| f64::from(v)).collect();
    let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt();
    assert!(norm > 0.0);
    let base = trainer.params.raw(key).unwrap().data.clone();
    let h = 1e-2;
    let mut loss_at = |t: f64| {
        let moved = base.iter().zip(&g).map(|(&w, &gi)| (f64::from(w) + t * gi / norm) as f32).collect();
        trainer.params.set_data(key, moved).unwrap();
        f64::from(trainer.loss_and_grads(&batch, LossKind::Dice).unwrap().loss)
    };
    let slope = (loss_at(h) - loss_at(-h)) / (2.0 * h);
    eprintln!("directional derivative {slope:.6e}, gradient norm {norm:.6e}");
    assert!((slope - norm).abs() <= 0.02 * norm, "finite difference {slope} vs gradient norm {norm}");
}
