//! The app's asynchronous work, each task a future that ends in the [`Msg`] with its result:
//! starting the model, loading samples and files, embeddings (in the browser or from a
//! companion server), decoding, switching the decoder.

use std::rc::Rc;

use sonosam_model::backend::BackendKind;
use sonosam_model::preprocess::Geometry;
use sonosam_model::wire::ModelsAnswer;
use sonosam_model::{Mask, Prompt};
use yew::Callback;

use super::{Msg, OpenImage, SampleInfo};
use crate::protocol::{Progress, WeightSource};
use crate::model::{Model, Placement};
use crate::perf::now_ms;
use crate::storage;

/// Largest image file opened.
const MAX_FILE_BYTES: f64 = 200e6;

/// Start the model (see [`Model::start`]); `on_failure` hears of it if it stops later.
pub async fn start_model(
    source: WeightSource,
    backend: Option<BackendKind>,
    placement: Placement,
    progress: Progress,
    on_failure: Callback<String>,
) -> Msg {
    let started = Model::start(source, backend, placement, progress).await;
    Msg::ModelReady(started.map(|(model, notice)| {
        model.on_failure(Rc::new(move |why| on_failure.emit(why)));
        (Rc::new(model), notice)
    }))
}

/// The bundled samples' list (`index.json`); none when it cannot be read.
pub async fn load_samples(base: String) -> Msg {
    let list = storage::fetch_text(&format!("{base}/index.json"))
        .await
        .ok()
        .and_then(|t| serde_json::from_str::<Vec<SampleInfo>>(&t).ok())
        .unwrap_or_default();
    Msg::Samples(list)
}

/// An image file's bytes, with its ground truth when known.
pub struct Loaded {
    pub name: String,
    pub bytes: Vec<u8>,
    pub ground_truth: Option<Mask>,
}

/// A bundled sample with the union of its ground-truth masks.
pub async fn load_sample(base: String, sample: SampleInfo) -> Msg {
    let load = async {
        let bytes = storage::fetch_with_progress(&format!("{base}/{}", sample.image), |_, _| {}).await?;
        let mut truth: Option<Mask> = None;
        for name in &sample.masks {
            let b = storage::fetch_with_progress(&format!("{base}/{name}"), |_, _| {}).await?;
            let mask = Mask::from_image_bytes(&b).map_err(|e| format!("{name}: {e}"))?;
            match &mut truth {
                Some(t) => t.union_with(&mask).map_err(|e| format!("{name}: {e}"))?,
                None => truth = Some(mask),
            }
        }
        Ok(Loaded { name: sample.image.clone(), bytes, ground_truth: truth })
    };
    Msg::Opened(load.await)
}

/// Read a file the user opened, dropped or pasted; files over the size limit are refused
/// before reading.
pub fn read_image_file(file: web_sys::File) -> Result<impl Future<Output = Msg>, String> {
    let name = file.name();
    if file.size() > MAX_FILE_BYTES {
        return Err(format!("{name}: {:.0} MB is larger than the {:.0} MB limit", file.size() / 1e6, MAX_FILE_BYTES / 1e6));
    }
    let file = gloo::file::File::from(file);
    Ok(async move {
        let read = gloo::file::futures::read_as_bytes(&file).await;
        Msg::Opened(
            read.map(|bytes| Loaded { name: name.clone(), bytes, ground_truth: None })
                .map_err(|e| format!("{name}: cannot read the file: {e}")),
        )
    })
}

/// A companion server (`sonosam serve`) that computes embeddings.
#[derive(Clone, PartialEq)]
pub struct Companion {
    /// Base URL (empty: this page's own server).
    pub url: String,
    pub encoder_sha256: String,
    pub model: String,
}

/// Ask the server at `url` (empty: this page's server) which model it runs.
pub async fn probe_companion(url: String) -> Msg {
    let base = url.trim_end_matches('/').to_string();
    let probe = async {
        let text = storage::fetch_text(&format!("{base}/api/v1/models")).await?;
        let answer: ModelsAnswer = serde_json::from_str(&text).map_err(|e| format!("not a sonosam server: {e}"))?;
        let model = answer.models.into_iter().next().ok_or("the server offers no model")?;
        Ok(Companion { url: base.clone(), encoder_sha256: model.encoder_sha256, model: model.id })
    };
    Msg::Companion(url, probe.await)
}

/// Where embeddings come from: this browser, or a companion server when one answered and the
/// user wants it.
#[derive(Clone, Default, PartialEq)]
pub struct CompanionChoice {
    pub use_server: bool,
    pub url: String,
    pub server: Option<Companion>,
}

impl CompanionChoice {
    /// The server to ask for embeddings of `model`, if any.
    pub fn server_for(&self, model: &str) -> Option<Companion> {
        self.server.clone().filter(|c| self.use_server && c.model == model)
    }

    /// A probe of `url` answered. A server found is used; no server at the page's own URL is
    /// no error (the page is static), at a URL the user typed it is.
    pub fn answered(&mut self, url: &str, r: Result<Companion, String>) -> Result<(), String> {
        match r {
            Ok(c) => {
                self.url = c.url.clone();
                self.server = Some(c);
                self.use_server = true;
                Ok(())
            }
            Err(e) => {
                self.server = None;
                if url.is_empty() {
                    return Ok(());
                }
                self.use_server = false;
                Err(format!("no companion server at {url}: {e}"))
            }
        }
    }

    /// Turn the server on or off: the URL to probe, when it must be.
    pub fn use_server(&mut self, on: bool) -> Option<String> {
        self.use_server = on;
        (on && self.server.is_none()).then(|| self.url.clone())
    }

    /// A new server URL: the URL to probe, when the server is in use.
    pub fn set_url(&mut self, url: String) -> Option<String> {
        self.url = url.trim().to_string();
        self.server = None;
        self.use_server.then(|| self.url.clone())
    }
}

/// The image's embedding into the model: from `server` when given (falling back to this
/// browser, saying so, when it fails), else from the browser cache or computed here.
pub async fn embed(model: Rc<Model>, image: Rc<OpenImage>, server: Option<Companion>, progress: Progress) -> Msg {
    let sha = image.sha256.clone();
    if let Some(c) = server {
        match model.embed_remote(&c.url, &c.encoder_sha256, &image.bytes, &sha).await {
            Ok(cached) => {
                let how = if cached { "embedding from the browser cache (companion server)" } else { "embedding from the companion server" };
                return Msg::Embedded(sha, Ok(how.into()));
            }
            Err(e) => {
                web_sys::console::warn_1(&e.clone().into());
                progress(format!("{e} — computing the embedding in this browser"), None);
            }
        }
    }
    let r = model.embed(&image.rgb, &sha, &progress).await;
    Msg::Embedded(sha, r.map(|cached| if cached { "embedding from the browser cache" } else { "embedding computed" }.into()))
}

/// One decode: the prompt (original-image pixels) on the image at `geometry`.
pub struct DecodeRequest {
    pub geometry: Geometry,
    pub prompt: Prompt,
    /// The previous low-res logits, to refine.
    pub mask_input: Option<Vec<f32>>,
    pub multimask: bool,
}

impl DecodeRequest {
    async fn run(&self, model: &Model) -> Result<sonosam_model::Segmentation, String> {
        model.decode(&self.geometry, &self.prompt, self.mask_input.as_deref(), self.multimask).await
    }
}

/// Decode request `seq` of object `object`, timed.
pub async fn decode(model: Rc<Model>, request: DecodeRequest, seq: u64, object: u32) -> Msg {
    let t0 = now_ms();
    let result = request.run(&model).await.map(|s| (s, now_ms() - t0));
    Msg::Decoded { seq, object, result }
}

/// The hover preview's decode `seq`.
pub async fn hover(model: Rc<Model>, request: DecodeRequest, seq: u64) -> Msg {
    Msg::Hovered { seq, result: request.run(&model).await }
}

/// Use a fine-tuned decoder file (`None`: the base decoder): its name once in use.
pub async fn switch_decoder(model: Rc<Model>, file: Option<web_sys::File>) -> Msg {
    let switched = async {
        let Some(file) = file else {
            model.use_decoder(None).await?;
            return Ok("base".to_string());
        };
        let name = file.name();
        let bytes = gloo::file::futures::read_as_bytes(&gloo::file::File::from(file))
            .await
            .map_err(|e| format!("{name}: cannot read the file: {e}"))?;
        model.use_decoder(Some((&name, &bytes))).await?;
        Ok(name)
    };
    Msg::DecoderSwitched(switched.await)
}
