//! The model as the UI sees it: the engine in a Web Worker (the app's default, so that the page
//! never freezes) or in the page's own thread (where workers are unavailable: the engine
//! module imported into the page, see [`Client::in_page`]), both through
//! [`Client`](crate::client::Client) messages. A module built with the engine inside (feature
//! `engine` with `ui`: the component tests, which hand the weights over as bytes) runs it in
//! the page directly.

use std::cell::RefCell;
use std::rc::Rc;

use image::RgbImage;
use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::Geometry;
use sonosam_model::manifest::WeightsManifest;
use sonosam_model::{Prompt, Segmentation};

use crate::client::Client;
#[cfg(feature = "engine")]
use crate::engine::Engine;
use crate::perf::Stage;
use crate::protocol::{Progress, Reply, Request, WeightSource, auto_backend};

/// Where the engines of separate modules are served from, for the page to run one itself:
/// the CPU one, and the one with WebGPU.
#[cfg(not(feature = "engine"))]
const ENGINE_MODULE: [&str; 2] = ["engine/sonosam-engine.js", "engine-webgpu/sonosam-engine.js"];

enum Runner {
    /// The engine compiled into this module, in the page.
    #[cfg(feature = "engine")]
    Page(Engine),
    /// The engine module, in a worker or in the page.
    Worker(Client),
}

/// A loaded model, wherever it runs.
pub struct Model {
    runner: Runner,
    kind: BackendKind,
    manifest: WeightsManifest,
    decoder_name: RefCell<String>,
}

/// Where to run the model.
#[derive(Debug, Clone, PartialEq)]
pub enum Placement {
    /// In a worker started from this script URL (`worker.js`), else in the page.
    Worker(String),
    /// In the page's thread.
    Page,
}

/// `url` made absolute against the page (the worker resolves relative URLs against its script).
fn absolute(url: &str) -> String {
    web_sys::window()
        .and_then(|w| w.document())
        .and_then(|d| d.base_uri().ok().flatten())
        .and_then(|base| web_sys::Url::new_with_base(url, &base).ok())
        .map(|u| u.href())
        .unwrap_or_else(|| url.to_string())
}

/// The notices worth showing (a fallback taken, a backend's), as one line.
fn notices(fallback: Option<String>, backend: Option<String>) -> Option<String> {
    let text = [fallback, backend].into_iter().flatten().collect::<Vec<_>>().join("; ");
    (!text.is_empty()).then_some(text)
}

impl Model {
    fn new(runner: Runner, kind: BackendKind, manifest: WeightsManifest) -> Model {
        Model { runner, kind, manifest, decoder_name: RefCell::new("base".into()) }
    }

    /// Start the backend (`choice`, or automatic) and load the model. The second value is a
    /// notice for the user (a fallback taken).
    pub async fn start(
        source: WeightSource,
        choice: Option<BackendKind>,
        placement: Placement,
        progress: Progress,
    ) -> Result<(Model, Option<String>), String> {
        let (wanted, why) = match choice {
            Some(k) => (k, None),
            None => auto_backend().await,
        };
        let mut fallback = None;
        if let (Placement::Worker(script), WeightSource::Url(weights)) = (&placement, &source) {
            progress("starting the model worker".into(), None);
            // WebGPU runs in an engine of its own (the CPU-only engines are a fifth of its
            // size; wgpu's WebGPU objects are not thread-safe under wasm atomics, so it is
            // single-threaded): the worker loads it when asked.
            let script = if wanted == BackendKind::Wgpu {
                format!("{script}{}webgpu=1", if script.contains('?') { '&' } else { '?' })
            } else {
                script.clone()
            };
            match Client::start(&absolute(&script)).await {
                Ok(client) => return Model::on_client(client, wanted, weights, why, None, progress).await,
                Err(e) => {
                    web_sys::console::warn_1(&format!("no model worker: {e}").into());
                    fallback = Some(format!("{e}: the model runs in the page, which may pause while it works"));
                }
            }
        }
        Model::in_page(source, wanted, why, fallback, progress).await
    }

    /// Load the model in the engine behind `client`.
    async fn on_client(
        client: Client,
        wanted: BackendKind,
        weights: &str,
        why: Option<String>,
        fallback: Option<String>,
        progress: Progress,
    ) -> Result<(Model, Option<String>), String> {
        let (kind, manifest, notice) = client.init(Some(wanted), &absolute(weights), progress).await?;
        Ok((Model::new(Runner::Worker(client), kind, manifest), notices(fallback, notice.or(why))))
    }

    /// The engine compiled into this module, in the page.
    #[cfg(feature = "engine")]
    async fn in_page(
        source: WeightSource,
        wanted: BackendKind,
        why: Option<String>,
        fallback: Option<String>,
        progress: Progress,
    ) -> Result<(Model, Option<String>), String> {
        let (kind, device, notice) = Engine::init_backend(wanted).await;
        let engine = Engine::load(source, kind, device, progress).await?;
        let manifest = engine.manifest.clone();
        Ok((Model::new(Runner::Page(engine), kind, manifest), notices(fallback, notice.or(why))))
    }

    /// The engine module, imported into the page.
    #[cfg(not(feature = "engine"))]
    async fn in_page(
        source: WeightSource,
        wanted: BackendKind,
        why: Option<String>,
        fallback: Option<String>,
        progress: Progress,
    ) -> Result<(Model, Option<String>), String> {
        let WeightSource::Url(weights) = &source else {
            return Err("weights handed over as bytes need the engine in the page's own module".into());
        };
        progress("loading the model into the page".into(), None);
        let reason = "the model runs in the page";
        let module = ENGINE_MODULE[usize::from(wanted == BackendKind::Wgpu)];
        let client = Client::in_page(&absolute(module), reason).await?;
        Model::on_client(client, wanted, weights, why, fallback, progress).await
    }

    pub fn kind(&self) -> BackendKind {
        self.kind
    }

    pub fn manifest(&self) -> &WeightsManifest {
        &self.manifest
    }

    /// Whether the model runs in a Web Worker.
    pub fn in_worker(&self) -> bool {
        match &self.runner {
            Runner::Worker(c) => c.in_worker(),
            #[cfg(feature = "engine")]
            Runner::Page(_) => false,
        }
    }

    /// Threads the CPU backend computes with, and why only one when so.
    pub fn threads(&self) -> (usize, Option<String>) {
        match &self.runner {
            Runner::Worker(c) => c.threads(),
            #[cfg(feature = "engine")]
            Runner::Page(_) => (1, Some("the model runs in the page".into())),
        }
    }

    /// Call `f` with the reason when the model can no longer run (its worker stopped: an
    /// internal error, a lost GPU device, the browser killed it), at once if it already has.
    /// A model in the page does not stop on its own.
    pub fn on_failure(&self, f: Rc<dyn Fn(String)>) {
        match &self.runner {
            Runner::Worker(c) => c.on_failure(f),
            #[cfg(feature = "engine")]
            Runner::Page(_) => {}
        }
    }

    /// Name of the decoder in use (`base` or the loaded file's name).
    pub fn decoder_name(&self) -> String {
        self.decoder_name.borrow().clone()
    }

    /// Make `image` (whose file hashes to `sha256`) the current image, computing its embedding
    /// unless cached. `Ok(true)`: it came from the browser cache.
    pub async fn embed(&self, image: &RgbImage, sha256: &str, progress: &Progress) -> Result<bool, String> {
        match &self.runner {
            #[cfg(feature = "engine")]
            Runner::Page(e) => e.embed(image, sha256, progress).await.map(|e| e.cached),
            Runner::Worker(c) => {
                let request = Request::Embed { width: image.width(), height: image.height(), sha256: sha256.into() };
                match c.call(&request, Some(image.as_raw()), Some(progress.clone())).await? {
                    (Reply::Embedded { cached }, _) => Ok(cached),
                    (other, _) => Err(format!("the model worker answered {other:?} to embed")),
                }
            }
        }
    }

    /// The current image's embedding from a companion server (see [`Engine::embed_remote`]).
    pub async fn embed_remote(
        &self,
        server: &str,
        server_encoder: &str,
        image_bytes: &[u8],
        sha256: &str,
    ) -> Result<bool, String> {
        match &self.runner {
            #[cfg(feature = "engine")]
            Runner::Page(e) => e.embed_remote(server, server_encoder, image_bytes, sha256).await.map(|e| e.cached),
            Runner::Worker(c) => {
                let request = Request::EmbedRemote {
                    server: absolute(if server.is_empty() { "." } else { server }).trim_end_matches('/').to_string(),
                    server_encoder: server_encoder.into(),
                    sha256: sha256.into(),
                };
                match c.call(&request, Some(image_bytes), None).await? {
                    (Reply::Embedded { cached }, _) => Ok(cached),
                    (other, _) => Err(format!("the model worker answered {other:?} to embed")),
                }
            }
        }
    }

    /// Use a fine-tuned decoder file; `None`: back to the model's own.
    pub async fn use_decoder(&self, file: Option<(&str, &[u8])>) -> Result<(), String> {
        match (&self.runner, file) {
            #[cfg(feature = "engine")]
            (Runner::Page(e), Some((name, bytes))) => e.use_decoder(name, bytes)?,
            #[cfg(feature = "engine")]
            (Runner::Page(e), None) => e.use_base_decoder(),
            (Runner::Worker(c), Some((name, bytes))) => {
                c.call(&Request::UseDecoder { name: name.into() }, Some(bytes), None).await?;
            }
            (Runner::Worker(c), None) => {
                c.call(&Request::UseBaseDecoder, None, None).await?;
            }
        }
        *self.decoder_name.borrow_mut() = file.map_or("base", |(n, _)| n).to_string();
        Ok(())
    }

    /// Decode `prompt` (original-image pixels) against the current embedding.
    pub async fn decode(
        &self,
        geometry: &Geometry,
        prompt: &Prompt,
        mask_input: Option<&[f32]>,
        multimask: bool,
    ) -> Result<Segmentation, String> {
        let stage = Stage::start("sonosam:decode");
        let (logits, iou) = match &self.runner {
            #[cfg(feature = "engine")]
            Runner::Page(e) => e.decode(geometry, prompt, mask_input, multimask).await?,
            Runner::Worker(c) => c.decode(geometry, prompt, mask_input, multimask).await?,
        };
        drop(stage);
        let _stage = Stage::start("sonosam:postprocess");
        Ok(Segmentation::from_outputs(&logits, &iou, self.manifest.config.low_res_size(), geometry))
    }
}
