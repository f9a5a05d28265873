//! The model in the browser: weights fetched (with progress), verified against the manifest's
//! SHA-256 and cached; the prompt encoder + mask decoder loaded at start; the image encoder
//! loaded on first need (a cached or server-computed embedding never needs it); embeddings
//! cached per image in the browser.

use std::cell::RefCell;
use std::rc::Rc;

use image::RgbImage;
use sonosam_model::backend::{BackendKind, init_device_async};
use sonosam_model::burn::tensor::{Device, Tensor};
use sonosam_model::image_encoder::ImageEncoder;
use sonosam_model::preprocess::{Geometry, ModelInput, preprocess};
use sonosam_model::predictor::{Predictor, RawPrediction};
use sonosam_model::manifest::{Component, WeightsManifest};
use sonosam_model::sam::input_tensor;
use sonosam_model::segmentation::read_f32_async;
use sonosam_model::weights::sha256_hex;
use sonosam_model::{Prompt, SamDecoder, StoreDType};

use crate::protocol::{Progress, WeightSource, from_le_bytes, to_le_bytes};
use crate::storage;

/// Name of the default model's manifest under the weights URL.
pub const DEFAULT_MODEL: &str = "litemedsam";

/// Precision of downloaded weights: int8 (per-channel scales) when the model's manifest lists
/// it — a quarter of f32, half of f16, Dice within 0.001 of f32 on BUSI validation (README) —
/// else f16. The math runs in f32 either way.
pub fn download_dtype(manifest: &WeightsManifest) -> StoreDType {
    let has = |d| [Component::ImageEncoder, Component::Decoder].iter().all(|&c| manifest.file(c, d).is_some());
    if has(StoreDType::I8) { StoreDType::I8 } else { StoreDType::F16 }
}

/// Cache key of an image's embedding: the encoder weights' hash and the image bytes' hash.
pub fn embedding_cache_key(manifest: &WeightsManifest, image_sha256: &str) -> String {
    let encoder = manifest
        .file(Component::ImageEncoder, download_dtype(manifest))
        .map(|f| f.sha256.as_str())
        .unwrap_or("unknown");
    let compat = serde_json::to_string(&manifest.config.encoder).unwrap_or_default();
    let config = &sha256_hex(compat.as_bytes())[..12];
    format!("/sonosam-cache/embeddings/{}-{config}/{image_sha256}.f32", &encoder[..encoder.len().min(16)])
}

/// An image embedding `[1, 256, 64, 64]` as host data.
#[derive(Debug, Clone)]
pub struct Embedding {
    pub data: Rc<Vec<f32>>,
    pub geometry: Geometry,
    /// Whether it came from the browser cache.
    pub cached: bool,
}

/// Threads the CPU backend computes with in this build: the thread pool's size in the threaded
/// build (wasm atomics), else one.
pub fn cpu_threads() -> usize {
    #[cfg(feature = "threads")]
    {
        rayon::current_num_threads()
    }
    #[cfg(not(feature = "threads"))]
    {
        1
    }
}

pub struct Engine {
    pub kind: BackendKind,
    pub manifest: WeightsManifest,
    source: WeightSource,
    device: Device,
    /// The model's own prompt encoder + mask decoder.
    base_decoder: SamDecoder,
    /// Name of the decoder in use: `base` or the file a user loaded.
    decoder_name: RefCell<String>,
    encoder: RefCell<Option<Rc<ImageEncoder>>>,
    /// The decoder in use and the current image's embedding on the device. Borrowed only
    /// between awaits: requests from the page run concurrently.
    predictor: RefCell<Predictor<'static>>,
    /// Cache key of the current image's embedding.
    current_key: RefCell<Option<String>>,
}

impl Engine {
    /// Initialise `kind`; WebGPU failing falls back to the CPU (the second value says why).
    pub async fn init_backend(kind: BackendKind) -> (BackendKind, Device, Option<String>) {
        if kind == BackendKind::Wgpu {
            match init_device_async(BackendKind::Wgpu).await {
                Ok(d) => return (BackendKind::Wgpu, d, None),
                Err(e) => {
                    let why = format!("WebGPU is not usable here ({e}): running on the CPU, slower");
                    let d = init_device_async(BackendKind::Cpu).await.expect("the CPU backend");
                    return (BackendKind::Cpu, d, Some(why));
                }
            }
        }
        let d = init_device_async(BackendKind::Cpu).await.expect("the CPU backend");
        (BackendKind::Cpu, d, None)
    }

    /// Load the manifest and the decoder on `device`.
    pub async fn load(
        source: WeightSource,
        kind: BackendKind,
        device: Device,
        progress: Progress,
    ) -> Result<Engine, String> {
        let manifest_text = match &source {
            WeightSource::Bytes { manifest, .. } => manifest.clone(),
            WeightSource::Url(base) => {
                let url = format!("{base}/{DEFAULT_MODEL}.json");
                match storage::fetch_text(&url).await {
                    Ok(t) => {
                        let _ = storage::cache_put(&url, t.as_bytes()).await;
                        t
                    }
                    Err(e) => match storage::cache_get(&url).await {
                        Some(b) => String::from_utf8_lossy(&b).into_owned(),
                        None => return Err(format!("cannot load the model description: {e}")),
                    },
                }
            }
        };
        let manifest: WeightsManifest = serde_json::from_str(&manifest_text)
            .map_err(|e| format!("the model description is invalid: {e}"))?;
        let bytes = file_bytes(&source, &manifest, Component::Decoder, &progress).await?;
        let weights = manifest
            .load_component(Component::Decoder, download_dtype(&manifest), &bytes)
            .map_err(|e| e.to_string())?;
        let decoder =
            SamDecoder::load(&manifest.config, &weights, &device).map_err(|e| e.to_string())?;
        Ok(Engine {
            kind,
            manifest,
            source,
            device,
            decoder_name: RefCell::new("base".into()),
            predictor: RefCell::new(Predictor::new(decoder.clone())),
            base_decoder: decoder,
            encoder: RefCell::new(None),
            current_key: RefCell::new(None),
        })
    }

    /// The image encoder, loading its weights on first use.
    async fn encoder(&self, progress: &Progress) -> Result<Rc<ImageEncoder>, String> {
        if let Some(e) = self.encoder.borrow().as_ref() {
            return Ok(e.clone());
        }
        let bytes = file_bytes(&self.source, &self.manifest, Component::ImageEncoder, progress).await?;
        let weights = self
            .manifest
            .load_component(Component::ImageEncoder, download_dtype(&self.manifest), &bytes)
            .map_err(|e| e.to_string())?;
        let enc = ImageEncoder::load(&weights, &self.manifest.config.encoder, &self.device)
            .map_err(|e| e.to_string())?;
        let enc = Rc::new(enc);
        *self.encoder.borrow_mut() = Some(enc.clone());
        Ok(enc)
    }

    /// Run the image encoder on a preprocessed image: the embedding on the device and read
    /// back, checked.
    async fn encode_input(&self, encoder: &ImageEncoder, input: &ModelInput) -> Result<(Tensor<4>, Vec<f32>), String> {
        let x = input_tensor(&[input], self.manifest.config.img_size(), &self.device);
        let out = encoder.forward(x);
        let data = read_f32_async(out.clone()).await.map_err(|e| e.to_string())?;
        if data.len() != self.embedding_len() || data.iter().any(|v| !v.is_finite()) {
            return Err("the encoder produced an invalid embedding (GPU error?)".into());
        }
        Ok((out, data))
    }

    /// The embedding of a model input given as is (`[3, S, S]`, already normalised), loading
    /// the encoder when needed; not cached (the browser benchmark's seeded input).
    pub async fn encode_raw(&self, input: &ModelInput, progress: &Progress) -> Result<Vec<f32>, String> {
        let encoder = self.encoder(progress).await?;
        Ok(self.encode_input(&encoder, input).await?.1)
    }

    /// What the status line says while an image is encoded: where, and how long it took last
    /// time on this device (the same model, backend and threads), since that is the best
    /// estimate there is — devices differ by more than ten times.
    async fn encoding_message(&self) -> String {
        let place = match self.kind {
            BackendKind::Cpu => format!("on the CPU ({} thread{})", cpu_threads(), if cpu_threads() == 1 { "" } else { "s" }),
            _ => "on the GPU".to_string(),
        };
        let estimate = match storage::cache_get(&self.timing_key()).await.and_then(|b| <[u8; 8]>::try_from(b.as_slice()).ok()) {
            Some(b) => format!("≈ {:.0} s, as the last image took", (f64::from_le_bytes(b) / 1e3).max(1.0)),
            None => "the first image on this device: no estimate yet".to_string(),
        };
        let pauses = if self.kind == BackendKind::Cpu && web_sys::window().is_some() { "; the page pauses meanwhile" } else { "" };
        format!("computing the image embedding {place} ({estimate}{pauses})")
    }

    async fn remember_encoding_ms(&self, ms: f64) {
        if let Err(e) = storage::cache_put(&self.timing_key(), &ms.to_le_bytes()).await {
            web_sys::console::warn_1(&e.into());
        }
    }

    /// Where the last encoding's duration is kept (the browser cache, like the embeddings).
    fn timing_key(&self) -> String {
        format!("/sonosam-cache/timings/encoder-{}-{:?}-t{}", self.manifest.model, self.kind, cpu_threads())
    }

    fn embedding_len(&self) -> usize {
        let d = &self.manifest.config.decoder;
        d.embed_dim * d.embedding_size * d.embedding_size
    }

    /// The embedding of `image` (whose file hashes to `image_sha256`): from the browser cache,
    /// else computed here and cached. It becomes the current embedding for decoding.
    pub async fn embed(
        &self,
        image: &RgbImage,
        image_sha256: &str,
        progress: &Progress,
    ) -> Result<Embedding, String> {
        let config = &self.manifest.config;
        let geometry = Geometry::new(image.height() as usize, image.width() as usize, config.img_size());
        let key = embedding_cache_key(&self.manifest, image_sha256);
        if let Some(bytes) = storage::cache_get(&key).await {
            if bytes.len() == self.embedding_len() * 4 {
                let data = Rc::new(from_le_bytes(&bytes));
                self.set_current(&key, &data, geometry)?;
                return Ok(Embedding { data, geometry, cached: true });
            }
            storage::cache_delete(&key).await;
        }
        let encoder = self.encoder(progress).await?;
        progress(self.encoding_message().await, None);
        // Let the page paint that message before the CPU backend holds the thread.
        gloo::timers::future::TimeoutFuture::new(30).await;
        let started = crate::perf::now_ms();
        let input = preprocess(image, config);
        let (out, data) = self.encode_input(&encoder, &input).await?;
        self.remember_encoding_ms(crate::perf::now_ms() - started).await;
        if let Err(e) = storage::cache_put(&key, &to_le_bytes(&data)).await {
            web_sys::console::warn_1(&e.into());
        }
        self.predictor.borrow_mut().set_embedding(out, geometry).map_err(|e| e.to_string())?;
        *self.current_key.borrow_mut() = Some(key);
        Ok(Embedding { data: Rc::new(data), geometry, cached: false })
    }

    /// The embedding of `image_bytes` from a companion server (`sonosam serve` at `server`,
    /// whose encoder has hash `server_encoder`), through the browser cache: a repeated image
    /// makes no request.
    pub async fn embed_remote(
        &self,
        server: &str,
        server_encoder: &str,
        image_bytes: &[u8],
        image_sha256: &str,
    ) -> Result<Embedding, String> {
        let key = format!(
            "/sonosam-cache/embeddings/server-{}/{image_sha256}.snsemb",
            &server_encoder[..server_encoder.len().min(16)]
        );
        // The server's answer is cached as it came (the `wire` format, f16): the same parser
        // and checks serve the cached and the fresh copy.
        let parse = |bytes: &[u8]| -> Result<(Vec<f32>, Geometry), String> {
            let (header, data) = sonosam_model::wire::decode(bytes).map_err(|e| e.to_string())?;
            if header.model != self.manifest.model || data.len() != self.embedding_len() {
                return Err(format!(
                    "the server encodes for {} ({:?}), this page runs {}",
                    header.model, header.shape, self.manifest.model
                ));
            }
            let g = header.geometry;
            Ok((data, Geometry::new(g.orig_h, g.orig_w, self.manifest.config.img_size())))
        };
        let cached = match storage::cache_get(&key).await {
            Some(bytes) => match parse(&bytes) {
                Ok(v) => Some(v),
                Err(_) => {
                    storage::cache_delete(&key).await;
                    None
                }
            },
            None => None,
        };
        let (data, geometry, cached) = match cached {
            Some((data, geometry)) => (data, geometry, true),
            None => {
                let url = format!("{}/api/v1/embeddings?dtype=f16", server.trim_end_matches('/'));
                let body = storage::post_bytes(&url, image_bytes).await?;
                let (data, geometry) = parse(&body).map_err(|e| format!("{url}: {e}"))?;
                if let Err(e) = storage::cache_put(&key, &body).await {
                    web_sys::console::warn_1(&e.into());
                }
                (data, geometry, false)
            }
        };
        self.set_current(&key, &data, geometry)?;
        Ok(Embedding { data: Rc::new(data), geometry, cached })
    }

    /// Name of the decoder in use (`base` or the loaded file's name).
    pub fn decoder_name(&self) -> String {
        self.decoder_name.borrow().clone()
    }

    /// Use a fine-tuned decoder (`sonosam finetune`'s `decoder.f16.safetensors` or
    /// `decoder.f32.safetensors`) instead of the base one; its shapes must fit this model.
    pub fn use_decoder(&self, name: &str, bytes: &[u8]) -> Result<(), String> {
        let weights = sonosam_model::TensorMap::from_safetensors(bytes, name).map_err(|e| e.to_string())?;
        let d = SamDecoder::load(&self.manifest.config, &weights, &self.device)
            .map_err(|e| format!("{name} is not a decoder for {}: {e}", self.manifest.model))?;
        self.predictor.borrow_mut().set_decoder(d);
        *self.decoder_name.borrow_mut() = name.to_string();
        Ok(())
    }

    /// Back to the model's own decoder.
    pub fn use_base_decoder(&self) {
        self.predictor.borrow_mut().set_decoder(self.base_decoder.clone());
        *self.decoder_name.borrow_mut() = "base".into();
    }

    /// Make `data` (an embedding from elsewhere, of an image at `geometry`) the current one.
    pub fn set_current(&self, key: &str, data: &[f32], geometry: Geometry) -> Result<(), String> {
        if self.current_key.borrow().as_deref() == Some(key) {
            return Ok(()); // already on the device, with its prepared decoder work
        }
        self.predictor.borrow_mut().set_embedding_data(data.to_vec(), geometry).map_err(|e| e.to_string())?;
        *self.current_key.borrow_mut() = Some(key.to_string());
        Ok(())
    }

    /// Do the decoder's per-image work for the current image now (else the first prompt does).
    pub fn prepare_current(&self) -> Result<(), String> {
        self.predictor.borrow().prepare().map(|_| ()).map_err(|e| e.to_string())
    }

    /// Decode `prompt` (pixels of the image at `geometry`, which must be the current one)
    /// against the current embedding: the low-res logits `[M, lr, lr]` and predicted IoU `[M]`
    /// (`Segmentation::from_outputs` makes masks).
    pub async fn decode(
        &self,
        geometry: &Geometry,
        prompt: &Prompt,
        mask_input: Option<&[f32]>,
        multimask: bool,
    ) -> Result<(Vec<f32>, Vec<f32>), String> {
        let (out, lr) = {
            let predictor = self.predictor.borrow();
            match predictor.geometry() {
                None => return Err("the image embedding is not ready yet".into()),
                Some(g) if g != *geometry => return Err("the embedding in the model is of another image".into()),
                Some(_) => {}
            }
            (predictor.decode(prompt, mask_input, multimask).map_err(|e| e.to_string())?, predictor.low_res_size())
        };
        let raw = RawPrediction::read_async(out, lr).await.map_err(|e| e.to_string())?;
        Ok((raw.logits, raw.iou))
    }
}

/// Bytes of `component` (the download dtype): from memory, the browser cache (verified), or
/// the network with progress (then cached).
async fn file_bytes(
    source: &WeightSource,
    manifest: &WeightsManifest,
    component: Component,
    progress: &Progress,
) -> Result<Vec<u8>, String> {
    let entry = manifest
        .file(component, download_dtype(manifest))
        .ok_or_else(|| format!("the model lists no {} weights", component.name()))?;
    let what = format!("{} weights", component.name().replace('_', " "));
    match source {
        WeightSource::Bytes { files, .. } => files
            .get(&entry.file)
            .cloned()
            .ok_or_else(|| format!("{} is missing", entry.file)),
        WeightSource::Url(base) => {
            let url = format!("{base}/{}", entry.file);
            if let Some(b) = storage::cache_get(&url).await {
                if b.len() as u64 == entry.bytes && sha256_hex(&b) == entry.sha256 {
                    progress(format!("{what}: from the browser cache"), Some(1.0));
                    return Ok(b);
                }
                storage::cache_delete(&url).await;
            }
            let p = progress.clone();
            let expected = entry.bytes;
            let mb = |v: u64| v as f64 / 1e6;
            let b = storage::fetch_with_progress(&url, move |got, total| {
                // The manifest's size: a compressed answer's Content-Length counts other bytes.
                let total = if expected > 0 { expected } else { total };
                p(
                    format!("downloading {what}: {:.1} / {:.1} MB", mb(got), mb(total)),
                    (total > 0).then(|| got as f64 / total as f64),
                )
            })
            .await?;
            if b.len() as u64 != entry.bytes || sha256_hex(&b) != entry.sha256 {
                return Err(format!(
                    "{url}: the download does not match the model description (size or SHA-256): \
                     a truncated or wrong file"
                ));
            }
            if let Err(e) = storage::cache_put(&url, &b).await {
                web_sys::console::warn_1(&e.into());
            }
            Ok(b)
        }
    }
}
